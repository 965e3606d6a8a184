#include "sinks/kv/kv_server.h"

#include <malloc.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/asio_support.h"
#include "engine/log.h"
#include "sinks/kv/http_session.h"
#include "sinks/kv/memcached_session.h"
#include "sinks/kv/redis_session.h"

namespace pgflow {
namespace {

using namespace asio_support;  // NOLINT: this file's vocabulary

enum class Protocol { kRedis, kMemcached, kHttp };

// A coroutine function, not a capturing lambda: its argument lives in the coroutine frame for
// as long as it runs.
asio::awaitable<WriteResult> RunWrite(std::function<WriteResult()> work) { co_return work(); }

}  // namespace

class KvServer::Impl {
 public:
  Impl(KvService* service, KvListenOptions options)
      : service_(service), options_(std::move(options)) {}

  class ConnBase {
   public:
    virtual ~ConnBase() = default;
    // Sends the replies the connection queued on its Turn.
    virtual void SendQueued() = 0;
    // Its socket is ready (epoll `events`): wakes the coroutine that waits for it.
    virtual void OnReady(uint32_t events) = 0;
    // The server is stopping: lets go of the suspended coroutines (see Poller::Abandon).
    virtual void Abandon() = 0;
  };

  // A connection's coroutine suspended until its socket is ready. Holds asio's handler for
  // it, type-erased, and posts it when woken.
  class Waiter {
   public:
    // Suspends the calling coroutine until Wake.
    auto Wait() {
      return asio::async_initiate<const asio::use_awaitable_t<Executor>&, void()>(
          [this](auto handler) {
            held_ = std::make_unique<Held<decltype(handler)>>(std::move(handler));
          },
          kUseTask);
    }
    bool waiting() const { return held_ != nullptr; }
    // Resumes the waiting coroutine, if any, from the io_context's queue.
    void Wake() {
      if (std::unique_ptr<HeldBase> held = std::move(held_)) held->Post();
    }
    // Destroys the waiting coroutine, if any, without resuming it (asio unwinds its frames
    // through the io_context).
    void Drop() { held_.reset(); }

   private:
    struct HeldBase {
      virtual ~HeldBase() = default;
      virtual void Post() = 0;
    };
    template <typename Handler>
    struct Held : HeldBase {
      explicit Held(Handler h) : handler(std::move(h)) {}
      void Post() override { asio::post(std::move(handler)); }
      Handler handler;
    };
    std::unique_ptr<HeldBase> held_;
  };

  // The connection sockets of one io_context, in an epoll set of their own, level-triggered,
  // each registered once. asio watches only the set. Registering each socket with asio made
  // it re-arm the socket (epoll_ctl) for every wait, a third system call per request beside
  // the read and the write; here a turn's wake-up costs one epoll_wait on the set and one
  // re-arm of the set, whatever the number of requests it serves, and a request its read and
  // its write, as memcached and redis-server make them.
  class Poller {
   public:
    explicit Poller(asio::io_context* context) : context_(context) {}
    ~Poller() { Close(); }
    Poller(const Poller&) = delete;
    Poller& operator=(const Poller&) = delete;

    // Creates the set and has asio watch it.
    absl::Status Open() {
      epfd_ = epoll_create1(EPOLL_CLOEXEC);
      if (epfd_ < 0) {
        return absl::InternalError(
            absl::StrCat("kv: cannot create an epoll set: ", strerror(errno)));
      }
      watch_.emplace(*context_);
      boost::system::error_code ec;
      watch_->assign(epfd_, ec);
      if (ec) {
        watch_.reset();
        return absl::InternalError(absl::StrCat("kv: cannot watch an epoll set: ", ec.message()));
      }
      return absl::OkStatus();
    }

