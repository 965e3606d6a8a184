#pragma once

#include <atomic>

namespace pgflow {

// A one-way "please stop" flag, set from a signal handler or by any thread that hit a fatal
// error, and polled by the loops that must stop. Lock-free, so safe in signal handlers.
class StopSignal {
 public:
  void Request() { requested_.store(true, std::memory_order_release); }
  bool requested() const { return requested_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> requested_{false};
};

// Makes SIGINT and SIGTERM request `stop` (once; a second signal exits at once with status
// 130, for a user who does not want to wait for the drain). SIGPIPE is ignored.
void InstallStopSignalHandlers(StopSignal* stop);

}  // namespace pgflow
