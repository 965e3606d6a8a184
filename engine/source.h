#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/ack_tracker.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/stop_signal.h"

namespace pgflow {

// Where a source hands its batches: the transformer chain and the fan-out to every sink.
class Emitter {
 public:
  virtual ~Emitter() = default;
  enum class Result { kOk, kTimeout, kClosed };
  // Hands `batch` on, waiting at most `timeout` for room. On kTimeout the batch may have
  // reached some sinks but not all: call Emit again with the same batch (it resumes where
  // it stopped) after doing whatever must not wait, such as answering the server.
  virtual Result Emit(const EventBatchPtr& batch, absl::Duration timeout) = 0;
  // Tells progress reporting where the server's WAL ends, to show lag and time to catch up.
  virtual void NoteServerWalEnd(Lsn wal_end) {}
};

// Produces the event stream. Driven by the engine from one thread:
// Prepare, then Stream until stopped, then Finish with the final confirmed position.
class Source {
 public:
  virtual ~Source() = default;

  // Connects, checks and creates what streaming needs. Returns the position streaming resumes
  // from (everything before it was acknowledged in an earlier run).
  virtual absl::StatusOr<Lsn> Prepare() = 0;

  // Streams events into `emitter` until `stop` is requested (returns OK) or a fatal error.
  // Reports acks.Confirmed() to the server, and nothing beyond it.
  virtual absl::Status Stream(Emitter& emitter, const AckTracker& acks, const StopSignal& stop) = 0;

  // Called once the sinks have drained and flushed: acknowledges `confirmed` and disconnects.
  virtual absl::Status Finish(Lsn confirmed) = 0;
};

}  // namespace pgflow
