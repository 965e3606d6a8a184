#include "engine/pipeline.h"

#include <unistd.h>

#include <cstdio>
#include <thread>

#include "absl/strings/str_format.h"
#include "engine/log.h"
#include "engine/progress.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

// How long, once the stream ends, an asynchronous sink may take to confirm its last writes.
constexpr std::chrono::seconds kAsyncSettleTimeout(30);
// How often an asynchronous sink's durability is read while it has writes not yet durable:
// the end of a snapshot waits for its last chunk, and a flush interval (200 ms) is too long a
// wait for a few atomic reads.
constexpr absl::Duration kDurablePoll = absl::Milliseconds(5);

}  // namespace

// Hands each batch to every sink queue in turn, remembering how far it got when a queue is
// full so that a retried Emit resumes with the next queue instead of duplicating.
class Pipeline::FanOut : public Emitter {
 public:
  FanOut(std::vector<BoundedQueue<EventBatchPtr>*> queues, PipelineStats* stats,
         SnapshotView* snapshot, const std::vector<SinkSlot>* sinks)
      : queues_(std::move(queues)), stats_(stats), snapshot_(snapshot), sinks_(sinks) {}

  bool WantsRawCopy(const TableSchema& table) const override {
    for (const SinkSlot& slot : *sinks_) {
      if (!slot.sink->AcceptsRawCopy() || slot.transforms.Touches(table)) return false;
    }
    return !sinks_->empty();
  }

  Result Emit(const EventBatchPtr& batch, absl::Duration timeout) override {
    if (batch != in_progress_) {
      in_progress_ = batch;  // held, so its address cannot be reused while in progress
      next_queue_ = 0;
    }
    while (next_queue_ < queues_.size()) {
      EventBatchPtr copy = batch;
      switch (queues_[next_queue_]->Push(&copy, batch->bytes, timeout)) {
        case BoundedQueue<EventBatchPtr>::PushResult::kOk:
          ++next_queue_;
          break;
        case BoundedQueue<EventBatchPtr>::PushResult::kTimeout:
          return Result::kTimeout;
        case BoundedQueue<EventBatchPtr>::PushResult::kClosed:
          return Result::kClosed;
      }
    }
    in_progress_.reset();
    uint64_t changes = 0;
    uint64_t commits = 0;
    for (const Event& e : batch->events) {
      changes += e.kind == EventKind::kChange ? 1 : e.kind == EventKind::kRawRows ? e.rows : 0;
      commits += e.kind == EventKind::kCommit;
    }
    stats_->changes.fetch_add(changes, std::memory_order_relaxed);
    stats_->transactions.fetch_add(commits, std::memory_order_relaxed);
    stats_->bytes.fetch_add(batch->bytes, std::memory_order_relaxed);
    return Result::kOk;
  }

  void NoteServerWalEnd(Lsn wal_end) override {
    stats_->server_wal_end.store(wal_end.value, std::memory_order_relaxed);
  }

  void NoteSnapshot(std::vector<TableProgress> tables, bool running) override {
    absl::MutexLock lock(&snapshot_->mu);
    snapshot_->tables = std::move(tables);
    snapshot_->running = running;
    snapshot_->reported = snapshot_->reported || running;
  }

 private:
  std::vector<BoundedQueue<EventBatchPtr>*> queues_;
  PipelineStats* stats_;
  SnapshotView* snapshot_;
  const std::vector<SinkSlot>* sinks_;
  EventBatchPtr in_progress_;
  size_t next_queue_ = 0;
};

std::vector<SinkSlot> BuildSinks(const PipelineConfig& config) {
  std::vector<SinkSlot> sinks;
  for (const SinkConfig& sink : config.sinks) {
    sinks.push_back(SinkSlot{sink.name,
                             sink.factory->Create(ContextFor(config, sink), sink.options),
                             sink.common.flush_interval, sink.common.ddl, TransformChain()});
  }
  return sinks;
}

std::unique_ptr<Source> BuildSource(const PipelineConfig& config) {
  return config.source.factory->Create(SourceContext{config.name}, config.source.options);
}

Pipeline::Pipeline(PipelineRunOptions options, std::unique_ptr<Source> source,
                   std::vector<SinkSlot> sinks)
    : options_(std::move(options)), source_(std::move(source)), sinks_(std::move(sinks)) {
  for (size_t i = 0; i < sinks_.size(); ++i) {
    queues_.push_back(std::make_unique<BoundedQueue<EventBatchPtr>>(options_.queue_bytes));
  }
}

