#include "sources/kafka/read_order.h"

#include <utility>

namespace pgflow {

void ReadOrder::Start(const TopicPartition& partition, std::optional<int64_t> offset) {
  partitions_[partition] = State{offset, std::nullopt, false};
}

void ReadOrder::Forget(const TopicPartition& partition) { partitions_.erase(partition); }

ReadOrder::Verdict ReadOrder::Check(const TopicPartition& partition, int64_t offset) {
  State& state = partitions_[partition];
  if (!state.next.has_value() || offset == *state.next ||
      (state.own_gaps && offset > *state.next)) {
    state.next = offset + 1;
    state.gap.reset();
    return Verdict::kNext;
  }
  if (offset < *state.next) return Verdict::kRepeat;
  const std::pair<int64_t, int64_t> gap{*state.next, offset};
  if (state.gap == gap) {
    state.next = offset + 1;
    state.gap.reset();
    state.own_gaps = true;
    return Verdict::kOwnGap;
  }
  state.gap = gap;
  return Verdict::kGap;
}

int64_t ReadOrder::expected(const TopicPartition& partition) const {
  auto it = partitions_.find(partition);
  return it == partitions_.end() || !it->second.next.has_value() ? -1 : *it->second.next;
}

}  // namespace pgflow
