#include "sinks/webhook/webhook_sink.h"

#include <curl/curl.h>
#include <netdb.h>

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "common/digest.h"
#include "common/http/http_client.h"
#include "engine/event_id.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "schemas/json_text.h"
#include "schemas/pg_datetime.h"
#include "sinks/webhook/address_policy.h"
#include "sinks/webhook/standard_webhooks.h"

namespace pgflow {
namespace {

constexpr auto kLogEvery = std::chrono::seconds(10);
// The part of an answer's body kept for messages.
constexpr size_t kAnswerBytes = 512;

// ---- options ----

const OptionTable<WebhookRoute>& RouteTable() {
  static const auto* table = new OptionTable<WebhookRoute>({
      StringOption("url", &WebhookRoute::url).Required().NonEmpty().Help("The endpoint."),
      EventSelectionOptions(
          &WebhookRoute::selection,
          "The tables whose events it takes: schema.table or schema.*, one or a list.",
          "The operations it takes: insert, update, delete, read, truncate, ddl, message.",
          "A row predicate, as the filter transform's (the new row; a delete's old one)."),
  });
  return *table;
}

absl::Status CheckRoute(const ConfigNode& node, WebhookRoute* route) {
  if (absl::Status s = route->selection.Compile(node); !s.ok()) return s;
  const std::string_view url = route->url;
  if (url.substr(0, 7) != "http://" && url.substr(0, 8) != "https://") {
    return node.Get("url")->Error(Cat("expected an http:// or https:// URL, got \"", url, "\""));
  }
  return absl::OkStatus();
}

absl::Status ReadRoutes(const ConfigNode& node, std::vector<WebhookRoute>* routes) {
  if (!node.IsSequence() || node.Items().empty()) {
    return node.Error("expected a list of routes: [{url: ..., table: ..., op: ..., where: ...}]");
  }
  for (const ConfigNode& item : node.Items()) {
    if (!item.IsMap()) return item.Error(Cat("expected a route mapping, got ", item.KindName()));
    WebhookRoute route;
    if (absl::Status s = RouteTable().Parse(item, &route); !s.ok()) return s;
    if (absl::Status s = CheckRoute(item, &route); !s.ok()) return s;
    routes->push_back(std::move(route));
  }
  return absl::OkStatus();
}

absl::Status ReadHeaders(const ConfigNode& node,
                         absl::flat_hash_map<std::string, std::string>* headers) {
  for (auto& [name, value] : node.Entries()) {
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok()) return text.status();
    const std::string lower = absl::AsciiStrToLower(name);
    if (lower.rfind("webhook-", 0) == 0 || lower == "content-type" ||
        lower == "content-encoding" || lower == "content-length") {
      return value.Error(Cat("header ", name, " is pgflow's to set"));
    }
    if (name.find_first_of(":\r\n ") != std::string::npos ||
        text->find_first_of("\r\n") != std::string::npos) {
      return value.Error(Cat("invalid header ", name));
    }
    (*headers)[name] = *text;
  }
  return absl::OkStatus();
}

const OptionTable<HttpEndpointOptions>& HttpEndpointTable() {
  static const auto* table = MakeHttpEndpointTable(WebhookSinkOptions{}.http, "endpoint").release();
  return *table;
}

const OptionTable<WebhookSinkOptions>& WebhookTable() {
  using O = WebhookSinkOptions;
  static const auto* table = new OptionTable<O>({
      StringOption("url", &O::url)
          .NoDefault()
          .Help("The endpoint every event goes to (http:// or https://); or routes:."),
      CustomOption("routes", OptionType::kList, ReadRoutes, &O::routes)
          .NoDefault()
          .Help("Endpoints by what they take: [{url, table, op, where}]; an event goes to each "
                "route that takes it."),
      ListOption("secret", &O::secret)
          .NoDefault()
          .Help("The signing secret, whsec_<base64> (write ${VAR}); several (a list, or "
                "space-separated) sign with each, for rotation."),
      ChoiceOption("method", &O::method)
          .Choices(
              {{"POST", O::Method::kPost}, {"PUT", O::Method::kPut}, {"PATCH", O::Method::kPatch}},
              "method")
          .Help("The HTTP method."),
      CustomOption("headers", OptionType::kMap, ReadHeaders, &O::headers)
          .NoDefault()
          .Help("Headers sent with every request: {Authorization: \"Bearer ${TOKEN}\"}."),
      IntOption("batch", &O::batch)
          .Range(1, 10000)
          .Help("Events per request: 1 sends each as a JSON object; more, a JSON array of up to "
                "this many, delivered all or nothing."),
      DurationOption("linger", &O::linger)
          .Help("How long a batch that is not full waits for more events."),
      ChoiceOption("order", &O::order)
          .Choices({{"per_key", WebhookOrder::kPerKey},
                    {"fifo", WebhookOrder::kFifo},
                    {"none", WebhookOrder::kNone}},
                   "order")
          .Help("per_key: events of one row never overtake each other, other rows go ahead; "
                "fifo: one request at a time, in stream order; none: any order."),
      IntOption("concurrency", &O::concurrency)
          .Range(1, 1024)
          .Help("Requests in flight at once, per endpoint."),
      IntOption("buffer", &O::buffer)
          .AtLeast(1)
          .Help("Events per endpoint not yet accepted; when full, the pipeline waits."),
      IntOption("max_attempts", &O::max_attempts)
          .AtLeast(0)
          .Help("Attempts before a request that keeps failing is given up; 0: only max_age."),
      DurationOption("max_age", &O::max_age)
          .Help("How long a failing request is retried before it is given up."),
      DurationOption("backoff", &O::backoff)
          .Help("The wait before the first retry, doubled at each up to max_backoff; each wait "
                "is drawn between half of that and all of it (jitter)."),
      DurationOption("max_backoff", &O::max_backoff).Help("The longest wait between attempts."),
      EmbedOptions(&O::http, HttpEndpointTable()),
      BoolOption("deny_private_addresses", &O::deny_private_addresses)
          .Help("Refuse endpoints that resolve or connect to loopback, private or link-local "
                "addresses (against server-side request forgery)."),
      BoolOption("numeric_as_number", &O::json, &JsonOptions::numeric_as_number)
          .Help("Write numeric values as JSON numbers instead of strings."),
  });
  return *table;
}

class WebhookSinkFactory : public SinkFactoryOf<WebhookSinkOptions> {
 public:
  std::string_view type() const override { return "webhook"; }
  bool SetsAside() const override { return true; }
  std::string_view help() const override {
    return "Every change as a signed HTTP request (Standard Webhooks) to one or more endpoints, "
           "in order per row, retried until accepted.";
  }

