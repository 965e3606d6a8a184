#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/lsn.h"

namespace pgflow {

// The minimum over sinks of a position each sink reports it has made durable. Positions only
// move forward; a sink that has reported nothing yet holds the minimum at the start value.
//
// Thread-safe: each sink's runner reports from its own thread, the source reads.
class MinTracker {
 public:
  MinTracker(size_t sink_count, uint64_t start);

  // Records that sink `index` holds everything up to `durable`.
  void Report(size_t index, uint64_t durable);
  // min over sinks of the durable position.
  uint64_t Confirmed() const;
  size_t sink_count() const { return count_; }

 private:
  size_t count_;
  std::unique_ptr<std::atomic<uint64_t>[]> durable_;
};

// The acknowledgement rule in one place: the WAL position confirmed to PostgreSQL is the
// minimum, over all sinks, of the position each has made durable.
class AckTracker {
 public:
  // `start` is where streaming resumes (the slot's confirmed position); never confirms below.
  AckTracker(size_t sink_count, Lsn start) : min_(sink_count, start.value) {}
  void Report(size_t index, Lsn durable) { min_.Report(index, durable.value); }
  Lsn Confirmed() const { return Lsn(min_.Confirmed()); }

 private:
  MinTracker min_;
};

// The snapshot's counterpart: the highest chunk ordinal (EventKind::kChunkDone) such that it
// and every chunk before it is durable in every sink.
class ChunkTracker {
 public:
  explicit ChunkTracker(size_t sink_count) : min_(sink_count, 0) {}
  void Report(size_t index, uint64_t durable_chunk) { min_.Report(index, durable_chunk); }
  uint64_t Confirmed() const { return min_.Confirmed(); }

 private:
  MinTracker min_;
};

// What a source is told about durability: WAL positions and snapshot chunks.
struct Acknowledgements {
  const AckTracker& wal;
  const ChunkTracker& chunks;
};

}  // namespace pgflow
