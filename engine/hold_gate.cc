#include "engine/hold_gate.h"

#include <thread>

#include "absl/time/clock.h"
#include "engine/log.h"

namespace pgflow {
namespace {

// Where an event stands in the WAL for a hold: its transaction's commit; invalid for what
// changes no data (snapshot rows come before any hold, positions only let acknowledgements on).
Lsn WalPosition(const Event& e) {
  switch (e.kind) {
    case EventKind::kBegin:
    case EventKind::kCommit:
    case EventKind::kRollback:
      return e.txn.commit_lsn;
    case EventKind::kChange:  // (a change carries its transaction in itself)
      return e.change.txn.commit_lsn;
    default:
      return Lsn();
  }
}

}  // namespace

void HoldGate::Split(const EventBatchPtr& batch) {
  parts_.clear();
  next_part_ = 0;
  held_at_ = Lsn();
  if (status_->HoldAsked()) {
    const Hold hold = status_->hold();
    if (hold.active()) {
      SplitAt(batch, hold.at);
      return;
    }
  }
  parts_.push_back({batch, false});
}

void HoldGate::SplitAt(const EventBatchPtr& events, Lsn at) {
  const std::vector<Event>& all = events->events;
  size_t i = 0;
  while (i < all.size()) {
    const Lsn position = WalPosition(all[i]);
    if (position.IsValid() && position >= at) break;
    ++i;
  }
  if (i == all.size()) {
    parts_.push_back({events, false});
    return;
  }
  held_at_ = at;
  if (i == 0) {
    parts_.push_back({events, true});
    return;
  }
  auto before = std::make_shared<EventBatch>();
  auto after = std::make_shared<EventBatch>();
  before->events.assign(all.begin(), all.begin() + static_cast<ptrdiff_t>(i));
  after->events.assign(all.begin() + static_cast<ptrdiff_t>(i), all.end());
  for (const Event& e : before->events) before->bytes += e.ApproximateBytes();
  after->bytes = events->bytes > before->bytes ? events->bytes - before->bytes : 0;
  parts_.push_back({std::move(before), false});
  parts_.push_back({std::move(after), true});
}

bool HoldGate::MovedForward() {
  const Hold hold = status_->hold();
  if (!hold.active()) return false;
  if (!held_at_.IsValid() || hold.at <= held_at_) return false;
  // The hold moved further (`verify --live` holds first at the server's position, then at its
  // snapshot's): what the gate kept back up to there goes on.
  std::vector<Part> rest(parts_.begin() + static_cast<ptrdiff_t>(next_part_) + 1, parts_.end());
  const EventBatchPtr gated = parts_[next_part_].events;
  parts_.resize(next_part_);
  SplitAt(gated, hold.at);
  parts_.insert(parts_.end(), rest.begin(), rest.end());
  return true;
}

bool HoldGate::MustWait() {
  const Hold hold = status_->hold();
  if (hold.at != held_at_) return false;  // released (or another hold since): go on
  if (!hold.active()) return false;
  if (absl::Now() > hold.until) {
    if (status_->SetHoldState(hold.at, hold.state, HoldState::kExpired)) {
      LogWarning("hold at %s ran out: the pipeline goes on", hold.at.ToString());
    }
    return false;
  }
  if (hold.state == HoldState::kWaiting) {
    if (passed_commit_.IsValid() && passed_commit_ >= hold.at) {
      // Asked for too late: something past it is in the sinks already.
      status_->SetHoldState(hold.at, HoldState::kWaiting, HoldState::kMissed);
      return false;
    }
    if (confirmed_() >= passed_ack_ &&
        status_->SetHoldState(hold.at, HoldState::kWaiting, HoldState::kHolding)) {
      LogInfo("holding at %s: every sink holds the source as of there", hold.at.ToString());
    }
  }
  return true;
}

void HoldGate::Passed(const EventBatch& part) {
  // Positions only grow along the stream: the last ones of the part are the furthest.
  bool ack_seen = false;
  bool commit_seen = false;
  for (auto e = part.events.rbegin(); e != part.events.rend() && !(ack_seen && commit_seen); ++e) {
    if (const Lsn ack = e->AckPosition(); !ack_seen && ack.IsValid()) {
      ack_seen = true;
      if (ack > passed_ack_) passed_ack_ = ack;
    }
    if (const Lsn at = WalPosition(*e); !commit_seen && at.IsValid()) {
      commit_seen = true;
      if (at > passed_commit_) passed_commit_ = at;
    }
  }
}

Emitter::Result HoldGate::Emit(const EventBatchPtr& batch, absl::Duration timeout) {
  if (batch != input_) {
    input_ = batch;
    Split(batch);
  }
  while (next_part_ < parts_.size()) {
    if (parts_[next_part_].gated) {
      if (MovedForward()) continue;
      // Wait here a while (the caller answers its server between calls), then again.
      const absl::Time until = absl::Now() + timeout;
      bool moved = false;
      while (!moved && MustWait()) {
        if (absl::Now() >= until) return Result::kTimeout;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        moved = MovedForward();
      }
      if (moved) continue;
      parts_[next_part_].gated = false;
    }
    const EventBatchPtr events = parts_[next_part_].events;
    const Result result = next_->Emit(events, timeout);
    if (result != Result::kOk) return result;
    Passed(*events);
    ++next_part_;
  }
  input_.reset();
  parts_.clear();
  return Result::kOk;
}

}  // namespace pgflow