 protected:
  const OptionTable<WebhookSinkOptions>& table() const override { return WebhookTable(); }
  absl::Status Check(const ConfigNode& node, WebhookSinkOptions* options) const override {
    if (options->url.empty() == options->routes.empty()) {
      return node.Error("give url (one endpoint for every event) or routes (several), not both");
    }
    if (!options->url.empty()) {
      WebhookRoute route;
      route.url = options->url;
      if (absl::Status s = CheckRoute(node, &route); !s.ok()) return s;
      options->routes.push_back(std::move(route));
    }
    if (options->max_backoff < options->backoff) {
      return node.Get("max_backoff")
          ->Error("max_backoff is shorter than backoff");
    }
    return absl::OkStatus();
  }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const WebhookSinkOptions> options) const override {
    return std::make_unique<WebhookSink>(context, std::move(options));
  }
};

// ---- events ----

// The key of `row` of `change`'s table as the sink names a row ("schema.table\n{key}"), in
// *out; false (only the table's part written) when the table has no key or the row none of it.
bool RowKeyText(const Change& change, const Row& row, const JsonOptions& json, std::string* out) {
  out->clear();
  *out += Cat(change.table->schema, ".", change.table->name, "\n");
  return AppendKeyObject(*change.table, row, json, out);
}

// Fills in the rows `event` is about (see WebhookEvent::keys; none: a barrier) and its id (a
// snapshot row's is its table and key, see the header). *scratch is working space.
void IdentifyEvent(const Change& change, const JsonOptions& json, WebhookEvent* event,
                   std::string* scratch) {
  if (!IsRowChange(change.op) || change.table == nullptr) {
    AppendEventId(change, &event->id);
    return;
  }
  // No key: the table's rows keep their order among themselves.
  RowKeyText(change, change.op == Op::kDelete ? change.before : change.after, json, scratch);
  event->AddKey(RowKeyHash(*scratch));
  if (change.op == Op::kRead) {
    AppendLsn(change.txn.commit_lsn, &event->id);
    event->id += Cat(":", change.table->schema, ".", change.table->name, ":",
                     Sha256Hex(*scratch).substr(0, 16));
    return;
  }
  AppendEventId(change, &event->id);
  if (change.op == Op::kUpdate && change.before_kind != BeforeKind::kNone &&
      RowKeyText(change, change.before, json, scratch)) {
    event->AddKey(RowKeyHash(*scratch));  // the row moved from another key: both are held
  }
}

