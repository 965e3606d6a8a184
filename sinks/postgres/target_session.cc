#include "sinks/postgres/target_session.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/log.h"
#include "sinks/postgres/parallel_copy.h"

namespace pgflow {
namespace {

constexpr size_t kMaxPrepared = 512;

bool Succeeded(ExecStatusType status) {
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

// The row count of a command's result; 0 when it has none.
uint64_t RowCount(PGresult* res) {
  const char* n = PQcmdTuples(res);
  return n != nullptr && *n != '\0' ? std::strtoull(n, nullptr, 10) : 0;
}

}  // namespace

TargetSession::TargetSession(std::string url, std::string sink_name)
    : url_(std::move(url)), sink_name_(std::move(sink_name)) {}

absl::Status TargetSession::Connect() {
  absl::StatusOr<PgConnPtr> connected = pgflow::Connect(url_, ConnectionKind::kRegular);
  if (!connected.ok()) {
    return absl::Status(connected.status().code(),
                        absl::StrCat("postgres target: ", connected.status().message()));
  }
  conn_ = std::move(*connected);
  // "already exists, skipping" and the like: nothing a user needs on stderr.
  PQsetNoticeProcessor(
      conn(), [](void*, const char*) {}, nullptr);
  return absl::OkStatus();
}

std::string TargetSession::TargetName() const { return conn_ ? Describe(conn_.get()) : url_; }

absl::Status TargetSession::Run(const std::string& sql, absl::string_view context) {
  if (absl::Status s = BeforeStatement(); !s.ok()) return s;
  if (absl::Status s = Drain(); !s.ok()) return s;
  PgResultPtr res;
  if (savepoint_pending_) {
    // The savepoint goes in the same round trip.
    savepoint_pending_ = false;
    res.reset(PQexec(conn(), absl::StrCat(savepoint_ ? "RELEASE SAVEPOINT pgflow_txn; " : "",
                                          "SAVEPOINT pgflow_txn; ", sql)
                                 .c_str()));
    savepoint_ = true;
  } else {
    res.reset(PQexec(conn(), sql.c_str()));
  }
  ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (!Succeeded(status)) {
    return ResultError(conn(), res.get(),
                       absl::StrCat("postgres target ", TargetName(), ": ", context));
  }
  return absl::OkStatus();
}

absl::Status TargetSession::RunPrepared(const std::string& sql, const StatementParams& params,
                                        const std::function<std::string()>& context,
                                        uint64_t* affected) {
  if (absl::Status s = BeforeStatement(); !s.ok()) return s;
  if (absl::Status s = Drain(); !s.ok()) return s;
  absl::StatusOr<std::string> name = Prepared(sql, params.size(), context);
  if (!name.ok()) return name.status();
  PgResultPtr res =
      savepoint_pending_
          ? ExecAfterSavepoint(*name, params)
          : PgResultPtr(PQexecPrepared(conn(), name->c_str(), params.size(), params.values(),
                                       params.lengths(), params.formats(), 0));
  ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (!Succeeded(status)) return ResultError(conn(), res.get(), context());
  if (affected != nullptr) *affected = RowCount(res.get());
  return absl::OkStatus();
}

absl::StatusOr<std::string> TargetSession::Prepared(const std::string& sql, size_t params,
                                                    const std::function<std::string()>& context) {
  auto it = prepared_.find(sql);
  if (it != prepared_.end()) return it->second;
  if (absl::Status s = Drain(); !s.ok()) return s;
  if (prepared_.size() >= kMaxPrepared) {
    if (absl::Status s = DeallocateAll("releasing prepared statements"); !s.ok()) return s;
  }
  std::string name = NewName("pgflow_");
  PgResultPtr res(PQprepare(conn(), name.c_str(), sql.c_str(), static_cast<int>(params), nullptr));
  if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    return ResultError(conn(), res.get(), context());
  }
  prepared_.emplace(sql, name);
  return name;
}

absl::Status TargetSession::SendPrepared(const std::string& sql, const StatementParams& params,
                                         std::string context, uint64_t* affected, bool once,
                                         RowCountCheck check) {
  // Enough to keep the target busy; few enough that the results waiting to be read stay far
  // below what the sockets buffer (a blocked server would stop reading what we send).
  constexpr size_t kMaxInFlight = 64;
  if (absl::Status s = BeforeStatement(); !s.ok()) return s;
  std::string name;
  if (!once) {
    absl::StatusOr<std::string> prepared = Prepared(sql, params.size(), [&] { return context; });
    if (!prepared.ok()) return prepared.status();
    name = *std::move(prepared);
  }
  if (in_flight_.empty() && PQenterPipelineMode(conn()) != 1) {
    return ResultError(conn(), nullptr, context);
  }
  auto send_simple = [&](const char* command) {
    in_flight_.push_back(
        InFlight{absl::StrCat("postgres target ", TargetName(), ": ", command), nullptr, {}});
    return PQsendQueryParams(conn(), command, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
  };
  bool sent = true;
  if (savepoint_pending_) {
    savepoint_pending_ = false;
    if (savepoint_) sent = send_simple("RELEASE SAVEPOINT pgflow_txn");
    sent = sent && send_simple("SAVEPOINT pgflow_txn");
    savepoint_ = true;
  }
  in_flight_.push_back(InFlight{std::move(context), affected, std::move(check)});
  sent = sent && (once ? PQsendQueryParams(conn(), sql.c_str(), params.size(), nullptr,
                                           params.values(), params.lengths(), params.formats(), 0)
                       : PQsendQueryPrepared(conn(), name.c_str(), params.size(), params.values(),
                                             params.lengths(), params.formats(), 0)) == 1;
  // Out to the server now, so that it executes while we go on (pipeline mode buffers).
  sent = sent && PQflush(conn()) == 0;
  if (!sent) {
    absl::Status s = ResultError(conn(), nullptr, in_flight_.back().context);
    Drain().IgnoreError();
    return s;
  }
  if (in_flight_.size() >= kMaxInFlight) return Drain();
  return absl::OkStatus();
}

absl::Status TargetSession::Drain() {
  if (in_flight_.empty()) return absl::OkStatus();
  absl::Status status;
  if (PQpipelineSync(conn()) != 1) {
    status = ResultError(conn(), nullptr, in_flight_.front().context);
  } else {
    for (const InFlight& statement : in_flight_) {
      while (PGresult* r = PQgetResult(conn())) {
        PgResultPtr res(r);
        ExecStatusType result = PQresultStatus(r);
        if (status.ok() && !Succeeded(result)) {
          status = ResultError(conn(), r, statement.context);
        } else if (statement.affected != nullptr || statement.check.rows > 0) {
          const uint64_t count = RowCount(r);
          if (statement.affected != nullptr) *statement.affected = count;
          if (count < statement.check.rows) {
            // What is missing stays missing, as an UPDATE of one row at a time would leave it.
            LogWarning(
                "sink %s (postgres): %d of %d updated rows of %s (an unchanged TOASTed value "
                "each) were not in the target",
                sink_name_, statement.check.rows - count, statement.check.rows,
                statement.check.table);
          }
        }
      }
    }
    PgResultPtr sync(PQgetResult(conn()));
    if (status.ok() && (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC)) {
      status = ResultError(conn(), sync.get(), "postgres target: ending a pipeline");
    }
  }
  in_flight_.clear();
  if (PQexitPipelineMode(conn()) != 1) {
    while (PGresult* r = PQgetResult(conn())) PQclear(r);
    if (PQexitPipelineMode(conn()) != 1 && status.ok()) {
      status = ResultError(conn(), nullptr, "postgres target: leaving pipeline mode");
    }
  }
  return status;
}

PgResultPtr TargetSession::ExecAfterSavepoint(const std::string& name,
                                              const StatementParams& params) {
  savepoint_pending_ = false;
  const bool release = savepoint_;
  savepoint_ = true;
  if (PQenterPipelineMode(conn()) != 1) return nullptr;
  bool sent = true;
  int queries = 0;
  auto send = [&](const char* sql) {
    sent = sent && PQsendQueryParams(conn(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
    ++queries;
  };
  if (release) send("RELEASE SAVEPOINT pgflow_txn");
  send("SAVEPOINT pgflow_txn");
  sent = sent && PQsendQueryPrepared(conn(), name.c_str(), params.size(), params.values(),
                                     params.lengths(), params.formats(), 0) == 1;
  ++queries;
  sent = sent && PQpipelineSync(conn()) == 1;
  // The first failing result (the statements after it are aborted), else the statement's.
  PgResultPtr result;
  bool failed = false;
  if (sent) {
    for (int q = 0; q < queries; ++q) {
      while (PGresult* r = PQgetResult(conn())) {
        PgResultPtr res(r);
        ExecStatusType status = PQresultStatus(r);
        if (failed) continue;
        if (!Succeeded(status)) {
          failed = true;
          result = std::move(res);
        } else if (q == queries - 1) {
          result = std::move(res);
        }
      }
    }
    PgResultPtr sync(PQgetResult(conn()));  // PGRES_PIPELINE_SYNC
    if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) {
      result.reset();
    }
  }
  if (PQexitPipelineMode(conn()) != 1) {
    while (PGresult* r = PQgetResult(conn())) PQclear(r);
    PQexitPipelineMode(conn());
    if (!failed) result.reset();
  }
  return result;
}

absl::Status TargetSession::RunAlone(const std::string& sql,
                                     const std::function<std::string()>& context) {
  PgResultPtr res(PQexecParams(conn(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0));
  if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    return ResultError(conn(), res.get(), context());
  }
  return absl::OkStatus();
}

absl::Status TargetSession::DeallocateAll(absl::string_view context) {
  if (prepared_.empty()) return absl::OkStatus();
  if (absl::Status s = Run("DEALLOCATE ALL", context); !s.ok()) return s;
  prepared_.clear();
  return absl::OkStatus();
}

std::string TargetSession::NewName(absl::string_view prefix) {
  return absl::StrCat(prefix, ++next_name_);
}

absl::Status TargetSession::Begin() {
  if (in_transaction_) return absl::OkStatus();
  if (absl::Status s =
          Run("BEGIN; SET LOCAL session_replication_role = replica", "starting a transaction");
      !s.ok()) {
    return s;
  }
  in_transaction_ = true;
  return absl::OkStatus();
}

absl::Status TargetSession::Commit() {
  PgResultPtr res(PQexec(conn(), "COMMIT"));
  in_transaction_ = false;
  savepoint_ = false;
  if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK ||
      std::strcmp(PQcmdStatus(res.get()), "COMMIT") != 0) {
    return ResultError(conn(), res.get(),
                       absl::StrCat("postgres target ", TargetName(), ": commit failed"));
  }
  return absl::OkStatus();
}

absl::Status TargetSession::Rollback(absl::string_view context) {
  in_transaction_ = false;
  return Run("ROLLBACK", context);
}

void TargetSession::Abandon() {
  PgResultPtr rollback(PQexec(conn(), "ROLLBACK"));
  in_transaction_ = false;
  savepoint_ = false;
  savepoint_pending_ = false;
}

absl::Status TargetSession::RollbackToSavepoint(absl::string_view context) {
  savepoint_ = false;
  return Run("ROLLBACK TO SAVEPOINT pgflow_txn; RELEASE SAVEPOINT pgflow_txn", context);
}

absl::Status TargetSession::BeginCopy(const std::string& sql, absl::string_view context) {
  if (absl::Status s = SendPendingSavepoint(); !s.ok()) return s;
  PgResultPtr res(PQexec(conn(), sql.c_str()));
  if (!res || PQresultStatus(res.get()) != PGRES_COPY_IN) {
    return ResultError(conn(), res.get(), context);
  }
  if (PQputCopyData(conn(), kCopyHeader, kCopyHeaderSize) != 1) {
    return ResultError(conn(), nullptr, context);
  }
  return absl::OkStatus();
}

absl::Status TargetSession::PutCopyData(absl::string_view data,
                                        const std::function<std::string()>& context) {
  if (PQputCopyData(conn(), data.data(), static_cast<int>(data.size())) != 1) {
    return ResultError(conn(), nullptr, context());
  }
  return absl::OkStatus();
}

absl::Status TargetSession::EndCopy(absl::string_view context) {
  if (PQputCopyData(conn(), kCopyTrailer, kCopyTrailerSize) != 1 ||
      PQputCopyEnd(conn(), nullptr) != 1) {
    return ResultError(conn(), nullptr, context);
  }
  absl::Status status;
  while (PGresult* r = PQgetResult(conn())) {
    PgResultPtr res(r);
    if (status.ok() && PQresultStatus(r) != PGRES_COMMAND_OK) {
      status = ResultError(conn(), r, context);
    }
  }
  return status;
}

void TargetSession::AbortCopy(const char* why) {
  PQputCopyEnd(conn(), why);
  while (PGresult* r = PQgetResult(conn())) PQclear(r);
}

absl::Status RaiseMaintenanceWorkMem(PGconn* conn, const std::string& memory,
                                     const std::string& sink_name) {
  absl::StatusOr<PgResultPtr> mem =
      Exec(conn,
           "SELECT CASE WHEN pg_size_bytes(current_setting('maintenance_work_mem')) < "
           "pg_size_bytes($1) THEN set_config('maintenance_work_mem', $1, false) END",
           {memory});
  if (mem.ok()) return absl::OkStatus();
  return absl::Status(mem.status().code(),
                      absl::StrCat("postgres target ", Describe(conn), ": sinks.", sink_name,
                                   ".maintenance_work_mem: ", mem.status().message()));
}

}  // namespace pgflow
