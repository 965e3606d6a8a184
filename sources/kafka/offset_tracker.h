#pragma once

// Maps the engine's acknowledgement, a position, back to Kafka offsets, partition by partition.
//
// The kafka source hands messages on in batches, each batch a transaction whose end position
// is the next number of the source's own sequence. Every message consumed is recorded with
// the position of the batch it went out in (Add). Once the engine confirms a position (every
// sink holds every event up to it), each partition's messages up to that position are held,
// and the partition may commit the offset after the last of them (Confirm, then Commits).
// Positions are recorded in non-decreasing order and a partition's offsets increase with
// them, since messages of one partition are consumed, and handed on, in offset order.
//
// Not thread-safe: the source's thread owns it.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/lsn.h"

namespace pgflow {

struct TopicPartition {
  std::string topic;
  int32_t partition = 0;

  template <typename H>
  friend H AbslHashValue(H h, const TopicPartition& tp) {
    return H::combine(std::move(h), tp.topic, tp.partition);
  }
  friend bool operator==(const TopicPartition&, const TopicPartition&) = default;
};

// An offset to commit: the next offset the partition's consumer group reads after a restart.
struct PartitionOffset {
  TopicPartition partition;
  int64_t offset = 0;
  friend bool operator==(const PartitionOffset&, const PartitionOffset&) = default;
};

class OffsetTracker {
 public:
  // Message `offset` of `partition` went out in the batch ending at `position`.
  // REQUIRES: `position` is at or above every position added before; `offset` is above every
  // offset added before for `partition`.
  void Add(Lsn position, const TopicPartition& partition, int64_t offset);

  // Everything up to `confirmed` is held by every sink: the partitions' messages up to it are
  // done. Positions below what was confirmed before are ignored.
  void Confirm(Lsn confirmed);

  // The offsets to commit for the partitions whose done offset moved since the last
  // MarkCommitted of it, in no particular order.
  std::vector<PartitionOffset> Commits() const;
  // The offset to commit for every partition with a done message (for the commit at a clean
  // stop, which must not depend on what an asynchronous commit did).
  std::vector<PartitionOffset> AllDone() const;
  // `offsets` were committed (the brokers said so). Partitions not tracked are ignored.
  void MarkCommitted(const std::vector<PartitionOffset>& offsets);

  // The highest position of a message of `partition` not yet confirmed; nullopt when every
  // message of it that went out is confirmed.
  std::optional<Lsn> PendingThrough(const TopicPartition& partition) const;

  // The partition was taken away (a rebalance): its records go; another consumer reads it from
  // its committed offset. The done offset not yet committed is returned first, if any.
  std::optional<PartitionOffset> Forget(const TopicPartition& partition);

  // Messages recorded and not confirmed yet, over all partitions.
  size_t pending() const { return pending_.size(); }
  // Partitions tracked, given-up ones included until their slot is reused.
  size_t slots() const { return partitions_.size(); }

 private:
  struct Pending {
    Lsn position;
    int32_t index;  // into partitions_
    int64_t offset;
  };
  struct State {
    TopicPartition partition;
    int64_t done = -1;       // next offset after the last confirmed message; -1: none yet
    int64_t committed = -1;  // last offset marked committed
    bool forgotten = false;
  };
  int32_t IndexOf(const TopicPartition& partition);

  std::deque<Pending> pending_;  // in position order
  // One slot per partition known; a slot of a partition given up is reused (free_), so that
  // rebalances do not grow it.
  std::vector<State> partitions_;
  std::vector<int32_t> free_;
  absl::flat_hash_map<TopicPartition, int32_t> index_;
};

}  // namespace pgflow