std::string TypeOf(const Change& change) {
  if (change.op == Op::kDdl) return "ddl";
  if (change.op == Op::kMessage || change.table == nullptr) return OpName(change.op);
  return Cat(change.table->schema, ".", change.table->name, ".", OpName(change.op));
}

std::string PayloadOf(const Change& change, const std::string& id, const JsonOptions& json) {
  std::string out;
  out.reserve(512);
  out.append("{\"id\":");
  AppendJsonString(id, &out);
  out.append(",\"type\":");
  AppendJsonString(TypeOf(change), &out);
  out.append(",\"timestamp\":\"");
  const int64_t at = change.txn.commit_time_us != 0
                         ? change.txn.commit_time_us
                         : std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  AppendIsoTimestamp(at, &out);
  out.append("\",\"data\":");
  AppendChangeObject(change, json, &out);
  out.push_back('}');
  return out;
}

// ---- messages ----

std::string Seconds(WebhookClock::duration d) {
  return absl::StrFormat("%.1fs", std::chrono::duration<double>(d).count());
}

}  // namespace

// One endpoint: its route, its queue (guarded by mu_) and what the delivery thread keeps.
struct WebhookSink::Endpoint {
  const WebhookRoute* route = nullptr;
  EndpointQueue queue;
  bool gone = false;  // answered 410
  WebhookClock::time_point last_log{};
  // Since its last delivery: the failure it is retrying (empty when the last attempt went
  // through), for Trouble().
  std::string retrying;
  explicit Endpoint(EndpointQueue::Limits limits) : queue(limits) {}
};

// One request on the wire.
struct WebhookSink::Transfer {
  Endpoint* endpoint = nullptr;
  WebhookRequest* request = nullptr;
  CURL* curl = nullptr;
  curl_slist* headers = nullptr;
  HttpResponse answer = HttpResponse::Keeping(kAnswerBytes);  // its status is read by Judge
  std::string gzipped;
  std::string denied;  // the internal address a connection was refused to
  bool failed_to_start = false;  // libcurl could not take it (no memory): retried
};

namespace {

curl_socket_t OpenSocket(void* clientp, curlsocktype purpose, curl_sockaddr* address) {
  auto* transfer = static_cast<WebhookSink::Transfer*>(clientp);
  if (IsInternalAddress(&address->addr)) {
    transfer->denied = AddressText(&address->addr);
    return CURL_SOCKET_BAD;
  }
  return ::socket(address->family, address->socktype, address->protocol);
}

}  // namespace

WebhookSink::WebhookSink(SinkContext context, std::shared_ptr<const WebhookSinkOptions> options)
    : TransactionalSink(context.source.positions),
      context_(std::move(context)),
      options_(std::move(options)),
      backoff_(options_->backoff, options_->max_backoff) {}

WebhookSink::~WebhookSink() { Close().IgnoreError(); }

