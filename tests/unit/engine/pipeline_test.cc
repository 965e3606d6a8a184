// The acknowledgement rule, with a scripted source and sinks whose durability the test controls.

#include "engine/pipeline.h"

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/unit/support/wait_until.h"

namespace pgflow {
namespace {

using test_support::WaitUntil;

// Emits `transactions` transactions of `changes` inserts each, then waits for the stop, and
// records every position it was told was confirmed, beside what `durable` said each sink had
// made durable just after.
class ScriptedSource : public Source {
 public:
  ScriptedSource(int transactions, int changes) : transactions_(transactions), changes_(changes) {}

  absl::StatusOr<Lsn> Prepare() override { return Lsn(100); }

  absl::Status Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) override {
    uint64_t lsn = 1000;
    for (int t = 0; t < transactions_ && !stop.requested(); ++t) {
      auto batch = std::make_shared<EventBatch>();
      TxnInfo txn{static_cast<uint32_t>(t + 1), Lsn(lsn), Lsn(lsn + 10), 0};
      batch->events.push_back(Event{EventKind::kBegin, txn, {}, {}});
      for (int c = 0; c < changes_; ++c) {
        Event e;
        e.change.op = Op::kInsert;
        e.change.txn = txn;
        e.change.sequence = c;
        batch->events.push_back(std::move(e));
      }
      batch->events.push_back(Event{EventKind::kCommit, txn, {}, {}});
      batch->bytes = 100;
      EventBatchPtr shared = batch;
      while (true) {
        auto r = emitter.Emit(shared, absl::Milliseconds(10));
        const Lsn confirmed = acks.wal.Confirmed();
        confirmed_.push_back(confirmed);
        if (durable) sinks_durable_.push_back(durable());
        if (r == Emitter::Result::kOk) break;
        if (stop.requested()) return absl::OkStatus();
      }
      last_end_ = lsn + 10;
      lsn += 100;
    }
    done_ = true;
    WaitUntil([&] { return stop.requested(); }, test_support::kForever);
    return absl::OkStatus();
  }

  absl::Status Finish(Acknowledgements acks) override {
    final_ = acks.wal.Confirmed();
    return absl::OkStatus();
  }

  std::function<std::pair<Lsn, Lsn>()> durable;
  std::atomic<bool> done_{false};
  std::vector<Lsn> confirmed_;
  std::vector<std::pair<Lsn, Lsn>> sinks_durable_;  // durable() right after each of confirmed_
  Lsn final_;
  uint64_t last_end_ = 0;

 private:
  int transactions_;
  int changes_;
};

// Counts what it is given; Flush fails while `fail_flush` is set.
class CountingSink : public Sink {
 public:
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Write(const Event& event) override {
    if (event.kind == EventKind::kChange) changes.fetch_add(1);
    if (event.kind == EventKind::kCommit) last_commit_written = event.txn.end_lsn.value;
    if (block_writes) WaitUntil([&] { return !block_writes.load(); }, test_support::kForever);
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    if (fail_flush) return absl::UnavailableError("disk on fire");
    flushed_through = last_commit_written.load();
    return absl::OkStatus();
  }
  absl::Status Close() override { return absl::OkStatus(); }

  std::atomic<int> changes{0};
  std::atomic<uint64_t> last_commit_written{0};
  std::atomic<uint64_t> flushed_through{0};
  std::atomic<bool> fail_flush{false};
  std::atomic<bool> block_writes{false};
};

TEST(PipelineTest, DeliversEverythingToEverySinkAndAcknowledgesOnlyWhatAllHold) {
  auto source = std::make_unique<ScriptedSource>(200, 10);
  ScriptedSource* src = source.get();
  auto fast = std::make_unique<CountingSink>();
  auto slow = std::make_unique<CountingSink>();
  CountingSink* fast_ptr = fast.get();
  CountingSink* slow_ptr = slow.get();
  slow->block_writes = true;  // the slow sink holds everything back at first
  // What each sink holds: flushed_through only grows, so reading it after a confirmation gives
  // an upper bound of what that sink had made durable when the confirmation was made.
  src->durable = [fast_ptr, slow_ptr] {
    return std::make_pair(Lsn(fast_ptr->flushed_through.load()),
                          Lsn(slow_ptr->flushed_through.load()));
  };
  std::vector<SinkSlot> sinks;
  sinks.push_back({"fast", std::move(fast), std::chrono::milliseconds(1), {}, {}, "test"});
  sinks.push_back({"slow", std::move(slow), std::chrono::milliseconds(1), {}, {}, "test"});
  PipelineRunOptions options;
  options.name = "test";
  options.queue_bytes = 1000;  // 10 batches: the source must block on the slow sink
  options.progress_interval = std::chrono::milliseconds(0);
  Pipeline pipeline(std::move(options), std::move(source), std::move(sinks));
  StopSignal stop;
  std::thread runner([&] { EXPECT_TRUE(pipeline.Run(stop).ok()); });

  // A fixed interval on purpose: what is tested is that the source stays blocked meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(src->done_.load()) << "a full queue must block the source";
  EXPECT_LE(fast_ptr->changes.load(), 12 * 10 * 10);
  slow_ptr->block_writes = false;
  EXPECT_TRUE(WaitUntil([&] { return src->done_.load(); }));
  stop.Request();
  runner.join();

  EXPECT_EQ(fast_ptr->changes.load(), 2000);
  EXPECT_EQ(slow_ptr->changes.load(), 2000);
  // Every confirmation the source saw was durable in both sinks at that time, the slow one
  // included (a tracker that followed the fast sink would confirm beyond it): the start point,
  // or a commit end at or below what both sinks had flushed.
  ASSERT_EQ(src->confirmed_.size(), src->sinks_durable_.size());
  bool fast_was_ahead = false;  // the case a wrong tracker would get wrong did occur
  for (size_t i = 0; i < src->confirmed_.size(); ++i) {
    const Lsn c = src->confirmed_[i];
    const auto [fast_durable, slow_durable] = src->sinks_durable_[i];
    EXPECT_TRUE(c == Lsn(100) || c.value % 100 == 10) << c.ToString();
    EXPECT_TRUE(c == Lsn(100) || c <= slow_durable)
        << "confirmed " << c.ToString() << " beyond the slow sink's " << slow_durable.ToString();
    EXPECT_TRUE(c == Lsn(100) || c <= fast_durable)
        << "confirmed " << c.ToString() << " beyond the fast sink's " << fast_durable.ToString();
    fast_was_ahead = fast_was_ahead || fast_durable > slow_durable;
  }
  EXPECT_TRUE(fast_was_ahead);
  EXPECT_EQ(src->final_, Lsn(src->last_end_));
}

TEST(PipelineTest, AFailingSinkStopsThePipelineWithoutAcknowledging) {
  auto source = std::make_unique<ScriptedSource>(50, 2);
  ScriptedSource* src = source.get();
  auto sink = std::make_unique<CountingSink>();
  sink->fail_flush = true;
  std::vector<SinkSlot> sinks;
  sinks.push_back({"broken", std::move(sink), std::chrono::milliseconds(1), {}, {}, "test"});
  PipelineRunOptions options;
  options.progress_interval = std::chrono::milliseconds(0);
  Pipeline pipeline(std::move(options), std::move(source), std::move(sinks));
  StopSignal stop;
  absl::Status status = pipeline.Run(stop);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find("sink broken: disk on fire"), absl::string_view::npos);
  EXPECT_EQ(src->final_, Lsn(100));
}

}  // namespace
}  // namespace pgflow
