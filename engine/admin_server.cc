#include "engine/admin_server.h"

// g++ 12 pairs the coroutine frames' operator delete (asio's recycling allocator, Boost 1.74)
// with the wrong operator new and warns; the pair is asio's own and matches.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include "engine/asio_support.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/listen_address.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

using namespace asio_support;  // NOLINT: this file's vocabulary
namespace beast = boost::beast;
namespace http = beast::http;
using Stream = beast::basic_stream<tcp, Executor>;

constexpr absl::string_view kTooMany = "too many connections to the admin endpoint\n";

constexpr size_t kHeaderLimit = 8 * 1024;
constexpr size_t kBodyLimit = 64 * 1024;
// Console requests waiting for the worker at most; past it they get 503.
constexpr size_t kMaxQueuedWork = 32;

struct Reply {
  http::status status = http::status::ok;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers{};
  std::function<ConsoleReply()> deferred{};
};

Reply FromConsole(ConsoleReply reply) {
  return {static_cast<http::status>(reply.status), std::move(reply.content_type),
          std::move(reply.body), std::move(reply.headers), std::move(reply.deferred)};
}

std::string_view Header(const http::request<http::string_body>& request, http::field field) {
  auto it = request.find(field);
  if (it == request.end()) return {};
  return std::string_view(it->value().data(), it->value().size());
}

std::string_view Header(const http::request<http::string_body>& request, std::string_view name) {
  auto it = request.find(beast::string_view(name.data(), name.size()));
  if (it == request.end()) return {};
  return std::string_view(it->value().data(), it->value().size());
}

}  // namespace

class AdminServer::Impl {
 public:
  Impl(AdminServerOptions options, MetricsRegistry* metrics, RunStatus* status)
      : options_(std::move(options)), metrics_(metrics), status_(status) {
    if (options_.console.has_value()) console_ = std::make_unique<Console>(*options_.console);
  }