absl::Status WebhookSink::Open() {
  const std::string where = Cat("sinks.", context_.sink, ".webhook");
  for (const std::string& secrets : options_->secret) {
    for (absl::string_view secret : absl::StrSplit(secrets, ' ', absl::SkipEmpty())) {
      absl::StatusOr<std::string> key = WebhookSecretKey(Sv(secret));
      if (!key.ok()) return absl::InvalidArgumentError(Cat(where, ".secret: ", key.status().message()));
      keys_.push_back(*std::move(key));
    }
  }
  if (keys_.empty()) {
    LogWarning("sink %s (webhook): no secret: requests are not signed, and receivers cannot tell "
               "them from forged ones (set secret: ${WEBHOOK_SECRET})",
               context_.sink);
  }
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  for (const WebhookRoute& route : options_->routes) {
    CURLU* parsed = curl_url();
    char* host = nullptr;
    char* scheme = nullptr;
    if (curl_url_set(parsed, CURLUPART_URL, route.url.c_str(), 0) != CURLUE_OK ||
        curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
      curl_url_cleanup(parsed);
      return absl::InvalidArgumentError(Cat(where, ": invalid endpoint URL ", route.url));
    }
    std::string host_name = host;
    if (host_name.size() > 2 && host_name.front() == '[') host_name = host_name.substr(1, host_name.size() - 2);
    const bool plain = std::string_view(scheme) == "http";
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(parsed);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(host_name.c_str(), nullptr, &hints, &found); rc != 0) {
      // Not fatal: DNS may come back; requests are retried meanwhile.
      LogWarning("sink %s (webhook): cannot resolve %s yet: %s", context_.sink, host_name,
                 gai_strerror(rc));
    }
    bool all_loopback = found != nullptr;
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      if (options_->deny_private_addresses && IsInternalAddress(a->ai_addr)) {
        const std::string address = AddressText(a->ai_addr);
        freeaddrinfo(found);
        return absl::PermissionDeniedError(
            Cat(where, ": endpoint ", route.url, " resolves to the internal address ", address,
                ", which deny_private_addresses refuses"));
      }
      all_loopback = all_loopback && IsLoopbackAddress(a->ai_addr);
    }
    if (found != nullptr) freeaddrinfo(found);
    if (plain && !all_loopback) {
      LogWarning("sink %s (webhook): %s is plain http to another machine: the changes and "
                 "their signatures travel unencrypted (use https://)",
                 context_.sink, route.url);
    }
    EndpointQueue::Limits limits{options_->order, static_cast<size_t>(options_->batch),
                                 options_->linger, static_cast<size_t>(options_->concurrency)};
    auto endpoint = std::make_unique<Endpoint>(limits);
    endpoint->route = &route;
    endpoints_.push_back(std::move(endpoint));
  }
  absl::StatusOr<std::unique_ptr<DeadLetterStore>> store = OpenDeadLetters(context_);
  if (!store.ok()) return store.status();
  dead_letters_ = *std::move(store);
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return absl::InternalError("libcurl could not be initialised");
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options_->concurrency * endpoints_.size() + 4));
  multi_ = multi;
  thread_ = std::thread([this] { Deliver(); });
  return absl::OkStatus();
}

absl::StatusOr<bool> WebhookSink::Takes(const WebhookRoute& route, const Change& change) const {
  const EventSelection& selection = route.selection;
  if (!selection.TakesOp(change.op)) return false;
  if (!selection.tables.empty()) {
    if (change.table == nullptr || !selection.TakesTable(*change.table)) return false;
  }
  if (selection.expression == nullptr || !IsRowChange(change.op) || change.table == nullptr) {
    return true;
  }
  FilterExpression::Rows rows;
  rows.table = change.table.get();
  if (change.op == Op::kDelete) {
    rows.after = &change.before;  // a delete is judged by its old row
  } else {
    rows.after = &change.after;
    rows.before = &change.before;
    rows.before_kind = change.before_kind;
  }
  absl::StatusOr<bool> matches = selection.expression->Matches(rows);
  if (!matches.ok()) {
    return absl::InvalidArgumentError(Cat("sink ", context_.sink, " (webhook): the route to ",
                                          route.url, ": ", matches.status().message()));
  }
  return *matches;
}

