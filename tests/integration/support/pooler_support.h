#pragma once

// What the pooler's integration tests (tests/integration/pooler_test.cc) use: a `pgflow
// pooler` process in front of the shared cluster, libpq and raw-socket clients, a client
// speaking the wire protocol itself for sessions replayed byte for byte, a hot standby, and
// TLS certificates made with the openssl command line.

#include <libpq-fe.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pooler/protocol.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

// The bin directory of the newest PostgreSQL installed (psql, pgbench).
std::string PgBin();

// Runs a shell command; its exit status and output (stdout and stderr).
int Shell(const std::string& command, std::string* output);

// A pooler in front of the shared cluster, with its files in a TempDir. Its file names the
// users file by a path relative to that directory, which is not the pooler's current one.
class PoolerProcess {
 public:
  // `databases` is the YAML under `databases:`; `extra` more top-level keys; `port` where it
  // listens (0: a free port; another pooler's: beside it, SO_REUSEPORT).
  PoolerProcess(const std::string& auth, const std::string& users, const std::string& databases,
                const std::string& extra = "", int port = 0)
      : port_(port != 0 ? port : FreeLoopbackPort()), admin_port_(FreeLoopbackPort()) {
    WriteFile(dir_.File("users.txt"), users);
    config_ = dir_.File("pooler.yaml");
    WriteConfig(auth, databases, extra);
    process_ = StartPgflowUntilLogged({"pooler", "--config", config_}, dir_.File("pooler.log"), {},
                                      "pooler: listening on");
  }

  void WriteConfig(const std::string& auth, const std::string& databases,
                   const std::string& extra = "") {
    WriteFile(config_, absl::StrCat("listen: 127.0.0.1:", port_, "\nthreads: 2\n",
                                    "admin: {listen: 127.0.0.1:", admin_port_,
                                    ", users: [postgres]}\n", "auth: {method: ", auth,
                                    ", users: users.txt}\n", extra, "databases:\n", databases));
  }

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  std::string Url(const std::string& database, const std::string& user = "postgres",
                  const std::string& password = "") const {
    return absl::StrCat("postgres://", user, password.empty() ? "" : ":", password,
                        "@127.0.0.1:", port_, "/", database);
  }
  std::string Log() const { return ReadFile(dir_.File("pooler.log")); }
  const std::string& config() const { return config_; }
  PgflowProcess& process() { return *process_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  int port_;
  int admin_port_;
  std::string config_;
  std::unique_ptr<PgflowProcess> process_;
};

// What `sql` shows on `pooler`'s admin console (psql -At: one row a line, columns between
// '|'), as user postgres; psql's error when it fails.
std::string Console(const PoolerProcess& pooler, const std::string& sql);

// A database of the pooler's file (under `databases:`): `name`, served from database `db` of
// the shared cluster as `user`, in pool_mode `mode`; `extra`: more of its keys.
std::string Database(const std::string& name, const std::string& mode, int pool_size,
                     const std::string& db, const std::string& user = "postgres",
                     const std::string& extra = "");

// A libpq connection that may fail (Sql fails the test on any error).
struct Conn {
  explicit Conn(const std::string& url) : conn(PQconnectdb(url.c_str())) {}
  ~Conn() { PQfinish(conn); }
  bool ok() const { return PQstatus(conn) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(conn); }
  // The first value of the result, or "ERROR <sqlstate>: <message>".
  std::string Run(const std::string& sql) {
    PGresult* result = PQexec(conn, sql.c_str());
    std::string out;
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_TUPLES_OK && PQntuples(result) > 0) {
      out = PQgetvalue(result, 0, 0);
    } else if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
      out = absl::StrCat("ERROR ", state ? state : "", ": ", PQresultErrorMessage(result));
    }
    PQclear(result);
    return out;
  }
  PGconn* conn;
};

// A TCP connection to 127.0.0.1:`port`, its descriptor not inherited by the poolers a test
// starts later (or closing it would not end it); -1 when refused.
int ConnectLoopback(int port);

// Sends `bytes` and reads the answer until the pooler closes the connection (or 5 seconds
// pass, or `enough` bytes came).
std::string RawExchange(int port, const std::string& bytes, size_t enough = 65536);

std::string Int32(int32_t v);

