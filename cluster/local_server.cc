#include "cluster/local_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/pg_tools.h"
#include "engine/listen_address.h"
#include "engine/log.h"
#include "engine/lsn.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

constexpr const char* kSettingsFile = "pgflow.conf";

// A value in postgresql.conf's quotes.
std::string ConfQuoted(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// A conninfo value, quoted as libpq reads it.
std::string Quoted(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// The processes `pid` started that still run (its threads' /proc children lists).
std::vector<pid_t> Children(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(Cat("/proc/", pid, "/task"), ec)) {
    std::ifstream children(task.path() / "children");
    pid_t child = 0;
    while (children >> child) out.push_back(child);
  }
  return out;
}

// The server's Unix socket: PostgreSQL's own default directory (its name carries the port).
std::string SocketDirectory() { return "/tmp"; }

std::string ReadWhole(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

LocalServer::LocalServer(const NodeConfig& config) : config_(config) {
  if (absl::StatusOr<ListenAddress> listen = ParseListenAddress(config_.postgres.listen);
      listen.ok()) {
    host_ = listen->LocalHost();
    port_ = listen->port;
    address_ = listen->ToString();
  }
}

LocalServer::~LocalServer() {
  if (pid_.load() > 0) {
    (void)Stop(/*fast=*/true);
  }
}

std::string LocalServer::Program(std::string_view name) const {
  if (config_.postgres.bin_dir.empty()) return FindPgTool(name);
  return Cat(config_.postgres.bin_dir, "/", name);
}

absl::Status LocalServer::Run(std::string_view program, const std::vector<std::string>& args) {
  absl::StatusOr<ToolRun> run = RunProgram(Program(program), args);
  if (!run.ok()) return run.status();
  if (run->exit_code != 0) {
    std::string output = run->output.substr(0, 2000);
    while (!output.empty() && output.back() == '\n') output.pop_back();
    return absl::InternalError(Cat(program, " ended with ", run->exit_code, ": ", output));
  }
  return absl::OkStatus();
}

std::string LocalServer::ReplicationConninfo() const {
  return Cat("host=", Quoted(host_), " port=", port_, " user=",
             Quoted(config_.postgres.replication_user));
}

bool LocalServer::WasStandby() const {
  std::error_code ec;
  return fs::exists(fs::path(config_.data_dir) / "standby.signal", ec);
}

absl::StatusOr<PgConnPtr> LocalServer::ConnectLocal(int timeout_seconds) const {
  // (A statement that hangs must not hold the node's loop, and the lease with it.)
  return Connect(Cat("host=", Quoted(SocketDirectory()), " port=", port_,
                     " dbname=postgres user=", Quoted(config_.postgres.user),
                     " connect_timeout=", timeout_seconds, " application_name=pgflow-node",
                     " options='-c statement_timeout=", timeout_seconds * 1000, "'"),
                 ConnectionKind::kRegular);
}

std::vector<LocalServer::Standby> LocalServer::Standbys() {
  std::vector<Standby> out;
  absl::StatusOr<PgConnPtr> conn = ConnectLocal(2);
  if (!conn.ok()) return out;
  absl::StatusOr<PgResultPtr> rows =
      Exec(conn->get(),
           "SELECT application_name, sync_state, coalesce(flush_lsn, '0/0') "
           "FROM pg_stat_replication WHERE state = 'streaming' ORDER BY application_name");
  if (!rows.ok()) return out;
  for (int i = 0; i < PQntuples(rows->get()); ++i) {
    Standby standby{PQgetvalue(rows->get(), i, 0), PQgetvalue(rows->get(), i, 1)};
    if (std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(rows->get(), i, 2))) {
      standby.flushed = lsn->value;
    }
    out.push_back(std::move(standby));
  }
  return out;
}

std::optional<uint32_t> LocalServer::ReplayTimeline(int timeout_seconds) const {
  absl::StatusOr<PgConnPtr> conn =
      Connect(Cat("host=", Quoted(SocketDirectory()), " port=", port_, " dbname=postgres user=",
                  Quoted(config_.postgres.user), " connect_timeout=", timeout_seconds,
                  " application_name=pgflow-node"),
              ConnectionKind::kReplication);
  if (!conn.ok()) return std::nullopt;
  absl::StatusOr<PgResultPtr> row = Exec(conn->get(), "IDENTIFY_SYSTEM");
  uint32_t timeline = 0;
  if (!row.ok() || PQntuples(row->get()) != 1 ||
      !absl::SimpleAtoi(PQgetvalue(row->get(), 0, 1), &timeline)) {
    return std::nullopt;
  }
  return timeline;
}

void LocalServer::WaitForTransactions(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  // (The poolers look at the cluster's keys every 100 ms.)
  std::this_thread::sleep_for(std::min(limit, std::chrono::milliseconds(500)));
  absl::StatusOr<PgConnPtr> conn = ConnectLocal(2);
  if (!conn.ok()) return;
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<PgResultPtr> open =
        Exec(conn->get(),
             "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND "
             "xact_start IS NOT NULL AND pid <> pg_backend_pid()");
    if (!open.ok() || std::string_view(PQgetvalue(open->get(), 0, 0)) == "0") return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ServerStatus LocalServer::Read(int timeout_seconds) {
  ServerStatus status;
  const fs::path data(config_.data_dir);
  std::error_code ec;
  if (!fs::exists(data / "PG_VERSION", ec)) return status;  // kEmpty
  status.state = ServerStatus::State::kStopped;
  absl::StatusOr<PgConnPtr> conn = ConnectLocal(timeout_seconds);
  if (!conn.ok()) return status;  // (stopped, starting or not answering: looked at again)
  // A promoted server's last checkpoint may still name the old timeline: the WAL file it
  // writes names the new one. (A standby's: below.)
  absl::StatusOr<PgResultPtr> row = Exec(
      conn->get(),
      "SELECT pg_is_in_recovery(), "
      "CASE WHEN pg_is_in_recovery() THEN greatest(pg_last_wal_receive_lsn(), "
      "pg_last_wal_replay_lsn()) ELSE pg_current_wal_insert_lsn() END, "
      "CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM "
      "pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint())) ELSE "
      "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
      "(SELECT system_identifier FROM pg_control_system()), "
      "coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false)");
  if (!row.ok()) return status;
  status.state = ServerStatus::State::kRunning;
  status.in_recovery = PQgetvalue(row->get(), 0, 0)[0] == 't';
  if (std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(row->get(), 0, 1))) {
    status.position = lsn->value;
  }
  (void)absl::SimpleAtoi(PQgetvalue(row->get(), 0, 2), &status.timeline);
  (void)absl::SimpleAtoi(PQgetvalue(row->get(), 0, 3), &status.system_id);
  status.streaming = PQgetvalue(row->get(), 0, 4)[0] == 't';
  if (status.in_recovery) {
    // A standby's timeline is that of the WAL it replays, which neither its last restartpoint
    // nor a stopped WAL receiver tells: IDENTIFY_SYSTEM on a walsender of its own does.
    if (std::optional<uint32_t> timeline = ReplayTimeline(timeout_seconds)) {
      status.timeline = *timeline;
    }
  }
  return status;
}

absl::Status LocalServer::WriteSettings(bool standby, const std::string& primary) {
  const fs::path data(config_.data_dir);
  const fs::path settings = data / kSettingsFile;
  // (Written beside, then renamed over: a reload never reads half a file.)
  const fs::path written = data / Cat(kSettingsFile, ".new");
  std::ofstream conf(written, std::ios::trunc);
  conf << "# Written by pgflow node " << config_.name
       << ": the node rewrites it, so change its node.yaml instead.\n";
  conf << "listen_addresses = " << ConfQuoted(host_) << "\n";
  conf << "port = " << port_ << "\n";
  // (Not in the data directory: pg_basebackup and pg_rewind would meet the socket there.)
  conf << "unix_socket_directories = " << ConfQuoted(SocketDirectory()) << "\n";
  // (logical: a pipeline may read the cluster's primary.)
  conf << "wal_level = logical\nhot_standby = on\nwal_log_hints = on\n";
  conf << "max_wal_senders = 10\nmax_replication_slots = 10\nhot_standby_feedback = on\n";
  // (A clone, a standby catching up and pg_rewind read WAL the primary would recycle.)
  conf << "wal_keep_size = '256MB'\n";
  conf << "synchronous_standby_names = " << ConfQuoted(synchronous_) << "\n";
  for (const auto& [name, value] : config_.postgres.parameters) {
    conf << name << " = " << ConfQuoted(value) << "\n";
  }
  // (The primary knows its standbys by application_name: synchronous_standby_names.)
  if (standby && !primary.empty()) {
    conf << "primary_conninfo = "
         << ConfQuoted(Cat(primary, " application_name=", Quoted(config_.name))) << "\n";
  }
  primary_ = standby ? primary : std::string();
  conf.close();
  if (!conf) return absl::InternalError(Cat("writing ", written.string()));
  std::error_code renamed;
  fs::rename(written, settings, renamed);
  if (renamed) return absl::InternalError(Cat("writing ", settings.string(), ": ", renamed.message()));
  // postgresql.conf includes it once (a clone's copy already does).
  const fs::path main_conf = data / "postgresql.conf";
  const std::string include = Cat("include_if_exists = '", kSettingsFile, "'");
  if (ReadWhole(main_conf).find(include) == std::string::npos) {
    std::ofstream(main_conf, std::ios::app) << "\n# pgflow node: its managed settings\n"
                                            << include << "\n";
  }
  std::error_code ec;
  if (standby) {
    std::ofstream(data / "standby.signal").flush();
  } else {
    fs::remove(data / "standby.signal", ec);
  }
  return absl::OkStatus();
}

absl::Status LocalServer::Initialize() {
  // initdb's own defaults on this machine (peer on the socket, trust on loopback: tighten
  // pg_hba.conf for production); from other machines, the file's pg_hba lines.
  if (absl::Status s = Run("initdb", {"-D", config_.data_dir, "-U", config_.postgres.user,
                                      "--data-checksums", "--auth-local=peer",
                                      "--auth-host=trust"});
      !s.ok()) {
    return s;
  }
  std::ofstream hba(fs::path(config_.data_dir) / "pg_hba.conf", std::ios::app);
  hba << "\n# pgflow node: postgres.pg_hba\n";
  for (const std::string& line : config_.postgres.pg_hba) hba << line << "\n";
  hba.close();
  if (!hba) return absl::InternalError(Cat("writing ", config_.data_dir, "/pg_hba.conf"));
  return WriteSettings(false, "");
}

absl::Status LocalServer::Clone(const std::string& primary) {
  if (absl::Status s = Run("pg_basebackup", {"-D", config_.data_dir, "-d",
                                             Cat(primary, " application_name=",
                                                 Quoted(Cat(config_.name, "-clone"))),
                                             "-X",
                                             "stream", "-c", "fast"});
      !s.ok()) {
    return s;
  }
  return WriteSettings(true, primary);
}

absl::Status LocalServer::Rewind(const std::string& source) {
  // pg_rewind reads the source's timeline from its control file, which a server just promoted
  // updates only at its first checkpoint: before it, the rewind would go back to the wrong
  // fork and leave a server that never starts. A checkpoint on the source first.
  {
    absl::StatusOr<PgConnPtr> conn =
        Connect(Cat(source, " dbname=postgres connect_timeout=10"), ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    // (A leader not yet promoted is on the old timeline: pg_rewind would find nothing to do.)
    absl::StatusOr<PgResultPtr> recovering = Exec(conn->get(), "SELECT pg_is_in_recovery()");
    if (!recovering.ok()) return absl::UnavailableError(recovering.status().message());
    if (PQgetvalue(recovering->get(), 0, 0)[0] == 't') {
      return absl::UnavailableError("the source of pg_rewind is not promoted yet");
    }
    if (absl::StatusOr<PgResultPtr> done = Exec(conn->get(), "CHECKPOINT"); !done.ok()) {
      return absl::FailedPreconditionError(Cat("a checkpoint on the source of pg_rewind: ",
                                               done.status().message()));
    }
  }
  // (A server stopped immediately is first recovered by pg_rewind itself, in single-user mode.)
  if (absl::Status s = Run("pg_rewind", {"-D", config_.data_dir, "--source-server",
                                         Cat(source, " dbname=postgres")});
      !s.ok()) {
    return s;
  }
  // pg_rewind leaves pg_replslot as it was: a pipeline's logical slot there may have confirmed
  // changes past where the timelines forked, and resumed on a later promotion it would skip
  // the new timeline's changes there without a word. The slots go (a pipeline then stops at
  // the missing slot and says how to go on).
  std::error_code ec;
  for (const fs::directory_entry& slot :
       fs::directory_iterator(fs::path(config_.data_dir) / "pg_replslot", ec)) {
    LogWarning("node %s: dropping replication slot %s, left from before the rewind",
               config_.name, slot.path().filename().string());
    fs::remove_all(slot.path(), ec);
  }
  return WriteSettings(true, source);
}

absl::Status LocalServer::SetAside() {
  const std::string aside = Cat(config_.data_dir, ".", std::time(nullptr));
  std::error_code ec;
  fs::rename(config_.data_dir, aside, ec);
  if (ec) return absl::InternalError(Cat("moving ", config_.data_dir, " aside: ", ec.message()));
  LogWarning("node %s: the data directory was moved to %s", config_.name, aside);
  return absl::OkStatus();
}

absl::Status LocalServer::Start(bool standby, const std::string& primary, int timeout_seconds) {
  if (Alive()) {
    // (The one it started still runs: a second would fail on its lock file, and the node
    // would lose the first's pid, which the fence needs.)
    return absl::FailedPreconditionError(Cat("the server in ", config_.data_dir, " still runs"));
  }
  if (absl::Status s = WriteSettings(standby, primary); !s.ok()) return s;
  const std::string program = Program("postgres");
  const std::string log = (fs::path(config_.data_dir) / "server.log").string();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(Cat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    // The child: its own process group, killed with its node, its output to server.log.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // (the node died before the line above)
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    for (int i = 3; i < 1024; ++i) ::close(i);
    ::execl(program.c_str(), program.c_str(), "-D", config_.data_dir.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  pid_.store(pid);
  const auto deadline = steady_clock::now() + std::chrono::seconds(timeout_seconds);
  while (steady_clock::now() < deadline) {
    if (!Alive()) {
      return absl::InternalError(
          Cat("postgres -D ", config_.data_dir, " ended while starting: see ", log));
    }
    if (Read(1).state == ServerStatus::State::kRunning) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(
      Cat("postgres -D ", config_.data_dir, " did not answer within ", timeout_seconds,
          " s: see ", log));
}

bool LocalServer::Alive() {
  const pid_t pid = pid_.load();
  if (pid <= 0) return false;
  int status = 0;
  const pid_t done = ::waitpid(pid, &status, WNOHANG);
  if (done == 0) return true;
  pid_.store(-1);
  return false;
}

absl::Status LocalServer::Stop(bool fast) {
  const pid_t pid = pid_.load();
  if (pid <= 0) return absl::OkStatus();
  ::kill(pid, fast ? SIGINT : SIGQUIT);
  const auto deadline = steady_clock::now() + std::chrono::seconds(fast ? 60 : 10);
  while (Alive()) {
    if (steady_clock::now() >= deadline) {
      Kill();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  while (Alive()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return absl::OkStatus();
}

absl::Status LocalServer::StopForeign() {
  if (Run("pg_ctl", {"stop", "-w", "-t", "60", "-m", "fast", "-D", config_.data_dir}).ok()) {
    return absl::OkStatus();
  }
  return Run("pg_ctl", {"stop", "-w", "-t", "60", "-m", "immediate", "-D", config_.data_dir});
}

bool LocalServer::Answers(int timeout_seconds) const {
  // (A server starting up or recovering rejects connections: it answers.)
  const std::string conninfo = Cat("host=", Quoted(SocketDirectory()), " port=", port_,
                                   " dbname=postgres connect_timeout=", timeout_seconds);
  return PQping(conninfo.c_str()) != PQPING_NO_RESPONSE;
}

void LocalServer::Kill() {
  const pid_t pid = pid_.load();
  if (pid <= 0) return;
  // Every backend makes itself a session leader (setsid), so no process group holds them all:
  // the postmaster is stopped first (it forks no more), then each of its children is killed,
  // then it. (Children of a postmaster that died already notice it and end by themselves.)
  ::kill(pid, SIGSTOP);
  for (pid_t child : Children(pid)) ::kill(child, SIGKILL);
  ::kill(pid, SIGKILL);
}

absl::Status LocalServer::Reload() {
  const pid_t pid = pid_.load();
  if (pid <= 0 || ::kill(pid, SIGHUP) != 0) {
    return absl::FailedPreconditionError("the server is not running to reload");
  }
  return absl::OkStatus();
}

absl::Status LocalServer::Promote() {
  if (absl::Status s = Run("pg_ctl", {"promote", "-w", "-t", "60", "-D", config_.data_dir});
      !s.ok()) {
    return s;
  }
  return WriteSettings(false, "");
}

absl::Status LocalServer::Follow(const std::string& primary) {
  if (absl::Status s = WriteSettings(true, primary); !s.ok()) return s;
  return Reload();
}

absl::Status LocalServer::SetSynchronous(const std::string& standby) {
  const std::string value = standby.empty() ? std::string() : Cat("\"", standby, "\"");
  if (value == synchronous_ && synchronous_written_) return absl::OkStatus();
  synchronous_ = value;  // (what WriteSettings writes)
  synchronous_written_ = false;
  if (absl::Status s = WriteSettings(false, ""); !s.ok()) return s;
  if (absl::Status s = Reload(); !s.ok()) return s;
  synchronous_written_ = true;  // (only once the server has it: else written again next time)
  return absl::OkStatus();
}

}  // namespace pgflow::cluster
