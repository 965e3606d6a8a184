// The gate a hold closes between the source and the sinks (engine/hold_gate.h): transactions
// committed before the hold's position go on, the first at or past it waits until released;
// a hold asked too late is missed, one that moves further lets through what it kept back.

#include "engine/hold_gate.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

// Keeps the commit LSNs of the transactions it was handed, in order.
class Recorder : public Emitter {
 public:
  Result Emit(const EventBatchPtr& batch, absl::Duration) override {
    for (const Event& e : batch->events) {
      if (e.kind == EventKind::kCommit) commits.push_back(e.txn.commit_lsn.value);
    }
    return Result::kOk;
  }
  std::vector<uint64_t> commits;
};

// A batch of whole transactions (begin, change, commit) committed at `commits`.
EventBatchPtr Transactions(const std::vector<uint64_t>& commits) {
  auto batch = std::make_shared<EventBatch>();
  for (uint64_t c : commits) {
    TxnInfo txn;
    txn.commit_lsn = Lsn(c);
    txn.end_lsn = Lsn(c + 8);
    // As the postgres source makes them: a change carries its transaction in itself.
    for (EventKind kind : {EventKind::kBegin, EventKind::kChange, EventKind::kCommit}) {
      Event e;
      e.kind = kind;
      (kind == EventKind::kChange ? e.change.txn : e.txn) = txn;
      batch->events.push_back(e);
    }
  }
  return batch;
}

class HoldGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    status_.SetPhase(RunPhase::kRunning);
    status_.Attach([] {
      PipelineView view;
      view.started = true;
      view.streaming = true;
      return view;
    });
  }
  void TearDown() override { status_.Detach(PipelineView()); }

  RunStatus status_{"shop"};
  Recorder sinks_;
  Lsn confirmed_;
  HoldGate gate_{&sinks_, &status_, [this] { return confirmed_; }};
  const absl::Duration kWait = absl::Milliseconds(5);
};

TEST_F(HoldGateTest, PassesEverythingWithoutAHold) {
  EXPECT_EQ(gate_.Emit(Transactions({100, 200}), kWait), Emitter::Result::kOk);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200}));
}

TEST_F(HoldGateTest, HoldsAtThePositionUntilReleased) {
  ASSERT_TRUE(status_.RequestHold(Lsn(300), absl::Minutes(1)).ok());
  const EventBatchPtr batch = Transactions({100, 200, 300, 400});
  // What commits before 300 goes on; the rest waits (the source answers its server between).
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200}));
  EXPECT_EQ(status_.hold().state, HoldState::kWaiting);  // 200 not durable yet
  confirmed_ = Lsn(208);
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  EXPECT_EQ(status_.hold().state, HoldState::kHolding);
  EXPECT_EQ(sinks_.commits.size(), 2u);
  status_.ReleaseHold();
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kOk);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200, 300, 400}));
}

TEST_F(HoldGateTest, AHoldBehindWhatWentOnIsMissed) {
  EXPECT_EQ(gate_.Emit(Transactions({100, 200}), kWait), Emitter::Result::kOk);
  ASSERT_TRUE(status_.RequestHold(Lsn(150), absl::Minutes(1)).ok());
  EXPECT_EQ(gate_.Emit(Transactions({250}), kWait), Emitter::Result::kOk);
  EXPECT_EQ(status_.hold().state, HoldState::kMissed);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200, 250}));
}

TEST_F(HoldGateTest, AHoldMovedFurtherLetsOnWhatItKeptBack) {
  ASSERT_TRUE(status_.RequestHold(Lsn(150), absl::Minutes(1)).ok());
  const EventBatchPtr batch = Transactions({100, 200, 300, 400});
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100}));
  EXPECT_FALSE(status_.RequestHold(Lsn(120), absl::Minutes(1)).ok());  // only further
  ASSERT_TRUE(status_.RequestHold(Lsn(350), absl::Minutes(1)).ok());
  confirmed_ = Lsn(308);
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200, 300}));
  EXPECT_EQ(status_.hold().state, HoldState::kHolding);
  status_.ReleaseHold();
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kOk);
  EXPECT_EQ(sinks_.commits.back(), 400u);
}

TEST_F(HoldGateTest, AHoldIsGatedAtAChangeTooAndAnAnswerForAnotherHoldIsDropped) {
  ASSERT_TRUE(status_.RequestHold(Lsn(200), absl::Minutes(1)).ok());
  // A batch that starts mid-transaction: its first event is a change of the held one.
  auto batch = std::make_shared<EventBatch>();
  const EventBatchPtr whole = Transactions({200});
  batch->events.assign(whole->events.begin() + 1, whole->events.end());
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  EXPECT_TRUE(sinks_.commits.empty());
  // The hold moved meanwhile: what the gate saw of the old one changes nothing.
  ASSERT_TRUE(status_.RequestHold(Lsn(300), absl::Minutes(1)).ok());
  EXPECT_FALSE(status_.SetHoldState(Lsn(200), HoldState::kWaiting, HoldState::kHolding));
  EXPECT_EQ(status_.hold().state, HoldState::kWaiting);
  EXPECT_EQ(status_.hold().at, Lsn(300));
  // A new attempt of the pipeline does not know what the last one handed on.
  status_.Attach([] {
    PipelineView view;
    view.started = true;
    view.streaming = true;
    return view;
  });
  EXPECT_EQ(status_.hold().state, HoldState::kMissed);
}

TEST_F(HoldGateTest, AHoldRunsOutByItself) {
  ASSERT_TRUE(status_.RequestHold(Lsn(150), absl::Milliseconds(20)).ok());
  const EventBatchPtr batch = Transactions({100, 200});
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kTimeout);
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(gate_.Emit(batch, kWait), Emitter::Result::kOk);
  EXPECT_EQ(status_.hold().state, HoldState::kExpired);
  EXPECT_EQ(sinks_.commits, (std::vector<uint64_t>{100, 200}));
}

}  // namespace
}  // namespace pgflow