absl::Status WebhookSink::OnChange(const Change& change, bool in_txn) {
  // A destination that names an endpoint (a dead letter replayed, a route transform's choice)
  // sends the change there only.
  const Endpoint* only = nullptr;
  if (!change.destination.empty()) {
    for (const auto& endpoint : endpoints_) {
      if (endpoint->route->url == change.destination) only = endpoint.get();
    }
    const std::string_view destination = change.destination;
    if (only == nullptr && (destination.substr(0, 7) == "http://" ||
                            destination.substr(0, 8) == "https://")) {
      // A dead letter's endpoint that is no longer configured: sent nowhere, it would count
      // as delivered.
      return absl::FailedPreconditionError(
          Cat("sink ", context_.sink, " (webhook): no endpoint ", destination,
              " (the event was meant for it; add it back to url or routes to send it)"));
    }
  }
  WebhookEvent first;  // what every endpoint's copy shares, made for the first
  std::shared_ptr<const std::string> payload;
  for (const auto& endpoint : endpoints_) {
    if (only != nullptr && endpoint.get() != only) continue;
    if (only == nullptr) {
      absl::StatusOr<bool> takes = Takes(*endpoint->route, change);
      if (!takes.ok()) return takes.status();
      if (!*takes) continue;
    }
    if (first.payload == nullptr) {
      IdentifyEvent(change, options_->json, &first, &scratch_);
      first.payload = std::make_shared<const std::string>(PayloadOf(change, first.id, options_->json));
      if (dead_letters_ != nullptr) first.change = std::make_shared<const Change>(change);
      first.queued = WebhookClock::now();
    }
    if (absl::Status s = Enqueue(*endpoint, first); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WebhookSink::Enqueue(Endpoint& endpoint, WebhookEvent event) {
  const size_t max_window = 4 * static_cast<size_t>(options_->buffer) * endpoints_.size();
  std::unique_lock<std::mutex> lock(mu_);
  const auto since = WebhookClock::now();
  auto last_log = since;
  while (failure_.ok() && (endpoint.queue.events() >= static_cast<size_t>(options_->buffer) ||
                           tracker_.Window() >= max_window)) {
    room_.wait_for(lock, std::chrono::milliseconds(100));
    const auto now = WebhookClock::now();
    if (now - last_log >= kLogEvery) {
      last_log = now;
      LogWarning("sink %s (webhook): %s has not accepted %d events for %s; waiting", context_.sink,
                 endpoint.route->url, endpoint.queue.events(), Seconds(now - since));
    }
  }
  if (!failure_.ok()) return failure_;
  event.number = tracker_.Produced();
  endpoint.queue.Push(std::move(event));
  // The delivery thread needs waking for a first event (its linger starts) and for a full
  // batch; those between would only wake it to wait on.
  const size_t queued = endpoint.queue.queued();
  const bool wake = queued == 1 || queued % static_cast<size_t>(options_->batch) == 0;
  lock.unlock();
  if (!wake) return absl::OkStatus();
  pushed_.fetch_add(1);
  if (idle_.exchange(false)) curl_multi_wakeup(static_cast<CURLM*>(multi_));
  return absl::OkStatus();
}

absl::Status WebhookSink::OnCommit(const TxnInfo& txn) {
  std::lock_guard<std::mutex> lock(mu_);
  tracker_.MarkPosition(txn.end_lsn);
  return failure_;
}

absl::Status WebhookSink::OnPosition(Lsn position) {
  std::lock_guard<std::mutex> lock(mu_);
  tracker_.MarkPosition(position);
  return failure_;
}

absl::Status WebhookSink::OnChunkDone(uint64_t chunk, const TableSchemaPtr&) {
  std::lock_guard<std::mutex> lock(mu_);
  tracker_.MarkChunk(chunk);
  return failure_;
}

absl::Status WebhookSink::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  if (multi_ == nullptr) return absl::FailedPreconditionError("webhook sink is not open");
  return failure_;
}

std::optional<Lsn> WebhookSink::DurableThrough() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tracker_.DurablePosition();
}

uint64_t WebhookSink::DurableChunkThrough() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tracker_.DurableChunk();
}

void WebhookSink::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = std::move(status);
  room_.notify_all();
}

// ---- the delivery thread ----

