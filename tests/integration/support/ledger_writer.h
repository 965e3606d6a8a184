#pragma once

// A client committing unique ids into `ledger (id bigint PRIMARY KEY)` one at a time, through
// its own connection (reconnecting after an error), from a thread of its own: on a NetnsLab
// host or in the tests' namespace. Each acknowledged write records the server that took it
// (address, system identifier and timeline) and when it was sent and acknowledged, so the
// high-availability tests can tell what a failover lost and whether two timelines took writes
// at once.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "tests/integration/support/netns_lab.h"

namespace pgflow::testing {

// One acknowledged write.
struct LedgerWrite {
  int64_t id = 0;
  // The server and its timeline: "<address>:<port>/<sysid>/<timeline>" (two standbys
  // promoted at once would pick the same timeline: the address tells them apart).
  std::string server;
  std::chrono::steady_clock::time_point sent;
  std::chrono::steady_clock::time_point acknowledged;
};

class LedgerWriter {
 public:
  // `number` keeps writers' ids apart (number × 10⁹ + n). `host`: the lab host the thread runs
  // on, -1 (and `lab` null) for the tests' own namespace.
  LedgerWriter(int number, std::string url, const NetnsLab* lab = nullptr, int host = -1);
  ~LedgerWriter() { Stop(); }
  LedgerWriter(const LedgerWriter&) = delete;
  LedgerWriter& operator=(const LedgerWriter&) = delete;

  void Stop();
  int errors() const { return errors_.load(); }
  int acknowledged() const { return acknowledged_.load(); }
  std::vector<LedgerWrite> writes() const;
  // The acknowledged ids, comma-separated (for an IN list).
  std::string Ids() const;

 private:
  void Run();

  const int number_;
  const std::string url_;
  const NetnsLab* lab_;
  const int host_;
  std::atomic<bool> stop_{false};
  std::atomic<int> errors_{0};
  std::atomic<int> acknowledged_{0};
  mutable absl::Mutex mu_;
  std::vector<LedgerWrite> writes_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace pgflow::testing
