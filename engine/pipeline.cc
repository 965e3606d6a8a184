#include "engine/pipeline.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "engine/hold_gate.h"
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

// Events and bytes per table and operation, counted by one thread. The registry's cells are
// looked up once per table version (keyed by the schema's address, the schema held so the
// address is not reused) and updated once per batch, so the hot path adds to plain integers.
class TableOpCounters {
 public:
  TableOpCounters(MetricsRegistry* registry, std::string prefix, std::string help_subject,
                  MetricLabels base)
      : registry_(registry),
        events_name_(prefix + "_events_total"),
        bytes_name_(prefix + "_bytes_total"),
        events_help_(absl::StrCat("Change events ", help_subject, ", by table and operation")),
        bytes_help_(absl::StrCat("Approximate bytes of the change events ", help_subject,
                                 ", by table and operation")),
        base_(std::move(base)) {}

  void Count(const Event& event) {
    Op op;
    uint64_t n = 1;
    if (event.kind == EventKind::kChange) {
      op = event.change.op;
    } else if (event.kind == EventKind::kRawRows) {
      op = Op::kRead;
      n = event.rows;
    } else {
      return;
    }
    Entry& entry = EntryFor(event.change.table);
    Pending& pending = entry.ops[static_cast<size_t>(op)];
    if (pending.events == 0 && pending.bytes == 0) touched_.push_back(&pending);
    if (pending.events_cell == nullptr) {
      MetricLabels labels = base_;
      labels.emplace_back("table", entry.table);
      labels.emplace_back("op", OpName(op));
      pending.events_cell = registry_->GetCounter(events_name_, events_help_, labels);
      pending.bytes_cell = registry_->GetCounter(bytes_name_, bytes_help_, labels);
    }
    pending.events += n;
    pending.bytes += event.ApproximateBytes();
  }

  // Adds what was counted since the last call to the registry's cells.
  void Publish() {
    for (Pending* p : touched_) {
      p->events_cell->Add(p->events);
      p->bytes_cell->Add(p->bytes);
      p->events = p->bytes = 0;
    }
    touched_.clear();
  }

 private:
  static constexpr size_t kOps = static_cast<size_t>(Op::kMessage) + 1;
  static constexpr size_t kMaxEntries = 4096;  // table versions remembered before starting over
  struct Pending {
    Counter* events_cell = nullptr;
    Counter* bytes_cell = nullptr;
    uint64_t events = 0;
    uint64_t bytes = 0;
  };
  struct Entry {
    TableSchemaPtr hold;
    std::string table;
    std::array<Pending, kOps> ops;
  };

  Entry& EntryFor(const TableSchemaPtr& table) {
    auto it = entries_.find(table.get());
    if (it != entries_.end()) return *it->second;
    if (entries_.size() >= kMaxEntries) {
      Publish();
      entries_.clear();
    }
    auto entry = std::make_unique<Entry>();
    entry->hold = table;
    entry->table = table != nullptr ? table->QualifiedName() : "";
    return *entries_.emplace(table.get(), std::move(entry)).first->second;
  }

  MetricsRegistry* registry_;
  const std::string events_name_, bytes_name_, events_help_, bytes_help_;
  const MetricLabels base_;
  absl::flat_hash_map<const TableSchema*, std::unique_ptr<Entry>> entries_;
  std::vector<Pending*> touched_;
};

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

}  // namespace

Pipeline::SinkGauges Pipeline::SinkGaugesFor(MetricsRegistry* metrics, const MetricLabels& labels) {
  SinkGauges gauges;
  gauges.queue_bytes =
      metrics->GetGauge("pgflow_sink_queue_bytes", "Bytes of events queued for the sink", labels);
  gauges.lag_seconds = metrics->GetGauge(
      "pgflow_sink_lag_seconds",
      "Seconds from commit to durable in the sink: of the oldest transaction not yet durable, "
      "or of the last one made durable",
      labels);
  gauges.durable_lsn = metrics->GetGauge("pgflow_sink_durable_lsn",
                                         "The last source position the sink made durable", labels);
  return gauges;
}

void Pipeline::SinkGauges::Set(const SinkView& sink) const {
  queue_bytes->Set(sink.queue_bytes);
  lag_seconds->Set(sink.lag_seconds);
  durable_lsn->Set(sink.durable.value);
}