void WebhookSink::Deliver() {
  CURLM* multi = static_cast<CURLM*>(multi_);
  absl::flat_hash_set<Transfer*> active;
  while (true) {
    const auto now = WebhookClock::now();
    std::vector<Transfer*> started;
    std::optional<WebhookClock::time_point> next;
    bool gave_up = false;
    const uint64_t seen = pushed_.load();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      if (failure_.ok()) {
        for (const auto& endpoint : endpoints_) {
          gave_up = StartReady(*endpoint, now, &started) || gave_up;
          std::optional<WebhookClock::time_point> due = endpoint->queue.NextDue();
          // Events queued behind busy rows are looked at again within a linger at the latest
          // (the sink's thread wakes this one only for a first event and for a full batch).
          if (endpoint->queue.queued() > 0) {
            const auto soon = now + std::max(options_->linger, std::chrono::milliseconds(1));
            if (!due.has_value() || soon < *due) due = soon;
          }
          if (due.has_value() && (!next.has_value() || *due < *next)) next = due;
        }
      }
    }
    for (Transfer* transfer : started) {
      Start(transfer);
      if (transfer->failed_to_start) {
        Judge(transfer, CURLE_FAILED_INIT);  // retried like a network error
      } else {
        active.insert(transfer);
      }
    }
    int running = 0;
    curl_multi_perform(multi, &running);
    bool ended = false;
    int left = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&transfer));
      curl_multi_remove_handle(multi, transfer->curl);
      active.erase(transfer);
      Judge(transfer, message->data.result);
      ended = true;
    }
    if (ended || gave_up || !started.empty()) continue;
    int wait_ms = 100;
    if (next.has_value()) {
      const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
          *next - WebhookClock::now());
      wait_ms = static_cast<int>(std::clamp<int64_t>(until.count() + 1, 0, 100));
    }
    idle_.store(true);
    if (pushed_.load() == seen) {
      curl_multi_poll(multi, nullptr, 0, wait_ms, nullptr);
    }
    idle_.store(false);
  }
  // Requests still on the wire are abandoned: their events were not acknowledged.
  for (Transfer* transfer : active) {
    curl_multi_remove_handle(multi, transfer->curl);
    curl_easy_cleanup(transfer->curl);
    curl_slist_free_all(transfer->headers);
    delete transfer;
  }
  for (void* handle : handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
  handles_.clear();
}

bool WebhookSink::StartReady(Endpoint& endpoint, WebhookClock::time_point now,
                             std::vector<Transfer*>* started) {
  bool gave_up = false;
  for (WebhookRequest* request : endpoint.queue.Take(now, /*flush=*/false)) {
    if (endpoint.gone) {
      GiveUp(endpoint, request, "the endpoint is gone (it answered 410 Gone)", "410");
      gave_up = true;
      continue;
    }
    auto* transfer = new Transfer;
    transfer->endpoint = &endpoint;
    transfer->request = request;
    started->push_back(transfer);
  }
  return gave_up;
}

