#include "engine/sink_progress.h"

#include <algorithm>
#include <optional>

#include "absl/time/clock.h"

namespace pgflow {

double SinkProgress::Published::LagSeconds(int64_t now_us) const {
  int64_t oldest = oldest_pending_us.load(std::memory_order_relaxed);
  if (oldest != 0) return std::max<int64_t>(0, now_us - oldest) / 1e6;
  return last_lag_seconds.load(std::memory_order_relaxed);
}

SinkProgress::SinkProgress(const Sink& sink, size_t index, AckTracker& wal, ChunkTracker& chunks,
                           Published& published)
    : sink_(sink), index_(index), wal_(wal), chunks_(chunks), published_(published) {
  if (int64_t since = published_.oldest_pending_us.load(); since != 0) {
    // Left by the last attempt: gone once anything past the resume point is durable.
    pending_.emplace_back(wal_.Confirmed().value + 1, since);
  }
}

void SinkProgress::AddPending(const TxnInfo& txn) {
  if (pending_.empty()) {
    published_.oldest_pending_us.store(txn.commit_time_us, std::memory_order_relaxed);
  }
  if (pending_.size() < kMaxPending) {
    pending_.emplace_back(txn.commit_lsn.value, txn.commit_time_us);
  } else {
    pending_.back() = {txn.commit_lsn.value, txn.commit_time_us};
  }
}

void SinkProgress::Report(bool flushed) {
  std::optional<Lsn> async_durable = sink_.DurableThrough();
  if (!async_durable.has_value() && !flushed) {
    unconfirmed_ = false;
    return;
  }
  Lsn durable = async_durable.value_or(written_);
  if (durable > reported_) {
    wal_.Report(index_, durable);
    reported_ = durable;
    published_.durable.store(durable.value, std::memory_order_relaxed);
    Retire(durable);
  }
  uint64_t durable_chunk = async_durable.has_value() ? sink_.DurableChunkThrough() : written_chunk_;
  if (durable_chunk > reported_chunk_) {
    chunks_.Report(index_, durable_chunk);
    reported_chunk_ = durable_chunk;
  }
  unconfirmed_ =
      async_durable.has_value() && (reported_ < written_ || reported_chunk_ < written_chunk_);
}

void SinkProgress::Retire(Lsn durable) {
  int64_t made_durable = 0;
  // At or below: a source whose commit and acknowledgement positions are one (kafka).
  while (!pending_.empty() && pending_.front().first <= durable.value) {
    made_durable = pending_.front().second;
    pending_.pop_front();
  }
  if (made_durable == 0) return;
  const int64_t now_us = absl::ToUnixMicros(absl::Now());
  published_.last_lag_seconds.store(std::max<int64_t>(0, now_us - made_durable) / 1e6,
                                    std::memory_order_relaxed);
  published_.oldest_pending_us.store(pending_.empty() ? 0 : pending_.front().second,
                                     std::memory_order_relaxed);
}

}  // namespace pgflow
