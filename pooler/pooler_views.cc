// What the console's SHOW commands list (pooler/admin_console.h): the pooler's pools, clients,
// settings, databases, and the routing proxy's replicas and caches, read from the running
// configuration and the pools.

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/pooler_internal.h"
#include "pooler/session.h"
#include "pooler/slab.h"
#include "pooler/tls.h"

namespace pgflow::pooler {

uint64_t Pooler::Impl::ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t Pooler::Impl::HeapBytes() {
  const struct mallinfo2 info = mallinfo2();
  const Slab& sessions = SessionSlab();
  // (Allocated from malloc's arenas, mmapped alone, and the sessions' blocks.)
  return info.uordblks + info.hblkhd + sessions.blocks_in_use() * sessions.block_size();
}

std::vector<std::pair<std::string, std::string>> Pooler::Impl::Memory() {
  const uint64_t heap = HeapBytes();
  const int connected = sessions.load() - consoles.load();
  const uint64_t added = heap > heap_at_start_ ? heap - heap_at_start_ : 0;
  return {
      {"resident_bytes", std::to_string(ResidentBytes())},
      {"heap_bytes", std::to_string(heap)},
      {"heap_bytes_at_start", std::to_string(heap_at_start_)},
      {"clients", std::to_string(connected)},
      {"tls_clients", std::to_string(TlsClientsOpen())},
      // Everything the heap grew by since the start, pools and server connections included,
      // over the clients: an upper bound on a client's own share.
      {"heap_bytes_per_client", connected > 0 ? std::to_string(added / connected) : ""},
  };
}

std::vector<ReplicaView> Pooler::Impl::Replicas() {
  std::vector<ReplicaView> out;
  for (const auto& [database, router] : Routers()) {
    for (Router::NodeView& node : router->Nodes()) {
      out.push_back(ReplicaView{.database = database, .node = std::move(node)});
    }
  }
  return out;
}

std::vector<CacheView> Pooler::Impl::Caches() {
  std::vector<CacheView> out;
  for (const auto& [database, router] : Routers()) {
    if (std::shared_ptr<QueryCache> cache = router->cache()) {
      out.push_back(CacheView{.database = database, .cache = cache->Stats()});
    }
  }
  return out;
}

std::vector<PoolView> Pooler::Impl::Pools() {
  std::vector<std::pair<PoolKey, std::shared_ptr<Pool>>> pools;
  {
    absl::MutexLock lock(&pools_mu_);
    pools.assign(pools_.begin(), pools_.end());
  }
  std::vector<PoolView> out;
  for (const auto& [key, pool] : pools) {
    Pool::Counts counts = pool->counts();
    PoolStats& stats = pool->stats();
    out.push_back(PoolView{
        // (A replica's pool: the database's name, a slash and the replica's number.)
        .database = std::get<2>(key) == kPrimaryNode
                        ? std::get<0>(key)
                        : Cat(std::get<0>(key), "/replica", std::get<2>(key)),
        .user = std::get<1>(key),
        .mode = std::string(PoolModeName(pool->settings().mode)),
        .clients = pool->clients.load(),
        .counts = counts,
        .transactions = stats.transactions.load(),
        .queries = stats.queries.load(),
        .bytes_received = stats.bytes_received.load(),
        .bytes_sent = stats.bytes_sent.load(),
        .xact_us = stats.xact_us.load(),
        .errors = stats.errors.load(),
        .wait_us = stats.wait_us.load(),
        .waits = stats.waits.load(),
        .server_logins = stats.server_logins.load(),
        .server_login_failures = stats.server_login_failures.load(),
        .paused = pool->paused(),
        .server_error = pool->server_error(),
        .servers = pool->ServerRows(),
    });
  }
  return out;
}

std::vector<ClientView> Pooler::Impl::Clients() {
  absl::MutexLock lock(&clients_mu_);
  std::vector<ClientView> out;
  for (const Session* session : client_infos_) {
    static constexpr const char* kStates[] = {"idle", "active", "waiting"};
    const ClientInfo& info = session->info();
    out.push_back(ClientView{.id = info.id,
                             .user = info.user,
                             .database = info.database,
                             .state = kStates[std::min<int>(info.state.load(), 2)],
                             .address = info.address,
                             .port = info.port,
                             .connected = absl::FromUnixMicros(info.connected_us)});
  }
  std::sort(out.begin(), out.end(),
            [](const ClientView& a, const ClientView& b) { return a.id < b.id; });
  return out;
}

std::vector<std::pair<std::string, std::string>> Pooler::Impl::ConfigRows() {
  std::shared_ptr<const PoolerConfig> c = config();
  return {
      {"listen", c->listen},
      {"threads", std::to_string(threads_.size())},
      {"auth_method", c->auth.method == AuthMethod::kScram  ? "scram-sha-256"
                      : c->auth.method == AuthMethod::kMd5  ? "md5"
                      : c->auth.method == AuthMethod::kCert ? "cert"
                                                            : "trust"},
      {"auth_users", c->auth.users},
      {"admin_listen", c->admin.listen},
      {"max_client_conn", std::to_string(c->max_client_conn)},
      {"hold_timeout", FormatDuration(c->hold_timeout)},
      {"query_wait_timeout", FormatDuration(c->query_wait_timeout)},
      {"client_login_timeout", FormatDuration(c->client_login_timeout)},
      {"server_connect_timeout", FormatDuration(c->server_connect_timeout)},
      {"server_idle_timeout", FormatDuration(c->server_idle_timeout)},
      {"server_lifetime", FormatDuration(c->server_lifetime)},
      {"server_reset_query", c->server_reset_query},
      {"max_message_size", FormatBytes(c->max_message_size)},
  };
}

std::vector<DatabaseView> Pooler::Impl::Databases() {
  std::shared_ptr<const PoolerConfig> c = config();
  std::set<std::string> retargeted;
  {
    absl::MutexLock lock(&reconfigure_mu_);
    for (const auto& [name, r] : retargeted_) retargeted.insert(name);
  }
  std::vector<DatabaseView> out;
  for (const auto& [name, db] : c->databases) {
    int connections = 0;
    for (const std::shared_ptr<Pool>& pool : PoolsOf(name)) {
      Pool::Counts counts = pool->counts();
      connections += counts.active + counts.idle + counts.connecting;
    }
    bool paused;  // (PAUSEd or held, before any client made it a pool)
    {
      absl::MutexLock lock(&pools_mu_);
      paused = KeptPaused(name);
    }
    const std::shared_ptr<Tenant> tenant = FindTenant(name);
    out.push_back(DatabaseView{
        .name = name,
        .host = db.upstream.HostList(),
        .port = db.upstream.port,
        .dbname = db.upstream.dbname.empty() ? name : db.upstream.dbname,
        .force_user = db.upstream.user,
        .pool_size = db.pool_size,
        .min_pool_size = db.min_pool_size,
        .reserve_pool = db.reserve_pool,
        .mode = std::string(PoolModeName(db.pool_mode)),
        .max_client_conn = db.max_client_conn,
        .current_connections = connections,
        .max_queries_per_second = db.max_queries_per_second,
        .clients = tenant != nullptr ? tenant->clients.load() : 0,
        .queries_delayed = tenant != nullptr ? tenant->queries_delayed.load() : 0,
        .paused = paused,
        .retargeted = retargeted.contains(name),
    });
  }
  return out;
}

}  // namespace pgflow::pooler
