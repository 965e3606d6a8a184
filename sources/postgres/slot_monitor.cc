#include "sources/postgres/slot_monitor.h"

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "engine/progress.h"

namespace pgflow {
namespace {

// How often the warning about retained WAL is repeated while it lasts.
constexpr absl::Duration kWarningEvery = absl::Minutes(5);

Lsn LsnAt(PGresult* r, int column) {
  if (PQgetisnull(r, 0, column)) return Lsn();
  return Lsn::Parse(PQgetvalue(r, 0, column)).value_or(Lsn());
}

// The start of the oldest WAL segment the server still keeps, or an invalid Lsn when this role
// may not list pg_wal (pg_ls_waldir needs pg_monitor) or the answer is unexpected.
Lsn OldestKeptWal(PGconn* conn) {
  auto res = Exec(conn,
                  "SELECT min(name), current_setting('wal_segment_size') FROM pg_ls_waldir() "
                  "WHERE name ~ '^[0-9A-F]{24}$'");
  if (!res.ok() || PQntuples(res->get()) != 1 || PQgetisnull(res->get(), 0, 0)) return Lsn();
  std::string segment = PQgetvalue(res->get(), 0, 0);
  std::string size_text = PQgetvalue(res->get(), 0, 1);
  // wal_segment_size prints with a unit ("16MB").
  uint64_t segment_size = 0;
  if (absl::EndsWith(size_text, "MB") &&
      absl::SimpleAtoi(size_text.substr(0, size_text.size() - 2), &segment_size)) {
    segment_size <<= 20;
  } else if (absl::EndsWith(size_text, "GB") &&
             absl::SimpleAtoi(size_text.substr(0, size_text.size() - 2), &segment_size)) {
    segment_size <<= 30;
  }
  if (segment_size == 0) return Lsn();
  uint64_t log = std::strtoull(segment.substr(8, 8).c_str(), nullptr, 16);
  uint64_t seg = std::strtoull(segment.substr(16, 8).c_str(), nullptr, 16);
  return Lsn((log << 32) + seg * segment_size);
}

}  // namespace

absl::StatusOr<SlotState> ReadSlotState(PGconn* conn, const std::string& slot) {
  auto res = Exec(conn,
                  "SELECT active, wal_status, restart_lsn, confirmed_flush_lsn, "
                  "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
                  "ELSE pg_current_wal_lsn() END, safe_wal_size "
                  "FROM pg_replication_slots WHERE slot_name = $1",
                  {slot});
  if (!res.ok()) return res.status();
  SlotState state;
  state.name = slot;
  state.read_at = absl::Now();
  PGresult* r = res->get();
  if (PQntuples(r) != 1) return state;
  state.exists = true;
  state.active = PQgetvalue(r, 0, 0)[0] == 't';
  state.wal_status = PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1);
  state.restart_lsn = LsnAt(r, 2);
  state.confirmed_flush_lsn = LsnAt(r, 3);
  state.server_wal = LsnAt(r, 4);
  if (state.restart_lsn.IsValid() && state.server_wal > state.restart_lsn) {
    state.retained_bytes = static_cast<int64_t>(state.server_wal.value - state.restart_lsn.value);
  }
  int64_t safe = 0;
  if (!PQgetisnull(r, 0, 5) && absl::SimpleAtoi(PQgetvalue(r, 0, 5), &safe)) {
    state.safe_wal_size = safe;
  }
  return state;
}

std::string LostSlotMessage(PGconn* conn, const std::string& pipeline, const std::string& file,
                            const SlotState& slot) {
  std::string range = slot.confirmed_flush_lsn.IsValid()
                          ? absl::StrCat("the changes after ", slot.confirmed_flush_lsn.ToString())
                          : std::string("changes the pipeline had not yet confirmed");
  if (Lsn oldest = conn != nullptr ? OldestKeptWal(conn) : Lsn();
      oldest.IsValid() && oldest > slot.confirmed_flush_lsn) {
    absl::StrAppend(&range, " up to ", oldest.ToString(), " (the oldest WAL the server keeps)");
  }
  return absl::StrCat(
      "replication slot ", slot.name, " of pipeline ", pipeline,
      " was invalidated by the server (wal_status 'lost': it needed more WAL than "
      "max_slot_wal_keep_size lets the server keep): ",
      range,
      " were removed before pgflow read them, so no sink can be brought up to date from this "
      "slot. Way out: copy the tables again under a new slot: `pgflow teardown ",
      file,
      "` (drops the lost slot), empty or drop the sinks' copies (rows deleted meanwhile "
      "would otherwise stay; `pgflow verify` shows them), then `pgflow run ",
      file, "`, which creates a new slot and copies every table again.");
}

