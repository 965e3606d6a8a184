#include "cutover/held_point.h"

#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <optional>

#include <nlohmann/json.hpp>
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/admin_server.h"

namespace pgflow::cutover {
namespace {

constexpr int kAttempts = 5;
constexpr std::chrono::milliseconds kRequestTimeout{5000};
constexpr absl::Duration kHoldWait = absl::Seconds(30);

// The hold's state as the pipeline's /status shows it ("" while none is shown).
absl::StatusOr<std::string> HoldState(const std::string& admin) {
  absl::StatusOr<HttpReply> reply = AdminGet(admin, "/status", kRequestTimeout);
  if (!reply.ok()) return reply.status();
  const nlohmann::json j = nlohmann::json::parse(reply->body, nullptr, false);
  if (!j.is_object()) return absl::InternalError("the pipeline's /status is not JSON");
  if (!j.contains("hold") || !j["hold"].is_object()) return std::string();
  return j["hold"].value("state", "");
}

// The oldest transaction open on the source, for a message: "pid 42 (app), open 3.1 s: UPDATE
// t SET v = 1"; empty when none is seen.
std::string OldestTransaction(PGconn* conn) {
  auto res = Exec(conn,
                  "SELECT pid || ' (' || coalesce(usename, '?') || '), open ' || "
                  "round(extract(epoch FROM now() - xact_start)::numeric, 1) || ' s: ' || "
                  "left(query, 80) FROM pg_stat_activity WHERE xact_start IS NOT NULL AND "
                  "backend_type = 'client backend' AND pid <> pg_backend_pid() AND "
                  "backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1");
  if (!res.ok() || PQntuples(res->get()) == 0) return "";
  return PQgetvalue(res->get(), 0, 0);
}

// Makes the temporary slot (and its snapshot) on `replication`, giving up after `timeout`: its
// consistent point waits for every transaction under way on the source to end.
absl::StatusOr<PgResultPtr> CreateSlot(PGconn* replication, PGconn* other, const std::string& sql,
                                       absl::Duration timeout) {
  if (PQsendQuery(replication, sql.c_str()) == 0) {
    return ResultError(replication, nullptr, "creating a temporary replication slot");
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (PQisBusy(replication)) {
    pollfd ready{PQsocket(replication), POLLIN, 0};
    ::poll(&ready, 1, 20);
    if (PQconsumeInput(replication) == 0) {
      return ResultError(replication, nullptr, "creating a temporary replication slot");
    }
    if (PQisBusy(replication) && absl::Now() > deadline) {
      const std::string oldest = OldestTransaction(other);
      if (PGcancel* cancel = PQgetCancel(replication)) {
        char error[256];
        PQcancel(cancel, error, sizeof error);
        PQfreeCancel(cancel);
      }
      ReceiveResult(replication, sql).IgnoreError();
      return absl::DeadlineExceededError(
          absl::StrCat("no consistent point on the source within ", absl::FormatDuration(timeout),
                       ": it waits for the transactions under way to end",
                       oldest.empty() ? std::string() : absl::StrCat(", the oldest pid ", oldest)));
    }
  }
  return ReceiveResult(replication, sql);
}

absl::Status Post(const std::string& admin, const std::string& target, int expected) {
  absl::StatusOr<HttpReply> reply = AdminRequest(admin, "POST", target, kRequestTimeout);
  if (!reply.ok()) return reply.status();
  if (reply->status != expected) {
    return absl::FailedPreconditionError(
        absl::StrCat("the pipeline answered POST ", target, " with HTTP ", reply->status, ": ",
                     absl::StripTrailingAsciiWhitespace(reply->body)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HeldPoint>> HeldPoint::Take(const std::string& pipeline,
                                                           const std::string& source_url,
                                                           const std::string& admin,
                                                           std::chrono::seconds longest,
                                                           std::chrono::milliseconds wait) {
  static std::atomic<int> taken{0};
  absl::StatusOr<PgConnPtr> writer = Connect(source_url, ConnectionKind::kRegular);
  if (!writer.ok()) return writer.status();
  // The admin endpoint must be that of the pipeline reading this source (after a cutover the
  // stream back may answer there).
  absl::StatusOr<HttpReply> status = AdminGet(admin, "/status", kRequestTimeout);
  if (!status.ok()) return status.status();
  const nlohmann::json running = nlohmann::json::parse(status->body, nullptr, false);
  const std::string name = running.is_object() ? running.value("pipeline", "") : "";
  if (name != pipeline) {
    return absl::FailedPreconditionError(
        absl::StrCat("the admin endpoint ", admin, " is pipeline ", name.empty() ? "?" : name,
                     "'s, not ", pipeline, "'s (after a cutover, name the file that runs now)"));
  }
  std::unique_ptr<HeldPoint> held(new HeldPoint());
  HeldPoint& point = *held;
  point.admin_ = admin;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    point.attempts_ = attempt;
    absl::StatusOr<PgConnPtr> replication = Connect(source_url, ConnectionKind::kReplication);
    if (!replication.ok()) return replication.status();
    // First a hold at the server's position now, which the pipeline cannot be past yet, so
    // that it is not past the slot's point either once the slot is made (that takes a while:
    // it waits for the transactions under way); then the hold moves there.
    auto now = Exec(writer->get(), "SELECT pg_current_wal_insert_lsn()::text");
    if (!now.ok()) return now.status();
    if (absl::Status s = Post(
            admin,
            absl::StrCat("/hold?at=", PQgetvalue(now->get(), 0, 0), "&seconds=", longest.count()),
            202);
        !s.ok()) {
      return s;
    }
    point.held_ = true;
    const std::string slot = absl::StrCat("pgflow_verify_", getpid(), "_", taken.fetch_add(1));
    auto created = CreateSlot(replication->get(), writer->get(),
                              absl::StrCat("CREATE_REPLICATION_SLOT ", slot,
                                           " TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"),
                              absl::FromChrono(wait));
    if (!created.ok()) return created.status();
    std::optional<Lsn> at = Lsn::Parse(PQgetvalue(created->get(), 0, 1));
    if (!at.has_value()) return absl::InternalError("CREATE_REPLICATION_SLOT gave no position");
    point.replication_ = std::move(*replication);
    point.at_ = *at;
    point.snapshot_ = PQgetvalue(created->get(), 0, 2);
    if (absl::Status s = Post(
            admin, absl::StrCat("/hold?at=", at->ToString(), "&seconds=", longest.count()), 202);
        !s.ok()) {
      return s;
    }
    const absl::Time moved = absl::Now();
    // A transaction after the point, so that the pipeline reaches it even on a quiet source.
    if (absl::Status s =
            Exec(writer->get(), "SELECT pg_logical_emit_message(true, 'pgflow.verify', '')")
                .status();
        !s.ok()) {
      return s;
    }
    std::string state = "waiting";
    while (state == "waiting" && absl::Now() - moved < kHoldWait) {
      absl::SleepFor(absl::Milliseconds(5));
      absl::StatusOr<std::string> now = HoldState(admin);
      if (!now.ok()) return now.status();
      state = *now;
    }
    point.took_ = absl::ToChronoMilliseconds(absl::Now() - moved);
    if (state == "holding") return held;
    if (absl::Status s = point.Release(); !s.ok()) return s;
    if (state != "missed") {
      return absl::DeadlineExceededError(absl::StrCat(
          "the pipeline did not hold at ", at->ToString(), " within ",
          absl::FormatDuration(kHoldWait), " (hold state: ", state.empty() ? "none" : state, ")"));
    }
  }
  return absl::UnavailableError(
      absl::StrCat("the pipeline was already past each point taken (", kAttempts,
                   " attempts): something keeps it from being held; try again"));
}

HeldPoint::~HeldPoint() { Release().IgnoreError(); }

absl::Status HeldPoint::StillHeld() const {
  absl::StatusOr<std::string> state = HoldState(admin_);
  if (!state.ok()) return state.status();
  if (*state == "holding") return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the pipeline no longer holds at ", at_.ToString(),
      " (hold state: ", state->empty() ? "none" : *state, "): the comparison outlasted the hold"));
}

absl::Status HeldPoint::Release() {
  replication_.reset();  // drops the temporary slot and its snapshot
  if (!held_) return absl::OkStatus();
  held_ = false;
  return Post(admin_, "/release", 200);
}

}  // namespace pgflow::cutover
