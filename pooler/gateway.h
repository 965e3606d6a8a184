#pragma once

// SQL over HTTP and the PostgreSQL protocol over WebSocket: the pooler's `http` listener, as
// Neon's serverless driver (@neondatabase/serverless) speaks them, so that edge functions and
// other clients without raw TCP reach any PostgreSQL through the pooler with the driver they
// have. Internal to pooler/.
//
// Both paths come into the pooler as ordinary clients. For each logged-in HTTP connection or
// WebSocket, the gateway opens a tunnel (Pooler::Impl::OpenTunnel): a Session served over one
// end of a socketpair, with the client's address and TLS; the gateway is that session's client
// (GatewayClient). The login, auth.method, users file, bans, max_client_conn, pool modes, the
// routing proxy and SHOW CLIENTS are therefore the wire's, unchanged.
//
//   POST /sql (gateway_http.cc): the body {query, params} or {queries: [...]} (a batch, run as
//   one transaction with the Neon-Batch-* headers' isolation, read-only and deferrable),
//   credentials and database in the Neon-Connection-String header. Each query runs through
//   the extended protocol with text parameters; the answer is streamed as it comes: held
//   until kStreamAfter bytes (so that an error still gets its 400), then sent chunked, the
//   session read only as fast as the client takes the answer. An error after streaming began
//   closes the connection without the final chunk, so that the client sees a failure, never a
//   partial result. A keep-alive connection keeps its login for the next request with the
//   same connection string.
//
//   WebSocket (gateway_websocket.cc), on any other path: binary messages carry the protocol's
//   bytes unchanged both ways after the login. The driver sends its startup packet and its
//   password at once, without waiting for the request ("pipelined" login): the gateway asks
//   every WebSocket client for a cleartext password (the driver ignores that request, and a
//   client that waits for it answers it), then logs in to the session with that password by
//   whatever method the pooler asks, and passes on what follows from AuthenticationOk on.
//   Then a plain WebSocket's session takes its socket (Session::AdoptWebSocket) and frames
//   the protocol in its relay (websocket_frames.h): the tunnel is left, and a query costs what
//   a wire client's does. A wss:// one stays on the tunnel, relayed here (the TLS is here).
//
// Each network thread accepts on the HTTP address too (SO_REUSEPORT) and serves its
// connections itself, beside its sessions.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "boost/asio/ssl.hpp"
#include "engine/metrics.h"
#include "pooler/pooler_internal.h"

namespace pgflow::pooler {

class Gateway {
 public:
  // An answer held back until it is this long, then streamed (chunked).
  static constexpr size_t kStreamAfter = 256 * 1024;

  Gateway(Pooler::Impl* impl, MetricsRegistry* metrics) : impl_(impl), metrics_(metrics) {}
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Listens on `http.listen` on every thread (nothing to do when it is empty), loading
  // http.tls. An error names the address or the file.
  absl::Status Listen(const HttpOptions& http, const std::vector<NetThread*>& threads);
  // Starts accepting (on the threads' contexts).
  void Start();
  // Stops accepting (the threads have stopped).
  void Close();
  int port() const { return port_; }

  // Counted by the connections (HTTP and WebSocket alike).
  std::atomic<int> connections{0};

  Pooler::Impl* impl() const { return impl_; }
  // The status of an answered request, for pgflow_pooler_http_requests_total, and its time.
  void CountRequest(int status, std::chrono::steady_clock::duration took);
  void CountWebSocket();

 private:
  struct Listener {
    NetThread* thread;
    std::optional<asio_support::Acceptor> acceptor;
  };
  asio_support::Task<void> Accept(Listener* listener);

  Pooler::Impl* impl_;
  MetricsRegistry* metrics_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  int port_ = 0;
  std::mutex counters_mu_;
  std::vector<std::pair<int, Counter*>> counters_;  // by status
  Histogram* latency_ = nullptr;
};

// Cancels the query of the session a gateway client speaks to (its BackendKeyData pid, key), as
// a wire client's cancel request would: through a tunnel of its own (gateway_http.cc).
void SendCancel(Pooler::Impl* impl, NetThread* thread, const Tunnel& tunnel, int32_t pid,
                int32_t key);

// Serves one accepted connection on `thread` (gateway_http.cc): its requests in turn, or the
// WebSocket it upgrades to. Takes the connection count Accept added.
void ServeGatewayConnection(Gateway* gateway, NetThread* thread, asio_support::Socket socket,
                            std::shared_ptr<boost::asio::ssl::context> tls);

}  // namespace pgflow::pooler