    // Registers `fd` for `events`; false (errno set) when epoll refused.
    bool Add(int fd, ConnBase* conn, uint32_t events) {
      epoll_event ev{};
      ev.events = events;
      ev.data.ptr = conn;
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
      conns_.insert(conn);
      return true;
    }
    bool Modify(int fd, ConnBase* conn, uint32_t events) {
      epoll_event ev{};
      ev.events = events;
      ev.data.ptr = conn;
      return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0;
    }
    // Takes `fd` out of the set (before it is closed: a file description another process
    // shares would stay in it).
    void Remove(int fd) {
      epoll_event ev{};
      epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev);
    }
    void Forget(ConnBase* conn) { conns_.erase(conn); }

    // Hands each ready socket to its connection, turn after turn, until the context stops.
    Task<void> Run() {
      std::array<epoll_event, 128> events;
      while (watch_) {
        boost::system::error_code ec;
        co_await watch_->async_wait(asio::posix::descriptor_base::wait_read,
                                    asio::redirect_error(kUseTask, ec));
        if (!watch_) co_return;  // stopping
        if (ec) {
          if (ec != asio::error::operation_aborted) {
            LogError("kv: waiting on the connections' epoll set failed: %s", ec.message());
          }
          co_return;
        }
        int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), 0);
        // A connection only posts its coroutine's resumption here: none closes or goes away
        // while this loop runs.
        for (int i = 0; i < n; ++i) {
          static_cast<ConnBase*>(events[i].data.ptr)->OnReady(events[i].events);
        }
        // The set is watched again after the connections woken here have read: until then
        // their sockets are still ready, and the wait would return at once for nothing.
        co_await asio::post(*context_, kUseTask);
      }
    }

    // The threads have stopped: every suspended connection coroutine is let go, and the set
    // closed, before the context goes (the coroutines own their connections, which own the
    // handlers that own the coroutines).
    void Abandon() {
      std::vector<ConnBase*> conns(conns_.begin(), conns_.end());
      for (ConnBase* conn : conns) conn->Abandon();
      Close();
    }

   private:
    void Close() {
      if (watch_) {
        boost::system::error_code ec;
        watch_->close(ec);  // closes epfd_
        watch_.reset();
        epfd_ = -1;
      }
      if (epfd_ >= 0) ::close(std::exchange(epfd_, -1));
    }

    asio::io_context* context_;
    int epfd_ = -1;
    std::optional<asio::posix::basic_stream_descriptor<Executor>> watch_;
    absl::flat_hash_set<ConnBase*> conns_;
  };

  // The replies of one turn of an io_context (one thread). A connection that answered what it
  // read queues itself here rather than write at once, and the handler posted behind the
  // turn's other completions writes every queued connection's replies, one send each, as
  // redis-server does before it sleeps. The clients then find a turn's replies together, and
  // an event-loop client handles them in one pass: pipelined (16) HGETs went from ~850,000 to
  // ~1,000,000 a second with one thread (unpipelined: no change measured). Every member is
  // touched from the context's thread only.
  struct Turn {
    explicit Turn(asio::io_context* c) : context(c), poller(c) {}

    void Queue(std::shared_ptr<ConnBase> conn) {
      queued.push_back(std::move(conn));
      if (posted) return;
      posted = true;
      asio::post(*context, [this] { SendAll(); });
    }
    void SendAll() {
      posted = false;
      sending.swap(queued);
      for (const std::shared_ptr<ConnBase>& conn : sending) conn->SendQueued();
      sending.clear();  // keeps its capacity for the next turn
    }

    asio::io_context* const context;
    Poller poller;  // the context's connection sockets
    std::vector<std::shared_ptr<ConnBase>> queued;
    std::vector<std::shared_ptr<ConnBase>> sending;
    bool posted = false;
  };

  // One client connection: the session, its output buffer, and the writer state. Lives on one
  // io_context; every member is touched from that context's thread only.
  template <typename Session>
  class Conn : public ConnBase, public std::enable_shared_from_this<Conn<Session>> {
   public:
    // Takes `fd`, a connected non-blocking socket.
    Conn(Impl* impl, int fd, asio::io_context* context, Turn* turn)
        : impl_(impl), fd_(fd), context_(context), turn_(turn), session_(impl->service_) {
      if (!turn_->poller.Add(fd_, this, kReadEvents)) {
        LogWarning("kv: cannot watch a connection: %s", strerror(errno));
        ::close(std::exchange(fd_, -1));
        closed_ = true;
      }
    }
    ~Conn() override {
      if (fd_ >= 0) {
        turn_->poller.Remove(fd_);
        ::close(fd_);
      }
      turn_->poller.Forget(this);
    }

    void OnReady(uint32_t events) override {
      if (events & (EPOLLERR | EPOLLHUP)) {
        // Reported whatever the registration: out of the set, or it would come every turn.
        // The next read or write finds the error for itself.
        turn_->poller.Remove(fd_);
        registered_ = 0;
        hung_up_ = true;
        readable_ = true;
        reader_.Wake();
        writer_.Wake();
        return;
      }
      if (events & (EPOLLIN | EPOLLRDHUP)) {
        readable_ = true;
        if (reader_.waiting()) {
          reader_.Wake();
        } else {
          // Busy (a write-through, WAITLSN, a slow write): it reads when it comes back.
          // Until then the socket would be reported every turn.
          if (!Register(registered_ & ~kReadEvents)) Close();
        }
      }
      if (events & EPOLLOUT) {
        // Watched only while a writer waits, and not a moment longer: a writable socket is
        // reported every turn.
        if (!Register(registered_ & ~EPOLLOUT)) Close();
        writer_.Wake();
      }
    }

    void Abandon() override {
      reader_.Drop();
      writer_.Drop();
    }

    // Reads what the socket holds, first waiting for it to become readable unless the last read
    // filled the buffer (a short read emptied the socket: what comes later makes it ready
    // again). Throws at end of file, on an error, and once the connection is closed.
    Task<size_t> ReadSome(char* data, size_t size) {
      while (true) {
        if (closed_) throw boost::system::system_error(asio::error::operation_aborted);
        if (!readable_ && !hung_up_) {  // (after a hang-up no event comes: read on to the end)
          if (!Register(registered_ | kReadEvents)) {
            Close();
            continue;
          }
          co_await reader_.Wait();
          continue;
        }
        const ssize_t n = ::recv(fd_, data, size, 0);
        if (n > 0) {
          readable_ = static_cast<size_t>(n) == size;
          co_return static_cast<size_t>(n);
        }
        if (n == 0) throw boost::system::system_error(asio::error::eof);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (hung_up_) throw boost::system::system_error(asio::error::eof);  // nothing will come
          readable_ = false;
          continue;
        }
        throw boost::system::system_error(errno, boost::system::system_category());
      }
    }

    Task<void> Run() {
      auto self = this->shared_from_this();
      std::array<char, 16384> buf;
      try {
        while (!closed_) {
          size_t n = co_await ReadSome(buf.data(), buf.size());
          SessionStep step = session_.Feed(std::string_view(buf.data(), n), &out_);
          if (step.kind == SessionStep::kContinue && !session_.more() && !writing_) {
            // Only replies to send: with the turn's others (Turn), while this reads on. (A
            // write still running means a slow reader: Flush below holds this one back.)
            UpdateSubscription();
            QueueSend();
            continue;
          }
          while (true) {
            UpdateSubscription();
            if (!SendNow()) co_await Flush();
            if (step.kind == SessionStep::kClose) {
              Close();
              break;
            }
            if (step.kind == SessionStep::kWait) {
              bool reached = co_await WaitFor(step);
              if constexpr (std::is_same_v<Session, MemcachedSession>) {
                break;  // memcached never waits
              } else {
                step = session_.Resume(reached, &out_);
                continue;
              }
            }
            if constexpr (std::is_same_v<Session, RedisSession>) {
              if (step.kind == SessionStep::kWrite) {
                WriteResult result = co_await asio::co_spawn(
                    *impl_->write_pool_, RunWrite(std::move(step.write)), kUseTask);
                step = session_.FinishWrite(std::move(result), &out_);
                continue;
              }
            }
            if (session_.more()) {
              // Stopped at the output bound with requests still buffered: go on with them.
              step = session_.Feed(std::string_view(), &out_);
              continue;
            }
            break;
          }
        }
      } catch (const boost::system::system_error&) {
        // The client went away or the server is stopping.
      }
      // Replies still queued or being written go out (a client that half-closed after its
      // last request waits for them); the socket closes when the last owner lets go.
      reading_done_ = true;
      if (subscribed_) impl_->RemoveSubscriber(this);
    }

    // Notifications for a commit (posted to this connection's context).
    void Deliver(const std::vector<KeyEvent>& events) {
      if constexpr (std::is_same_v<Session, RedisSession>) {
        if (closed_ || reading_done_) return;
        session_.Deliver(events, &out_);
        if (out_.size() > impl_->service_->config().max_output_bytes) {
          LogWarning(
              "kv redis: a subscriber fell behind by more than max_output_bytes; "
              "disconnecting it");
          Close();
          return;
        }
        if (!writing_ && !SendNow()) {
          asio::co_spawn(*context_, FlushHolding(this->shared_from_this()), asio::detached);
        }
      }
    }

    void SendQueued() override {
      queued_ = false;
      if (!writing_ && !SendNow()) {
        asio::co_spawn(*context_, FlushHolding(this->shared_from_this()), asio::detached);
      }
    }

    // Closes the socket; a coroutine waiting on it wakes and finds the connection closed.
    void Close() {
      closed_ = true;
      if (fd_ >= 0) {
        turn_->poller.Remove(fd_);
        ::shutdown(fd_, SHUT_RDWR);
        ::close(std::exchange(fd_, -1));
      }
      reader_.Wake();
      writer_.Wake();
    }

   private:
    void QueueSend() {
      if (queued_ || closed_ || out_.size() == out_sent_) return;
      queued_ = true;
      turn_->Queue(this->shared_from_this());
    }

    // Flush, keeping the connection alive until it is done (for writes no reader awaits).
    static Task<void> FlushHolding(std::shared_ptr<Conn> self) { co_await self->Flush(); }

    void UpdateSubscription() {
      if constexpr (std::is_same_v<Session, RedisSession>) {
        if (session_.subscribed() && !subscribed_) {
          subscribed_ = true;
          impl_->AddSubscriber(this->shared_from_this(), context_);
        } else if (!session_.subscribed() && subscribed_) {
          subscribed_ = false;
          impl_->RemoveSubscriber(this);
        }
      }
    }

    // Sends what out_ holds with one non-blocking write, without suspending: the common case
    // (replies that fit the socket buffer) costs one send and no coroutine round trip through
    // the io_context. True when nothing is left to send (or the connection is closed); false
    // when Flush must finish the job (a short write, or another writer is running).
    bool SendNow() {
      if (closed_) return true;
      if (writing_) return false;  // the running writer sends out_ after what it holds
      if (out_.size() == out_sent_) {
        out_.clear();
        out_sent_ = 0;
        return true;
      }
      const ssize_t n = Send(out_.data() + out_sent_, out_.size() - out_sent_);
      if (n == 0) return false;
      if (n < 0) {
        Close();
        return true;
      }
      out_sent_ += static_cast<size_t>(n);
      if (out_sent_ < out_.size()) return false;
      out_.clear();
      out_sent_ = 0;
      if (out_.capacity() > (1u << 20)) std::string().swap(out_);
      return true;
    }

    // Writes out_ until it is empty. Only one writer at a time: a second caller returns at
    // once, and the running one picks up what it appended.
    Task<void> Flush() {
      if (writing_) {
        // Back-pressure on the reader: wait while the other writer drains a large backlog.
        Timer timer(*context_);
        while (writing_ && out_.size() > (1u << 20) && !closed_) {
          timer.expires_after(std::chrono::milliseconds(1));
          co_await timer.async_wait(kUseTask);
        }
        co_return;
      }
      writing_ = true;
      while (out_.size() > out_sent_ && !closed_) {
        sending_.clear();
        std::swap(sending_, out_);
        size_t sent = std::exchange(out_sent_, 0);  // sent already by SendNow
        while (sent < sending_.size() && !closed_) {
          const ssize_t n = Send(sending_.data() + sent, sending_.size() - sent);
          if (n < 0) {
            Close();
            break;
          }
          if (n == 0) {
            if (hung_up_ || !Register(registered_ | EPOLLOUT)) {
              Close();  // no event would come
              break;
            }
            co_await writer_.Wait();
          }
          sent += static_cast<size_t>(n);
        }
      }
      if (closed_) {
        writing_ = false;
        co_return;
      }
      out_.clear();
      out_sent_ = 0;
      if (sending_.capacity() > (1u << 20)) std::string().swap(sending_);
      if (out_.capacity() > (1u << 20) && out_.empty()) std::string().swap(out_);
      writing_ = false;
    }

    // Waits until the store has applied step.lsn, or the timeout; true if applied.
    Task<bool> WaitFor(const SessionStep& step) {
      KvStore& store = impl_->service_->store();
      auto deadline = std::chrono::steady_clock::now() + step.timeout;
      Timer timer(*context_);
      while (store.applied() < step.lsn) {
        if (std::chrono::steady_clock::now() >= deadline || closed_) co_return false;
        timer.expires_after(std::chrono::microseconds(500));
        co_await timer.async_wait(kUseTask);
      }
      co_return true;
    }

    // One non-blocking send: the bytes sent, 0 when the socket buffer is full, -1 on an error.
    ssize_t Send(const char* data, size_t size) {
      while (true) {
        const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
      }
    }

    // Sets the events the socket is watched for (a system call only when they change). False
    // when it cannot be watched (out of the set after a hang-up, or epoll refused).
    bool Register(uint32_t events) {
      if (fd_ < 0 || hung_up_) return false;
      if (events == registered_) return true;
      if (!turn_->poller.Modify(fd_, this, events)) {
        LogWarning("kv: cannot watch a connection: %s; closing it", strerror(errno));
        return false;
      }
      registered_ = events;
      return true;
    }

    static constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP;

    Impl* impl_;
    int fd_;
    asio::io_context* context_;
    Turn* turn_;
    Session session_;
    std::string out_;
    size_t out_sent_ = 0;  // bytes at the front of out_ that SendNow has sent already
    std::string sending_;
    bool writing_ = false;
    bool queued_ = false;        // on turn_, to send
    bool closed_ = false;        // Close() was called: the socket is gone
    bool reading_done_ = false;  // Run is over (the client finished or failed)
    bool readable_ = false;      // the socket may hold data (the last read did not empty it)
    bool hung_up_ = false;       // epoll reported a hang-up or an error: out of the set
    bool subscribed_ = false;
    uint32_t registered_ = kReadEvents;  // the events the poller watches the socket for
    Waiter reader_;                      // the coroutine waiting in ReadSome
    Waiter writer_;                      // the coroutine waiting in Flush
  };

  using RedisConn = Conn<RedisSession>;

  void AddSubscriber(std::shared_ptr<RedisConn> conn, asio::io_context* context) {
    absl::MutexLock lock(&subs_mu_);
    subs_[conn.get()] = {context, conn};
    service_->store().keyspace_listeners().fetch_add(1);
  }
  void RemoveSubscriber(void* conn) {
    absl::MutexLock lock(&subs_mu_);
    if (subs_.erase(conn) > 0) service_->store().keyspace_listeners().fetch_sub(1);
  }
  void Publish(const std::vector<KeyEvent>& events) {
    auto shared = std::make_shared<const std::vector<KeyEvent>>(events);
    absl::MutexLock lock(&subs_mu_);
    for (auto& [key, sub] : subs_) {
      asio::post(*sub.context, [weak = sub.conn, shared] {
        if (auto conn = weak.lock()) conn->Deliver(*shared);
      });
    }
  }

  absl::Status Start() {
    const int threads =
        options_.threads > 0
            ? options_.threads
            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2);
    for (int i = 0; i < threads; ++i) {
      contexts_.push_back(std::make_unique<asio::io_context>(1));
      turns_.push_back(std::make_unique<Turn>(contexts_.back().get()));
      guards_.emplace_back(asio::make_work_guard(*contexts_.back()));
      if (absl::Status s = turns_.back()->poller.Open(); !s.ok()) return s;
      asio::co_spawn(*contexts_.back(), turns_.back()->poller.Run(), asio::detached);
    }
    asio::co_spawn(*contexts_[0], GiveMemoryBack(), asio::detached);
    struct Want {
      Protocol protocol;
      const std::string* address;
      int* port;
    };
    for (Want want : {Want{Protocol::kRedis, &options_.redis, &redis_port_},
                      Want{Protocol::kMemcached, &options_.memcached, &memcached_port_},
                      Want{Protocol::kHttp, &options_.http, &http_port_}}) {
      if (want.address->empty()) continue;
      absl::StatusOr<tcp::endpoint> endpoint = ParseEndpoint(*want.address);
      if (!endpoint.ok()) return endpoint.status();
      auto acceptor = std::make_unique<Acceptor>(*contexts_[0]);
      boost::system::error_code ec;
      acceptor->open(endpoint->protocol(), ec);
      if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acceptor->bind(*endpoint, ec);
      if (!ec) acceptor->listen(1024, ec);
      if (ec) {
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", *want.address, ": ", ec.message()));
      }
      *want.port = acceptor->local_endpoint().port();
      asio::co_spawn(*contexts_[0], Accept(acceptor.get(), want.protocol), asio::detached);
      acceptors_.push_back(std::move(acceptor));
    }
    service_->store().SetCommitListener(
        [this](const std::vector<KeyEvent>& events) { Publish(events); });
    for (auto& context : contexts_) {
      threads_.emplace_back([c = context.get(), spin = options_.spin_us] { Run(*c, spin); });
    }
    return absl::OkStatus();
  }

  // Runs `context` until stopped. After each turn that found work it keeps polling for
  // `spin_us` before it blocks: under load the next request is usually there by then.
  static void Run(asio::io_context& context, int spin_us) {
    if (spin_us <= 0) {
      context.run();
      return;
    }
    const auto spin = std::chrono::microseconds(spin_us);
    while (!context.stopped()) {
      if (context.poll() > 0) continue;
      bool found = false;
      for (const auto until = std::chrono::steady_clock::now() + spin;
           !found && std::chrono::steady_clock::now() < until && !context.stopped();) {
        found = context.poll() > 0;
      }
      if (!found) context.run_one();
    }
  }

  void Stop() {
    if (stopped_) return;
    stopped_ = true;
    service_->store().SetCommitListener(nullptr);
    for (auto& context : contexts_) context->stop();
    for (std::thread& t : threads_) t.join();
    write_pool_->stop();
    write_pool_->join();
    threads_.clear();
    {
      absl::MutexLock lock(&subs_mu_);
      subs_.clear();
    }
    acceptors_.clear();
    guards_.clear();
    // Connections queued for a send go before their contexts (a socket needs its context).
    for (auto& turn : turns_) {
      turn->queued.clear();
      turn->poller.Abandon();
    }
    // Write-throughs never started let go of their connections' coroutines, which unwind
    // through their contexts: so the pool goes first.
    write_pool_.reset();
    contexts_.clear();  // destroys the suspended coroutines, and with them the connections
    turns_.clear();
  }

  // Write-through statements (blocking libpq calls) run here, never on a network thread.
  std::optional<asio::thread_pool> write_pool_{std::in_place, 2};
  int redis_port_ = 0;
  int memcached_port_ = 0;
  int http_port_ = 0;

 private:
  // Once a second, hands the heap's free pages back to the system when the store asks
  // (KvStore::TrimDue: after a copy, or a commit that let go of many rows), on the write-through
  // pool: on a large heap malloc_trim takes long enough to stall a network thread's clients.
  // Ends with the context (Stop).
  Task<void> GiveMemoryBack() {
    Timer timer(*contexts_[0]);
    while (true) {
      timer.expires_after(std::chrono::seconds(1));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(kUseTask, ec));
      if (ec) co_return;
      if (service_->store().TrimDue()) asio::post(*write_pool_, [] { malloc_trim(0); });
    }
  }

  Task<void> Accept(Acceptor* acceptor, Protocol protocol) {
    size_t next = 0;
    while (true) {
      const size_t index = next++ % contexts_.size();
      asio::io_context& target = *contexts_[index];
      Socket socket(target);
      boost::system::error_code ec;
      co_await acceptor->async_accept(socket, asio::redirect_error(kUseTask, ec));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // Out of file descriptors and the like: wait a little rather than spin.
        Timer timer(*contexts_[0], std::chrono::milliseconds(50));
        co_await timer.async_wait(kUseTask);
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      service_->total_connections.fetch_add(1, std::memory_order_relaxed);
      // Counted here, not when the connection's coroutine starts on its thread, so that
      // back-to-back accepts cannot pass the limit.
      if (service_->connections.fetch_add(1) >= options_.max_connections) {
        service_->connections.fetch_sub(1);
        asio::co_spawn(target, Refuse(std::move(socket), protocol), asio::detached);
        continue;
      }
      asio::co_spawn(target, Serve(std::move(socket), protocol, &target, turns_[index].get()),
                     asio::detached);
    }
  }

  Task<void> Refuse(Socket socket, Protocol protocol) {
    std::string message;
    switch (protocol) {
      case Protocol::kRedis:
        message = "-ERR max number of clients reached\r\n";
        break;
      case Protocol::kMemcached:
        message = "SERVER_ERROR too many open connections\r\n";
        break;
      case Protocol::kHttp:
        AppendHttpResponse(503, "{\"error\":\"too many connections\"}", false, "", false, &message);
        break;
    }
    boost::system::error_code ec;
    co_await asio::async_write(socket, asio::buffer(message), asio::redirect_error(kUseTask, ec));
    socket.close(ec);
  }

  // REQUIRES: the connection was counted in service_->connections.
  Task<void> Serve(Socket socket, Protocol protocol, asio::io_context* context, Turn* turn) {
    // The connection watches its socket through the context's Poller, not through asio.
    boost::system::error_code ec;
    socket.non_blocking(true, ec);
    const int fd = ec ? -1 : socket.release(ec);
    if (fd < 0 || ec) {
      service_->connections.fetch_sub(1);
      co_return;
    }
    switch (protocol) {
      case Protocol::kRedis:
        co_await std::make_shared<Conn<RedisSession>>(this, fd, context, turn)->Run();
        break;
      case Protocol::kMemcached:
        co_await std::make_shared<Conn<MemcachedSession>>(this, fd, context, turn)->Run();
        break;
      case Protocol::kHttp:
        co_await std::make_shared<Conn<HttpSession>>(this, fd, context, turn)->Run();
        break;
    }
    service_->connections.fetch_sub(1);
  }

  struct Subscriber {
    asio::io_context* context;
    std::weak_ptr<RedisConn> conn;
  };

  KvService* service_;
  KvListenOptions options_;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<std::unique_ptr<Turn>> turns_;  // one per context
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
  absl::Mutex subs_mu_;
  absl::flat_hash_map<void*, Subscriber> subs_ ABSL_GUARDED_BY(subs_mu_);
};

KvServer::KvServer(KvService* service, KvListenOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

KvServer::~KvServer() { Stop(); }

absl::Status KvServer::Start() { return impl_->Start(); }
void KvServer::Stop() { impl_->Stop(); }
int KvServer::redis_port() const { return impl_->redis_port_; }
int KvServer::memcached_port() const { return impl_->memcached_port_; }
int KvServer::http_port() const { return impl_->http_port_; }

}  // namespace pgflow
