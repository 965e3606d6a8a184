#include "engine/ack_tracker.h"

#include <algorithm>
#include <limits>

namespace pgflow {

MinTracker::MinTracker(size_t sink_count, uint64_t start)
    : count_(sink_count), durable_(new std::atomic<uint64_t>[sink_count]) {
  for (size_t i = 0; i < count_; ++i) durable_[i].store(start, std::memory_order_relaxed);
}

void MinTracker::Report(size_t index, uint64_t durable) {
  std::atomic<uint64_t>& slot = durable_[index];
  uint64_t seen = slot.load(std::memory_order_relaxed);
  while (durable > seen && !slot.compare_exchange_weak(seen, durable, std::memory_order_release)) {
  }
}

uint64_t MinTracker::Confirmed() const {
  if (count_ == 0) return 0;
  uint64_t low = std::numeric_limits<uint64_t>::max();
  for (size_t i = 0; i < count_; ++i) {
    low = std::min(low, durable_[i].load(std::memory_order_acquire));
  }
  return low;
}

}  // namespace pgflow
