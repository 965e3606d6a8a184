#include "engine/run_status.h"

#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

nlohmann::json LsnJson(Lsn lsn) {
  return lsn.IsValid() ? nlohmann::json(lsn.ToString()) : nlohmann::json(nullptr);
}

std::string TimeJson(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

}  // namespace

const char* RunPhaseName(RunPhase phase) {
  switch (phase) {
    case RunPhase::kStarting:
      return "starting";
    case RunPhase::kRunning:
      return "running";
    case RunPhase::kRetrying:
      return "retrying";
    case RunPhase::kStopped:
      return "stopped";
    case RunPhase::kFailed:
      return "failed";
  }
  return "?";
}

nlohmann::json SlotState::ToJson() const {
  nlohmann::json j;
  j["name"] = name;
  j["exists"] = exists;
  if (!exists) return j;
  j["active"] = active;
  j["wal_status"] = wal_status;
  j["restart_lsn"] = LsnJson(restart_lsn);
  j["confirmed_flush_lsn"] = LsnJson(confirmed_flush_lsn);
  j["server_wal"] = LsnJson(server_wal);
  j["retained_wal_bytes"] = retained_bytes;
  j["safe_wal_size"] = safe_wal_size.has_value() ? nlohmann::json(*safe_wal_size) : nullptr;
  j["max_retained_wal"] = max_retained_wal;
  j["read_at"] = TimeJson(read_at);
  return j;
}

void RunStatus::SetPhase(RunPhase phase, std::string reason) {
  absl::MutexLock lock(&mu_);
  phase_ = phase;
  reason_ = std::move(reason);
}

void RunStatus::NoteError(std::string message) {
  absl::MutexLock lock(&mu_);
  last_error_ = std::move(message);
  last_error_at_ = absl::Now();
  recent_errors_.emplace_back(last_error_at_, last_error_);
  if (recent_errors_.size() > kRecentErrors) recent_errors_.pop_front();
}

void RunStatus::NoteRestart() {
  absl::MutexLock lock(&mu_);
  ++restarts_;
}

void RunStatus::SetSlot(SlotState slot) {
  absl::MutexLock lock(&mu_);
  slot_ = std::move(slot);
}

std::optional<SlotState> RunStatus::slot() const {
  absl::MutexLock lock(&mu_);
  return slot_;
}

void RunStatus::Attach(std::function<PipelineView()> view) {
  absl::MutexLock lock(&mu_);
  view_ = std::move(view);
  // A new attempt does not know what the last handed on: a hold it had not reached may have
  // been passed already.
  if (hold_.state == HoldState::kWaiting) {
    hold_.state = HoldState::kMissed;
    hold_asked_.store(false, std::memory_order_release);
  }
}

void RunStatus::Detach(PipelineView last) {
  absl::MutexLock lock(&mu_);
  view_ = nullptr;
  last_view_ = std::move(last);
}

std::vector<SinkView> RunStatus::SinksBetweenAttempts() const {
  absl::MutexLock lock(&mu_);
  return SinksBetweenAttemptsLocked();
}

int64_t RunStatus::PendingSince(const std::string& sink) const {
  absl::MutexLock lock(&mu_);
  if (!last_view_.has_value()) return 0;
  for (const SinkView& s : last_view_->sinks) {
    if (s.name == sink) return s.oldest_pending_us;
  }
  return 0;
}

std::vector<SinkView> RunStatus::SinksBetweenAttemptsLocked() const {
  if (view_ != nullptr || !last_view_.has_value()) return {};
  std::vector<SinkView> sinks = last_view_->sinks;
  const int64_t now = absl::ToUnixMicros(absl::Now());
  for (SinkView& sink : sinks) {
    sink.queue_bytes = 0;  // the attempt's queues are gone; the source sends it all again
    if (sink.oldest_pending_us != 0) {
      sink.lag_seconds = std::max<int64_t>(0, now - sink.oldest_pending_us) / 1e6;
    }
  }
  return sinks;
}

