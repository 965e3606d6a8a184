#include "engine/delivery_tracker.h"

namespace pgflow {

void DeliveryTracker::Delivered(uint64_t id) {
  if (id < base_ || id >= next_) return;
  while (done_.size() < next_ - base_) done_.push_back(false);
  bool& slot = done_[id - base_];
  if (slot) return;
  slot = true;
  --outstanding_;
  Advance();
}

void DeliveryTracker::MarkPosition(Lsn position) {
  // Marks with nothing produced between them collapse into the later one, so that positions
  // arriving while a message is outstanding (keepalives, empty transactions) take no room.
  if (!marks_.empty() && marks_.back().upto == next_ && !marks_.back().is_chunk) {
    if (position > marks_.back().position) marks_.back().position = position;
    return;
  }
  marks_.push_back(Mark{next_, false, position, 0});
  Advance();
}

void DeliveryTracker::MarkChunk(uint64_t chunk) {
  marks_.push_back(Mark{next_, true, Lsn(), chunk});
  Advance();
}

void DeliveryTracker::Advance() {
  // done_ may be shorter than the window (Produced does not touch it): the missing tail is
  // messages without a report.
  while (!done_.empty() && done_.front()) {
    done_.pop_front();
    ++base_;
  }
  while (!marks_.empty() && marks_.front().upto <= base_) {
    const Mark& m = marks_.front();
    if (m.is_chunk) {
      if (m.chunk > durable_chunk_) durable_chunk_ = m.chunk;
    } else if (m.position > durable_position_) {
      durable_position_ = m.position;
    }
    marks_.pop_front();
  }
}

}  // namespace pgflow
