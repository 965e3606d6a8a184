#include "engine/pipeline.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <deque>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
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

namespace {}  // namespace

double Pipeline::SinkState::LagSeconds(int64_t now_us) const {
  int64_t oldest = oldest_pending_us.load(std::memory_order_relaxed);
  if (oldest != 0) return std::max<int64_t>(0, now_us - oldest) / 1e6;
  return last_lag_seconds.load(std::memory_order_relaxed);
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
      state->oldest_pending_us.store(options_.status->PendingSince(sinks_[i].name));
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
                                  Lsn(state.durable.load(std::memory_order_relaxed)),
                                  state.LagSeconds(now), state.failed.load(),
                                  state.oldest_pending_us.load(std::memory_order_relaxed),
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
  for (const SinkSlot& slot : sinks_) full_copy = full_copy || slot.sink->NeedsFullCopy();
  if (full_copy) {
    if (absl::Status s = source_->EnsureFullCopy(); !s.ok()) {
      close_opened();
      return s;
    }
  }
  tracker_ = std::make_unique<AckTracker>(sinks_.size(), *start);
  chunk_tracker_ = std::make_unique<ChunkTracker>(sinks_.size());
  for (auto& state : sink_states_) state->durable.store(start->value);
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

void Pipeline::RunSink(size_t index, StopSignal& stop) {
  SinkSlot& slot = sinks_[index];
  SinkState& state = *sink_states_[index];
  TableOpCounters counts(metrics_, "pgflow_sink", "the sink took",
                         {{"pipeline", options_.name}, {"sink", slot.name}});
  // Transactions written and not yet durable, (commit LSN, commit time), oldest first, for
  // the sink's lag. Bounded: past kMaxPending the newest entry is overwritten, so the oldest
  // (what the lag is measured from) is always kept.
  constexpr size_t kMaxPending = 4096;
  std::deque<std::pair<uint64_t, int64_t>> pending;
  if (int64_t since = state.oldest_pending_us.load(); since != 0) {
    // Left by the last attempt: gone once anything past the resume point is durable.
    pending.emplace_back(tracker_->Confirmed().value + 1, since);
  }
  BoundedQueue<EventBatchPtr>& queue = *queues_[index];
  const absl::Duration flush_interval = absl::FromChrono(slot.flush_interval);
  Lsn written;                  // last acknowledgeable position written to the sink
  Lsn reported;                 // last position reported durable
  uint64_t written_chunk = 0;   // last snapshot chunk written whole
  uint64_t reported_chunk = 0;  // last snapshot chunk reported durable
  Clock::time_point last_flush = Clock::now();

  auto fail = [&](const absl::Status& s) {
    state.failures->Add();
    state.failed.store(true);
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
      state.durable.store(durable.value, std::memory_order_relaxed);
      int64_t made_durable = 0;
      // At or below: a source whose commit and acknowledgement positions are one (kafka).
      while (!pending.empty() && pending.front().first <= durable.value) {
        made_durable = pending.front().second;
        pending.pop_front();
      }
      if (made_durable != 0) {
        state.last_lag_seconds.store(std::max<int64_t>(0, NowMicros() - made_durable) / 1e6,
                                     std::memory_order_relaxed);
        state.oldest_pending_us.store(pending.empty() ? 0 : pending.front().second,
                                      std::memory_order_relaxed);
      }
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
    absl::Status s = slot.sink->Flush();
    state.flush_seconds->Observe(std::chrono::duration<double>(Clock::now() - last_flush).count());
    if (!s.ok()) {
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
      state.batch_events->Observe((*batch)->events.size());
      for (const Event& event : (*batch)->events) {
        const bool ddl = event.kind == EventKind::kChange && event.change.ddl != nullptr;
        if (ddl && !slot.ddl.Passes(event.change.ddl->object_type)) continue;
        if (event.kind == EventKind::kBegin && event.txn.commit_time_us != 0) {
          // Pending from the moment it is handed over: a sink that fails on it holds it not.
          if (pending.empty()) {
            state.oldest_pending_us.store(event.txn.commit_time_us, std::memory_order_relaxed);
          }
          if (pending.size() < kMaxPending) {
            pending.emplace_back(event.txn.commit_lsn.value, event.txn.commit_time_us);
          } else {
            pending.back() = {event.txn.commit_lsn.value, event.txn.commit_time_us};
          }
        }
        if (absl::Status s = slot.sink->Write(event); !s.ok()) {
          counts.Publish();
          fail(s);
          return;
        }
        counts.Count(event);
        if (ddl) state.ddl_applied->Add();
        if (Lsn p = event.AckPosition(); p.IsValid()) written = p;
        if (event.kind == EventKind::kChunkDone) written_chunk = event.chunk;
      }
      counts.Publish();
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