Pipeline::~Pipeline() = default;

void Pipeline::RecordError(absl::Status status) {
  absl::MutexLock lock(&error_mu_);
  if (error_.ok()) error_ = std::move(status);
}

absl::Status Pipeline::Run(const StopSignal& requested) {
  // Stops for this run: the caller's (a signal) passed on by the reporter, or our own (a sink
  // failed, --until reached), which must not look to the caller like a signal.
  StopSignal stop;
  if (requested.requested()) stop.Request();
  size_t opened = 0;
  auto close_opened = [&] {
    for (size_t i = 0; i < opened; ++i) sinks_[i].sink->Close().IgnoreError();
  };
  for (SinkSlot& slot : sinks_) {
    if (absl::Status s = slot.sink->Open(); !s.ok()) {
      close_opened();
      return absl::Status(s.code(), absl::StrCat("sink ", slot.name, ": ", s.message()));
    }
    ++opened;
  }
  absl::StatusOr<Lsn> start = source_->Prepare();
  if (!start.ok()) {
    close_opened();
    return start.status();
  }
  bool full_copy = false;
  for (const SinkSlot& slot : sinks_) full_copy = full_copy || slot.sink->NeedsFullCopy();
  if (full_copy) {
    if (absl::Status s = source_->EnsureFullCopy(); !s.ok()) {
      close_opened();
      return s;
    }
  }
  started_ = true;
  tracker_ = std::make_unique<AckTracker>(sinks_.size(), *start);
  chunk_tracker_ = std::make_unique<ChunkTracker>(sinks_.size());
  LogInfo("pipeline %s: running into %d sink(s), from position %s", options_.name, sinks_.size(),
          start->ToString());

  std::vector<std::thread> threads;
  for (size_t i = 0; i < sinks_.size(); ++i) {
    threads.emplace_back([this, i, &stop] { RunSink(i, stop); });
  }
  StopSignal reporter_done;
  std::thread reporter([this, &reporter_done, &requested, &stop] {
    ReportProgress(reporter_done, requested, stop);
  });

  std::vector<BoundedQueue<EventBatchPtr>*> queues;
  for (auto& q : queues_) queues.push_back(q.get());
  FanOut fan_out(std::move(queues), &stats_, &snapshot_, &sinks_);
  Emitter* emitter = &fan_out;
  std::optional<TransformingEmitter> transforming;
  if (!options_.transforms.empty()) {
    transforming.emplace(std::move(options_.transforms), &fan_out, [this, &stop](absl::Status s) {
      RecordError(absl::Status(s.code(), absl::StrCat("transforms: ", s.message())));
      stop.Request();
    });
    emitter = &*transforming;
  }
  absl::Status source_status =
      source_->Stream(*emitter, Acknowledgements{*tracker_, *chunk_tracker_}, stop);
  if (!source_status.ok()) RecordError(source_status);

  // Drain: the sinks finish what is queued, flush and report what is durable.
  for (auto& q : queues_) q->Close();
  for (std::thread& t : threads) t.join();
  reporter_done.Request();
  reporter.join();

  Lsn confirmed = tracker_->Confirmed();
  absl::Status finish = source_->Finish(Acknowledgements{*tracker_, *chunk_tracker_});
  for (SinkSlot& slot : sinks_) {
    if (absl::Status s = slot.sink->Close(); !s.ok()) {
      RecordError(absl::Status(s.code(), absl::StrCat("sink ", slot.name, ": ", s.message())));
    }
  }
  absl::MutexLock lock(&error_mu_);
  if (error_.ok() && !finish.ok()) error_ = finish;
  if (error_.ok()) {
    LogInfo("pipeline %s: stopped after %d changes in %d transactions; confirmed %s", options_.name,
            stats_.changes.load(), stats_.transactions.load(), confirmed.ToString());
  }
  return error_;
}

