#pragma once

// The part of every sink that is the same: reading the event stream's framing. A sink derived
// from TransactionalSink implements one hook per kind of event instead of its own switch over
// EventKind, and gets the replayed-transaction rule applied for it:
//
//   begin ─ change* ─ commit      a source transaction (OnBegin, OnChange(in_txn), OnCommit);
//                                 a backfill's rows come inside its high watermark's
//   begin ─ change* ─ rollback    cut off by a lost connection; it comes again in full
//   change                        a snapshot row, outside any transaction
//   position / chunk done / snapshot done / raw rows
//
// The replayed-transaction rule: a sink that stores the end of the last source transaction it
// applied, in the same durable step as the data (a PostgreSQL target's pgflow.applied, the kv
// cache's applied position), returns it from AppliedThrough(). After a restart the source sends
// again everything after the slot's confirmed position; a transaction whose commit LSN lies
// below the applied end was applied before, and none of its hooks run. The rule holds only for
// WAL positions (SourcePositions::kWal): a source with positions of its own (the kafka source)
// has none comparable across runs, and every transaction reaches the hooks.
//
// Not thread-safe, like Sink: the engine drives it from one thread.

#include "absl/status/status.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/sink.h"
#include "engine/source.h"

namespace pgflow {

class TransactionalSink : public Sink {
 public:
  // `positions` matters only to a sink whose AppliedThrough() is valid.
  explicit TransactionalSink(SourcePositions positions = SourcePositions::kWal)
      : positions_(positions) {}

  // Calls BeforeEvent, then the hook of the event's kind. A sink overrides it only to wrap it
  // (to look at the error a hook returned), never to dispatch events itself.
  absl::Status Write(const Event& event) override;

  // Transactions skipped by the replayed-transaction rule so far.
  uint64_t skipped_transactions() const { return skipped_; }

 protected:
  // Called first for every event, those of skipped transactions too: for what follows the
  // stream itself (the last acknowledgeable position written, work due when any transaction
  // starts, applied or not). Rarely needed.
  virtual absl::Status BeforeEvent(const Event& event) { return absl::OkStatus(); }
  // A source transaction starts (not called for one that is skipped).
  virtual absl::Status OnBegin(const TxnInfo& txn) { return absl::OkStatus(); }
  // A change: of the open transaction (`in_txn`), or a snapshot row outside any.
  virtual absl::Status OnChange(const Change& change, bool in_txn) = 0;
  // The open transaction is complete; txn.end_lsn is what becomes acknowledgeable.
  virtual absl::Status OnCommit(const TxnInfo& txn) { return absl::OkStatus(); }
  // The open transaction was cut off: whatever of it the sink can take back, it should; the
  // transaction comes again in full.
  virtual absl::Status OnRollback() { return absl::OkStatus(); }
  // Nothing before `position` is pending (a keepalive on a quiet stream); outside any
  // transaction.
  virtual absl::Status OnPosition(Lsn position) { return absl::OkStatus(); }
  // Every row of snapshot chunk `chunk` of `table` has been written (it may have had none: a
  // sink that creates tables learns of an empty one here). `table` may be null.
  virtual absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) {
    return absl::OkStatus();
  }
  // The initial snapshot (or the full copy a sink asked for) is over; streaming goes on.
  virtual absl::Status OnSnapshotDone() { return absl::OkStatus(); }
  // Snapshot rows as raw binary COPY tuples; only for sinks whose AcceptsRawCopy() is true.
  virtual absl::Status OnRawRows(const Event& event) {
    return absl::InternalError("this sink does not take raw COPY rows");
  }
  // The end of the last source transaction the sink applied durably, kept where it survives a
  // restart (invalid: none, or nothing kept). See the replayed-transaction rule above.
  virtual Lsn AppliedThrough() const { return Lsn(); }

  // True between a transaction's begin and its commit or rollback (skipped ones included).
  bool in_txn() const { return in_txn_; }

 private:
  const SourcePositions positions_;
  bool in_txn_ = false;
  bool skipping_ = false;
  uint64_t skipped_ = 0;
};

}  // namespace pgflow