std::vector<std::pair<std::string, double>> RunStatus::SinkLags() const {
  absl::MutexLock lock(&mu_);
  std::vector<SinkView> sinks;
  if (phase_ == RunPhase::kRunning && view_ != nullptr) {
    sinks = view_().sinks;
  } else {
    sinks = SinksBetweenAttemptsLocked();
  }
  std::vector<std::pair<std::string, double>> lags;
  lags.reserve(sinks.size());
  for (const SinkView& s : sinks) lags.emplace_back(s.name, s.lag_seconds);
  return lags;
}

bool RunStatus::Ready(std::string* reason) const {
  absl::MutexLock lock(&mu_);
  if (slot_.has_value() && slot_->lost()) {
    *reason = absl::StrCat("replication slot ", slot_->name, " is lost");
    return false;
  }
  if (phase_ != RunPhase::kRunning) {
    *reason =
        reason_.empty() ? RunPhaseName(phase_) : absl::StrCat(RunPhaseName(phase_), ": ", reason_);
    return false;
  }
  if (view_ == nullptr) {
    *reason = "starting";
    return false;
  }
  PipelineView view = view_();
  if (!view.started) {
    *reason = "starting: opening sinks and preparing the source";
    return false;
  }
  for (const SinkView& sink : view.sinks) {
    if (sink.failed) {
      *reason = absl::StrCat("sink ", sink.name, " failed: ", last_error_);
      return false;
    }
    if (!sink.trouble.empty()) {
      *reason = absl::StrCat("sink ", sink.name, ": ", sink.trouble);
      return false;
    }
  }
  if (view.snapshot_running) {
    // The sinks do not hold every row until the copy ends.
    uint64_t done = 0, total = 0;
    for (const TableProgress& t : view.snapshot_tables) {
      done += t.chunks_done;
      total += t.chunks_total;
    }
    *reason = absl::StrCat("copying the tables (", done, " of ", total,
                           " chunks): the sinks do not hold every row yet");
    return false;
  }
  if (!view.backfill.empty()) {
    *reason = absl::StrCat("copying tables again (", view.backfill,
                           "): the sinks do not hold every row of them yet");
    return false;
  }
  if (!view.streaming) {
    *reason = "starting: waiting for the source's first message";
    return false;
  }
  return true;
}

absl::Status RunStatus::StreamingLocked() const {
  if (phase_ == RunPhase::kRunning && view_ != nullptr && view_().streaming) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("pipeline ", pipeline_, " is not streaming (", RunPhaseName(phase_), ")"));
}

const char* HoldStateName(HoldState state) {
  switch (state) {
    case HoldState::kNone:
      return "none";
    case HoldState::kWaiting:
      return "waiting";
    case HoldState::kHolding:
      return "holding";
    case HoldState::kMissed:
      return "missed";
    case HoldState::kExpired:
      return "expired";
  }
  return "none";
}

absl::Status RunStatus::RequestHold(Lsn at, absl::Duration longest) {
  if (!at.IsValid()) return absl::InvalidArgumentError("no position to hold at");
  absl::MutexLock lock(&mu_);
  if (absl::Status s = StreamingLocked(); !s.ok()) return s;
  if (hold_.active() && at < hold_.at) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline ", pipeline_, " already holds at ", hold_.at.ToString(), " (",
                     HoldStateName(hold_.state), "): a hold moves only further"));
  }
  hold_ = Hold{at, HoldState::kWaiting, absl::Now() + longest};
  hold_asked_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

void RunStatus::ReleaseHold() {
  absl::MutexLock lock(&mu_);
  hold_ = Hold();
  hold_asked_.store(false, std::memory_order_release);
}

Hold RunStatus::hold() const {
  absl::MutexLock lock(&mu_);
  return hold_;
}

bool RunStatus::SetHoldState(Lsn at, HoldState from, HoldState to) {
  absl::MutexLock lock(&mu_);
  if (hold_.at != at || hold_.state != from) return false;
  hold_.state = to;
  hold_asked_.store(hold_.active(), std::memory_order_release);
  return true;
}

