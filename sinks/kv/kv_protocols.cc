#include "sinks/kv/kv_protocols.h"

#include <utility>

namespace pgflow {

KvService::KvService(KvStore* store, KvServiceConfig config, KvWriteThrough* write_through)
    : store_(store), config_(std::move(config)), write_through_(write_through) {}

uint64_t KvService::SaveCursor(CursorState state) {
  absl::MutexLock lock(&cursor_mu_);
  uint64_t id = next_cursor_++;
  if (cursors_.size() < kMaxCursors) {
    cursors_.emplace_back(id, std::move(state));
  } else {
    cursors_[id % kMaxCursors] = {id, std::move(state)};
  }
  return id;
}

bool KvService::LoadCursor(uint64_t id, CursorState* state) {
  absl::MutexLock lock(&cursor_mu_);
  for (const auto& [cid, s] : cursors_) {
    if (cid == id) {
      *state = s;
      return true;
    }
  }
  return false;
}

size_t ShardedCounter::SlotOfThisThread() {
  static std::atomic<size_t> next{0};
  thread_local const size_t slot = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
  return slot;
}

uint64_t ShardedCounter::Load() const {
  uint64_t sum = 0;
  for (const Slot& s : slots_) sum += s.n.load(std::memory_order_relaxed);
  return sum;
}

}  // namespace pgflow
