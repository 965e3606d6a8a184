#include "engine/transactional_sink.h"

namespace pgflow {

absl::Status TransactionalSink::Write(const Event& event) {
  if (absl::Status s = BeforeEvent(event); !s.ok()) return s;
  switch (event.kind) {
    case EventKind::kBegin: {
      in_txn_ = true;
      const Lsn applied = AppliedThrough();
      skipping_ = positions_ == SourcePositions::kWal && applied.IsValid() &&
                  event.txn.commit_lsn < applied;
      if (skipping_) {
        ++skipped_;
        return absl::OkStatus();
      }
      return OnBegin(event.txn);
    }
    case EventKind::kChange:
      if (skipping_) return absl::OkStatus();
      return OnChange(event.change, in_txn_);
    case EventKind::kCommit: {
      const bool skipped = skipping_;
      in_txn_ = skipping_ = false;
      return skipped ? absl::OkStatus() : OnCommit(event.txn);
    }
    case EventKind::kRollback: {
      const bool skipped = skipping_;
      in_txn_ = skipping_ = false;
      return skipped ? absl::OkStatus() : OnRollback();
    }
    case EventKind::kPosition:
      return OnPosition(event.position);
    case EventKind::kChunkDone:
      return OnChunkDone(event.chunk, event.change.table);
    case EventKind::kSnapshotDone:
      return OnSnapshotDone();
    case EventKind::kRawRows:
      return OnRawRows(event);
  }
  return absl::OkStatus();
}

}  // namespace pgflow
