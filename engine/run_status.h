#pragma once

// What a running pipeline tells its operators: the phase it is in, how its snapshot stands,
// its replication slot, each sink's lag and the last error. `pgflow run` keeps one RunStatus
// across every attempt of its pipeline (an attempt ends when a server is lost, and the next
// starts from the confirmed position); the admin server (engine/admin_server.h) renders it as
// /status and /readyz, and `pgflow status` reads that /status back.
//
// Thread-safe: the run loop and the pipeline write it, the admin server reads it.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "engine/lsn.h"
#include "engine/progress.h"

namespace pgflow {

// What the run loop is doing.
enum class RunPhase {
  kStarting,  // before an attempt has started streaming or copying
  kRunning,   // an attempt runs; PipelineView says whether it copies or streams
  kRetrying,  // an attempt failed on a server that is down; waiting to start the next
  kStopped,   // stopped cleanly
  kFailed,    // stopped on an error that a restart would not cure
};
const char* RunPhaseName(RunPhase phase);

// A replication slot as pg_replication_slots shows it (read by the source's monitor).
struct SlotState {
  bool exists = false;
  std::string name;
  bool active = false;
  std::string wal_status;                // reserved, extended, unreserved, lost (empty if unknown)
  Lsn restart_lsn;                       // invalid once the slot is lost
  Lsn confirmed_flush_lsn;               // what the pipeline confirmed
  Lsn server_wal;                        // the server's current WAL position
  int64_t retained_bytes = 0;            // server_wal - restart_lsn: WAL kept for the slot
  std::optional<int64_t> safe_wal_size;  // bytes that may still be written before it is lost
  int64_t max_retained_wal = 0;          // the pipeline's warning threshold (0: none)
  absl::Time read_at = absl::InfinitePast();

  bool lost() const { return exists && wal_status == "lost"; }
  nlohmann::json ToJson() const;
};

// One sink as the pipeline sees it.
struct SinkView {
  std::string name;
  std::string type;
  uint64_t queue_bytes = 0;  // batches waiting for the sink
  Lsn durable;               // the last position the sink made durable
  // Seconds from commit to durable: of the oldest transaction written to the sink and not yet
  // durable, or (when none is pending) of the last one made durable.
  double lag_seconds = 0;
  bool failed = false;
  // Commit time (µs since the epoch) of the oldest transaction written and not yet durable;
  // 0 when none is. Kept after the attempt ends, so the lag goes on growing through an outage.
  int64_t oldest_pending_us = 0;
  std::string trouble;  // Sink::Trouble(): what it is retrying, if anything
};

// A live attempt of the pipeline.
struct PipelineView {
  bool started = false;           // sinks open, source prepared
  bool snapshot_running = false;  // a snapshot (initial, resumed or backfill) is copying
  bool streaming = false;         // past the snapshot, taking the source's changes
  std::vector<TableProgress> snapshot_tables;
  // A backfill copying tables beside the stream ("backfill 3: public.logs"); empty when none.
  std::string backfill;
  Lsn server_wal_end;  // as the server last reported it (invalid before streaming)
  Lsn confirmed;       // the position confirmed to the source
  uint64_t changes = 0;
  uint64_t transactions = 0;
  std::vector<SinkView> sinks;
};

// A hold (POST /hold, `pgflow verify --live`): the pipeline hands its sinks every transaction
// that commits before `at`, and none after, until released or `until`.
enum class HoldState {
  kNone,
  kWaiting,  // asked for; the pipeline has not reached `at` yet
  kHolding,  // everything before `at` is durable in every sink, nothing after it was handed on
  kMissed,   // the pipeline had already handed on something past `at`: ask again, later
  kExpired,  // held until `until`, then let go on by itself
};
const char* HoldStateName(HoldState state);
struct Hold {
  Lsn at;
  HoldState state = HoldState::kNone;
  absl::Time until = absl::InfinitePast();

