#include "engine/ack_tracker.h"

#include <algorithm>
#include <limits>

namespace pgflow {

AckTracker::AckTracker(size_t sink_count, Lsn start)
    : count_(sink_count), durable_(new std::atomic<uint64_t>[sink_count]) {
  for (size_t i = 0; i < count_; ++i) durable_[i].store(start.value, std::memory_order_relaxed);
}

void AckTracker::Report(size_t index, Lsn durable) {
  std::atomic<uint64_t>& slot = durable_[index];
  uint64_t seen = slot.load(std::memory_order_relaxed);
  while (durable.value > seen &&
         !slot.compare_exchange_weak(seen, durable.value, std::memory_order_release)) {
  }
}

Lsn AckTracker::Confirmed() const {
  if (count_ == 0) return Lsn();
  uint64_t low = std::numeric_limits<uint64_t>::max();
  for (size_t i = 0; i < count_; ++i) {
    low = std::min(low, durable_[i].load(std::memory_order_acquire));
  }
  return Lsn(low);
}

}  // namespace pgflow
