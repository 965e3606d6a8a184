#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/ack_tracker.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/progress.h"
#include "engine/stop_signal.h"

namespace pgflow {

// What the positions a source acknowledges (Event::AckPosition) are.
enum class SourcePositions {
  // PostgreSQL WAL positions: the same for a transaction in every run, so a sink may store the
  // last one it applied and skip what comes again at or below it after a restart.
  kWal,
  // The source's own sequence, increasing within a run (and, by construction, from one run of
  // the process to the next) but unrelated to the order of the changes' commit LSNs: a sink
  // must not skip a transaction because its position is at or below one it stored. It relies
  // on applying changes idempotently (upserts and deletes by key) instead.
  kSourceSequence,
};

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
  // Tells progress reporting how a snapshot stands (called every second or so while one runs,
  // and once with `running` false when it ends).
  virtual void NoteSnapshot(std::vector<TableProgress> tables, bool running) {}
  // Tells readiness and /status which backfill copies tables into the sinks beside the stream
  // ("backfill 3: public.logs"), or none (empty): until it ends, the sinks do not hold every
  // row of those tables.
  virtual void NoteBackfill(std::string what) {}
  // True when `table`'s snapshot rows are to be sent as raw binary COPY data
  // (EventKind::kRawRows): every sink takes them so, and no transform touches the table.
  virtual bool WantsRawCopy(const TableSchema& table) const { return false; }
};

// Produces the event stream. Driven by the engine from one thread:
// Prepare, then Stream until stopped, then Finish with the final confirmed position.
class Source {
 public:
  virtual ~Source() = default;

  // Connects, checks and creates what streaming needs. Returns the position streaming resumes
  // from (everything before it was acknowledged in an earlier run).
  virtual absl::StatusOr<Lsn> Prepare() = 0;

  // Streams events into `emitter` until `stop` is requested or the source has nothing more to
  // send (returns OK), or a fatal error. Reports acks.wal.Confirmed() to the server, and
  // nothing beyond it; acks.chunks tells which snapshot chunks every sink holds.
  virtual absl::Status Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) = 0;

  // Called after Prepare when a sink needs every row again (Sink::NeedsFullCopy): makes sure
  // this run sends all the tables' rows, followed by a kSnapshotDone event, while streaming
  // goes on from the resume point. An initial snapshot already owed does it by itself.
  virtual absl::Status EnsureFullCopy() {
    return absl::UnimplementedError("this source cannot copy its tables again");
  }

  // Called after Prepare when a sink holds rows without replaying DDL (Sink::NeedsRowsAfterDdl):
  // from then on a table whose existing rows take values without row changes in the stream (a
  // column added with a default) is read again beside the stream.
  virtual void CopyAgainAfterDdl() {}

  // Called once the sinks have drained and flushed: acknowledges what `acks` confirms (WAL
  // position, snapshot chunks) and disconnects.
  virtual absl::Status Finish(Acknowledgements acks) = 0;

  // Called after Finish when the attempt failed before any change or snapshot chunk was
  // acknowledged: what this attempt created in the source that holds resources there (a
  // replication slot keeps WAL) may go, since nothing depends on it yet; the next attempt
  // creates it again. Says what it removed, or what stays and what removes it.
  virtual void ReleaseUnacknowledged() {}
};

}  // namespace pgflow