void SetSinkGauges(MetricsRegistry* metrics, const std::string& pipeline,
                   const std::vector<SinkView>& sinks) {
  for (const SinkView& sink : sinks) {
    Pipeline::SinkGaugesFor(metrics, {{"pipeline", pipeline}, {"sink", sink.name}}).Set(sink);
  }
}

// Hands each batch to every sink queue in turn, remembering how far it got when a queue is
// full so that a retried Emit resumes with the next queue instead of duplicating.
class Pipeline::FanOut : public Emitter {
 public:
  FanOut(std::vector<BoundedQueue<EventBatchPtr>*> queues, PipelineStats* stats,
         SnapshotView* snapshot, const std::vector<SinkSlot>* sinks, MetricsRegistry* metrics,
         const std::string& pipeline)
      : queues_(std::move(queues)),
        stats_(stats),
        snapshot_(snapshot),
        sinks_(sinks),
        counts_(metrics, "pgflow_source", "the source emitted", {{"pipeline", pipeline}}),
        transactions_(metrics->GetCounter("pgflow_source_transactions_total",
                                          "Transactions the source emitted",
                                          {{"pipeline", pipeline}})) {}

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
      counts_.Count(e);
    }
    counts_.Publish();
    transactions_->Add(commits);
    stats_->changes.fetch_add(changes, std::memory_order_relaxed);
    stats_->transactions.fetch_add(commits, std::memory_order_relaxed);
    stats_->bytes.fetch_add(batch->bytes, std::memory_order_relaxed);
    return Result::kOk;
  }

  void NoteServerWalEnd(Lsn wal_end) override {
    stats_->server_wal_end.store(wal_end.value, std::memory_order_relaxed);
  }

  void NoteBackfill(std::string what) override {
    absl::MutexLock lock(&snapshot_->mu);
    snapshot_->backfill = std::move(what);
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
  TableOpCounters counts_;
  Counter* transactions_;
  EventBatchPtr in_progress_;
  size_t next_queue_ = 0;
};

std::vector<SinkSlot> BuildSinks(const PipelineConfig& config) {
  std::vector<SinkSlot> sinks;
  for (const SinkConfig& sink : config.sinks) {
    sinks.push_back(
        SinkSlot{sink.name, sink.factory->Create(ContextFor(config, sink), sink.options),
                 sink.common.flush_interval, sink.common.ddl,
                 BuildTransforms(config.name, sink.common.transforms), sink.type});
  }
  return sinks;
}

std::unique_ptr<Source> BuildSource(const PipelineConfig& config) {
  return config.source.factory->Create(SourceContext{config.name, config.file},
                                       config.source.options);
}

Pipeline::Pipeline(PipelineRunOptions options, std::unique_ptr<Source> source,
                   std::vector<SinkSlot> sinks)
    : options_(std::move(options)), source_(std::move(source)), sinks_(std::move(sinks)) {
  if (options_.metrics == nullptr) own_metrics_ = std::make_unique<MetricsRegistry>();
  metrics_ = options_.metrics != nullptr ? options_.metrics : own_metrics_.get();
  for (size_t i = 0; i < sinks_.size(); ++i) {
    queues_.push_back(std::make_unique<BoundedQueue<EventBatchPtr>>(options_.queue_bytes));
    auto state = std::make_unique<SinkState>();
    const MetricLabels labels = {{"pipeline", options_.name}, {"sink", sinks_[i].name}};
    state->failures = metrics_->GetCounter(
        "pgflow_sink_failures_total",
        "Failures of the sink (each stops the attempt; `run` starts again after an outage)",
        labels);
    state->dead_lettered = metrics_->GetCounter(
        "pgflow_sink_dead_lettered_total",
        "Events the sink set aside instead of applying them (its dead-letter path)", labels);
    state->ddl_applied = metrics_->GetCounter("pgflow_sink_ddl_events_total",
                                              "Schema change (DDL) events the sink took", labels);
    state->flush_seconds = metrics_->GetHistogram(
        "pgflow_sink_flush_seconds", "Time the sink took to make its writes durable (Flush)",
        labels, LatencyBuckets());
    state->batch_events = metrics_->GetHistogram(
        "pgflow_sink_batch_events", "Events per batch handed to the sink", labels, SizeBuckets());
    state->gauges = SinkGaugesFor(metrics_, labels);
    // What the last attempt left not durable comes again: its age is this attempt's lag too.
    if (options_.status != nullptr) {
      state->progress.oldest_pending_us.store(options_.status->PendingSince(sinks_[i].name));
    }
    sink_states_.push_back(std::move(state));
  }
}

