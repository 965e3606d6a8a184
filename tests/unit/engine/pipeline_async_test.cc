// Asynchronous sinks (DurableThrough / DurableChunkThrough): nothing, snapshot chunks
// included, is acknowledged before the sink says it is durable, and a clean stop waits for
// the sink to confirm its last writes.

#include <atomic>
#include <thread>
#include <vector>

#include "engine/pipeline.h"
#include "gtest/gtest.h"
#include "tests/unit/support/wait_until.h"

namespace pgflow {
namespace {

using test_support::WaitUntil;

// Emits three snapshot chunks, then one transaction, then waits until `release` (watching
// what is confirmed) and the stop.
class ChunkSource : public Source {
 public:
  absl::StatusOr<Lsn> Prepare() override { return Lsn(100); }

  absl::Status Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) override {
    auto batch = std::make_shared<EventBatch>();
    for (uint64_t chunk = 1; chunk <= 3; ++chunk) {
      Event row;
      row.change.op = Op::kRead;
      batch->events.push_back(row);
      Event done;
      done.kind = EventKind::kChunkDone;
      done.chunk = chunk;
      batch->events.push_back(done);
    }
    TxnInfo txn{7, Lsn(1000), Lsn(1010), 0};
    batch->events.push_back(Event{EventKind::kBegin, txn, {}, {}});
    Event change;
    change.change.txn = txn;
    batch->events.push_back(change);
    batch->events.push_back(Event{EventKind::kCommit, txn, {}, {}});
    batch->bytes = 100;
    EventBatchPtr shared = batch;
    while (emitter.Emit(shared, absl::Milliseconds(10)) != Emitter::Result::kOk) {
      if (stop.requested()) return absl::OkStatus();
    }
    emitted = true;
    WaitUntil(
        [&] {
          chunks_seen.store(acks.chunks.Confirmed());
          wal_seen.store(acks.wal.Confirmed().value);
          return stop.requested();
        },
        test_support::kForever);
    return absl::OkStatus();
  }

  absl::Status Finish(Acknowledgements acks) override {
    final_chunks = acks.chunks.Confirmed();
    final_wal = acks.wal.Confirmed();
    return absl::OkStatus();
  }

  std::atomic<bool> emitted{false};
  std::atomic<uint64_t> chunks_seen{0};
  std::atomic<uint64_t> wal_seen{0};
  uint64_t final_chunks = 0;
  Lsn final_wal;
};

// Says durable only what the test allows, like a producer awaiting delivery reports.
class AsyncSink : public Sink {
 public:
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Write(const Event& event) override {
    if (event.kind == EventKind::kChunkDone) written_chunk = event.chunk;
    if (event.kind == EventKind::kCommit) written_lsn = event.txn.end_lsn.value;
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    flushes.fetch_add(1);
    // Deliveries complete once the test opens the gate; then everything written is durable.
    if (gate.load()) {
      durable_chunk.store(written_chunk.load());
      durable_lsn.store(written_lsn.load());
    }
    return absl::OkStatus();
  }
  std::optional<Lsn> DurableThrough() const override { return Lsn(durable_lsn.load()); }
  uint64_t DurableChunkThrough() const override { return durable_chunk.load(); }
  absl::Status Close() override { return absl::OkStatus(); }

  std::atomic<bool> gate{false};
  std::atomic<uint64_t> written_chunk{0};
  std::atomic<uint64_t> written_lsn{0};
  std::atomic<uint64_t> durable_chunk{0};
  std::atomic<uint64_t> durable_lsn{0};
  std::atomic<int> flushes{0};
};

TEST(PipelineAsyncTest, ChunksAndPositionsWaitForTheAsynchronousSink) {
  auto source = std::make_unique<ChunkSource>();
  auto sink = std::make_unique<AsyncSink>();
  ChunkSource* src = source.get();
  AsyncSink* async = sink.get();
  std::vector<SinkSlot> sinks;
  sinks.push_back(
      SinkSlot{"async", std::move(sink), std::chrono::milliseconds(10), {}, {}, "test"});
  PipelineRunOptions options;
  options.name = "t";
  options.progress_interval = std::chrono::milliseconds(0);
  Pipeline pipeline(std::move(options), std::move(source), std::move(sinks));
  StopSignal stop;
  std::thread runner([&] { EXPECT_TRUE(pipeline.Run(stop).ok()); });

  // Every chunk and the commit are written and flushed many times over, but not durable.
  EXPECT_TRUE(WaitUntil([&] {
    return src->emitted.load() && async->written_lsn.load() != 0 && async->flushes.load() >= 10;
  }));
  EXPECT_EQ(async->written_chunk.load(), 3u);
  EXPECT_EQ(src->chunks_seen.load(), 0u);
  EXPECT_EQ(src->wal_seen.load(), 100u);

  async->gate = true;
  EXPECT_TRUE(
      WaitUntil([&] { return src->chunks_seen.load() == 3 && src->wal_seen.load() == 1010; }));
  stop.Request();
  runner.join();
  EXPECT_EQ(src->final_chunks, 3u);
  EXPECT_EQ(src->final_wal, Lsn(1010));
}

TEST(PipelineAsyncTest, ACleanStopWaitsForTheLastDeliveries) {
  auto source = std::make_unique<ChunkSource>();
  auto sink = std::make_unique<AsyncSink>();
  ChunkSource* src = source.get();
  AsyncSink* async = sink.get();
  std::vector<SinkSlot> sinks;
  // A flush interval far longer than the test: only the end of the stream flushes.
  sinks.push_back(
      SinkSlot{"async", std::move(sink), std::chrono::milliseconds(3600000), {}, {}, "test"});
  PipelineRunOptions options;
  options.name = "t";
  options.progress_interval = std::chrono::milliseconds(0);
  Pipeline pipeline(std::move(options), std::move(source), std::move(sinks));
  StopSignal stop;
  std::thread runner([&] { EXPECT_TRUE(pipeline.Run(stop).ok()); });
  EXPECT_TRUE(WaitUntil([&] { return src->emitted.load(); }));
  stop.Request();
  // The deliveries come back only once the runner, at the end of the stream, flushed and is
  // waiting for them (a second flush is its polling): still acknowledged.
  EXPECT_TRUE(WaitUntil([&] { return async->flushes.load() >= 2; }));
  async->gate = true;
  runner.join();
  EXPECT_EQ(src->final_chunks, 3u);
  EXPECT_EQ(src->final_wal, Lsn(1010));
}

}  // namespace
}  // namespace pgflow
