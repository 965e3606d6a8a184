#include "tests/integration/support/test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace pgflow::testing {
namespace {

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// The binary as another user can run it. A checkout may sit in a directory only root can enter
// (`mktemp -d` makes one), so processes run as another user get the binary linked (or copied)
// into a directory anyone can enter, once per test process, removed at its exit.
const std::string& BinaryFor(const std::string& run_as) {
  static const std::string built = PGFLOW_BINARY;
  if (run_as.empty()) return built;
  struct Staged {
    std::string dir, binary;
    Staged() {
      binary = built;
      char tmpl[] = "/tmp/pgflow-bin.XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) {
        ADD_FAILURE() << "could not stage " << built << " in /tmp: " << std::strerror(errno);
        return;
      }
      dir = tmpl;
      ::chmod(dir.c_str(), 0755);
      const std::string staged = dir + "/pgflow";
      std::error_code error;
      std::filesystem::create_hard_link(built, staged, error);
      if (error) std::filesystem::copy_file(built, staged, error);
      if (error || ::chmod(staged.c_str(), 0755) != 0) {
        ADD_FAILURE() << "could not stage " << built << " in " << dir << ": "
                      << (error ? error.message() : std::strerror(errno));
        return;
      }
      binary = staged;
    }
    ~Staged() {
      std::error_code ignored;
      if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
    }
  };
  static const Staged staged;
  return staged.binary;
}

pid_t Spawn(const std::vector<std::string>& args, const std::string& out_path,
            const std::map<std::string, std::string>& env, const std::string& run_as = "") {
  const std::string& binary = BinaryFor(run_as);
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (!run_as.empty()) {
    const passwd* user = ::getpwnam(run_as.c_str());
    if (user == nullptr || ::initgroups(run_as.c_str(), user->pw_gid) != 0 ||
        ::setgid(user->pw_gid) != 0 || ::setuid(user->pw_uid) != 0) {
      _exit(126);
    }
    setenv("HOME", user->pw_dir, 1);
  }
  int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  std::vector<char*> argv;
  std::string path = binary;
  argv.push_back(path.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(path.c_str(), argv.data());
  std::fprintf(stderr, "cannot run %s%s%s: %s\n", path.c_str(), run_as.empty() ? "" : " as ",
               run_as.c_str(), std::strerror(errno));
  _exit(127);
}

}  // namespace

TestCluster::TestCluster() {
  char tmpl[] = "/tmp/pgflow-test-pg.XXXXXX";
  char* d = mkdtemp(tmpl);
  if (d == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  dir_ = d;
  std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/pgtmp.sh start " + dir_;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[64] = {};
  if (p == nullptr || std::fgets(buf, sizeof(buf), p) == nullptr || pclose(p) != 0) {
    std::fprintf(stderr, "could not start a test PostgreSQL (%s)\n", cmd.c_str());
    std::abort();
  }
  port_ = std::atoi(buf);
}

TestCluster::~TestCluster() {
  std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/pgtmp.sh stop " + dir_;
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not stop %s\n", dir_.c_str());
}

void TestCluster::Pause() {
  std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/pgtmp.sh pause " + dir_;
  if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "could not pause " << dir_;
}

void TestCluster::Resume() {
  std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/pgtmp.sh resume " + dir_;
  if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "could not resume " << dir_;
}

std::string TestCluster::Url(const std::string& database) const {
  return "postgres://postgres@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

TestCluster& SharedCluster(int index) {
  static std::map<int, std::unique_ptr<TestCluster>> clusters;
  std::unique_ptr<TestCluster>& cluster = clusters[index];
  if (cluster == nullptr) cluster = std::make_unique<TestCluster>();
  return *cluster;
}

Sql::Sql(const std::string& url) {
  conn_ = PQconnectdb(url.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    ADD_FAILURE() << "cannot connect to " << url << ": " << PQerrorMessage(conn_);
  }
}

Sql::~Sql() { PQfinish(conn_); }

bool Sql::Exec(const std::string& sql, bool expect_error) {
  PGresult* res = PQexec(conn_, sql.c_str());
  ExecStatusType st = PQresultStatus(res);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok && !expect_error) {
    ADD_FAILURE() << "SQL failed: " << sql.substr(0, 200) << "\n" << PQresultErrorMessage(res);
  }
  PQclear(res);
  return ok;
}

std::vector<std::vector<std::string>> Sql::Query(const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  PGresult* res = PQexec(conn_, sql.c_str());
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    ADD_FAILURE() << "query failed: " << sql << "\n" << PQresultErrorMessage(res);
    PQclear(res);
    return rows;
  }
  for (int r = 0; r < PQntuples(res); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(res); ++c) {
      row.push_back(PQgetisnull(res, r, c) ? "<NULL>" : PQgetvalue(res, r, c));
    }
    rows.push_back(std::move(row));
  }
  PQclear(res);
  return rows;
}

std::string Sql::Scalar(const std::string& sql) {
  auto rows = Query(sql);
  if (rows.size() != 1 || rows[0].size() != 1) {
    ADD_FAILURE() << "expected one value from: " << sql;
    return "";
  }
  return rows[0][0];
}

