#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/metrics.h"

namespace pgflow {

// What a sink does with schema changes (`ddl: {mode: ..., exclude: [...]}` beside its type).
enum class DdlMode {
  kApply,   // sinks that can replay DDL (postgres) do; the others pass it on as events
  kEvents,  // pass it on as `ddl` events only: a PostgreSQL target is left as it is
  kIgnore,  // drop it: the sink never sees a `ddl` event
};

struct DdlPolicy {
  DdlMode mode = DdlMode::kApply;
  // Object types ("index", "sequence", "function", ...) whose DDL the sink never sees.
  std::vector<std::string> exclude;

  // Whether a `ddl` event on an object of `object_type` reaches the sink at all.
  bool Passes(std::string_view object_type) const {
    return mode != DdlMode::kIgnore &&
           std::find(exclude.begin(), exclude.end(), object_type) == exclude.end();
  }
};

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

  // For a sink whose durability can lag its Flush: the highest acknowledgeable position all of
  // whose events are durable. A Kafka producer always answers (deliveries complete later); a
  // PostgreSQL target answers while it holds source transactions in a target transaction still
  // open, or snapshot chunks its loaders have not committed, and returns nullopt otherwise.
  // nullopt means "everything flushed is durable": sinks that are always synchronous keep this
  // default. The engine reads it after every batch written and, while it lags, every few
  // milliseconds (engine/pipeline.cc).
  virtual std::optional<Lsn> DurableThrough() const { return std::nullopt; }

  // Read whenever DurableThrough() has a value: the highest snapshot chunk ordinal
  // (EventKind::kChunkDone) such that it, every earlier chunk and all their rows are durable;
  // 0 when none is. Otherwise a flushed chunk is durable.
  virtual uint64_t DurableChunkThrough() const { return 0; }

  // Events the sink set aside instead of applying them (its dead-letter path), since Open.
  // Thread-safe: the metrics are read from another thread while the sink runs.
  virtual uint64_t DeadLettered() const { return 0; }

  // What keeps the sink from delivering at the moment while it tries again (an endpoint that
  // fails or throttles): one line for readiness and `pgflow status`, empty when nothing does.
  // Thread-safe: read from another thread while the sink runs.
  virtual std::string Trouble() const { return {}; }

  // Sets the sink's own gauges, if it has any, labelled with `labels` (the pipeline's and the
  // sink's names). Called from the scraping thread before every /metrics exposition, while
  // the sink runs: thread-safe.
  virtual void CollectMetrics(MetricsRegistry* /*metrics*/, const MetricLabels& /*labels*/) const {}

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

  // True for a sink that holds the rows of the pipeline's tables (documents, cache entries)
  // and does not replay DDL: a DDL that gives existing rows new values without row changes in
  // the WAL (a column added with a default) reaches it only when the source reads the table
  // again (Source::CopyAgainAfterDdl). (A rewrite computing new values is read again for
  // every sink.)
  virtual bool NeedsRowsAfterDdl() const { return false; }
};

}  // namespace pgflow
