#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pgflow {

// A multi-producer, multi-consumer FIFO bounded by the bytes its items hold, not by their
// count. A full queue blocks its producer: that is how back-pressure reaches the source, which
// then stops reading the replication socket, so memory stays bounded whatever the backlog.
//
// One item larger than the whole capacity is still admitted when the queue is empty, so a
// single huge row cannot deadlock the pipeline; the bound is then that one item.
//
// Thread-safe.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}

  enum class PushResult { kOk, kTimeout, kClosed };

  // Appends `item`, charged `bytes`, waiting at most `timeout` for room. On kTimeout or
  // kClosed the item is left in *item, untouched.
  PushResult Push(T* item, size_t bytes, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto has_room = [this, bytes]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return closed_ || items_.empty() || used_bytes_ + bytes <= capacity_bytes_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&has_room), timeout)) return PushResult::kTimeout;
    if (closed_) return PushResult::kClosed;
    items_.emplace_back(std::move(*item), bytes);
    used_bytes_ += bytes;
    return PushResult::kOk;
  }

  // Removes the oldest item, waiting at most `timeout`. Returns nullopt on timeout, or when
  // the queue is closed and empty (then closed_and_drained() is true).
  std::optional<T> Pop(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return closed_ || !items_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (items_.empty()) return std::nullopt;
    auto [item, bytes] = std::move(items_.front());
    items_.pop_front();
    used_bytes_ -= bytes;
    return std::move(item);
  }

  // Refuses further pushes and wakes every waiter; items already queued can still be popped.
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  bool closed_and_drained() const {
    absl::MutexLock lock(&mu_);
    return closed_ && items_.empty();
  }
  size_t used_bytes() const {
    absl::MutexLock lock(&mu_);
    return used_bytes_;
  }
  size_t capacity_bytes() const { return capacity_bytes_; }

 private:
  const size_t capacity_bytes_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<T, size_t>> items_ ABSL_GUARDED_BY(mu_);
  size_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pgflow