SlotMonitor::SlotMonitor(std::string pipeline, std::string file,
                         std::shared_ptr<const PostgresSourceOptions> options, RunStatus* status,
                         MetricsRegistry* metrics, std::function<void(std::string)> on_lost,
                         std::chrono::milliseconds interval)
    : pipeline_(std::move(pipeline)),
      file_(std::move(file)),
      holder_(std::move(options)),
      options_(*holder_),
      status_(status),
      metrics_(metrics),
      on_lost_(std::move(on_lost)),
      interval_(interval) {}

SlotMonitor::~SlotMonitor() { Stop(); }

void SlotMonitor::Start() {
  thread_ = std::thread([this] {
    SetLogComponent("slot monitor");
    Run();
  });
}

void SlotMonitor::Stop() {
  if (!thread_.joinable()) return;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  {
    absl::MutexLock lock(&cancel_mu_);
    char error[256];
    if (cancel_ != nullptr) PQcancel(cancel_, error, sizeof(error));
  }
  thread_.join();
}

void SlotMonitor::Run() {
  PgConnPtr conn;
  auto set_cancel = [this](PGconn* c) {
    absl::MutexLock lock(&cancel_mu_);
    if (cancel_ != nullptr) PQfreeCancel(cancel_);
    cancel_ = c != nullptr ? PQgetCancel(c) : nullptr;
  };
  do {
    if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
      set_cancel(nullptr);
      absl::StatusOr<PgConnPtr> connected = Connect(options_.url, ConnectionKind::kRegular);
      if (connected.ok()) {
        conn = *std::move(connected);
        set_cancel(conn.get());
      }
    }
    if (conn != nullptr && PQstatus(conn.get()) == CONNECTION_OK && !stop_.HasBeenNotified()) {
      Poll(conn.get());
    }
  } while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(interval_)));
  set_cancel(nullptr);
}

void SlotMonitor::Poll(PGconn* conn) {
  absl::StatusOr<SlotState> slot = ReadSlotState(conn, options_.slot);
  if (!slot.ok()) return;  // the connection broke: reconnected next time
  slot->max_retained_wal = static_cast<int64_t>(options_.max_retained_wal);
  const MetricLabels labels = {{"pipeline", pipeline_}, {"slot", options_.slot}};
  metrics_->GetGauge("pgflow_slot_active", "1 while a process streams from the slot", labels)
      ->Set(slot->active ? 1 : 0);
  metrics_
      ->GetGauge("pgflow_slot_retained_wal_bytes",
                 "Bytes of WAL the server keeps for the slot (its WAL end minus restart_lsn)",
                 labels)
      ->Set(slot->retained_bytes);
  metrics_
      ->GetGauge("pgflow_slot_safe_wal_size_bytes",
                 "Bytes of WAL that may still be written before the slot is lost "
                 "(max_slot_wal_keep_size; -1 when the server sets no cap)",
                 labels)
      ->Set(slot->safe_wal_size.has_value() ? *slot->safe_wal_size : -1);
  metrics_
      ->GetGauge("pgflow_slot_retained_wal_limit_bytes",
                 "The pipeline's max_retained_wal (0: no warning)", labels)
      ->Set(slot->max_retained_wal);
  const bool over = slot->max_retained_wal > 0 && slot->retained_bytes > slot->max_retained_wal;
  metrics_
      ->GetGauge("pgflow_slot_retained_wal_over_limit",
                 "1 while retained WAL exceeds max_retained_wal", labels)
      ->Set(over ? 1 : 0);
  for (const char* status : {"reserved", "extended", "unreserved", "lost"}) {
    MetricLabels with_status = labels;
    with_status.emplace_back("wal_status", status);
    metrics_
        ->GetGauge("pgflow_slot_wal_status",
                   "1 for the slot's wal_status in pg_replication_slots, 0 for the others",
                   with_status)
        ->Set(slot->wal_status == status ? 1 : 0);
  }
  if (over && absl::Now() - last_warning_ >= kWarningEvery) {
    last_warning_ = absl::Now();
    LogWarning(
        "replication slot %s keeps %s of WAL on the server, more than max_retained_wal (%s)%s: "
        "the sinks are behind or the pipeline is stuck; see `pgflow status %s`",
        options_.slot, HumanBytes(slot->retained_bytes), HumanBytes(slot->max_retained_wal),
        slot->safe_wal_size.has_value()
            ? absl::StrCat("; ", HumanBytes(std::max<int64_t>(0, *slot->safe_wal_size)),
                           " more and the server invalidates it (max_slot_wal_keep_size)")
            : "",
        file_);
  } else if (!over) {
    last_warning_ = absl::InfinitePast();
  }
  if (slot->lost() && !lost_reported_) {
    lost_reported_ = true;
    on_lost_(LostSlotMessage(conn, pipeline_, file_, *slot));
  }
  status_->SetSlot(*std::move(slot));
}

}  // namespace pgflow
