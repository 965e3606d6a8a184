#pragma once

#include <chrono>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pgflow {

// Polls `condition` every millisecond until it holds or `timeout` passes; returns whether it
// held. For unit tests that wait on another thread instead of sleeping a fixed time.
template <typename F>
bool WaitUntil(F condition, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace pgflow
