#pragma once

// Turns completions that arrive in any order into the engine's durable position, which must
// advance in commit order: the tool of every asynchronous sink (Kafka delivery reports across
// partitions, HTTP requests answered on parallel connections).
//
// Every write handed on gets the next number (0, 1, 2, ...). An acknowledgeable position (a
// commit's end LSN, a keepalive position) or a snapshot chunk is recorded as a mark
// "everything numbered below N". A mark becomes durable once every write numbered below N has
// completed successfully, whatever order the completions came in. The sink reports
// DurablePosition() and DurableChunk() as Sink::DurableThrough() and DurableChunkThrough().
//
// Not thread-safe: the sink's thread hands writes on, takes completions (a Kafka delivery
// callback runs inside rd_kafka_poll on that same thread) and reads; a sink whose completions
// arrive on other threads passes them through a queue of its own.

#include <cstdint>
#include <deque>

#include "engine/lsn.h"

namespace pgflow {

class DeliveryTracker {
 public:
  // The number the next produced message gets.
  uint64_t Peek() const { return next_; }
  // Takes that number: the message was handed to the producer.
  uint64_t Produced() {
    ++outstanding_;
    return next_++;
  }
  // Write `id` (from Produced) completed successfully. An id reported twice, or never
  // produced, is ignored.
  void Delivered(uint64_t id);

  // Everything produced so far must be delivered before `position` is durable.
  void MarkPosition(Lsn position);
  // Everything produced so far must be delivered before snapshot chunk `chunk` is durable.
  void MarkChunk(uint64_t chunk);

  // Highest marked position all of whose messages are delivered (invalid when none yet).
  Lsn DurablePosition() const { return durable_position_; }
  // Highest marked chunk all of whose messages are delivered (0 when none yet).
  uint64_t DurableChunk() const { return durable_chunk_; }

  // Messages produced and not yet known delivered, counting those delivered behind one that
  // is still outstanding (the span of the window); bounded by the caller.
  uint64_t Window() const { return next_ - base_; }
  // Messages produced and still awaiting a report.
  uint64_t Outstanding() const { return outstanding_; }
  // True when every produced message is delivered.
  bool AllDelivered() const { return base_ == next_; }

 private:
  struct Mark {
    uint64_t upto;  // messages numbered below this must be delivered
    bool is_chunk;
    Lsn position;
    uint64_t chunk;
  };
  void Advance();

  uint64_t next_ = 0;         // number of the next message
  uint64_t base_ = 0;         // every message below it is delivered
  uint64_t outstanding_ = 0;  // produced, no report yet
  // done_[i]: message base_ + i delivered. Its length is next_ - base_.
  std::deque<bool> done_;
  std::deque<Mark> marks_;  // in the order recorded, `upto` non-decreasing
  Lsn durable_position_;
  uint64_t durable_chunk_ = 0;
};

}  // namespace pgflow