  // Asked for or in place: the gate keeps back what comes at or past `at`.
  bool active() const { return state == HoldState::kWaiting || state == HoldState::kHolding; }
};

class RunStatus {
 public:
  explicit RunStatus(std::string pipeline) : pipeline_(std::move(pipeline)) {}

  const std::string& pipeline() const { return pipeline_; }

  void SetPhase(RunPhase phase, std::string reason = "");
  // Records the latest error (already free of secrets: errors scrub connection strings).
  void NoteError(std::string message);
  void NoteRestart();
  void SetSlot(SlotState slot);
  std::optional<SlotState> slot() const;

  // The live attempt's state, provided by the pipeline while it runs (engine/pipeline.cc
  // attaches and detaches itself; Detach waits for a call in progress to end). `last` is the
  // attempt's final state: its sinks are shown, their lag still growing, until the next.
  void Attach(std::function<PipelineView()> view);
  void Detach(PipelineView last);
  // The sinks of the last attempt while none runs (lag measured now); empty while one runs.
  std::vector<SinkView> SinksBetweenAttempts() const;
  // The oldest commit time the last attempt left not durable in sink `sink` (0: none), which
  // the next attempt starts from: the source sends that transaction again.
  int64_t PendingSince(const std::string& sink) const;

  // Whether the pipeline is ready: an attempt streams or copies and no sink has failed. When
  // not, `reason` says why.
  bool Ready(std::string* reason) const;

  // The whole status as /status serves it.
  nlohmann::json ToJson() const;
  // Each sink's lag in seconds, by name, as ToJson gives it (the console's charts).
  std::vector<std::pair<std::string, double>> SinkLags() const;

  // A handover (POST /handover, sent by `pgflow cutover` once the application is on the
  // target): the run ends once everything up to `at` is confirmed, and `pgflow run` goes on
  // with the pipeline file that took over (cli/pipeline_file.h). FailedPrecondition when the
  // pipeline does not stream, or already hands over at another position.
  absl::Status RequestHandover(Lsn at);
  // The position asked for by RequestHandover; invalid when none was.
  Lsn HandoverAt() const { return Lsn(handover_at_.load(std::memory_order_acquire)); }

  // A hold at `at` for at most `longest` (POST /hold): FailedPrecondition when the pipeline
  // does not stream, or holds already at a later position. A hold in place at an earlier one
  // moves to `at` (engine/hold_gate.h).
  absl::Status RequestHold(Lsn at, absl::Duration longest);
  // Lets the pipeline go on (POST /release); nothing when no hold is in place.
  void ReleaseHold();
  Hold hold() const;
  // The pipeline's side (engine/hold_gate.h): whether a hold is asked for or in place, without
  // a lock; and its new state.
  bool HoldAsked() const { return hold_asked_.load(std::memory_order_acquire); }
  // Moves the hold at `at` from state `from` to `to`: false (nothing changed) when the hold is
  // no longer that one in that state (released, moved, or asked again meanwhile).
  bool SetHoldState(Lsn at, HoldState from, HoldState to);

 private:
  std::vector<SinkView> SinksBetweenAttemptsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK while an attempt streams; otherwise why a handover or a hold cannot be taken.
  absl::Status StreamingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string pipeline_;
  const absl::Time started_at_ = absl::Now();
  mutable absl::Mutex mu_;
  RunPhase phase_ ABSL_GUARDED_BY(mu_) = RunPhase::kStarting;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  // The last kRecentErrors errors, oldest first, with when they came (the console's list).
  static constexpr size_t kRecentErrors = 20;
  std::deque<std::pair<absl::Time, std::string>> recent_errors_ ABSL_GUARDED_BY(mu_);
  absl::Time last_error_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t restarts_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<SlotState> slot_ ABSL_GUARDED_BY(mu_);
  std::function<PipelineView()> view_ ABSL_GUARDED_BY(mu_);
  std::optional<PipelineView> last_view_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> handover_at_{0};  // read by the pipeline's progress loop, unlocked
  Hold hold_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> hold_asked_{false};  // hold_ is kWaiting or kHolding
};

}  // namespace pgflow
