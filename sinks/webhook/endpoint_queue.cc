#include "sinks/webhook/endpoint_queue.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"

namespace pgflow {
namespace {

// How far past the first queued event Form() looks for one that may go (per_key): bounds the
// work of a round while many events wait behind busy rows.
constexpr size_t kLookahead = 4096;

}  // namespace

void EndpointQueue::Push(WebhookEvent event) {
  slots_.push_back(Slot{std::move(event), false});
  ++queued_;
}

bool EndpointQueue::Held(const WebhookEvent& event) const {
  for (int i = 0; i < event.key_count; ++i) {
    if (held_.contains(event.keys[i])) return true;
  }
  return false;
}

void EndpointQueue::Hold(const WebhookEvent& event, int delta) {
  for (int i = 0; i < event.key_count; ++i) {
    auto it = held_.try_emplace(event.keys[i], 0).first;
    it->second += delta;
    if (it->second <= 0) held_.erase(it);
  }
}

WebhookRequest* EndpointQueue::Form(WebhookClock::time_point now, bool flush) {
  while (!slots_.empty() && slots_.front().taken) slots_.pop_front();
  if (queued_ == 0 || endpoint_down_ || barrier_out_) return nullptr;
  std::vector<size_t> picked;
  bool barrier = false;
  switch (limits_.order) {
    case WebhookOrder::kFifo:
      if (!requests_.empty()) return nullptr;
      [[fallthrough]];
    case WebhookOrder::kNone:
      for (size_t i = 0; i < slots_.size() && picked.size() < limits_.batch; ++i) {
        if (!slots_[i].taken) picked.push_back(i);
      }
      break;
    case WebhookOrder::kPerKey: {
      absl::flat_hash_set<uint64_t> blocked;  // rows of events left waiting
      bool first = true;                              // no untaken slot seen yet
      size_t looked = 0;  // untaken slots looked at
      for (size_t i = 0; i < slots_.size() && looked < kLookahead && picked.size() < limits_.batch;
           ++i) {
        const WebhookEvent& event = slots_[i].event;
        if (slots_[i].taken) continue;
        ++looked;
        if (event.barrier()) {
          // A barrier: alone, once nothing before it is outstanding or waiting.
          if (first && requests_.empty()) {
            picked.push_back(i);
            barrier = true;
          }
          break;
        }
        first = false;
        bool waits = Held(event);
        for (int k = 0; k < event.key_count; ++k) waits = waits || blocked.contains(event.keys[k]);
        if (waits) {
          blocked.insert(event.keys, event.keys + event.key_count);
          continue;
        }
        picked.push_back(i);
      }
      break;
    }
  }
  if (picked.empty()) return nullptr;
  if (!barrier && picked.size() < limits_.batch && !flush && limits_.linger.count() > 0) {
    const WebhookClock::time_point until = slots_[picked.front()].event.queued + limits_.linger;
    if (now < until) {
      linger_until_ = until;
      return nullptr;
    }
  }
  auto request = std::make_unique<WebhookRequest>();
  request->events.reserve(picked.size());
  for (size_t i : picked) {
    Slot& slot = slots_[i];
    slot.taken = true;
    Hold(slot.event, +1);
    request->events.push_back(std::move(slot.event));
  }
  queued_ -= picked.size();
  held_events_ += picked.size();
  // Events taken from behind a waiting one leave holes: dropped once they outnumber the rest,
  // so the deque stays within twice what is queued.
  if (slots_.size() > 2 * queued_ + 64) {
    std::erase_if(slots_, [](const Slot& slot) { return slot.taken; });
  }
  barrier_out_ = barrier;
  request->in_flight = true;
  ++in_flight_;
  WebhookRequest* raw = request.get();
  requests_.emplace(raw, std::move(request));
  return raw;
}

std::vector<WebhookRequest*> EndpointQueue::Take(WebhookClock::time_point now, bool flush) {
  std::vector<WebhookRequest*> out;
  linger_until_.reset();
  while (!waiting_.empty() && waiting_.top().due <= now && in_flight_ < limits_.concurrency) {
    WebhookRequest* request = waiting_.top().request;
    waiting_.pop();
    request->in_flight = true;
    ++in_flight_;
    out.push_back(request);
  }
  while (in_flight_ < limits_.concurrency) {
    WebhookRequest* request = Form(now, flush);
    if (request == nullptr) break;
    out.push_back(request);
  }
  return out;
}

std::optional<WebhookClock::time_point> EndpointQueue::NextDue() const {
  std::optional<WebhookClock::time_point> next = linger_until_;
  // (While every lane is busy a retry cannot start; a request ending wakes the caller.)
  if (!waiting_.empty() && in_flight_ < limits_.concurrency &&
      (!next.has_value() || waiting_.top().due < *next)) {
    next = waiting_.top().due;
  }
  return next;
}

std::vector<WebhookEvent> EndpointQueue::Finish(WebhookRequest* request) {
  auto it = requests_.find(request);
  if (it == requests_.end()) return {};
  std::unique_ptr<WebhookRequest> owned = std::move(it->second);
  requests_.erase(it);
  if (owned->in_flight) --in_flight_;
  for (const WebhookEvent& event : owned->events) Hold(event, -1);
  if (owned->events.size() == 1 && owned->events.front().barrier()) barrier_out_ = false;
  held_events_ -= owned->events.size();
  endpoint_down_ = false;
  return std::move(owned->events);
}

void EndpointQueue::Again(WebhookRequest* request, WebhookClock::time_point due,
                          bool endpoint_down) {
  if (!requests_.contains(request)) return;
  if (request->in_flight) {
    request->in_flight = false;
    --in_flight_;
  }
  request->due = due;
  waiting_.push(Waiting{due, waits_++, request});
  if (endpoint_down) endpoint_down_ = true;
}

}  // namespace pgflow