void Pipeline::RunSink(size_t index, StopSignal& stop) {
  SinkSlot& slot = sinks_[index];
  BoundedQueue<EventBatchPtr>& queue = *queues_[index];
  const absl::Duration flush_interval = absl::FromChrono(slot.flush_interval);
  Lsn written;                  // last acknowledgeable position written to the sink
  Lsn reported;                 // last position reported durable
  uint64_t written_chunk = 0;   // last snapshot chunk written whole
  uint64_t reported_chunk = 0;  // last snapshot chunk reported durable
  Clock::time_point last_flush = Clock::now();

  auto fail = [&](const absl::Status& s) {
    RecordError(absl::Status(s.code(), absl::StrCat("sink ", slot.name, ": ", s.message())));
    stop.Request();
  };
  // Reports how far the sink's writes are durable: an asynchronous sink says it itself, chunks
  // included, at any time; a synchronous one holds what it was given once `flushed`. True while
  // an asynchronous sink holds writes not yet durable.
  auto report = [&](bool flushed) -> bool {
    std::optional<Lsn> async_durable = slot.sink->DurableThrough();
    if (!async_durable.has_value() && !flushed) return false;
    Lsn durable = async_durable.value_or(written);
    if (durable > reported) {
      tracker_->Report(index, durable);
      reported = durable;
    }
    uint64_t durable_chunk =
        async_durable.has_value() ? slot.sink->DurableChunkThrough() : written_chunk;
    if (durable_chunk > reported_chunk) {
      chunk_tracker_->Report(index, durable_chunk);
      reported_chunk = durable_chunk;
    }
    return async_durable.has_value() && (reported < written || reported_chunk < written_chunk);
  };
  bool unconfirmed = false;  // what report() last said
  auto flush = [&]() -> bool {
    last_flush = Clock::now();
    if (absl::Status s = slot.sink->Flush(); !s.ok()) {
      fail(s);
      return false;
    }
    unconfirmed = report(/*flushed=*/true);
    return true;
  };
  // At the end of the stream, an asynchronous sink gets a while to confirm what it was given,
  // so that a clean stop acknowledges everything; what it has not confirmed by then is simply
  // not acknowledged (and delivered again after a restart).
  auto settle = [&]() -> bool {
    const Clock::time_point deadline = Clock::now() + kAsyncSettleTimeout;
    unconfirmed = report(/*flushed=*/false);
    while (unconfirmed) {
      if (Clock::now() >= deadline) {
        LogWarning("sink %s: deliveries up to %s still unconfirmed after %ds; not acknowledged",
                   slot.name, written.ToString(),
                   std::chrono::duration_cast<std::chrono::seconds>(kAsyncSettleTimeout).count());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (!flush()) return false;
    }
    return true;
  };

  while (true) {
    auto elapsed = Clock::now() - last_flush;
    absl::Duration wait = flush_interval - absl::FromChrono(elapsed);
    if (unconfirmed) wait = std::min(wait, kDurablePoll);
    std::optional<EventBatchPtr> batch = queue.Pop(std::max(wait, absl::Milliseconds(1)));
    if (unconfirmed && !batch.has_value()) unconfirmed = report(/*flushed=*/false);
    if (batch.has_value() && !slot.transforms.empty()) {
      absl::StatusOr<EventBatchPtr> transformed = slot.transforms.Apply(*batch);
      if (!transformed.ok()) {
        fail(absl::Status(transformed.status().code(),
                          absl::StrCat("transforms: ", transformed.status().message())));
        return;
      }
      *batch = *std::move(transformed);
    }
    if (batch.has_value()) {
      for (const Event& event : (*batch)->events) {
        if (event.kind == EventKind::kChange && event.change.ddl != nullptr &&
            !slot.ddl.Passes(event.change.ddl->object_type)) {
          continue;
        }
        if (absl::Status s = slot.sink->Write(event); !s.ok()) {
          fail(s);
          return;
        }
        if (Lsn p = event.AckPosition(); p.IsValid()) written = p;
        if (event.kind == EventKind::kChunkDone) written_chunk = event.chunk;
      }
      unconfirmed = report(/*flushed=*/false);
    }
    bool drained = queue.closed_and_drained();
    if (drained || Clock::now() - last_flush >= slot.flush_interval) {
      bool pending = written > reported || written_chunk > reported_chunk ||
                     slot.sink->DurableThrough().has_value();
      if (pending && !flush()) return;
      if (drained && !settle()) return;
      last_flush = Clock::now();
    }
    if (drained) return;
  }
}

std::vector<std::string> Pipeline::SnapshotLines(double elapsed, bool per_table) {
  absl::MutexLock lock(&snapshot_.mu);
  std::vector<std::string> lines;
  if (!snapshot_.running) return lines;
  TableProgress all;
  for (const TableProgress& t : snapshot_.tables) {
    all.rows += t.rows;
    all.bytes_done += t.bytes_done;
    all.bytes_total += t.bytes_total;
    all.chunks_done += t.chunks_done;
    all.chunks_total += t.chunks_total;
  }
  auto describe = [elapsed](const TableProgress& t) {
    double rate = elapsed > 0 ? t.bytes_done / elapsed : 0;
    double fraction = t.bytes_total > 0    ? static_cast<double>(t.bytes_done) / t.bytes_total
                      : t.chunks_total > 0 ? static_cast<double>(t.chunks_done) / t.chunks_total
                                           : 1;
    std::string eta =
        t.chunks_done == t.chunks_total           ? "done"
        : t.chunks_done == 0 && t.bytes_done == 0 ? "queued"
        : rate > 0 && t.bytes_total > t.bytes_done
            ? absl::StrCat("ETA ", HumanDuration((t.bytes_total - t.bytes_done) / rate))
            : "ETA ?";
    return absl::StrFormat("%s rows, %s of %s (%.0f%%), %s/s, %d/%d chunks, %s", HumanCount(t.rows),
                           HumanBytes(t.bytes_done), HumanBytes(t.bytes_total),
                           100 * std::min(fraction, 1.0), HumanBytes(rate), t.chunks_done,
                           t.chunks_total, eta);
  };
  lines.push_back(absl::StrCat(options_.name, ": snapshot: ", describe(all)));
  if (per_table) {
    for (const TableProgress& t : snapshot_.tables) {
      lines.push_back(absl::StrCat("  ", t.name, ": ", describe(t)));
    }
  }
  return lines;
}

void Pipeline::ReportProgress(const StopSignal& done, const StopSignal& requested,
                              StopSignal& stop) {
  const bool report = options_.progress_interval.count() > 0;
  bool stdout_taken = false;
  for (const SinkSlot& slot : sinks_) stdout_taken = stdout_taken || slot.sink->WritesToStdout();
  const bool live = isatty(STDERR_FILENO) && !(stdout_taken && isatty(STDOUT_FILENO));
  const auto interval = live ? std::chrono::milliseconds(1000) : options_.progress_interval;
  const auto started = Clock::now();
  auto last = started;
  uint64_t last_changes = 0;
  uint64_t last_confirmed = tracker_->Confirmed().value;
  bool drew = false;
  auto next = last + interval;
  while (!done.requested()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (requested.requested() && !stop.requested()) stop.Request();
    // Only once streaming (the server has reported its position): during a snapshot the
    // confirmed position is the slot's start, which says nothing about the copy.
    if (options_.stop_at.IsValid() && stats_.server_wal_end.load() != 0 &&
        tracker_->Confirmed() >= options_.stop_at && !stop.requested()) {
      LogInfo("pipeline %s: confirmed through %s, stopping as asked", options_.name,
              options_.stop_at.ToString());
      stop.Request();
    }
    auto now = Clock::now();
    if (!report || now < next) continue;
    next = now + interval;
    double dt = std::chrono::duration<double>(now - last).count();
    uint64_t changes = stats_.changes.load();
    Lsn confirmed = tracker_->Confirmed();
    uint64_t wal_end = stats_.server_wal_end.load();
    double rate = (changes - last_changes) / dt;
    double wal_rate = (confirmed.value - last_confirmed) / dt;
    uint64_t lag = wal_end > confirmed.value ? wal_end - confirmed.value : 0;
    std::string eta = lag == 0 ? "caught up"
                      : wal_rate > 0
                          ? absl::StrCat("catching up, ETA ", HumanDuration(lag / wal_rate))
                          : "behind";
    std::vector<std::string> lines =
        SnapshotLines(std::chrono::duration<double>(now - started).count(), live);
    if (lines.empty()) {
      lines.push_back(absl::StrFormat(
          "%s: %s changes, %s txns, %s; %.0f changes/s; confirmed %s, lag %s (%s)", options_.name,
          HumanCount(changes), HumanCount(stats_.transactions.load()),
          HumanBytes(stats_.bytes.load()), rate, confirmed.ToString(), HumanBytes(lag), eta));
    }
    if (live) {
      DrawLive(lines);
      drew = true;
    } else {
      for (const std::string& line : lines) LogInfo("%s", line);
    }
    last = now;
    last_changes = changes;
    last_confirmed = confirmed.value;
  }
  if (drew) DrawLive({});
}

}  // namespace pgflow