  absl::Status Start() {
    absl::StatusOr<tcp::endpoint> parsed = ParseEndpoint(options_.listen);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("admin: listen ", parsed.status().message()));
    }
    const tcp::endpoint endpoint = *parsed;
    boost::system::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(64, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("admin: cannot listen on ", options_.listen, ": ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(context_.get_executor(), Accept(), asio::detached);
    if (console_ != nullptr) {
      asio::co_spawn(context_.get_executor(), SampleForCharts(), asio::detached);
      worker_ = std::thread([this] { Work(); });
    }
    thread_ = std::thread([this] {
      SetLogComponent("admin");
      context_.run();
    });
    return absl::OkStatus();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    asio::post(context_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
    });
    context_.stop();
    thread_.join();
    if (worker_.joinable()) {
      {
        std::lock_guard lock(work_mu_);
        stopping_ = true;
      }
      work_cv_.notify_all();
      worker_.join();
    }
  }

  int port() const { return port_; }

 private:
  Task<void> Accept() {
    Timer pause(context_.get_executor());
    while (true) {
      boost::system::error_code ec;
      Socket socket = co_await acceptor_.async_accept(asio::redirect_error(kUseTask, ec));
      if (ec) {
        if (!acceptor_.is_open()) co_return;
        // A client that went away before it was accepted, or the process is out of
        // descriptors: pause rather than spin on the error.
        pause.expires_after(std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(kUseTask, ec));
        continue;
      }
      if (connections_.load() >= options_.max_connections) {
        // Refused at once, so that a flood of clients holds no descriptor: one non-blocking
        // write of the answer (it fits any socket buffer), then closed.
        const std::string refusal = absl::StrCat(
            "HTTP/1.1 503 Service Unavailable\r\nServer: pgflow\r\nConnection: close\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ",
            kTooMany.size(), "\r\n\r\n", kTooMany);
        socket.non_blocking(true, ec);
        socket.write_some(asio::buffer(refusal), ec);
        socket.close(ec);
        continue;
      }
      connections_.fetch_add(1);
      asio::co_spawn(context_.get_executor(), Serve(std::move(socket)), asio::detached);
    }
  }

  // One connection: requests answered in turn (keep-alive) until the client closes, errs or
  // is too slow.
  Task<void> Serve(Socket socket) {
    boost::system::error_code peer_error;
    const asio::ip::address peer_address = socket.remote_endpoint(peer_error).address();
    const bool from_loopback = !peer_error && peer_address.is_loopback();
    const std::string peer = peer_error ? "unknown" : peer_address.to_string();
    Stream stream(std::move(socket));
    struct Count {
      std::atomic<size_t>* n;
      ~Count() { n->fetch_sub(1); }
    } counted{&connections_};  // counted in by Accept
    beast::flat_buffer buffer(kHeaderLimit);
    while (true) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(kBodyLimit);
      stream.expires_after(options_.io_timeout);
      boost::system::error_code ec;
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(kUseTask, ec));
      if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted) {
        co_return;
      }
      Reply reply;
      bool keep_alive = false;
      unsigned version = 11;
      bool head = false;
      if (ec) {
        reply = {http::status::bad_request, "text/plain; charset=utf-8",
                 absl::StrCat("bad request: ", ec.message(), "\n")};
      } else {
        const http::request<http::string_body>& request = parser.get();
        keep_alive = request.keep_alive();
        version = request.version();
        head = request.method() == http::verb::head;
        reply = Answer(request, from_loopback, peer);
        if (reply.deferred) {
          std::function<ConsoleReply()> work = std::move(reply.deferred);
          Reply done = co_await OnWorker(&work);
          reply = std::move(done);
        }
      }
      http::response<http::string_body> response(reply.status, version);
      response.set(http::field::server, "pgflow");
      response.set(http::field::content_type, reply.content_type);
      for (const auto& [name, value] : Console::SecurityHeaders()) response.set(name, value);
      for (const auto& [name, value] : reply.headers) response.set(name, value);
      response.keep_alive(keep_alive);
      response.body() = std::move(reply.body);
      response.prepare_payload();
      if (head) response.body().clear();  // Content-Length stays that of the GET
      stream.expires_after(options_.io_timeout);
      http::response_serializer<http::string_body> serializer(response);
      if (head) serializer.split(true);
      if (head) {
        co_await http::async_write_header(stream, serializer, asio::redirect_error(kUseTask, ec));
      } else {
        co_await http::async_write(stream, serializer, asio::redirect_error(kUseTask, ec));
      }
      if (ec || !keep_alive) {
        stream.socket().shutdown(tcp::socket::shutdown_send, ec);
        co_return;
      }
    }
  }

  // Runs `work` on the console's worker thread and resumes with its reply: the admin thread
  // goes on serving /metrics meanwhile.
  Task<Reply> OnWorker(std::function<ConsoleReply()>* work) {
    struct Job {
      std::function<ConsoleReply()> work;
      ConsoleReply reply;
      Timer* done = nullptr;  // cleared when the waiting coroutine is gone
    };
    auto job = std::make_shared<Job>();
    job->work = std::move(*work);
    {
      std::lock_guard lock(work_mu_);
      if (work_.size() >= kMaxQueuedWork) {
        co_return Reply{http::status::service_unavailable, "application/json",
                        R"({"error": "the console is busy: try again"})"};
      }
      work_.push_back([this, job] {
        job->reply = job->work();
        asio::post(context_, [job] {
          if (job->done != nullptr) job->done->cancel();
        });
      });
    }
    work_cv_.notify_one();
    Timer done(context_.get_executor(), std::chrono::steady_clock::time_point::max());
    job->done = &done;
    struct Forget {
      Job* job;
      ~Forget() { job->done = nullptr; }
    } forget{job.get()};
    boost::system::error_code ec;
    co_await done.async_wait(asio::redirect_error(kUseTask, ec));
    co_return FromConsole(std::move(job->reply));
  }

  void Work() {
    SetLogComponent("console");
    while (true) {
      std::function<void()> next;
      {
        std::unique_lock lock(work_mu_);
        work_cv_.wait(lock, [this] { return stopping_ || !work_.empty(); });
        if (stopping_) return;
        next = std::move(work_.front());
        work_.pop_front();
      }
      next();
    }
  }

  // The console's samples for its charts, every sample_every whether or not anyone looks.
  Task<void> SampleForCharts() {
    Timer timer(context_.get_executor());
    while (true) {
      console_->Sample();
      timer.expires_after(console_->sample_every());
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(kUseTask, ec));
      if (ec) co_return;
    }
  }

  Reply Answer(const http::request<http::string_body>& request, bool from_loopback,
               const std::string& peer) {
    std::string_view target(request.target().data(), request.target().size());
    std::string_view query;
    if (size_t q = target.find('?'); q != std::string_view::npos) {
      query = target.substr(q + 1);
      target = target.substr(0, q);
    }
    if (console_ != nullptr && target != "/metrics") {
      ConsoleRequest console_request{
          .method = std::string_view(request.method_string().data(),
                                     request.method_string().size()),
          .path = target,
          .body = request.body(),
          .cookie = Header(request, http::field::cookie),
          .origin = Header(request, http::field::origin),
          .host = Header(request, http::field::host),
          .sec_fetch_site = Header(request, "Sec-Fetch-Site"),
          .csrf_token = Header(request, "X-CSRF-Token"),
          .content_type = Header(request, http::field::content_type),
          .peer = peer};
      if (std::optional<ConsoleReply> reply = console_->Handle(console_request)) {
        return FromConsole(*std::move(reply));
      }
    }
    if (request.method() == http::verb::post && status_ != nullptr &&
        (target == "/handover" || target == "/hold" || target == "/release")) {
      // A browser's page could send it too (its requests carry an Origin): pgflow's own
      // clients never do.
      if (!from_loopback || request.find(http::field::origin) != request.end()) {
        return {http::status::forbidden, "text/plain; charset=utf-8",
                Cat("POST ", target,
                    " is taken only from this machine (a loopback address), not from a page\n")};
      }
      if (target == "/handover") return Handover(query);
      if (target == "/hold") return HoldAt(query);
      status_->ReleaseHold();
      LogInfo("pipeline %s: hold released (POST /release)", status_->pipeline());
      return {http::status::ok, "text/plain; charset=utf-8", "released\n"};
    }
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      return {http::status::method_not_allowed, "text/plain; charset=utf-8",
              "only GET and HEAD are served here (and POST /handover, /hold, /release, from "
              "this machine)\n"};
    }
    if (target == "/metrics") {
      return {http::status::ok, "text/plain; version=0.0.4; charset=utf-8", metrics_->Exposition()};
    }
    if (options_.pages) {
      if (std::optional<AdminPage> page = options_.pages(target, query)) {
        return {static_cast<http::status>(page->status), std::move(page->content_type),
                std::move(page->body)};
      }
    }
    if (target == "/healthz") return {http::status::ok, "text/plain; charset=utf-8", "ok\n"};
    if (status_ == nullptr) {  // the pooler's endpoint: metrics and liveness only
      if (target == "/") {
        return {http::status::ok, "text/plain; charset=utf-8",
                "pgflow pooler admin endpoint: /metrics /healthz\n"};
      }
      return {http::status::not_found, "text/plain; charset=utf-8",
              Cat("no such page: ", target, " (try /metrics /healthz)\n")};
    }
    if (target == "/readyz") {
      std::string reason;
      if (status_->Ready(&reason))
        return {http::status::ok, "text/plain; charset=utf-8", "ready\n"};
      return {http::status::service_unavailable, "text/plain; charset=utf-8",
              absl::StrCat("not ready: ", reason, "\n")};
    }
    if (target == "/status") {
      return {http::status::ok, "application/json", status_->ToJson().dump(2) + "\n"};
    }
    if (target == "/") {
      return {http::status::ok, "text/plain; charset=utf-8",
              absl::StrCat("pgflow admin endpoint of pipeline ", status_->pipeline(),
                           ": /metrics /healthz /readyz /status\n")};
    }
    return {http::status::not_found, "text/plain; charset=utf-8",
            Cat("no such page: ", target, " (try /metrics /healthz /readyz /status)\n")};
  }

  // POST /handover?at=X/X (`pgflow cutover`): the run ends once everything up to that
  // position is confirmed, and `pgflow run` goes on with the pipeline that took over. Only from
  // this machine: it ends the pipeline.
  Reply Handover(std::string_view query) {
    std::optional<Lsn> at;
    if (query.starts_with("at=")) at = Lsn::Parse(std::string(query.substr(3)));
    if (!at.has_value()) {
      return {http::status::bad_request, "text/plain; charset=utf-8",
              "POST /handover?at=X/X: the WAL position to hand over at\n"};
    }
    if (absl::Status s = status_->RequestHandover(*at); !s.ok()) {
      return {http::status::conflict, "text/plain; charset=utf-8", absl::StrCat(s.message(), "\n")};
    }
    LogInfo("pipeline %s: handing over once confirmed through %s (POST /handover)",
            status_->pipeline(), at->ToString());
    return {http::status::accepted, "text/plain; charset=utf-8",
            absl::StrCat("handing over once confirmed through ", at->ToString(), "\n")};
  }

  // POST /hold?at=X/X&seconds=N (`pgflow verify --live`): the sinks get every transaction
  // committed before that position and none after, until POST /release or N seconds (at most
  // kMaxHold): RunStatus::RequestHold, engine/hold_gate.h.
  Reply HoldAt(std::string_view query) {
    constexpr int kMaxHoldSeconds = 600;
    std::optional<Lsn> at;
    int seconds = 60;
    for (std::string_view rest = query; !rest.empty();) {
      const size_t amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      if (pair.starts_with("at=")) at = Lsn::Parse(pair.substr(3));
      if (pair.starts_with("seconds=")) {
        seconds = -1;
        const std::string_view digits = pair.substr(8);
        if (!digits.empty() && digits.size() < 6 &&
            digits.find_first_not_of("0123456789") == std::string_view::npos) {
          seconds = std::stoi(std::string(digits));
        }
      }
    }
    if (!at.has_value() || seconds < 1 || seconds > kMaxHoldSeconds) {
      return {http::status::bad_request, "text/plain; charset=utf-8",
              Cat("POST /hold?at=X/X&seconds=N: the WAL position to hold at, and for how long "
                  "at most (1 to ",
                  kMaxHoldSeconds, " seconds, 60 by default)\n")};
    }
    if (absl::Status s = status_->RequestHold(*at, absl::Seconds(seconds)); !s.ok()) {
      return {http::status::conflict, "text/plain; charset=utf-8", absl::StrCat(s.message(), "\n")};
    }
    LogInfo("pipeline %s: holding at %s for at most %d s (POST /hold)", status_->pipeline(),
            at->ToString(), seconds);
    return {http::status::accepted, "text/plain; charset=utf-8",
            absl::StrCat("holding at ", at->ToString(), ": see hold.state in /status\n")};
  }

  const AdminServerOptions options_;
  MetricsRegistry* const metrics_;
  RunStatus* const status_;
  asio::io_context context_{1};
  Acceptor acceptor_{context_.get_executor()};
  std::thread thread_;
  int port_ = 0;
  std::atomic<size_t> connections_{0};
  std::unique_ptr<Console> console_;
  // The console's worker: what it runs, in turn.
  std::thread worker_;
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<std::function<void()>> work_;
  bool stopping_ = false;
};

