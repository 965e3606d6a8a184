#pragma once

// What the integration tests and benchmarks share: a throwaway PostgreSQL (scripts/pgtmp.sh),
// SQL helpers over libpq, the real `pgflow` binary run as a child process, and a reader for
// the jsonl files it writes.

#include <libpq-fe.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace pgflow::testing {

// A PostgreSQL server of its own, started on a free loopback port and removed on destruction.
class TestCluster {
 public:
  // Starts the server; aborts the test binary with the server's log on failure.
  TestCluster();
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  // Stops the server (fast shutdown), keeping its data; Resume starts it again on the same port.
  void Pause();
  void Resume();

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // postgres://postgres@127.0.0.1:<port>/<database>
  std::string Url(const std::string& database = "postgres") const;

 private:
  std::string dir_;
  int port_ = 0;
};

// The test binary's own PostgreSQL server number `index` (0, 1, ...), started on first use and
// removed when the binary exits.
TestCluster& SharedCluster(int index = 0);

// A plain libpq connection whose calls fail the current test (gtest ADD_FAILURE) on error.
class Sql {
 public:
  explicit Sql(const std::string& url);
  ~Sql();
  // Runs one or more statements; returns false (and records a test failure unless
  // `expect_error`) when the server reports an error.
  bool Exec(const std::string& sql, bool expect_error = false);
  // The rows of a query, every value as text ("<NULL>" for null).
  std::vector<std::vector<std::string>> Query(const std::string& sql);
  // The single value of a one-row, one-column query.
  std::string Scalar(const std::string& sql);
  // Scalar for a query polled while pgflow changes the schema under it: a deadlock with
  // pgflow's DDL (PostgreSQL may pick the reader as the victim) or a table not there yet is
  // no answer (nullopt) rather than a failure; any other error still fails the test.
  std::optional<std::string> PollScalar(const std::string& sql);
  PGconn* conn() { return conn_; }

 private:
  PGconn* conn_ = nullptr;
};

// Commits transactions on `url` from a thread of its own until stopped (or destroyed), or
// until `limit` were written (-1: no limit). `transaction(n, rng)` returns the SQL of the n-th
// transaction (n from 0), BEGIN/COMMIT included; `rng` is seeded the same way every run.
class BackgroundWriter {
 public:
  using Make = std::function<std::string(int64_t n, std::mt19937_64& rng)>;
  BackgroundWriter(const std::string& url, Make transaction, int64_t limit = -1);
  ~BackgroundWriter();
  void Stop();
  // Transactions committed so far.
  int64_t transactions() const { return committed_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> committed_{0};
  std::thread thread_;
};

// The pgflow binary, run as a child with its stdout and stderr sent to files.
class PgflowProcess {
 public:
  // `run_as`: a user the child runs as (the tests run as root; PostgreSQL refuses to).
  PgflowProcess(std::vector<std::string> args, const std::string& log_path,
                std::map<std::string, std::string> env = {}, const std::string& run_as = "");
  ~PgflowProcess();  // SIGKILLs the child if it still runs

  pid_t pid() const { return pid_; }
  void Signal(int signo);
  // Waits for the child to exit; returns its exit status (128 + signal if killed), or -1 on
  // timeout.
  int Wait(std::chrono::milliseconds timeout);
  bool Running();

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// Runs `pgflow <args>` to completion; returns the exit status and fills *output with its
// stdout and stderr.
int RunPgflow(const std::vector<std::string>& args, std::string* output,
              std::map<std::string, std::string> env = {});

// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// Waits until the WAL sender of replication slot `slot`, on the server at `url`, has sent
// everything written there before the call: a client is streaming from the slot and has been
// sent it. Returns false on timeout.
bool WaitSlotSentAll(const std::string& url, const std::string& slot,
                     std::chrono::milliseconds timeout);

// The JSON objects of a jsonl file, one per line (a missing file reads as empty). A line that
// is not valid JSON fails the current test.
std::vector<nlohmann::json> ReadJsonl(const std::string& path);
// The same for a file another process is appending to: a last line not yet ended by '\n' is
// still being written (a reader can see part of one write) and is left for the next read.
std::vector<nlohmann::json> ReadJsonlWritten(const std::string& path);

// A fresh temporary directory, removed by the destructor (kept, and named on stderr, when
// PGFLOW_TEST_KEEP is set: to look into a failure).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// How many times `needle` occurs in the file at `path` (0 for a missing file).
size_t CountInFile(const std::string& path, const std::string& needle);

// Starts `pgflow <args>` logging into `log_path` and waits (up to a minute) until `needle`
// appears in the log once more than before; fails the current test if pgflow exits first or
// the line never comes.
std::unique_ptr<PgflowProcess> StartPgflowUntilLogged(std::vector<std::string> args,
                                                      const std::string& log_path,
                                                      std::map<std::string, std::string> env,
                                                      const std::string& needle);

// A loopback port nothing listens on (bound and released), never one this process was given
// before: the kernel can hand the same port to two binds in a row.
int FreeLoopbackPort();

// What `curl <args> <url>` got: the status code (0: no answer) and the body.
struct HttpAnswer {
  int code = 0;
  std::string body;
};
HttpAnswer Curl(const std::string& url, const std::string& args = "");

// A database `name` of its own on the shared cluster; its URL.
std::string NewDatabase(const std::string& name);

// The start of a pipeline file: pipeline `name` following `tables` ("[public.items]") of the
// shared cluster's database `name`, its status sent every 200 ms.
std::string PipelineHead(const std::string& name, const std::string& tables);

// Writes `text` to `path`.
void WriteFile(const std::string& path, const std::string& text);
std::string ReadFile(const std::string& path);

}  // namespace pgflow::testing