std::optional<std::string> Sql::PollScalar(const std::string& sql) {
  PGresult* res = PQexec(conn_, sql.c_str());
  std::optional<std::string> value;
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1) {
    value = PQgetisnull(res, 0, 0) ? "<NULL>" : PQgetvalue(res, 0, 0);
  } else {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool transient = state && (std::string_view(state) == "40P01" ||  // deadlock_detected
                               std::string_view(state) == "42P01");   // undefined_table
    if (!transient) ADD_FAILURE() << "query failed: " << sql << "\n" << PQresultErrorMessage(res);
  }
  PQclear(res);
  return value;
}

BackgroundWriter::BackgroundWriter(const std::string& url, Make transaction, int64_t limit) {
  thread_ = std::thread([this, url, transaction = std::move(transaction), limit] {
    Sql sql(url);
    std::mt19937_64 rng(42);
    for (int64_t n = 0; !stop_.load() && (limit < 0 || n < limit); ++n) {
      if (sql.Exec(transaction(n, rng))) committed_.fetch_add(1);
    }
  });
}

BackgroundWriter::~BackgroundWriter() { Stop(); }

void BackgroundWriter::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

PgflowProcess::PgflowProcess(std::vector<std::string> args, const std::string& log_path,
                             std::map<std::string, std::string> env, const std::string& run_as) {
  pid_ = Spawn(args, log_path, env, run_as);
}

PgflowProcess::~PgflowProcess() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(10));
  }
}

void PgflowProcess::Signal(int signo) {
  if (pid_ > 0) kill(pid_, signo);
}

bool PgflowProcess::Running() {
  if (pid_ <= 0 || status_ != -1) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = ExitCode(st);
    return false;
  }
  return r == 0;
}

int PgflowProcess::Wait(std::chrono::milliseconds timeout) {
  WaitFor([this] { return !Running(); }, timeout);
  return status_;
}

int RunPgflow(const std::vector<std::string>& args, std::string* output,
              std::map<std::string, std::string> env) {
  TempDir tmp;
  std::string out = tmp.File("out");
  pid_t pid = Spawn(args, out, env);
  int st = 0;
  waitpid(pid, &st, 0);
  if (output != nullptr) *output = ReadFile(out);
  return ExitCode(st);
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the poll interval
  }
}

bool WaitSlotSentAll(const std::string& url, const std::string& slot,
                     std::chrono::milliseconds timeout) {
  Sql sql(url);
  const std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  return WaitFor(
      [&] {
        return sql.Scalar("SELECT coalesce(bool_or(r.sent_lsn >= '" + end +
                          "'), false) FROM pg_stat_replication r JOIN pg_replication_slots s ON "
                          "s.active_pid = r.pid WHERE s.slot_name = '" +
                          slot + "'") == "t";
      },
      timeout);
}

namespace {
// The JSON value of each line of `text` (read from `path`), a line that is not one failing
// the current test.
std::vector<nlohmann::json> ParseJsonl(const std::string& text, const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ":" << n << ": not JSON: " << line.substr(0, 200);
    }
  }
  return out;
}
}  // namespace

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  return ParseJsonl(ReadFile(path), path);
}

std::vector<nlohmann::json> ReadJsonlWritten(const std::string& path) {
  std::string text = ReadFile(path);
  const size_t last_end = text.rfind('\n');
  text.resize(last_end == std::string::npos ? 0 : last_end + 1);
  return ParseJsonl(text, path);
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/pgflow-test.XXXXXX";
  char* d = mkdtemp(tmpl);
  if (d == nullptr) std::abort();
  path_ = d;
}

TempDir::~TempDir() {
  if (std::getenv("PGFLOW_TEST_KEEP") != nullptr) {  // (to look into a failure)
    std::fprintf(stderr, "kept %s (PGFLOW_TEST_KEEP)\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t CountInFile(const std::string& path, const std::string& needle) {
  std::string text = ReadFile(path);
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

std::unique_ptr<PgflowProcess> StartPgflowUntilLogged(std::vector<std::string> args,
                                                      const std::string& log_path,
                                                      std::map<std::string, std::string> env,
                                                      const std::string& needle) {
  size_t before = CountInFile(log_path, needle);
  auto p = std::make_unique<PgflowProcess>(std::move(args), log_path, std::move(env));
  bool up = WaitFor([&] { return CountInFile(log_path, needle) > before || !p->Running(); },
                    std::chrono::seconds(60));
  EXPECT_TRUE(up && p->Running()) << ReadFile(log_path);
  return p;
}

int FreeLoopbackPort() {
  static absl::Mutex* const mu = new absl::Mutex;
  static std::set<int>* const given = new std::set<int>;
  while (true) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    close(fd);
    const int port = ntohs(addr.sin_port);
    absl::MutexLock lock(mu);
    if (given->insert(port).second) return port;
  }
}

HttpAnswer Curl(const std::string& url, const std::string& args) {
  std::string command = "curl -s -m 10 " + args + " -w '\\n%{http_code}' '" + url + "' 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  HttpAnswer answer;
  size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return answer;
  answer.code = std::atoi(out.c_str() + nl + 1);
  answer.body = out.substr(0, nl);
  return answer;
}

std::string NewDatabase(const std::string& name) {
  Sql(SharedCluster().Url()).Exec("CREATE DATABASE " + name);
  return SharedCluster().Url(name);
}

std::string PipelineHead(const std::string& name, const std::string& tables) {
  return "pipeline: " + name + "\nsource:\n  postgres:\n    url: " + SharedCluster().Url(name) +
         "\n    tables: " + tables + "\n    status_interval: 200ms\n";
}

}  // namespace pgflow::testing
