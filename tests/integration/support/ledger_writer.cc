#include "tests/integration/support/ledger_writer.h"

#include <libpq-fe.h>

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace pgflow::testing {

using std::chrono::milliseconds;

LedgerWriter::LedgerWriter(int number, std::string url, const NetnsLab* lab, int host)
    : number_(number), url_(std::move(url)), lab_(lab), host_(host), thread_([this] { Run(); }) {}

void LedgerWriter::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::vector<LedgerWrite> LedgerWriter::writes() const {
  absl::MutexLock lock(&mu_);
  return writes_;
}

std::string LedgerWriter::Ids() const {
  absl::MutexLock lock(&mu_);
  std::string ids;
  for (const LedgerWrite& w : writes_) absl::StrAppend(&ids, ids.empty() ? "" : ",", w.id);
  return ids;
}

void LedgerWriter::Run() {
  std::optional<NetnsLab::InHost> on_host;
  if (host_ >= 0) on_host.emplace(*lab_, host_);
  PGconn* conn = nullptr;
  for (int64_t n = 1; !stop_.load(); ++n) {
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      PQfinish(conn);
      conn = PQconnectdb(absl::StrCat(url_, "?connect_timeout=2").c_str());
    }
    const int64_t id = int64_t{number_} * 1000000000 + n;
    const auto sent = std::chrono::steady_clock::now();
    // (The timeline from the name of the WAL file being written: the one writes go to.)
    PGresult* r = PQexec(
        conn, absl::StrCat("INSERT INTO ledger VALUES (", id, ") RETURNING "
                           "host(inet_server_addr()) || ':' || inet_server_port() || '/' || "
                           "(SELECT system_identifier FROM pg_control_system()) || '/' || "
                           "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                           "::bit(32)::int")
                  .c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      absl::MutexLock lock(&mu_);
      writes_.push_back(LedgerWrite{.id = id, .server = PQgetvalue(r, 0, 0), .sent = sent,
                                    .acknowledged = std::chrono::steady_clock::now()});
      acknowledged_.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(10));  // (a steady load, not a flood)
    } else {
      errors_.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(50));
    }
    PQclear(r);
  }
  PQfinish(conn);
}

}  // namespace pgflow::testing
