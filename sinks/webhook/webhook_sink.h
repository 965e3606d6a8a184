#pragma once

// The `webhook` sink: every change as a signed HTTP request to one or more endpoints.
//
//   sinks:
//     notify:
//       webhook:
//         url: https://hooks.example.com/pgflow      # or routes: [{url, table, op, where}]
//         secret: ${WEBHOOK_SECRET}                  # whsec_...; several, space-separated
//         batch: 1                                   # events per request (>1: a JSON array)
//       dead_letter: {path: /var/lib/pgflow/notify.rejected.jsonl}
//
// - The body of one event is {"id", "type", "timestamp", "data"} (Standard Webhooks' payload
//   shape): `id` its event id, `type` "schema.table.op" ("ddl", "message" for those), the commit
//   time, and `data` pgflow's jsonl object of the change. With `batch` > 1 the body is a JSON
//   array of up to `batch` of them, delivered all or nothing.
// - Signed as Standard Webhooks specifies (sinks/webhook/standard_webhooks.h). The webhook-id
//   of a request is "<pipeline>:<event id>" (see below): the
//   same for every attempt, after a restart and from `pgflow dlq replay`, so receivers can
//   deduplicate on it (a '.' in it is written '_', as the specification asks). A batch's is
//   "<pipeline>:<first>~<last>", the same on every attempt; after a restart the events may be
//   batched otherwise, and each event's own `id` in the body is what tells them apart. A
//   snapshot row replayed from a dead letter goes as an insert, under "<lsn>:<seq>". A snapshot
//   row's event id is its table and key under the snapshot's position
//   ("0/16B3748:public.items:<sha256 of the key, 16 hex>"), stable too.
// - Routes: every event goes to each endpoint whose route takes it (tables, operations, a row
//   predicate in the filter language); an event whose `destination` (the route transform's
//   choice, or a dead letter's endpoint on replay) names an endpoint's url goes there only.
// - Delivery: a 2xx is success. 408, 429, 5xx (after Retry-After when given) and network
//   errors are retried with exponential backoff and jitter (common/http/retry_policy.h), for
//   up to `max_attempts` and `max_age`; redirects are not followed. 410 means the endpoint is
//   gone, and any other status is a refusal: a refusal, a gone endpoint or retries exhausted
//   stop the pipeline naming the endpoint, the event and the answer, or with `dead_letter:`
//   record the events and go on.
// - Order (`order`, sinks/webhook/endpoint_queue.h): per_key, fifo or none. Each endpoint has
//   its own bounded buffer; a slow or failing endpoint holds the others up only once it fills.
// - Acknowledgement: every event bound for an endpoint is numbered (engine/delivery_tracker.h);
//   DurableThrough() is the last commit all of whose events every endpoint accepted or set
//   aside, whatever order the answers came in. After a crash, what was not acknowledged is
//   sent again, with the same webhook-ids.
// - Requests go out from a delivery thread of the sink's own, over libcurl's multi interface:
//   up to `concurrency` requests in flight per endpoint, connections kept alive, HTTP/2 where
//   an https endpoint offers it. `deny_private_addresses` refuses endpoints that resolve, or
//   connect, to loopback, private or link-local addresses; plain http:// to another machine
//   is warned about.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/http/http_endpoint.h"
#include "common/http/retry_policy.h"
#include "engine/delivery_tracker.h"
#include "engine/registry.h"
#include "engine/transactional_sink.h"
#include "schemas/json_encoding.h"
#include "sinks/webhook/endpoint_queue.h"
#include "transformers/filter.h"

namespace pgflow {

// Where some events go: an endpoint and which events it takes.
struct WebhookRoute {
  std::string url;
  EventSelection selection;  // `table`, `op`, `where`: every event when none is given