// A hot standby of `primary` (scripts/pgtmp.sh standby), stopped and removed with the object.
class Standby {
 public:
  explicit Standby(const TestCluster& primary) {
    chmod(dir_.path().c_str(), 0755);  // the server's user reaches its data below
    std::string output;
    if (Shell(absl::StrCat(PGFLOW_SOURCE_DIR, "/scripts/pgtmp.sh standby ", dir_.File("pg"), " ",
                           primary.port()),
              &output) == 0) {
      // (From the file pgtmp.sh writes: the output may hold the tools' warnings too.)
      port_ = atoi(ReadFile(dir_.File("pg") + "/port").c_str());
    }
    EXPECT_GT(port_, 0) << output;
  }
  ~Standby() {
    std::string output;
    Shell(absl::StrCat(PGFLOW_SOURCE_DIR, "/scripts/pgtmp.sh stop ", dir_.File("pg")), &output);
  }
  int port() const { return port_; }
  // Its directory (the server's log is server.log in it).
  std::string dir() const { return dir_.File("pg"); }
  // Stops it (fast), keeping its data; Resume starts it again on the same port.
  void Pause() {
    std::string output;
    EXPECT_EQ(Shell(absl::StrCat(PGFLOW_SOURCE_DIR, "/scripts/pgtmp.sh pause ", dir()), &output), 0)
        << output;
  }
  void Resume() {
    std::string output;
    EXPECT_EQ(Shell(absl::StrCat(PGFLOW_SOURCE_DIR, "/scripts/pgtmp.sh resume ", dir()), &output),
              0)
        << output;
  }

 private:
  TempDir dir_;
  int port_ = 0;
};

// Copies `from` to `to` in the server's data directory, mode 0600 and owned by the server's
// user, as PostgreSQL requires of its key.
void CopyToServer(const std::string& from, const std::string& to);

// A self-signed certificate (its own root) for `names` (a subjectAltName), made with the openssl
// command line: `dir`/`file`.crt and `dir`/`file`.key.
void MakeCertificate(const std::string& dir, const std::string& file = "tls",
                     const std::string& names = "DNS:localhost,IP:127.0.0.1");

// A certificate authority in `dir` (ca.crt), a server certificate it signed (server.crt, for
// localhost and 127.0.0.1), client certificates it signed for dana and mallory
// (<name>.crt), and a self-signed one for dana that it did not (stranger.crt); keys beside
// each, mode 0600 as libpq wants them.
void MakeAuthority(const std::string& dir);

// A client speaking the wire protocol itself, for sessions replayed byte for byte against the
// pooler and directly against PostgreSQL.
class WireClient {
 public:
  WireClient(int port, const std::string& database) {
    fd_ = ConnectLoopback(port);
    if (fd_ < 0) return;
    timeval timeout{.tv_sec = 20, .tv_usec = 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    std::string out;
    pooler::AppendStartup(
        &out, {{"user", "postgres"}, {"database", database}, {"application_name", "wire"}});
    Send(out);
    ok_ = !Until('Z').empty();
  }
  ~WireClient() { close(fd_); }
  bool ok() const { return ok_; }
  void Send(const std::string& bytes) { (void)!write(fd_, bytes.data(), bytes.size()); }
  // The messages that come until the `count`-th of type `last` (inclusive), each as type
  // byte + body; empty when the connection ends or stays silent first.
  std::vector<std::string> Until(char last, int count = 1) {
    std::vector<std::string> messages;
    while (count > 0) {
      while (buffer_.size() < 5 ||
             buffer_.size() < 1 + static_cast<size_t>(pooler::ReadInt32(buffer_.data() + 1))) {
        char chunk[65536];
        ssize_t n = read(fd_, chunk, sizeof chunk);
        if (n <= 0) return {};
        buffer_.append(chunk, n);
      }
      size_t size = 1 + pooler::ReadInt32(buffer_.data() + 1);
      messages.push_back(buffer_.substr(0, 1) + buffer_.substr(5, size - 5));
      buffer_.erase(0, size);
      if (messages.back()[0] == last) --count;
    }
    return messages;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string buffer_;
};

// What may differ between two backends answering the same session: a NOTIFY's sender pid.
std::string Normalized(const std::vector<std::string>& messages);

std::string Message(char type, const std::string& body);

std::string Parse(const std::string& name, const std::string& sql);

std::string Bind(const std::string& portal, const std::string& statement,
                 const std::vector<std::string>& values);

std::string Execute(const std::string& portal, int32_t max_rows = 0);

std::string Describe(char kind, const std::string& name);

std::string Sync();

std::string Query(const std::string& sql);

// One step of a session: bytes to send, then what to read: until the `count`-th message of
// type `until`.
struct Step {
  std::string send;
  char until = 'Z';
  int count = 1;
};

// Runs `steps` on a fresh connection to `port`; the answers, normalized, one step a line
// block.
std::string Replay(int port, const std::string& database, const std::vector<Step>& steps);

}  // namespace pgflow::testing