namespace {

Task<void> Request(tcp::endpoint endpoint, http::verb method, std::string target, std::string host,
                   HttpReply* reply, boost::system::error_code* error) {
  Stream stream(co_await asio::this_coro::executor);
  boost::system::error_code& ec = *error;
  co_await stream.async_connect(endpoint, asio::redirect_error(kUseTask, ec));
  if (ec) co_return;
  http::request<http::empty_body> request(method, target, 11);
  request.set(http::field::host, host);
  request.set(http::field::user_agent, "pgflow");
  if (method == http::verb::post) request.set(http::field::content_length, "0");
  co_await http::async_write(stream, request, asio::redirect_error(kUseTask, ec));
  if (ec) co_return;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(kUseTask, ec));
  if (ec) co_return;
  reply->status = static_cast<int>(parser.get().result_int());
  reply->body = std::move(parser.get().body());
}

}  // namespace

absl::StatusOr<HttpReply> AdminGet(const std::string& listen, const std::string& target,
                                   std::chrono::milliseconds timeout) {
  return AdminRequest(listen, "GET", target, timeout);
}

absl::StatusOr<HttpReply> AdminRequest(const std::string& listen, std::string_view method,
                                       const std::string& target,
                                       std::chrono::milliseconds timeout) {
  const http::verb verb = http::string_to_verb(beast::string_view(method.data(), method.size()));
  if (verb == http::verb::unknown) {
    return absl::InvalidArgumentError(Cat("no such HTTP method: ", method));
  }
  absl::StatusOr<tcp::endpoint> parsed = ParseEndpoint(listen);
  if (!parsed.ok()) return parsed.status();
  asio::ip::address ip = parsed->address();
  if (ip.is_unspecified()) {
    ip = ip.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                    : asio::ip::address(asio::ip::address_v4::loopback());
  }
  asio::io_context context(1);
  HttpReply reply;
  boost::system::error_code error;
  asio::co_spawn(context.get_executor(),
                 Request(tcp::endpoint(ip, parsed->port()), verb, target, listen, &reply, &error),
                 asio::detached);
  context.run_for(timeout);
  if (!context.stopped()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the admin endpoint ", listen, " did not answer within ", timeout.count(), " ms"));
  }
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("the admin endpoint ", listen, ": ", error.message()));
  }
  return reply;
}

AdminServer::AdminServer(AdminServerOptions options, MetricsRegistry* metrics, RunStatus* status)
    : impl_(std::make_unique<Impl>(std::move(options), metrics, status)) {}

AdminServer::~AdminServer() { Stop(); }

absl::Status AdminServer::Start() { return impl_->Start(); }

void AdminServer::Stop() { impl_->Stop(); }

int AdminServer::port() const { return impl_->port(); }

}  // namespace pgflow
