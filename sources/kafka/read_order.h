#pragma once

// Checks that each partition's messages come in offset order, none twice and none missing
// (sources/kafka/README.md, "Offsets read in order"). Pure bookkeeping, so that it can be tested
// without a consumer: the kafka source acts on the verdicts.
//
// Not thread-safe: the source's thread owns it.

#include <cstdint>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "sources/kafka/offset_tracker.h"

namespace pgflow {

class ReadOrder {
 public:
  enum class Verdict {
    kNext,    // the partition's next message: hand it on
    kRepeat,  // below the next offset: it went out already; drop it
    kGap,     // above the next offset: drop it and read the partition again from expected()
    // The gap that kGap reported, seen again after reading again: the topic's own. From then
    // on the partition's gaps are taken as they come (kNext): it has gaps of its own (a
    // compacted topic), and reading each one again would cost a fetch per gap.
    kOwnGap,
  };

  // `partition` was assigned, starting at `offset` (nullopt: a logical offset, so its first
  // message is taken as it comes).
  void Start(const TopicPartition& partition, std::optional<int64_t> offset);
  // `partition` was given up.
  void Forget(const TopicPartition& partition);
  // The verdict on message `offset` of `partition`; kNext and kOwnGap move the partition on.
  Verdict Check(const TopicPartition& partition, int64_t offset);
  // The offset `partition` expects next (meaningful after kRepeat and kGap).
  int64_t expected(const TopicPartition& partition) const;

 private:
  struct State {
    std::optional<int64_t> next;
    // The last gap reported (kGap): from the offset expected to the one that came instead.
    std::optional<std::pair<int64_t, int64_t>> gap;
    bool own_gaps = false;  // a gap of its own was seen
  };
  absl::flat_hash_map<TopicPartition, State> partitions_;
};

}  // namespace pgflow
