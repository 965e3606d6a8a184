// What a sink's runner reports durable, and the lag it publishes, for synchronous and
// asynchronous sinks, driven event by event without a pipeline or threads.

#include "engine/sink_progress.h"

#include <optional>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

// A sink whose durability the test sets: synchronous while `async_durable` is nullopt.
class FakeSink : public Sink {
 public:
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Write(const Event&) override { return absl::OkStatus(); }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }
  std::optional<Lsn> DurableThrough() const override { return async_durable; }
  uint64_t DurableChunkThrough() const override { return async_chunk; }

  std::optional<Lsn> async_durable;
  uint64_t async_chunk = 0;
};

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

Event Begin(uint64_t commit_lsn, int64_t commit_time_us) {
  return Event{
      EventKind::kBegin, TxnInfo{1, Lsn(commit_lsn), Lsn(commit_lsn + 8), commit_time_us}, {}, {}};
}
Event Commit(uint64_t commit_lsn) {
  return Event{EventKind::kCommit, TxnInfo{1, Lsn(commit_lsn), Lsn(commit_lsn + 8), 0}, {}, {}};
}
Event ChunkDone(uint64_t chunk) {
  Event e;
  e.kind = EventKind::kChunkDone;
  e.chunk = chunk;
  return e;
}

// One sink (index 1 of two; the other sink reports everything, so the trackers' minimum is
// this sink's) and what it reports to.
struct Harness {
  Harness() {
    wal.Report(0, Lsn(~uint64_t{0}));
    chunks.Report(0, ~uint64_t{0});
  }
  // Hands `event` over and has the sink take it.
  void Write(SinkProgress& progress, const Event& event) {
    progress.BeforeWrite(event);
    progress.AfterWrite(event);
  }

  FakeSink sink;
  AckTracker wal{2, Lsn(100)};
  ChunkTracker chunks{2};
  SinkProgress::Published published;
};

TEST(SinkProgressTest, ASynchronousSinkIsDurableThroughWhatItWasGivenOnceFlushed) {
  Harness h;
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  EXPECT_FALSE(progress.WantsFlush());
  h.Write(progress, Begin(1000, 0));
  h.Write(progress, Commit(1000));
  h.Write(progress, ChunkDone(2));
  EXPECT_EQ(progress.written(), Lsn(1008));
  EXPECT_TRUE(progress.WantsFlush());

  progress.PollDurable();  // nothing is durable before the flush
  EXPECT_EQ(h.wal.Confirmed(), Lsn(100));
  EXPECT_EQ(h.chunks.Confirmed(), 0u);
  EXPECT_FALSE(progress.unconfirmed());

  progress.NoteFlushed();
  EXPECT_EQ(h.wal.Confirmed(), Lsn(1008));
  EXPECT_EQ(h.chunks.Confirmed(), 2u);
  EXPECT_EQ(h.published.durable.load(), 1008u);
  EXPECT_FALSE(progress.unconfirmed());
  EXPECT_FALSE(progress.WantsFlush());
}

TEST(SinkProgressTest, AnAsynchronousSinkIsDurableThroughWhatItSays) {
  Harness h;
  h.sink.async_durable = Lsn();
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  EXPECT_TRUE(progress.WantsFlush()) << "an asynchronous sink may hold writes unseen";
  h.Write(progress, Commit(1000));
  h.Write(progress, ChunkDone(1));
  h.Write(progress, Commit(2000));

  progress.NoteFlushed();  // flushed, but not confirmed: nothing reported
  EXPECT_EQ(h.wal.Confirmed(), Lsn(100));
  EXPECT_TRUE(progress.unconfirmed());

  h.sink.async_durable = Lsn(1008);
  progress.PollDurable();
  EXPECT_EQ(h.wal.Confirmed(), Lsn(1008));
  EXPECT_EQ(h.chunks.Confirmed(), 0u) << "the chunk is the sink's to confirm";
  EXPECT_TRUE(progress.unconfirmed());

  h.sink.async_chunk = 1;
  h.sink.async_durable = Lsn(2008);
  progress.PollDurable();
  EXPECT_EQ(h.wal.Confirmed(), Lsn(2008));
  EXPECT_EQ(h.chunks.Confirmed(), 1u);
  EXPECT_EQ(h.published.durable.load(), 2008u);
  EXPECT_FALSE(progress.unconfirmed());
  EXPECT_TRUE(progress.WantsFlush());
}

