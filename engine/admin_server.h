#pragma once

// The admin endpoint (`admin: {listen: host:port}`): a small HTTP/1.1 server on Boost.Beast,
// on one thread of its own, serving
//   /metrics  the metrics registry in Prometheus's text format 0.0.4;
//   /healthz  200 while the process is alive;
//   /readyz   200 while the pipeline copies or streams and every sink is healthy, else 503
//             with the reason;
//   /status   the RunStatus as JSON;
//   POST /handover?at=X/X  (`pgflow cutover`, from a loopback address only) ends the run once
//             everything up to that WAL position is confirmed: RunStatus::RequestHandover;
//   POST /hold?at=X/X&seconds=N, POST /release  (`pgflow verify --live`, loopback only): the
//             sinks get the source's transactions up to that position and no further, until
//             released: RunStatus::RequestHold, engine/hold_gate.h.
// A module adds pages of its own through AdminServerOptions::pages (`pgflow node`'s /primary,
// /replica, /health), and the web console (engine/console.h: `/`, its files and /api/...)
// through AdminServerOptions::console; the console's work that may wait (a password's check,
// a database read, an action) runs on a worker thread of its own, one request at a time.
// Otherwise GET and HEAD only. The POSTs are refused from other machines and
// from browsers (a request with an Origin header): loopback is the only guard, so bind the endpoint
// where only the machine's own users reach it. Bounded so that a slow or hostile client cannot hurt
// the pipeline: at most max_connections at once (past it a client gets 503 and is closed), requests
// of at most 8 kB of headers and 64 kB of body, and each read or write must finish within
// `io_timeout`.
// Nothing here takes a lock the pipeline's hot paths take (engine/metrics.h).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/console.h"
#include "engine/metrics.h"
#include "engine/run_status.h"

namespace pgflow {

// A page another module serves on the endpoint (the HA node's /primary, /replica, /health).
struct AdminPage {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct AdminServerOptions {
  std::string listen;  // host:port (engine/listen_address.h)
  // Asked first for every GET and HEAD but /metrics: the page at `path` (its query apart), or
  // nullopt for the endpoint's own. Called on the server's thread.
  std::function<std::optional<AdminPage>(std::string_view path, std::string_view query)> pages{};
  // The web console (engine/console.h) on `/`, `/api/...`, when set.
  std::optional<ConsoleHooks> console{};
  size_t max_connections = 64;
  std::chrono::milliseconds io_timeout{10000};
};

// GETs `target` from the admin endpoint listening on `listen` (a wildcard address is reached on
// loopback): the status code and body, or an error when nothing answers within `timeout`.
struct HttpReply {
  int status = 0;
  std::string body;
};
absl::StatusOr<HttpReply> AdminGet(const std::string& listen, const std::string& target,
                                   std::chrono::milliseconds timeout);
// The same with another method ("POST").
absl::StatusOr<HttpReply> AdminRequest(const std::string& listen, std::string_view method,
                                       const std::string& target,
                                       std::chrono::milliseconds timeout);

class AdminServer {
 public:
  // `metrics` and `status` must outlive the server. Without a status (the pooler's endpoint)
  // only /metrics and /healthz are served.
  AdminServer(AdminServerOptions options, MetricsRegistry* metrics, RunStatus* status);
  ~AdminServer();  // Stop()

  // Binds (an error names the address) and starts serving.
  absl::Status Start();
  // Closes the listener and every connection and joins the thread. Idempotent.
  void Stop();
  // The bound port (useful with port 0).
  int port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgflow
