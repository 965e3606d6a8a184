// The pooler's /metrics (CollectMetrics, run before each scrape): per pool, per replica and
// cache of the routing proxy, per tenant, and the process's own.

#include <sys/resource.h>

#include <string>
#include <vector>

#include "engine/metrics.h"
#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/gateway.h"
#include "pooler/pooler_internal.h"
#include "pooler/tls.h"

namespace pgflow::pooler {

void Pooler::Impl::CollectMetrics() {
  if (gateway_ != nullptr) {
    metrics_
        ->GetGauge("pgflow_pooler_http_connections",
                   "HTTP and WebSocket connections open on the http listener.", {})
        ->Set(gateway_->connections.load());
  }
  std::vector<PoolView> pools = Pools();
  auto counter = [&](const std::string& name, const std::string& help, const MetricLabels& labels,
                     uint64_t value) {
    std::string key = name;
    for (const auto& [k, v] : labels) key += Cat("|", k, "=", v);
    uint64_t& last = exported_[key];
    Counter* c = metrics_->GetCounter(name, help, labels);
    // (A value below the last: its source was made again, a pruned pool or tenant, and
    // counts from zero.)
    c->Add(value >= last ? value - last : value);
    last = value;
  };
  for (const auto& [database, tenant] : Tenants()) {
    counter("pgflow_pooler_queries_delayed_total",
            "Queries that waited for their turn under the database's max_queries_per_second.",
            {{"database", database}}, tenant->queries_delayed.load());
  }
  for (const ReplicaView& r : Replicas()) {
    const MetricLabels labels = {
        {"database", r.database}, {"node", std::to_string(r.node.node)}, {"role", r.node.role}};
    metrics_
        ->GetGauge("pgflow_proxy_node_healthy",
                   "Whether the routing proxy sends reads to the node (1) or not (0).", labels)
        ->Set(r.node.state == "healthy" ? 1 : 0);
    metrics_
        ->GetGauge("pgflow_proxy_replica_lag_bytes",
                   "How far a replica's replay is behind the primary's position, in bytes.", labels)
        ->Set(static_cast<double>(r.node.lag_bytes));
    metrics_
        ->GetGauge("pgflow_proxy_replica_lag_seconds",
                   "How long a replica has been behind a position the primary had.", labels)
        ->Set(r.node.lag_seconds);
    counter("pgflow_proxy_reads_total", "Units of reads the routing proxy placed on the node.",
            labels, r.node.reads);
  }
  for (const CacheView& c : Caches()) {
    const MetricLabels labels = {{"database", c.database}};
    metrics_
        ->GetGauge("pgflow_proxy_cache_ready",
                   "Whether the query cache answers (1: its change stream and fences work).",
                   labels)
        ->Set(c.cache.ready ? 1 : 0);
    metrics_->GetGauge("pgflow_proxy_cache_entries", "Answers the query cache holds.", labels)
        ->Set(static_cast<double>(c.cache.entries));
    metrics_->GetGauge("pgflow_proxy_cache_bytes", "Memory the query cache's answers take.", labels)
        ->Set(static_cast<double>(c.cache.bytes));
    counter("pgflow_proxy_cache_hits_total", "Queries answered from the query cache.", labels,
            c.cache.hits);
    counter("pgflow_proxy_cache_misses_total",
            "Cacheable queries the query cache could not answer (run on the primary).", labels,
            c.cache.misses);
    counter("pgflow_proxy_cache_invalidations_total",
            "Cached answers dropped because one of their tables changed.", labels,
            c.cache.invalidations);
    counter("pgflow_proxy_cache_evictions_total",
            "Cached answers dropped for max_memory or their ttl.", labels, c.cache.evictions);
    counter("pgflow_proxy_cache_fences_total",
            "Fences the query cache ran (a message through the primary's WAL and back).", labels,
            c.cache.fences);
  }
  int waiting_total = 0;
  for (const PoolView& p : pools) {
    MetricLabels labels = {{"database", p.database}, {"user", p.user}};
    auto with = [&](const char* state) {
      MetricLabels l = labels;
      l.emplace_back("state", state);
      return l;
    };
    metrics_->GetGauge("pgflow_pooler_clients", "Client connections by state.", with("active"))
        ->Set(p.active_clients());
    metrics_->GetGauge("pgflow_pooler_clients", "Client connections by state.", with("waiting"))
        ->Set(p.counts.waiting);
    waiting_total += p.counts.waiting;
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("active"))
        ->Set(p.counts.active);
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("idle"))
        ->Set(p.counts.idle);
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("login"))
        ->Set(p.counts.connecting);
    metrics_
        ->GetGauge("pgflow_pooler_wait_max_seconds",
                   "The longest a waiting client has waited for a server connection.", labels)
        ->Set(p.counts.max_wait_s);
    counter("pgflow_pooler_transactions_total", "Transactions completed.", labels, p.transactions);
    counter("pgflow_pooler_queries_total", "Queries (ReadyForQuery answers) completed.", labels,
            p.queries);
    counter("pgflow_pooler_received_bytes_total", "Bytes received from clients.", labels,
            p.bytes_received);
    counter("pgflow_pooler_sent_bytes_total", "Bytes sent to clients.", labels, p.bytes_sent);
    counter("pgflow_pooler_errors_total", "Errors the server answered the pool's clients.",
            labels, p.errors);
    counter("pgflow_pooler_transaction_microseconds_total",
            "Transactions' time, from their first message to their end.", labels, p.xact_us);
    counter("pgflow_pooler_wait_microseconds_total",
            "Time clients spent waiting for a server connection.", labels, p.wait_us);
    counter("pgflow_pooler_waits_total", "Times a client had to wait for a server connection.",
            labels, p.waits);
    counter("pgflow_pooler_server_logins_total", "Server connections opened.", labels,
            p.server_logins);
    counter("pgflow_pooler_server_login_failures_total",
            "Server connection attempts that failed (refused, unreachable, shutting down).", labels,
            p.server_login_failures);
  }
  metrics_->GetGauge("pgflow_pooler_client_connections", "Client connections, all databases.", {})
      ->Set(clients.load());
  metrics_->GetGauge("pgflow_pooler_tls_clients", "Client connections over TLS.", {})
      ->Set(TlsClientsOpen());
  metrics_
      ->GetGauge("pgflow_pooler_memory_bytes",
                 "The pooler's resident memory, and what its heap holds in use (SHOW MEM).",
                 {{"kind", "resident"}})
      ->Set(static_cast<double>(ResidentBytes()));
  metrics_
      ->GetGauge("pgflow_pooler_memory_bytes",
                 "The pooler's resident memory, and what its heap holds in use (SHOW MEM).",
                 {{"kind", "heap"}})
      ->Set(static_cast<double>(HeapBytes()));
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
               (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  metrics_
      ->GetGauge("pgflow_pooler_cpu_seconds",
                 "CPU seconds the pooler process has used (user + system); divided by "
                 "pgflow_pooler_transactions_total: CPU per transaction.",
                 {})
      ->Set(cpu);
}

}  // namespace pgflow::pooler
