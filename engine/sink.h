#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/change.h"
#include "engine/lsn.h"

namespace pgflow {

// A destination for change events. The engine drives each sink from one thread of its own:
// Open once, then Write for every event in stream order, Flush from time to time and at
// shutdown, then Close. Implementations need not be thread-safe.
//
// Durability is what the acknowledgement rule stands on: after Flush returns OK, every event
// written before it must survive a crash of pgflow and of the machine (a file fsynced, a
// target transaction committed, a 2xx received). The engine acknowledges to PostgreSQL only
// positions that every sink has made durable.
class Sink {
 public:
  virtual ~Sink() = default;

  // Opens files and connections. A non-OK status stops the pipeline before it streams.
  virtual absl::Status Open() = 0;

  // Takes one event. May buffer; blocking here back-pressures the whole pipeline.
  // A non-OK status stops the pipeline; the events it did not make durable are not
  // acknowledged and will be delivered again after a restart.
  virtual absl::Status Write(const Event& event) = 0;

  // Makes every event written so far durable.
  virtual absl::Status Flush() = 0;

  // For sinks that complete writes asynchronously (a Kafka producer): the highest
  // acknowledgeable position all of whose events are durable, which may lag what was
  // flushed. Synchronous sinks keep the default, meaning "everything flushed is durable".
  virtual std::optional<Lsn> DurableThrough() const { return std::nullopt; }

  // For asynchronous sinks (DurableThrough() has a value): the highest snapshot chunk ordinal
  // (EventKind::kChunkDone) such that it, every earlier chunk and all their rows are durable;
  // 0 when none is. Synchronous sinks never need it: for them a flushed chunk is durable.
  virtual uint64_t DurableChunkThrough() const { return 0; }

  // Releases resources. Not called concurrently with anything else.
  virtual absl::Status Close() = 0;

  // True if the sink writes to the process's standard output (then progress is never drawn
  // on the terminal, to keep the two apart).
  virtual bool WritesToStdout() const { return false; }

  // True if the sink takes snapshot rows as raw binary COPY data (EventKind::kRawRows) rather
  // than as decoded `read` changes: a PostgreSQL target can COPY them in without decoding.
  // The raw path is taken only when every sink of the pipeline accepts it.
  virtual bool AcceptsRawCopy() const { return false; }

  // True for a sink that starts empty and needs every row of the pipeline's tables again (an
  // in-memory cache after the process started): the engine then asks the source for a full
  // copy (Source::EnsureFullCopy), which ends with a kSnapshotDone event.
  virtual bool NeedsFullCopy() const { return false; }
};

}  // namespace pgflow
