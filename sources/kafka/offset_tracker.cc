#include "sources/kafka/offset_tracker.h"

#include <algorithm>

namespace pgflow {

int32_t OffsetTracker::IndexOf(const TopicPartition& partition) {
  auto it = index_.find(partition);
  if (it != index_.end()) return it->second;
  int32_t index;
  if (!free_.empty()) {
    // A slot a partition given up left (nothing pending refers to it any more).
    index = free_.back();
    free_.pop_back();
    partitions_[index] = State{partition};
  } else {
    index = static_cast<int32_t>(partitions_.size());
    partitions_.push_back(State{partition});
  }
  index_.emplace(partition, index);
  return index;
}

void OffsetTracker::Add(Lsn position, const TopicPartition& partition, int64_t offset) {
  pending_.push_back(Pending{position, IndexOf(partition), offset});
}

void OffsetTracker::Confirm(Lsn confirmed) {
  while (!pending_.empty() && pending_.front().position <= confirmed) {
    const Pending& p = pending_.front();
    State& state = partitions_[p.index];
    if (!state.forgotten) state.done = std::max(state.done, p.offset + 1);
    pending_.pop_front();
  }
}

std::vector<PartitionOffset> OffsetTracker::Commits() const {
  std::vector<PartitionOffset> out;
  for (const State& state : partitions_) {
    if (!state.forgotten && state.done > state.committed) {
      out.push_back(PartitionOffset{state.partition, state.done});
    }
  }
  return out;
}

std::vector<PartitionOffset> OffsetTracker::AllDone() const {
  std::vector<PartitionOffset> out;
  for (const State& state : partitions_) {
    if (!state.forgotten && state.done >= 0) {
      out.push_back(PartitionOffset{state.partition, state.done});
    }
  }
  return out;
}

void OffsetTracker::MarkCommitted(const std::vector<PartitionOffset>& offsets) {
  for (const PartitionOffset& o : offsets) {
    auto it = index_.find(o.partition);
    if (it == index_.end()) continue;
    State& state = partitions_[it->second];
    state.committed = std::max(state.committed, o.offset);
  }
}

std::optional<Lsn> OffsetTracker::PendingThrough(const TopicPartition& partition) const {
  auto it = index_.find(partition);
  if (it == index_.end()) return std::nullopt;
  for (auto p = pending_.rbegin(); p != pending_.rend(); ++p) {
    if (p->index == it->second) return p->position;
  }
  return std::nullopt;
}

std::optional<PartitionOffset> OffsetTracker::Forget(const TopicPartition& partition) {
  auto it = index_.find(partition);
  if (it == index_.end()) return std::nullopt;
  const int32_t index = it->second;
  State& state = partitions_[index];
  std::optional<PartitionOffset> uncommitted;
  if (state.done > state.committed) uncommitted = PartitionOffset{partition, state.done};
  state.forgotten = true;
  index_.erase(it);
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [index](const Pending& p) { return p.index == index; }),
                 pending_.end());
  free_.push_back(index);
  return uncommitted;
}

}  // namespace pgflow