Pipeline::~Pipeline() = default;

void Pipeline::RecordError(absl::Status status) {
  if (options_.status != nullptr) options_.status->NoteError(std::string(status.message()));
  absl::MutexLock lock(&error_mu_);
  if (error_.ok()) error_ = std::move(status);
}

PipelineView Pipeline::View() {
  PipelineView view;
  const int64_t now = NowMicros();
  for (size_t i = 0; i < sinks_.size(); ++i) {
    const SinkState& state = *sink_states_[i];
    view.sinks.push_back(SinkView{sinks_[i].name, sinks_[i].type, queues_[i]->used_bytes(),
                                  Lsn(state.progress.durable.load(std::memory_order_relaxed)),
                                  state.progress.LagSeconds(now), state.failed.load(),
                                  state.progress.oldest_pending_us.load(std::memory_order_relaxed),
                                  sinks_[i].sink->Trouble()});
  }
  view.server_wal_end = Lsn(stats_.server_wal_end.load(std::memory_order_relaxed));
  view.changes = stats_.changes.load(std::memory_order_relaxed);
  view.transactions = stats_.transactions.load(std::memory_order_relaxed);
  {
    absl::MutexLock lock(&snapshot_.mu);
    view.snapshot_running = snapshot_.running;
    view.snapshot_tables = snapshot_.tables;
    view.backfill = snapshot_.backfill;
  }
  view.started = started();
  if (view.started) view.confirmed = tracker_->Confirmed();
  view.streaming = view.started && !view.snapshot_running &&
                   (view.server_wal_end.IsValid() || !options_.source_reports_wal_end);
  return view;
}

void Pipeline::CollectMetrics() {
  PipelineView view = View();
  const MetricLabels labels = {{"pipeline", options_.name}};
  for (size_t i = 0; i < view.sinks.size(); ++i) {
    SinkState& state = *sink_states_[i];
    state.gauges.Set(view.sinks[i]);
    sinks_[i].sink->CollectMetrics(metrics_, {{"pipeline", options_.name}, {"sink", sinks_[i].name}});
    // Only moved forward, so two collections at once count each event once.
    const uint64_t now = sinks_[i].sink->DeadLettered();
    uint64_t seen = state.dead_lettered_seen.load();
    while (now > seen && !state.dead_lettered_seen.compare_exchange_weak(seen, now)) {
    }
    if (now > seen) state.dead_lettered->Add(now - seen);
  }
  metrics_
      ->GetGauge("pgflow_source_wal_end_lsn",
                 "The server's WAL end as the source last heard it (a byte position)", labels)
      ->Set(view.server_wal_end.value);
  metrics_
      ->GetGauge("pgflow_confirmed_lsn",
                 "The position confirmed to the source: every sink holds everything before it",
                 labels)
      ->Set(view.confirmed.value);
  metrics_
      ->GetGauge("pgflow_unconfirmed_wal_bytes",
                 "Bytes of WAL between the confirmed position and the server's WAL end", labels)
      ->Set(view.server_wal_end > view.confirmed && view.confirmed.IsValid()
                ? view.server_wal_end.value - view.confirmed.value
                : 0);
  metrics_->GetGauge("pgflow_snapshot_running", "1 while a snapshot copies tables", labels)
      ->Set(view.snapshot_running ? 1 : 0);
  for (const TableProgress& t : view.snapshot_tables) {
    const MetricLabels table = {{"pipeline", options_.name}, {"table", t.name}};
    metrics_->GetGauge("pgflow_snapshot_rows", "Rows the snapshot copied", table)->Set(t.rows);
    metrics_
        ->GetGauge("pgflow_snapshot_bytes_done", "Heap bytes of the chunks the snapshot copied",
                   table)
        ->Set(t.bytes_done);
    metrics_
        ->GetGauge("pgflow_snapshot_bytes_total", "Heap bytes the snapshot plans to copy", table)
        ->Set(t.bytes_total);
    metrics_->GetGauge("pgflow_snapshot_chunks_done", "Snapshot chunks copied", table)
        ->Set(t.chunks_done);
    metrics_->GetGauge("pgflow_snapshot_chunks_total", "Snapshot chunks planned", table)
        ->Set(t.chunks_total);
  }
}

