#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>

#include "engine/ack_tracker.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/sink.h"

namespace pgflow {

// How far one sink's writes have got, as its runner (engine/pipeline.cc) keeps it: the last
// acknowledgeable position and snapshot chunk written to the sink, how far each has been
// reported durable to the pipeline's trackers, and the transactions written and not yet
// durable, whose age is the sink's lag.
//
// The runner tells it of every event around Sink::Write (BeforeWrite, AfterWrite), then asks
// it to report: PollDurable() after a batch and while the sink lags, NoteFlushed() after each
// Sink::Flush that returned OK. Reports only move forward; a synchronous sink (DurableThrough()
// is nullopt) is durable through what it was given once flushed, an asynchronous one says
// itself how far it is, chunks included (engine/sink.h).
//
// Thread-compatible: one thread (the sink's runner) drives it. What it publishes for the
// others (Published) is thread-safe.
class SinkProgress {
 public:
  // What the sink's progress shows to other threads (/status, the metrics). Outlives each
  // SinkProgress: it is the pipeline attempt's, and a transaction left not durable by the
  // last attempt (oldest_pending_us set before the first SinkProgress) counts in the lag.
  struct Published {
    std::atomic<uint64_t> durable{0};  // the last position reported durable
    // Commit time (µs since the epoch) of the oldest transaction written to the sink and not
    // yet durable; 0 when none is.
    std::atomic<int64_t> oldest_pending_us{0};
    std::atomic<double> last_lag_seconds{0};  // commit to durable, of the last one made durable

    // Seconds from commit to durable: of the oldest transaction not yet durable, or else of
    // the last one made durable.
    double LagSeconds(int64_t now_us) const;
  };

  // Reports sink `index`'s durability to `wal` and `chunks` and publishes it in `published`;
  // all four must outlive this object. A transaction `published` holds pending from an
  // earlier attempt stays pending until anything past wal.Confirmed() is durable.
  SinkProgress(const Sink& sink, size_t index, AckTracker& wal, ChunkTracker& chunks,
               Published& published);

  SinkProgress(const SinkProgress&) = delete;
  SinkProgress& operator=(const SinkProgress&) = delete;

  // Call before handing `event` to the sink: a transaction is pending (its lag counting)
  // from the moment it is handed over, so a sink that fails on it holds it not durable.
  void BeforeWrite(const Event& event) {
    if (event.kind == EventKind::kBegin && event.txn.commit_time_us != 0) AddPending(event.txn);
  }
  // Call once the sink took `event` (Write returned OK).
  void AfterWrite(const Event& event) {
    if (Lsn p = event.AckPosition(); p.IsValid()) written_ = p;
    if (event.kind == EventKind::kChunkDone) written_chunk_ = event.chunk;
  }

  // Reports what an asynchronous sink says is durable by now; nothing for a synchronous one.
  void PollDurable() { Report(/*flushed=*/false); }
  // Reports what is durable after a Sink::Flush that returned OK: for a synchronous sink,
  // everything written so far.
  void NoteFlushed() { Report(/*flushed=*/true); }

  // True when the last report found an asynchronous sink holding writes not yet durable: the
  // runner then polls (PollDurable) every few milliseconds until it is not.
  bool unconfirmed() const { return unconfirmed_; }
  // True when a Flush could make more durable: something written is not reported durable, or
  // the sink is asynchronous (it may hold writes the runner cannot see).
  bool WantsFlush() const {
    return written_ > reported_ || written_chunk_ > reported_chunk_ ||
           sink_.DurableThrough().has_value();
  }
  // The last acknowledgeable position written to the sink.
  Lsn written() const { return written_; }

  // Transactions remembered as pending, at most: past it the newest entry is overwritten, so
  // the oldest (what the lag is measured from) is always kept.
  static constexpr size_t kMaxPending = 4096;

 private:
  void AddPending(const TxnInfo& txn);
  void Report(bool flushed);
  // Forgets the pending transactions `durable` covers and publishes the lag.
  void Retire(Lsn durable);

  const Sink& sink_;
  const size_t index_;
  AckTracker& wal_;
  ChunkTracker& chunks_;
  Published& published_;
  Lsn written_;                  // last acknowledgeable position written to the sink
  Lsn reported_;                 // last position reported durable
  uint64_t written_chunk_ = 0;   // last snapshot chunk written whole
  uint64_t reported_chunk_ = 0;  // last snapshot chunk reported durable
  bool unconfirmed_ = false;     // what the last report found
  // Transactions written and not yet durable, (commit LSN, commit time µs), oldest first.
  std::deque<std::pair<uint64_t, int64_t>> pending_;
};

}  // namespace pgflow
