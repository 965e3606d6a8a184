#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/ack_tracker.h"
#include "engine/bounded_queue.h"
#include "engine/config.h"
#include "engine/metrics.h"
#include "engine/run_status.h"
#include "engine/sink.h"
#include "engine/sink_progress.h"
#include "engine/source.h"
#include "engine/stop_signal.h"
#include "engine/transform.h"

namespace pgflow {

// Counters the source and the sink runners update and the progress reporter reads.
struct PipelineStats {
  std::atomic<uint64_t> changes{0};         // change events emitted by the source
  std::atomic<uint64_t> transactions{0};    // commits emitted
  std::atomic<uint64_t> bytes{0};           // approximate bytes of events emitted
  std::atomic<uint64_t> server_wal_end{0};  // latest WAL end the server reported
};

struct PipelineRunOptions {
  std::string name;
  size_t queue_bytes = 64u << 20;  // bound of each sink's queue
  // How often progress is printed to stderr as a plain line (0 = never). On a terminal a live
  // display is redrawn every second instead, unless a sink writes to that terminal too.
  std::chrono::milliseconds progress_interval{10000};
  // Stop (drain, flush, acknowledge, return OK) once everything up to this position is
  // confirmed. Invalid (0/0) = run until stopped.
  Lsn stop_at;
  // The pipeline's transforms, run on every event before the fan-out (engine/transform.h).
  TransformChain transforms;
  // Where the pipeline counts what it does (kept across attempts by `pgflow run`, so counters
  // never go backwards); null: a registry of the pipeline's own, read by nobody.
  MetricsRegistry* metrics = nullptr;
  // Told of the attempt's live state and its errors while it runs; may be null.
  RunStatus* status = nullptr;
  // Whether the source reports the server's WAL end (Emitter::NoteServerWalEnd), which then
  // marks the start of streaming; otherwise the pipeline streams once past any snapshot.
  bool source_reports_wal_end = true;
};

struct SinkSlot {
  std::string name;
  std::unique_ptr<Sink> sink;
  std::chrono::milliseconds flush_interval{200};
  // Which schema changes reach the sink (the others are dropped before it sees them).
  DdlPolicy ddl;
  // The sink's own transforms, run on its thread after the pipeline's.
  TransformChain transforms;
  std::string type;  // the sink's type key ("postgres", "kafka", ...), for /status
};

// The sinks and the source of `config`, built by their registered factories. Each run of a
// pipeline builds them anew (a restart after a lost connection too); no I/O happens here.
std::vector<SinkSlot> BuildSinks(const PipelineConfig& config);
std::unique_ptr<Source> BuildSource(const PipelineConfig& config);

// Sets the per-sink gauges of `sinks` (the last attempt's, between attempts): what
// Pipeline's collector sets while an attempt runs.
void SetSinkGauges(MetricsRegistry* metrics, const std::string& pipeline,
                   const std::vector<SinkView>& sinks);

// Runs one source into N sinks:
//
//   source ──► [transforms] ──► fan-out ──► queue ──► [transforms] ──► sink A (own thread) ─┐
//                                       └─► queue ──► [transforms] ──► sink B (own thread) ─┤
//   server ◄── confirmed = min over sinks of durable ◄──────────────────────────────────────┘
//
// Each sink has a queue bounded in bytes; a full queue blocks the source. Each sink's runner
// writes events in order, flushes every flush_interval, and then reports the last
// acknowledgeable position it wrote as durable.
class Pipeline {
 public:
  Pipeline(PipelineRunOptions options, std::unique_ptr<Source> source, std::vector<SinkSlot> sinks);
  ~Pipeline();

  // Runs until `stop` is requested (then drains every queue, flushes every sink, acknowledges
  // and returns OK) or until a fatal error in the source or any sink (returns it; nothing
  // beyond what every sink made durable has been acknowledged).
  absl::Status Run(const StopSignal& stop);

  PipelineStats& stats() { return stats_; }
  // True once Run got past opening the sinks and preparing the source: a failure after that is
  // a failure of a running pipeline (worth a restart if transient), not of its set-up.
  bool started() const { return started_.load(std::memory_order_acquire); }
  // The attempt's live state, for /status. Thread-safe.
  PipelineView View();

  // A sink's gauges that View() feeds.
  struct SinkGauges {
    Gauge* queue_bytes = nullptr;
    Gauge* lag_seconds = nullptr;
    Gauge* durable_lsn = nullptr;
    void Set(const SinkView& sink) const;
  };
  static SinkGauges SinkGaugesFor(MetricsRegistry* metrics, const MetricLabels& labels);

 private:
  class FanOut;
  // What each sink's runner publishes for View() and the metrics, and its metric cells.
  struct SinkState {
    SinkProgress::Published progress;
    std::atomic<bool> failed{false};
    Counter* failures = nullptr;
    Counter* dead_lettered = nullptr;
    // What the sink's DeadLettered() said at the last collection (it counts from 0 in each
    // attempt; the counter adds the difference).
    std::atomic<uint64_t> dead_lettered_seen{0};
    Counter* ddl_applied = nullptr;
    Histogram* flush_seconds = nullptr;
    Histogram* batch_events = nullptr;
    SinkGauges gauges;
  };
  // Sets the gauges read at scrape time (registered as a collector while Run runs).
  void CollectMetrics();
  // The latest snapshot progress a source reported.
  struct SnapshotView {
    absl::Mutex mu;
    std::vector<TableProgress> tables ABSL_GUARDED_BY(mu);
    bool running ABSL_GUARDED_BY(mu) = false;
    bool reported ABSL_GUARDED_BY(mu) = false;  // running was true at least once
    std::string backfill ABSL_GUARDED_BY(mu);      // Emitter::NoteBackfill's
  };
  // Lines describing the snapshot (overall first, then one per table when `per_table`).
  std::vector<std::string> SnapshotLines(double elapsed_seconds, bool per_table);
  // Runs sink `index` on the calling thread: takes its queue's batches until the queue is
  // closed and drained, writes, flushes and reports durability; a failure stops `stop`.
  class SinkRunner;
  void RunSink(size_t index, StopSignal& stop);
  void ReportProgress(const StopSignal& done, const StopSignal& requested, StopSignal& stop);
  void RecordError(absl::Status status);

  PipelineRunOptions options_;
  std::unique_ptr<Source> source_;
  std::vector<SinkSlot> sinks_;
  std::vector<std::unique_ptr<BoundedQueue<EventBatchPtr>>> queues_;
  std::unique_ptr<AckTracker> tracker_;
  std::unique_ptr<ChunkTracker> chunk_tracker_;
  PipelineStats stats_;
  SnapshotView snapshot_;
  std::atomic<bool> started_{false};
  std::unique_ptr<MetricsRegistry> own_metrics_;  // when options_.metrics is null
  MetricsRegistry* metrics_;
  std::vector<std::unique_ptr<SinkState>> sink_states_;

  absl::Mutex error_mu_;
  absl::Status error_ ABSL_GUARDED_BY(error_mu_);
};

}  // namespace pgflow
