#pragma once

// What one webhook endpoint has yet to accept, and which of it may be sent now. Pure
// bookkeeping, no network: the sink's delivery thread asks Take() for the requests to send,
// and reports each one's end with Finish() (accepted, or set aside for good) or Again() (to be
// sent again later, unchanged: the same events, the same webhook-id).
//
// Order (`order:`):
// - per_key: an event waits while an earlier event of the same row (its key; a keyless
//   table's rows share one) is outstanding or waiting itself; events of other rows go ahead.
//   An event that is not about one row (TRUNCATE, DDL, a logical message) is a barrier: it
//   goes alone once everything before it is done, and nothing after it goes first.
// - fifo: one request outstanding at a time, events in stream order.
// - none: as many requests at once as `concurrency` allows, in any order.
// A request carries up to `batch` events; one with fewer waits up to `linger` for more
// (unless the caller flushes), so that a quiet stream still delivers promptly.
//
// Not thread-safe: the sink guards it with its own mutex.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/change.h"

namespace pgflow {

enum class WebhookOrder { kPerKey, kFifo, kNone };

// The hash an event's row is known by (see WebhookEvent::keys).
inline uint64_t RowKeyHash(std::string_view text) { return std::hash<std::string_view>{}(text); }

using WebhookClock = std::chrono::steady_clock;

// One event bound for one endpoint.
struct WebhookEvent {
  uint64_t number = 0;  // the sink's DeliveryTracker number for it
  std::string id;       // its event id; a request of one event has it as its webhook-id
  // The rows it is about, as RowKeyHash of "schema.table\n{key}": one, or two for an update
  // that moved a row to another key; none: a barrier. (Two rows whose hashes collide merely
  // keep their order between them.)
  uint64_t keys[2] = {0, 0};
  int key_count = 0;
  bool barrier() const { return key_count == 0; }
  void AddKey(uint64_t key) {
    if (key_count == 0 || (key_count == 1 && keys[0] != key)) keys[key_count++] = key;
  }
  std::shared_ptr<const std::string> payload;  // its JSON object, shared across endpoints
  std::shared_ptr<const Change> change;        // kept for the dead-letter path, else null
  WebhookClock::time_point queued{};
};

// Events sent together, all or nothing.
struct WebhookRequest {
  std::vector<WebhookEvent> events;
  std::string body;        // built on first sending, the same on every attempt
  std::string webhook_id;  // likewise
  int attempts = 0;        // made so far
  WebhookClock::time_point first_attempt{};
  WebhookClock::time_point due{};  // when it may be sent again
  bool in_flight = false;
  std::string last_failure;  // the last attempt's failure, for messages
};

class EndpointQueue {
 public:
  struct Limits {
    WebhookOrder order = WebhookOrder::kPerKey;
    size_t batch = 1;
    std::chrono::milliseconds linger{0};
    size_t concurrency = 16;
  };
  explicit EndpointQueue(Limits limits) : limits_(limits) {}

  void Push(WebhookEvent event);

  // Events queued or held by an outstanding request.
  size_t events() const { return queued_ + held_events_; }
  // Events queued, not yet in a request.
  size_t queued() const { return queued_; }
  size_t in_flight() const { return in_flight_; }
  // Outstanding requests: in flight or waiting to be sent again.
  size_t outstanding() const { return requests_.size(); }

  // The requests to send now, marked in flight: retries whose time has come first, then new
  // ones, within `concurrency`. `flush`: a short batch goes without waiting out `linger`.
  std::vector<WebhookRequest*> Take(WebhookClock::time_point now, bool flush);
  // When Take may next have something without a new event: a retry falling due, a short batch
  // done lingering. nullopt: nothing until an event arrives or a request ends.
  std::optional<WebhookClock::time_point> NextDue() const;

  // `request` is done with for good: its rows are free again; its events are returned (for the
  // caller to count as delivered or set aside) and the request is gone.
  std::vector<WebhookEvent> Finish(WebhookRequest* request);
  // `request` is to be sent again, as it is, at `due`; its rows stay held meanwhile.
  // `endpoint_down`: the endpoint itself is failing (unreachable, 429, 502-504), so no new
  // request is formed until one succeeds or is set aside (retries probe it meanwhile); a
  // failure of this request alone (500, 408) lets the other rows go ahead.
  void Again(WebhookRequest* request, WebhookClock::time_point due, bool endpoint_down);
  bool endpoint_down() const { return endpoint_down_; }

 private:
  struct Slot {
    WebhookEvent event;
    bool taken = false;
  };
  // A new request of queued events that may go now, or null.
  WebhookRequest* Form(WebhookClock::time_point now, bool flush);
  bool Held(const WebhookEvent& event) const;
  void Hold(const WebhookEvent& event, int delta);

  const Limits limits_;
  std::deque<Slot> slots_;  // in stream order; taken slots are dropped from the front
  size_t queued_ = 0;       // slots not taken
  // Outstanding requests, and those waiting to be sent again by when they fall due (then the
  // order they failed in).
  absl::flat_hash_map<WebhookRequest*, std::unique_ptr<WebhookRequest>> requests_;
  struct Waiting {
    WebhookClock::time_point due;
    uint64_t order;
    WebhookRequest* request;
    bool operator>(const Waiting& other) const {
      return due != other.due ? due > other.due : order > other.order;
    }
  };
  std::priority_queue<Waiting, std::vector<Waiting>, std::greater<Waiting>> waiting_;
  uint64_t waits_ = 0;
  bool endpoint_down_ = false;
  size_t held_events_ = 0;
  size_t in_flight_ = 0;
  absl::flat_hash_map<uint64_t, int> held_;  // rows of outstanding requests
  bool barrier_out_ = false;                     // an outstanding request is a barrier
  // When the short batch Form() last held back may go (linger).
  std::optional<WebhookClock::time_point> linger_until_;
};

}  // namespace pgflow
