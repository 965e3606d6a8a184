#pragma once

// The kv cache's network listeners: Redis, memcached and HTTP, on Boost.Asio with C++20
// coroutines. A fixed number of threads, each running its own io_context (polling it for
// spin_us before sleeping); the acceptors run on the first and deal connections to the threads
// in turn; one coroutine per connection.
// A connection answers every complete request it read at once, and its replies go out with
// the other connections' at the end of the thread's turn, one send each (as redis-server
// writes before it sleeps); one read per request (drained_read.h).
// Limits: max_connections across the three listeners (past it a new client gets its
// protocol's error and is closed), the sessions' request and output bounds (kv_protocols.h).
// A Redis client in subscribed mode that falls behind by more than max_output_bytes of
// notifications is disconnected, as Redis does.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "sinks/kv/kv_protocols.h"

namespace pgflow {

struct KvListenOptions {
  std::string redis;      // "host:port"; empty: no listener
  std::string memcached;  // "host:port"; empty: no listener
  std::string http;       // "host:port"; empty: no listener
  int threads = 0;        // network threads; 0: half the machine's cores, at least one
  // How long a network thread keeps polling for the next request before it sleeps. A thread
  // woken for every request costs a context switch each (dear on a virtual machine); one
  // that polls briefly after answering serves the next at once. 0: sleep at once.
  int spin_us = 50;
  size_t max_connections = 10000;
};

class KvServer {
 public:
  // `service` must outlive the server.
  KvServer(KvService* service, KvListenOptions options);
  ~KvServer();  // Stop()

  // Binds every listener (an error names the address, e.g. in use) and starts the threads.
  absl::Status Start();
  // Closes the listeners and every connection, and joins the threads. Idempotent.
  void Stop();

  // The bound ports (useful with port 0); 0 when the listener is off.
  int redis_port() const;
  int memcached_port() const;
  int http_port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgflow
