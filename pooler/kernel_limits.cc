#include "pooler/kernel_limits.h"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>

#include "engine/str_cat.h"

namespace pgflow::pooler {
namespace {

// Past this many clients a burst of new connections (a fleet of application servers
// restarting) overflows a smaller accept queue: the kernel drops SYNs, clients retry after 1 s.
constexpr int kBurstBacklog = 4096;
constexpr int kManyClients = 1000;

// The number a /proc file holds, or `fallback` when it cannot be read.
int ReadProcInt(const char* path, int fallback = 0) {
  std::ifstream in(path);
  int value = 0;
  if (!(in >> value)) return fallback;
  return value;
}

}  // namespace

uint64_t DescriptorsNeeded(const PoolerConfig& config) {
  uint64_t servers = 0;
  for (const auto& [name, db] : config.databases) {
    servers += static_cast<uint64_t>(std::max(0, db.pool_size) + std::max(0, db.reserve_pool));
  }
  // Listeners (a few per thread), the epoll sets, the admin and http endpoints, logs.
  constexpr uint64_t kMargin = 64;
  // A client holds one. A TLS client's login borrows two more (the socket pair its handshake
  // and login go through, until the relay takes the connection over): room for a burst of
  // kTlsLoginsAtOnce.
  constexpr uint64_t kTlsLoginsAtOnce = 1000;
  const uint64_t clients = static_cast<uint64_t>(std::max(0, config.max_client_conn));
  const uint64_t logins = config.tls.cert.empty() ? 0 : 2 * std::min(clients, kTlsLoginsAtOnce);
  return clients + logins + servers + kMargin;
}

std::vector<std::string> KernelLimitProblems(const PoolerConfig& config,
                                             const KernelLimits& limits) {
  std::vector<std::string> problems;
  const uint64_t needed = DescriptorsNeeded(config);
  if (limits.open_files != 0 && limits.open_files < needed) {
    problems.push_back(Cat(
        "max_client_conn ", config.max_client_conn, " needs about ", needed,
        " open files (clients, server connections, listeners), but this process may open ",
        limits.open_files, " (hard limit ", limits.open_files_hard,
        "): clients past it are refused. Raise it: `ulimit -n ", needed,
        "` in the shell that starts the pooler, LimitNOFILE=", needed,
        " in its systemd unit, or nofile in /etc/security/limits.conf; or lower "
        "max_client_conn"));
  }
  if (config.max_client_conn >= kManyClients) {
    if (limits.somaxconn != 0 && limits.somaxconn < kBurstBacklog) {
      problems.push_back(Cat(
          "net.core.somaxconn is ", limits.somaxconn, ", which caps the listener's queue of "
          "connections not yet accepted: with max_client_conn ", config.max_client_conn,
          ", a burst of new clients past it is dropped by the kernel and retried a second "
          "later. Raise it: sysctl -w net.core.somaxconn=", kBurstBacklog));
    }
  }
  return problems;
}

bool MigratesQueuedConnections() {
  // (Unreadable: nothing is known, and nothing is said.)
  return ReadProcInt("/proc/sys/net/ipv4/tcp_migrate_req", 1) != 0;
}

KernelLimits ReadKernelLimits(const PoolerConfig& config) {
  KernelLimits limits;
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    const uint64_t needed = DescriptorsNeeded(config);
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < needed &&
        files.rlim_cur < files.rlim_max) {
      rlimit raised = files;
      raised.rlim_cur =
          files.rlim_max == RLIM_INFINITY ? needed : std::min<rlim_t>(needed, files.rlim_max);
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) files = raised;
    }
    limits.open_files = files.rlim_cur == RLIM_INFINITY ? 0 : files.rlim_cur;
    limits.open_files_hard = files.rlim_max == RLIM_INFINITY ? 0 : files.rlim_max;
  }
  limits.somaxconn = ReadProcInt("/proc/sys/net/core/somaxconn");
  return limits;
}

}  // namespace pgflow::pooler