void WebhookSink::Start(Transfer* transfer) {
  WebhookRequest& request = *transfer->request;
  const WebhookSinkOptions& options = *options_;
  if (request.webhook_id.empty()) {
    // Built once: every attempt sends the same body under the same id.
    const std::vector<WebhookEvent>& events = request.events;
    request.webhook_id = Cat(context_.pipeline, ":", events.front().id);
    if (events.size() > 1) request.webhook_id += Cat("~", events.back().id);
    // The specification asks for ids without '.' (the signed content joins with it).
    std::replace(request.webhook_id.begin(), request.webhook_id.end(), '.', '_');
    if (options.batch == 1) {
      request.body = *events.front().payload;
    } else {
      size_t size = 2;
      for (const WebhookEvent& event : events) size += event.payload->size() + 1;
      request.body.reserve(size);
      request.body.push_back('[');
      for (size_t i = 0; i < events.size(); ++i) {
        if (i > 0) request.body.push_back(',');
        request.body.append(*events[i].payload);
      }
      request.body.push_back(']');
    }
  }
  const auto now = WebhookClock::now();
  if (request.attempts++ == 0) request.first_attempt = now;
  const std::string timestamp = std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, Cat("webhook-id: ", request.webhook_id).c_str());
  headers = curl_slist_append(headers, Cat("webhook-timestamp: ", timestamp).c_str());
  if (!keys_.empty()) {
    headers = curl_slist_append(
        headers,
        Cat("webhook-signature: ", SignWebhook(keys_, request.webhook_id, timestamp, request.body))
            .c_str());
  }
  for (const auto& [name, value] : options.headers) {
    headers = curl_slist_append(headers, Cat(name, ": ", value).c_str());
  }
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  std::string_view body = request.body;
  if (options.http.gzip) {
    body = GzipEncode(request.body, &transfer->gzipped);
    if (body.data() != request.body.data()) {
      headers = curl_slist_append(headers, "Content-Encoding: gzip");
    }
  }
  transfer->headers = headers;
  transfer->answer.body.clear();
  transfer->answer.retry_after_seconds = 0;
  transfer->denied.clear();
  // Handles are kept for the next requests (their buffers and TLS session with them).
  CURL* curl = nullptr;
  if (!handles_.empty()) {
    curl = static_cast<CURL*>(handles_.back());
    handles_.pop_back();
    curl_easy_reset(curl);
  } else {
    curl = curl_easy_init();
  }
  transfer->curl = curl;
  if (curl == nullptr) {
    transfer->failed_to_start = true;
    return;
  }
  SetUpHandle(curl, options.http, transfer->endpoint->route->url.c_str(), &transfer->answer);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "pgflow");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  if (options.method == WebhookSinkOptions::Method::kPut) {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
  } else if (options.method == WebhookSinkOptions::Method::kPatch) {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PATCH");
  }
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(curl, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(curl, CURLOPT_PRIVATE, transfer);
  if (options.deny_private_addresses) {
    // Checked at each connection too: a name may resolve elsewhere later (DNS rebinding).
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, OpenSocket);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, transfer);
  }
  if (curl_multi_add_handle(static_cast<CURLM*>(multi_), curl) != CURLM_OK) {
    transfer->failed_to_start = true;  // judged as a network error, retried
  }
}

void WebhookSink::Judge(Transfer* transfer, int curl_code) {
  long status = 0;
  if (curl_code == CURLE_OK) curl_easy_getinfo(transfer->curl, CURLINFO_RESPONSE_CODE, &status);
  if (transfer->curl != nullptr) handles_.push_back(transfer->curl);
  curl_slist_free_all(transfer->headers);
  Endpoint& endpoint = *transfer->endpoint;
  WebhookRequest* request = transfer->request;
  const std::string& url = endpoint.route->url;
  const std::string& answer = transfer->answer.body;
  const HttpDisposition disposition = Classify(status, curl_code);

  std::lock_guard<std::mutex> lock(mu_);
  if (disposition == HttpDisposition::kAccepted) {
    for (const WebhookEvent& event : endpoint.queue.Finish(request)) tracker_.Delivered(event.number);
    endpoint.retrying.clear();
    room_.notify_all();
  } else if (curl_code != CURLE_OK && !transfer->denied.empty()) {
    GiveUp(endpoint, request,
           Cat("it connects to the internal address ", transfer->denied,
               ", which deny_private_addresses refuses"),
           "denied");
  } else if (disposition == HttpDisposition::kGone) {
    endpoint.gone = true;
    LogWarning("sink %s (webhook): %s answered 410 Gone: nothing more is sent to it", context_.sink,
               url);
    GiveUp(endpoint, request, "the endpoint is gone (it answered 410 Gone)", "410");
  } else if (IsRetry(disposition)) {
    const std::string failure =
        curl_code != CURLE_OK ? std::string(curl_easy_strerror(static_cast<CURLcode>(curl_code)))
                              : Cat("HTTP ", status, answer.empty() ? "" : ": ", answer);
    Retry(endpoint, request, failure,
          curl_code != CURLE_OK ? "unreachable" : std::to_string(status),
          disposition == HttpDisposition::kRetryEndpoint, transfer->answer.retry_after_seconds);
  } else {
    GiveUp(endpoint, request,
           Cat("refused: HTTP ", status, status / 100 == 3 ? " (redirects are not followed)" : "",
               answer.empty() ? "" : ": ", answer),
           std::to_string(status));
  }
  delete transfer;
}