TEST(SinkProgressTest, ReportsOnlyMoveForward) {
  Harness h;
  h.sink.async_durable = Lsn(5000);
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  progress.PollDurable();
  EXPECT_EQ(h.published.durable.load(), 5000u);
  h.sink.async_durable = Lsn(3000);
  progress.PollDurable();
  EXPECT_EQ(h.published.durable.load(), 5000u);
  EXPECT_EQ(h.wal.Confirmed(), Lsn(5000));
}

TEST(SinkProgressTest, TheLagRunsFromTheOldestTransactionNotYetDurable) {
  Harness h;
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  const int64_t now = NowMicros();
  const int64_t first = now - 5'000'000;
  const int64_t second = now - 2'000'000;
  h.Write(progress, Begin(1000, first));
  h.Write(progress, Commit(1000));
  h.Write(progress, Begin(2000, second));  // handed over, not yet taken whole
  EXPECT_EQ(h.published.oldest_pending_us.load(), first);
  EXPECT_NEAR(h.published.LagSeconds(now), 5.0, 1e-6);

  progress.NoteFlushed();  // durable through the first commit only
  EXPECT_EQ(h.published.oldest_pending_us.load(), second);
  EXPECT_NEAR(h.published.LagSeconds(now), 2.0, 1e-6);
  EXPECT_GE(h.published.last_lag_seconds.load(), 5.0);

  h.Write(progress, Commit(2000));
  progress.NoteFlushed();
  EXPECT_EQ(h.published.oldest_pending_us.load(), 0);
  const double last = h.published.last_lag_seconds.load();
  EXPECT_GE(last, 2.0);
  EXPECT_LT(last, 60.0);
  EXPECT_EQ(h.published.LagSeconds(now + 10'000'000), last) << "no transaction is pending";
}

TEST(SinkProgressTest, APendingTransactionLeftByTheLastAttemptCountsUntilThePastResumePoint) {
  Harness h;
  const int64_t since = NowMicros() - 3'000'000;
  h.published.oldest_pending_us.store(since);
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  h.Write(progress, Event{EventKind::kPosition, {}, {}, {}});  // nothing acknowledgeable
  progress.NoteFlushed();
  EXPECT_EQ(h.published.oldest_pending_us.load(), since);

  h.Write(progress, Commit(100));  // ends at 108, past the resume point 100
  progress.NoteFlushed();
  EXPECT_EQ(h.published.oldest_pending_us.load(), 0);
  EXPECT_GE(h.published.last_lag_seconds.load(), 3.0);
}

TEST(SinkProgressTest, PastItsBoundThePendingListKeepsTheOldest) {
  Harness h;
  SinkProgress progress(h.sink, 1, h.wal, h.chunks, h.published);
  const int64_t t0 = NowMicros() - 100'000'000;
  const size_t n = SinkProgress::kMaxPending + 10;
  for (size_t i = 0; i < n; ++i) h.Write(progress, Begin(1000 + 100 * i, t0 + i));
  EXPECT_EQ(h.published.oldest_pending_us.load(), t0);

  h.Write(progress, Commit(1000));  // the first transaction is durable: the second is oldest
  progress.NoteFlushed();
  EXPECT_EQ(h.published.oldest_pending_us.load(), t0 + 1);

  // The entries past the bound were folded into the last one: the newest transaction.
  h.Write(progress, Commit(1000 + 100 * (SinkProgress::kMaxPending - 2)));
  progress.NoteFlushed();
  EXPECT_EQ(h.published.oldest_pending_us.load(), static_cast<int64_t>(t0 + n - 1));
}

}  // namespace
}  // namespace pgflow
