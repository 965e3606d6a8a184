#pragma once

// A tenant: what the pooler keeps per database entry (as clients name it), across its users'
// pools and its sessions on every thread: its clients, for the entry's max_client_conn, and
// the pace of its queries, for max_queries_per_second.

#include <atomic>
#include <chrono>
#include <cstdint>

#include "pooler/pooler_config.h"

namespace pgflow::pooler {

// Queries' turns at a rate, shared by threads without a lock: the generic cell rate
// algorithm (a token bucket kept as one time). A turn is due every 1/rate; up to one second's
// worth may be taken ahead (a burst of `rate` queries after a quiet second).
class QueryPace {
 public:
  using Clock = std::chrono::steady_clock;

  // Takes the next turn at `now` under `per_second` (0 or less: no limit): zero when the query
  // may go now, else how long until its turn comes. The turn is taken either way, so that
  // waiting queries go one by one in the order they came, each woken once.
  std::chrono::nanoseconds Take(int per_second, Clock::time_point now) {
    if (per_second <= 0) return std::chrono::nanoseconds(0);
    const int64_t interval = 1'000'000'000 / per_second;
    const int64_t ahead = 1'000'000'000 - interval;  // how far ahead turns may be taken
    const int64_t t = now.time_since_epoch() / std::chrono::nanoseconds(1);
    int64_t due = next_.load(std::memory_order_relaxed);
    while (true) {
      const int64_t from = due > t ? due : t;
      if (next_.compare_exchange_weak(due, from + interval, std::memory_order_relaxed)) {
        return std::chrono::nanoseconds(from - t > ahead ? from - t - ahead : 0);
      }
    }
  }

 private:
  std::atomic<int64_t> next_{0};  // when the next turn is due (steady clock, ns)
};

struct Tenant {
  std::atomic<int> clients{0};          // logged-in clients (Session::JoinPool to its end)
  std::atomic<int> max_queries_per_second{0};  // the entry's, kept current by RELOAD; 0: none
  QueryPace queries;
  std::atomic<uint64_t> queries_delayed{0};  // queries that waited for their turn

  // Takes the limits of the entry `db` (null: the entry is gone, so none) of a configuration
  // installed now or before.
  void Follow(const DatabaseOptions* db) {
    max_queries_per_second.store(db != nullptr ? db->max_queries_per_second : 0);
  }
};

}  // namespace pgflow::pooler
