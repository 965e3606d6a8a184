#pragma once

// The gate a hold (engine/run_status.h, RunStatus::RequestHold; POST /hold, `pgflow verify
// --live`) closes between the source and the sinks: every transaction that commits before the
// hold's position goes on to the sinks, and the first event at or past it waits until the hold
// is released or runs out. The source meanwhile keeps its server answered, as when the sinks
// are full (Emitter::Result::kTimeout). Once everything handed on before the gate is durable
// in every sink (the acknowledged position), the hold is `holding`: the sinks' targets then
// show the source exactly as of that position, for as long as the hold lasts.
//
// A hold asked for at a position the pipeline has already handed on is `missed`: the caller
// asks again at a later one. A hold in place may be moved further (asked again at a later
// position): what it kept back before that position then goes on.

#include <functional>
#include <vector>

#include "engine/lsn.h"
#include "engine/run_status.h"
#include "engine/source.h"

namespace pgflow {

class HoldGate : public Emitter {
 public:
  // `next` and `status` must outlive the gate; `confirmed` says what every sink holds.
  HoldGate(Emitter* next, RunStatus* status, std::function<Lsn()> confirmed)
      : next_(next), status_(status), confirmed_(std::move(confirmed)) {}

  Result Emit(const EventBatchPtr& batch, absl::Duration timeout) override;
  void NoteServerWalEnd(Lsn wal_end) override { next_->NoteServerWalEnd(wal_end); }
  void NoteSnapshot(std::vector<TableProgress> tables, bool running) override {
    next_->NoteSnapshot(std::move(tables), running);
  }
  void NoteBackfill(std::string what) override { next_->NoteBackfill(std::move(what)); }
  bool WantsRawCopy(const TableSchema& table) const override { return next_->WantsRawCopy(table); }

 private:
  // Cuts the batch before its first event at or past the hold being asked for, if any.
  void Split(const EventBatchPtr& batch);
  // Appends `events` to parts_, cut before the first at or past `at` (that part gated).
  void SplitAt(const EventBatchPtr& events, Lsn at);
  // When the hold moved past the one the current gated part was cut for, cuts it again: true.
  bool MovedForward();
  // Whether the part about to go on must wait; updates the hold's state.
  bool MustWait();
  void Passed(const EventBatch& part);

  Emitter* const next_;
  RunStatus* const status_;
  const std::function<Lsn()> confirmed_;
  EventBatchPtr input_;  // the batch in progress (kept, so that its address is not reused)
  struct Part {
    EventBatchPtr events;
    bool gated = false;  // starts with the first event at or past the hold
  };
  std::vector<Part> parts_;
  size_t next_part_ = 0;
  Lsn held_at_;        // the hold the current split was made for
  Lsn passed_ack_;     // the last position handed on that is acknowledged once durable
  Lsn passed_commit_;  // the last commit (or position) handed on
};

}  // namespace pgflow