  friend bool operator==(const WebhookRoute& a, const WebhookRoute& b) = default;
};

struct WebhookSinkOptions : SinkOptions {
  std::string url;                   // one endpoint taking every event; or
  std::vector<WebhookRoute> routes;  // several, each taking what its route says
  std::vector<std::string> secret;   // whsec_... (several: each signs; for rotation)
  enum class Method { kPost, kPut, kPatch } method = Method::kPost;
  absl::flat_hash_map<std::string, std::string> headers;  // sent with every request
  int batch = 1;
  std::chrono::milliseconds linger{20};
  WebhookOrder order = WebhookOrder::kPerKey;
  int concurrency = 16;  // requests in flight per endpoint
  int buffer = 10000;    // events per endpoint not yet accepted
  int max_attempts = 0;  // 0: no limit but max_age
  std::chrono::milliseconds max_age{24 * 3600 * 1000};
  std::chrono::milliseconds backoff{100};       // the first retry's wait
  std::chrono::milliseconds max_backoff{60000};  // the longest
  HttpEndpointOptions http =
      HttpEndpointOptions::WithTimeout(std::chrono::milliseconds(10000));  // TLS, gzip, timeout
  bool deny_private_addresses = false;
  JsonOptions json;
};

class WebhookSink : public TransactionalSink {
 public:
  WebhookSink(SinkContext context, std::shared_ptr<const WebhookSinkOptions> options);
  ~WebhookSink() override;

  absl::Status Open() override;
  // The delivery thread's first fatal failure, if any: requests are sent on their own.
  absl::Status Flush() override;
  absl::Status Close() override;
  std::optional<Lsn> DurableThrough() const override;
  uint64_t DurableChunkThrough() const override;
  uint64_t DeadLettered() const override { return dead_lettered_.load(); }
  std::string Trouble() const override;

  struct Transfer;  // one request on the wire (webhook_sink.cc)

 protected:
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  absl::Status OnPosition(Lsn position) override;
  absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) override;

 private:
  struct Endpoint;

  // Whether `route` takes `change`; an error names a column its predicate lacks.
  absl::StatusOr<bool> Takes(const WebhookRoute& route, const Change& change) const;
  // Hands `event` to `endpoint`, waiting while its buffer is full.
  absl::Status Enqueue(Endpoint& endpoint, WebhookEvent event);
  // The delivery thread: sends what may go, takes the answers, until Close.
  void Deliver();
  // Takes the requests of `endpoint` that may go now (called with mu_ held); true when some
  // were given up without being sent (a gone endpoint's).
  bool StartReady(Endpoint& endpoint, WebhookClock::time_point now,
                  std::vector<Transfer*>* started);
  void Start(Transfer* transfer);
  // What an answer (or its absence) means for the request, and what is done about it.
  void Judge(Transfer* transfer, int curl_code);
  // The request failed for a while (`failure`): sent again after a backoff, or given up once
  // max_attempts or max_age is reached. Called with mu_ held.
  void Retry(Endpoint& endpoint, WebhookRequest* request, const std::string& failure,
             const std::string& code, bool endpoint_down, int retry_after_seconds);
  // The request will not be delivered: its events are set aside, or the pipeline stops.
  void GiveUp(Endpoint& endpoint, WebhookRequest* request, const std::string& reason,
              const std::string& code);
  void Fail(absl::Status status);

  const SinkContext context_;
  const std::shared_ptr<const WebhookSinkOptions> options_;
  const Backoff backoff_;          // options_->backoff doubling to max_backoff
  std::vector<std::string> keys_;  // the secrets' keys
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::unique_ptr<DeadLetterStore> dead_letters_;  // used by the delivery thread only
  std::atomic<uint64_t> dead_lettered_{0};

  // Shared by the sink's thread and the delivery thread.
  mutable std::mutex mu_;
  std::condition_variable room_;  // an endpoint's buffer has room again
  DeliveryTracker tracker_;       // every (event, endpoint), in stream order
  absl::Status failure_;          // the first fatal failure
  bool stopping_ = false;
  std::atomic<bool> idle_{false};  // the delivery thread waits in curl_multi_poll
  std::atomic<uint64_t> pushed_{0};  // events handed over, for the delivery thread's wake-ups

  void* multi_ = nullptr;        // CURLM*
  std::vector<void*> handles_;  // CURL*, idle, for the next requests (delivery thread only)
  std::thread thread_;
  std::string scratch_;
};

// Registers the "webhook" sink type.
void RegisterWebhookSink();

}  // namespace pgflow
