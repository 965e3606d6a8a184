#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/lsn.h"

namespace pgflow {

// The acknowledgement rule in one place: the position confirmed to PostgreSQL is the minimum,
// over all sinks, of the position each has made durable. A sink that has reported nothing yet
// holds the confirmed position at the start point.
//
// Thread-safe: each sink's runner reports from its own thread, the source reads.
class AckTracker {
 public:
  // `start` is where streaming resumes (the slot's confirmed position); never confirms below.
  AckTracker(size_t sink_count, Lsn start);

  // Records that sink `index` holds everything up to `durable`. Positions only move forward.
  void Report(size_t index, Lsn durable);

  // min over sinks of the durable position.
  Lsn Confirmed() const;
  Lsn DurableOf(size_t index) const { return Lsn(durable_[index].load(std::memory_order_acquire)); }
  size_t sink_count() const { return count_; }

 private:
  size_t count_;
  std::unique_ptr<std::atomic<uint64_t>[]> durable_;
};

}  // namespace pgflow