absl::Status Pipeline::Run(const StopSignal& requested) {
  // Stops for this run: the caller's (a signal) passed on by the reporter, or our own (a sink
  // failed, --until reached), which must not look to the caller like a signal.
  StopSignal stop;
  if (requested.requested()) stop.Request();
  SetLogComponent("source");
  // Seen by /status and /metrics while this attempt runs; both let go before Run returns.
  if (options_.status != nullptr) options_.status->Attach([this] { return View(); });
  const int collector = metrics_->AddCollector([this] { CollectMetrics(); });
  absl::Cleanup unobserved = [this, collector] {
    CollectMetrics();  // the attempt's last figures (dead letters) before it goes
    metrics_->RemoveCollector(collector);
    if (options_.status != nullptr) options_.status->Detach(View());
  };
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
  bool rows_after_ddl = false;
  for (const SinkSlot& slot : sinks_) {
    full_copy = full_copy || slot.sink->NeedsFullCopy();
    rows_after_ddl = rows_after_ddl || slot.sink->NeedsRowsAfterDdl();
  }
  if (rows_after_ddl) source_->CopyAgainAfterDdl();
  if (full_copy) {
    if (absl::Status s = source_->EnsureFullCopy(); !s.ok()) {
      close_opened();
      return s;
    }
  }
  tracker_ = std::make_unique<AckTracker>(sinks_.size(), *start);
  chunk_tracker_ = std::make_unique<ChunkTracker>(sinks_.size());
  for (auto& state : sink_states_) state->progress.durable.store(start->value);
  started_.store(true, std::memory_order_release);
  LogInfo("pipeline %s: running into %d sink(s), from position %s", options_.name, sinks_.size(),
          start->ToString());

  std::vector<std::thread> threads;
  for (size_t i = 0; i < sinks_.size(); ++i) {
    threads.emplace_back([this, i, &stop] {
      SetLogComponent(absl::StrCat("sink ", sinks_[i].name));
      RunSink(i, stop);
    });
  }
  StopSignal reporter_done;
  std::thread reporter([this, &reporter_done, &requested, &stop] {
    SetLogComponent("progress");
    ReportProgress(reporter_done, requested, stop);
  });

  std::vector<BoundedQueue<EventBatchPtr>*> queues;
  for (auto& q : queues_) queues.push_back(q.get());
  FanOut fan_out(std::move(queues), &stats_, &snapshot_, &sinks_, metrics_, options_.name);
  Emitter* emitter = &fan_out;
  std::optional<TransformingEmitter> transforming;
  if (!options_.transforms.empty()) {
    transforming.emplace(std::move(options_.transforms), &fan_out, [this, &stop](absl::Status s) {
      RecordError(absl::Status(s.code(), absl::StrCat("transforms: ", s.message())));
      stop.Request();
    });
    emitter = &*transforming;
  }
  // A hold (`pgflow verify --live`) stops what the source sends at a position, ahead of all.
  std::optional<HoldGate> gate;
  if (options_.status != nullptr) {
    gate.emplace(emitter, options_.status, [this] { return tracker_->Confirmed(); });
    emitter = &*gate;
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
  if (!error_.ok() && confirmed == *start && chunk_tracker_->Confirmed() == 0) {
    source_->ReleaseUnacknowledged();
  }
  if (error_.ok()) {
    LogInfo("pipeline %s: stopped after %d changes in %d transactions; confirmed %s", options_.name,
            stats_.changes.load(), stats_.transactions.load(), confirmed.ToString());
  }
  return error_;
}

// One sink's loop: pops batches, writes them, flushes every flush interval and reports what
// is durable (SinkProgress), until its queue is closed and drained.
class Pipeline::SinkRunner {
 public:
  SinkRunner(Pipeline& pipeline, size_t index, StopSignal& stop)
      : pipeline_(pipeline),
        slot_(pipeline.sinks_[index]),
        state_(*pipeline.sink_states_[index]),
        queue_(*pipeline.queues_[index]),
        stop_(stop),
        flush_interval_(absl::FromChrono(slot_.flush_interval)),
        counts_(pipeline.metrics_, "pgflow_sink", "the sink took",
                {{"pipeline", pipeline.options_.name}, {"sink", slot_.name}}),
        progress_(*slot_.sink, index, *pipeline.tracker_, *pipeline.chunk_tracker_,
                  state_.progress) {}

  void Run() {
    while (true) {
      absl::Duration wait = flush_interval_ - absl::FromChrono(Clock::now() - last_flush_);
      if (progress_.unconfirmed()) wait = std::min(wait, kDurablePoll);
      std::optional<EventBatchPtr> batch = queue_.Pop(std::max(wait, absl::Milliseconds(1)));
      if (batch.has_value()) {
        if (!Write(*std::move(batch))) return;
      } else if (progress_.unconfirmed()) {
        progress_.PollDurable();
      }
      const bool drained = queue_.closed_and_drained();
      if (drained || Clock::now() - last_flush_ >= slot_.flush_interval) {
        if (progress_.WantsFlush() && !Flush()) return;
        if (drained && !Settle()) return;
        last_flush_ = Clock::now();
      }
      if (drained) return;
    }
  }

 private:
  // Passes `batch` through the sink's transforms and writes it. False once the sink failed.
  bool Write(EventBatchPtr batch) {
    if (!slot_.transforms.empty()) {
      absl::StatusOr<EventBatchPtr> transformed = slot_.transforms.Apply(batch);
      if (!transformed.ok()) {
        Fail(absl::Status(transformed.status().code(),
                          absl::StrCat("transforms: ", transformed.status().message())));
        return false;
      }
      batch = *std::move(transformed);
    }
    state_.batch_events->Observe(batch->events.size());
    for (const Event& event : batch->events) {
      const bool ddl = event.kind == EventKind::kChange && event.change.ddl != nullptr;
      if (ddl && !slot_.ddl.Passes(event.change.ddl->object_type)) continue;
      progress_.BeforeWrite(event);
      if (absl::Status s = slot_.sink->Write(event); !s.ok()) {
        counts_.Publish();
        Fail(s);
        return false;
      }
      counts_.Count(event);
      if (ddl) state_.ddl_applied->Add();
      progress_.AfterWrite(event);
    }
    counts_.Publish();
    progress_.PollDurable();
    return true;
  }

  // Flushes the sink and reports what that made durable. False once the sink failed.
  bool Flush() {
    last_flush_ = Clock::now();
    absl::Status s = slot_.sink->Flush();
    state_.flush_seconds->Observe(
        std::chrono::duration<double>(Clock::now() - last_flush_).count());
    if (!s.ok()) {
      Fail(s);
      return false;
    }
    progress_.NoteFlushed();
    return true;
  }

  // At the end of the stream, an asynchronous sink gets a while to confirm what it was given,
  // so that a clean stop acknowledges everything; what it has not confirmed by then is simply
  // not acknowledged (and delivered again after a restart). False once the sink failed.
  bool Settle() {
    const Clock::time_point deadline = Clock::now() + kAsyncSettleTimeout;
    progress_.PollDurable();
    while (progress_.unconfirmed()) {
      if (Clock::now() >= deadline) {
        LogWarning("sink %s: deliveries up to %s still unconfirmed after %ds; not acknowledged",
                   slot_.name, progress_.written().ToString(),
                   std::chrono::duration_cast<std::chrono::seconds>(kAsyncSettleTimeout).count());
        break;
      }
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(kDurablePoll));
      if (!Flush()) return false;
    }
    return true;
  }

  void Fail(const absl::Status& s) {
    state_.failures->Add();
    state_.failed.store(true);
    pipeline_.RecordError(
        absl::Status(s.code(), absl::StrCat("sink ", slot_.name, ": ", s.message())));
    stop_.Request();
  }

  Pipeline& pipeline_;
  SinkSlot& slot_;
  SinkState& state_;
  BoundedQueue<EventBatchPtr>& queue_;
  StopSignal& stop_;
  const absl::Duration flush_interval_;
  TableOpCounters counts_;
  SinkProgress progress_;
  Clock::time_point last_flush_ = Clock::now();
};

void Pipeline::RunSink(size_t index, StopSignal& stop) { SinkRunner(*this, index, stop).Run(); }

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
  // JSON log lines are for machines: progress goes out as lines then, never drawn.
  const bool live = isatty(STDERR_FILENO) && !(stdout_taken && isatty(STDOUT_FILENO)) &&
                    GetLogFormat() == LogFormat::kText;
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
    // A handover (`pgflow cutover`): another pipeline takes over from this position.
    if (const Lsn handover = options_.status != nullptr ? options_.status->HandoverAt() : Lsn();
        handover.IsValid() && stats_.server_wal_end.load() != 0 &&
        tracker_->Confirmed() >= handover && !stop.requested()) {
      LogInfo("pipeline %s: confirmed through %s, handing over", options_.name,
              handover.ToString());
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