void WebhookSink::Retry(Endpoint& endpoint, WebhookRequest* request, const std::string& failure,
                        const std::string& code, bool endpoint_down, int retry_after_seconds) {
  const std::string& url = endpoint.route->url;
  const auto now = WebhookClock::now();
  request->last_failure = failure;
  endpoint.retrying =
      Cat("retrying deliveries to ", url, " (", failure, ", attempt ", request->attempts, ")");
  const bool exhausted =
      (options_->max_attempts > 0 && request->attempts >= options_->max_attempts) ||
      now - request->first_attempt >= options_->max_age;
  if (exhausted) {
    GiveUp(endpoint, request,
           Cat("still failing after ", request->attempts, " attempts over ",
               Seconds(now - request->first_attempt), ": ", failure),
           code);
    return;
  }
  std::chrono::milliseconds wait =
      backoff_.Next(request->attempts, std::chrono::seconds(retry_after_seconds));
  // Never past max_age: the last attempt is made then.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(request->first_attempt +
                                                                          options_->max_age - now);
  wait = std::max(std::chrono::milliseconds(0), std::min(wait, left));
  endpoint.queue.Again(request, now + wait, endpoint_down);
  if (now - endpoint.last_log >= kLogEvery) {
    endpoint.last_log = now;
    LogWarning("sink %s (webhook): %s: %s (request %s, attempt %d); retrying in %s", context_.sink,
               url, failure, request->webhook_id, request->attempts, Seconds(wait));
  }
}

std::string WebhookSink::Trouble() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string trouble;
  for (const std::unique_ptr<Endpoint>& endpoint : endpoints_) {
    if (endpoint->retrying.empty()) continue;
    trouble += trouble.empty() ? endpoint->retrying : Cat("; ", endpoint->retrying);
  }
  return trouble;
}

void WebhookSink::GiveUp(Endpoint& endpoint, WebhookRequest* request, const std::string& reason,
                         const std::string& code) {
  const std::string& url = endpoint.route->url;
  if (dead_letters_ == nullptr) {
    Fail(absl::FailedPreconditionError(Cat(
        "sink ", context_.sink, " (webhook): ", url, ": request ", request->webhook_id, " (",
        request->events.size(), request->events.size() == 1 ? " event" : " events", ") ", reason,
        "; nothing after it is acknowledged (set dead_letter: to record such events and go on)")));
    endpoint.queue.Finish(request);  // not delivered: the pipeline stops short of it
    return;
  }
  for (const WebhookEvent& event : request->events) {
    const Change& change = *event.change;
    std::string key;
    if (IsRowChange(change.op) && change.table != nullptr &&
        RowKeyText(change, change.op == Op::kDelete ? change.before : change.after, options_->json,
                   &key)) {
      key.erase(0, key.find('\n') + 1);
    } else {
      key.clear();
    }
    DeadLetter letter = MakeDeadLetter(context_.pipeline, context_.sink, change, std::move(key),
                                       Cat(url, ": ", reason), code);
    letter.destination = url;  // replayed, it goes to this endpoint only
    if (absl::Status s = dead_letters_->Record(letter); !s.ok()) {
      Fail(absl::Status(s.code(), Cat("sink ", context_.sink, " (webhook): cannot set aside event ",
                                      event.id, " in ", dead_letters_->Describe(), ": ",
                                      s.message())));
      endpoint.queue.Finish(request);
      return;
    }
  }
  const size_t n = request->events.size();
  LogWarning("sink %s (webhook): %s: %d event(s) of request %s set aside in %s: %s", context_.sink,
             url, n, request->webhook_id, dead_letters_->Describe(), reason);
  for (const WebhookEvent& event : endpoint.queue.Finish(request)) tracker_.Delivered(event.number);
  dead_lettered_.fetch_add(n);
  room_.notify_all();
}

absl::Status WebhookSink::Close() {
  if (multi_ == nullptr) return absl::OkStatus();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
  if (thread_.joinable()) thread_.join();
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
  multi_ = nullptr;
  return absl::OkStatus();
}

void RegisterWebhookSink() { RegisterSinkFactory(std::make_unique<WebhookSinkFactory>()); }

}  // namespace pgflow