absl::Status RunStatus::RequestHandover(Lsn at) {
  if (!at.IsValid()) return absl::InvalidArgumentError("no position to hand over at");
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = StreamingLocked(); !s.ok()) return s;
  }
  uint64_t none = 0;
  if (handover_at_.compare_exchange_strong(none, at.value, std::memory_order_acq_rel) ||
      none == at.value) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("pipeline ", pipeline_, " already hands over at ", Lsn(none).ToString()));
}

nlohmann::json RunStatus::ToJson() const {
  std::string not_ready;
  const bool ready = Ready(&not_ready);
  absl::MutexLock lock(&mu_);
  nlohmann::json j;
  j["pipeline"] = pipeline_;
  j["ready"] = ready;
  if (!ready) j["not_ready_reason"] = not_ready;
  j["started_at"] = TimeJson(started_at_);
  j["restarts"] = restarts_;
  std::optional<PipelineView> view;
  if (phase_ == RunPhase::kRunning && view_ != nullptr) view = view_();
  std::string phase = RunPhaseName(phase_);
  if (view.has_value()) {
    phase = view->snapshot_running ? "snapshot" : view->streaming ? "streaming" : "starting";
  }
  j["phase"] = phase;
  if (!reason_.empty()) j["phase_reason"] = reason_;
  j["last_error"] = last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_error_);
  j["last_error_at"] =
      last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(TimeJson(last_error_at_));
  j["recent_errors"] = nlohmann::json::array();
  for (const auto& [at, message] : recent_errors_) {
    j["recent_errors"].push_back({{"at", TimeJson(at)}, {"message", message}});
  }
  j["slot"] = slot_.has_value() ? slot_->ToJson() : nlohmann::json(nullptr);
  if (const Lsn at = HandoverAt(); at.IsValid()) j["handover_at"] = at.ToString();
  if (hold_.state != HoldState::kNone) {
    j["hold"] = {{"at", hold_.at.ToString()},
                 {"state", HoldStateName(hold_.state)},
                 {"until", TimeJson(hold_.until)}};
  }
  auto sink_json = [](const SinkView& s) {
    return nlohmann::json{{"name", s.name},
                          {"type", s.type},
                          {"durable", LsnJson(s.durable)},
                          {"lag_seconds", s.lag_seconds},
                          {"queue_bytes", s.queue_bytes},
                          {"failed", s.failed}};
  };
  if (!view.has_value()) {
    j["snapshot"] = nullptr;
    j["sinks"] = nlohmann::json::array();
    for (const SinkView& s : SinksBetweenAttemptsLocked()) j["sinks"].push_back(sink_json(s));
    return j;
  }
  nlohmann::json snapshot;
  snapshot["running"] = view->snapshot_running;
  snapshot["tables"] = nlohmann::json::array();
  for (const TableProgress& t : view->snapshot_tables) {
    snapshot["tables"].push_back({{"table", t.name},
                                  {"rows", t.rows},
                                  {"bytes_done", t.bytes_done},
                                  {"bytes_total", t.bytes_total},
                                  {"chunks_done", t.chunks_done},
                                  {"chunks_total", t.chunks_total}});
  }
  j["snapshot"] = snapshot;
  j["backfill"] = view->backfill.empty() ? nlohmann::json(nullptr) : nlohmann::json(view->backfill);
  j["server_wal_end"] = LsnJson(view->server_wal_end);
  j["confirmed"] = LsnJson(view->confirmed);
  j["unconfirmed_bytes"] = view->server_wal_end > view->confirmed
                               ? view->server_wal_end.value - view->confirmed.value
                               : 0;
  j["changes"] = view->changes;
  j["transactions"] = view->transactions;
  j["sinks"] = nlohmann::json::array();
  for (const SinkView& s : view->sinks) j["sinks"].push_back(sink_json(s));
  return j;
}

}  // namespace pgflow
