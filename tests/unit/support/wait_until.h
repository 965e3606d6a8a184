#pragma once

// Waiting on a condition with a deadline in unit tests (the integration tests have WaitFor in
// tests/integration/support/test_support.h): no fixed sleeps standing in for "long enough".

#include <chrono>
#include <thread>

namespace pgflow::test_support {

// A timeout that never passes: WaitUntil then returns only once the condition holds.
inline constexpr std::chrono::milliseconds kForever = std::chrono::milliseconds::max();

// Checks `condition` at once and then every `poll` until it holds or `timeout` passes; returns
// whether it held.
template <typename Condition>
bool WaitUntil(Condition condition,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(10000),
               std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
  const auto start = std::chrono::steady_clock::now();
  while (!condition()) {
    if (timeout != kForever && std::chrono::steady_clock::now() - start >= timeout) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace pgflow::test_support
