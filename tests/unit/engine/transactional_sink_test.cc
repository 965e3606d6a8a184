#include "engine/transactional_sink.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

// Records the hooks it sees; "applies" up to `applied`.
class RecordingSink : public TransactionalSink {
 public:
  explicit RecordingSink(SourcePositions positions) : TransactionalSink(positions) {}
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }

  std::vector<std::string> seen;
  Lsn applied;

 protected:
  absl::Status OnBegin(const TxnInfo& txn) override {
    seen.push_back(absl::StrCat("begin ", txn.commit_lsn.value));
    return absl::OkStatus();
  }
  absl::Status OnChange(const Change& change, bool in_txn) override {
    seen.push_back(absl::StrCat(in_txn ? "change " : "row ", change.sequence));
    return absl::OkStatus();
  }
  absl::Status OnCommit(const TxnInfo& txn) override {
    seen.push_back(absl::StrCat("commit ", txn.end_lsn.value));
    applied = txn.end_lsn;
    return absl::OkStatus();
  }
  absl::Status OnRollback() override {
    seen.push_back("rollback");
    return absl::OkStatus();
  }
  absl::Status OnPosition(Lsn position) override {
    seen.push_back(absl::StrCat("position ", position.value));
    return absl::OkStatus();
  }
  absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr&) override {
    seen.push_back(absl::StrCat("chunk ", chunk));
    return absl::OkStatus();
  }
  absl::Status OnSnapshotDone() override {
    seen.push_back("snapshot done");
    return absl::OkStatus();
  }
  Lsn AppliedThrough() const override { return applied; }
};

std::vector<Event> Transaction(uint64_t commit, uint64_t end, int changes, bool cut_off = false) {
  std::vector<Event> events;
  Event begin;
  begin.kind = EventKind::kBegin;
  begin.txn.commit_lsn = Lsn(commit);
  events.push_back(begin);
  for (int i = 0; i < changes; ++i) {
    Event change;
    change.kind = EventKind::kChange;
    change.change.sequence = static_cast<uint64_t>(i);
    change.change.txn = begin.txn;
    events.push_back(change);
  }
  Event last;
  last.kind = cut_off ? EventKind::kRollback : EventKind::kCommit;
  last.txn.commit_lsn = Lsn(commit);
  last.txn.end_lsn = Lsn(end);
  events.push_back(last);
  return events;
}

void WriteAll(RecordingSink& sink, const std::vector<Event>& events) {
  for (const Event& e : events) ASSERT_TRUE(sink.Write(e).ok());
}

TEST(TransactionalSinkTest, EachKindOfEventReachesItsHook) {
  RecordingSink sink(SourcePositions::kWal);
  Event row;
  row.kind = EventKind::kChange;
  row.change.sequence = 7;
  WriteAll(sink, {row});
  Event chunk;
  chunk.kind = EventKind::kChunkDone;
  chunk.chunk = 1;
  Event done;
  done.kind = EventKind::kSnapshotDone;
  WriteAll(sink, {chunk, done});
  WriteAll(sink, Transaction(100, 110, 2));
  WriteAll(sink, Transaction(200, 210, 1, /*cut_off=*/true));
  Event position;
  position.kind = EventKind::kPosition;
  position.position = Lsn(300);
  WriteAll(sink, {position});
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"row 7", "chunk 1", "snapshot done", "begin 100",
                                                 "change 0", "change 1", "commit 110", "begin 200",
                                                 "change 0", "rollback", "position 300"}));
  Event raw;
  raw.kind = EventKind::kRawRows;
  EXPECT_FALSE(sink.Write(raw).ok());  // no raw COPY rows unless the sink takes them
}

TEST(TransactionalSinkTest, TransactionsAppliedBeforeAreSkippedWhole) {
  RecordingSink sink(SourcePositions::kWal);
  sink.applied = Lsn(150);                   // what the target stored before a restart
  WriteAll(sink, Transaction(100, 110, 2));  // below: applied before
  WriteAll(sink, Transaction(140, 150, 1));  // the last one applied
  WriteAll(sink, Transaction(120, 130, 1, /*cut_off=*/true));  // skipped, rollback too
  WriteAll(sink, Transaction(150, 160, 1));                    // from the applied end on: applied
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"begin 150", "change 0", "commit 160"}));
  EXPECT_EQ(sink.skipped_transactions(), 3u);
}

TEST(TransactionalSinkTest, PositionsOfTheSourcesOwnSkipNothing) {
  RecordingSink sink(SourcePositions::kSourceSequence);
  sink.applied = Lsn(150);
  WriteAll(sink, Transaction(100, 110, 1));
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"begin 100", "change 0", "commit 110"}));
  EXPECT_EQ(sink.skipped_transactions(), 0u);
}

}  // namespace
}  // namespace pgflow
