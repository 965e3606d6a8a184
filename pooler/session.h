#pragma once

// The pooler's client connections (Session, below). Internal to pooler/: Pooler::Impl starts
// a session per accepted client (Session::Run).
//
// The methods are defined by theme: session_login.cc holds the login (TLS, SCRAM, md5, trust
// and cert authentication, auth.query lookups), cancel requests and the admin console;
// session_relay.cc holds the relay, the state machine that passes a logged-in client's
// messages to and from its server connections (their protocol logic is RelayProtocol's,
// pooler/relay_protocol.h).

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/asio_support.h"
#include "pooler/auth.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/pooler_internal.h"
#include "pooler/protocol.h"
#include "pooler/reactor.h"
#include "pooler/relay_protocol.h"
#include "pooler/tls.h"
#include "pooler/websocket_frames.h"

namespace pgflow::pooler {

// The keys of a client's SCRAM proof (ScramServer::client_key, the secret's ServerKey), with
// which the pooler can log in to PostgreSQL as that user.
struct ScramKeys {
  std::string client_key;
  std::string server_key;
};

class Slab;
// Where sessions are allocated (Pooler::Impl::StartSession, with SlabAllocator<Session>): apart
// from malloc's heap, side by side (pooler/slab.h).
Slab& SessionSlab();

// One client connection: its login, then either the admin console or the relay.
class Session : public std::enable_shared_from_this<Session>,
                public Reactor::Target,
                public PoolClient {
 public:
  // On `thread` (of thread->impl's pooler). `local`: the client came through the Unix socket;
  // `tunnel`: through the HTTP listener.
  Session(NetThread* thread, Socket socket, bool local,
          std::optional<Tunnel> tunnel = std::nullopt)
      : thread_(thread),
        login_(std::make_unique<LoginState>(std::move(socket), std::move(tunnel))),
        local_(local) {
    impl()->sessions.fetch_add(1);
  }
  ~Session();

  // The session's life: login, then the console or the relay. `owner` (heap-held, deleted at
  // the end) keeps the session alive while it logs in; the relay keeps it itself (self_).
  // Coroutines here take no class-type parameter by value: GCC 12 was seen to copy a
  // shared_ptr parameter into the coroutine frame wrongly (the copy pointed at the control
  // block), so owners travel by pointer.
  static Task<void> Run(std::shared_ptr<Session>* owner);

  // From another thread (KILL, shutdown): posted to this session's thread.
  void Kill();
  // SHUTDOWN WAIT_FOR_SERVERS, posted to this session's thread: a client waiting for a server
  // connection is told the pooler is stopping (FATAL 57P01) and closed; others are left.
  void DismissWaiting();

  // Every 100 ms on each thread (Pooler::Impl::SweepWaits): a Queue wait past its limit goes
  // on through Acquire, which opens the reserve pool or gives up after query_wait_timeout.
  static void SweepWaits(NetThread* thread);

  // The pooler stops (its threads have): every relaying session of `thread` is let go, its
  // server connection closed, before the io_contexts go.
  static void AbandonRelays(NetThread* thread);

  // A client of the gateway's WebSocket path (pooler/gateway.h), once logged in through its
  // tunnel: the session takes the WebSocket's own socket `fd` (plain TCP) instead of the
  // tunnel's, and frames the protocol in the relay itself, so that a query no longer crosses
  // the socketpair. `raw`: bytes read from `fd` and not yet decoded by `decoder`; `data`:
  // protocol bytes the client sent already (relayed first). `counted` (may be null): the
  // gateway's connection count, held until the session ends. On this session's thread.
  struct WebSocket {
    WsDecoder decoder;
    std::string raw;       // read and not yet decoded
    std::string out;       // frames being written
    size_t sent = 0;       // of out
    std::atomic<int>* counted = nullptr;
    // Until the relay swaps them in: the WebSocket's socket, and the protocol bytes the
    // client sent already.
    int fd = -1;
    std::string data;
    ~WebSocket();
  };
  void AdoptWebSocket(int fd, std::unique_ptr<WebSocket> ws, std::string data);
  // Whether AdoptWebSocket would take a socket: not the console's session (it never relays),
  // nor one that ended.
  bool CanAdoptWebSocket() const {
    return !admin_ && !killed_ && phase_ <= Phase::kRelaying && ws_ == nullptr;
  }

  // What the registry (Pooler::Impl::Register) and the views read of the client; the thread
  // it runs on.
  const ClientInfo& info() const { return info_; }
  asio::io_context& context() const { return thread_->context; }

 private:
  // A session's life, in this order: it only moves forward (Advance), never back.
  // PgBouncer's SocketState is the model; what is apart from it (a wait for a server
  // connection, a KILL asked for, the sockets' readiness) keeps its own flag below.
  enum class Phase : uint8_t {
    kLogin,       // logging in, or the admin console: asio holds the client's socket
    kRelaying,    // the relay: the thread's reactor watches the client's socket (relaying())
    kClosing,     // told a FATAL (EndWithFatal): closed once what it is owed is written
    kClientGone,  // its socket closed (it left, broke the protocol, was killed): its server
                  // connection, if it holds one, is settled (SettleAfterClientGone), then
    kFinished,    // the relay is over: the session goes once the handler running Finish returns
  };
  // The one place the phase changes: to `next`, when that is later than where it is.
  void Advance(Phase next) {
    if (next > phase_) phase_ = next;
  }
  // In thread_->relaying, its reactor watching the client (from StartRelay to Finish).
  bool relaying() const { return phase_ >= Phase::kRelaying && phase_ < Phase::kFinished; }

  RelayState& relay() {
    if (relay_ == nullptr) relay_ = thread_->TakeRelay();
    return *relay_;
  }

  // --- login (session_login.cc) -----------------------------------------------------------

  // Reads the next `n` bytes the client sends: false when it left, or the login timed out.
  Task<bool> ReadExactly(std::string* out, size_t n);
  static constexpr size_t kLoginReadAhead = 1024;
  // Writes what waits in login_->unsent, then `bytes`, to the client while it logs in (or
  // in the console): at once when the socket takes it all, as it does a login's short
  // answers (no wait, no completion through asio's queue), else through asio. False when
  // the client is gone.
  Task<bool> SendToClient(std::string_view bytes);

  // Refuses the login: the client is sent FATAL `message`, which, while the client logs in, is
  // noted as the refusal the log gives (LogRefusal), with the password detail for a refused
  // password (28P01).
  Task<void> SendFatal(std::string_view sqlstate, std::string_view message);

  // A login that failed for a reason (a FATAL sent, a TLS handshake refused) goes to the
  // pooler's LoginFailureLog: rate-limited, never with a password.
  void LogRefusal();

  // The login, from the startup packet to ReadyForQuery: false when the client was refused
  // (told why: SendFatal) or left.
  Task<bool> Login();

  // Reads startup-phase packets until the startup packet (which it returns), negotiating TLS
  // on the way (finished by `login_deadline`; *certificate_user: the verified client
  // certificate's common name, if any). A cancel request is served here and ends the session
  // (nullopt), as does a malformed packet (the client told) or a socket error.
  Task<std::optional<StartupPacket>> ReadStartup(Clock::time_point login_deadline,
                                                 const Deadline& deadline,
                                                 std::string* certificate_user);

  // What is checked before authentication: TLS and the client's certificate as tls.mode asks,
  // no replication, the pooler not suspended, max_client_conn (counted_), then AdmitTo. Makes
  // info_ from `startup`. False when the client was refused (told why).
  Task<bool> Admit(const PoolerConfig& config, const StartupPacket& startup,
                   const std::string& certificate_user);
  // The console's admin.users, or the database's existence and its own max_client_conn.
  Task<bool> AdmitTo(const PoolerConfig& config);

  // After authentication, a client of a database: takes its pool (pool_, protocol_), hands the
  // pool what the login learned of the user's secret, takes the client's settings, and
  // appends to *out the ParameterStatus messages it is shown (logging in to the server first
  // when the pool has not yet). False when the client was refused (told why).
  Task<bool> JoinPool(const StartupPacket& startup, const std::string& looked_up_md5,
                      const ScramKeys& proof, std::string* out);

  // Reads one password-phase message ('p').
  Task<std::optional<std::string>> ReadPasswordMessage();

  // A cancel request with BackendKeyData (pid, key), on this session's own connection (as many
  // at once as requests come, each bounded by the server connect timeout), for the client
  // registered with it, if any. A query running on a server connection: the request is passed
  // on to it, and the connection is given back only once PostgreSQL has answered it
  // (ClientInfo::cancels_in_flight). A query still waiting for a server connection: the
  // client's session ends the wait (CancelWaiting).
  Task<void> Cancel(int32_t pid, int32_t key);

  // Where a cancel request for a client's query goes: the server connection it runs on.
  struct CancelTarget {
    tcp::endpoint server;
    std::string socket_path;  // the server's Unix socket, when it is reached through one
    int32_t pid = 0;
    int32_t key = 0;
  };
  // The server connection `client` holds, counted in its cancels_in_flight (ForwardCancel
  // uncounts it); nullopt when it holds none.
  static std::optional<CancelTarget> TakeCancelTarget(ClientInfo& client);
  struct CancelForward {
    Pooler::Impl* impl;
    asio::io_context* context;  // where the request is passed on from
    // The client's session, and its thread: the request's end is posted there (Settled).
    asio::io_context* client_context;
    std::weak_ptr<Session> client;
    CancelTarget target;
  };
  // Passes a cancel request on to `forward->target` and waits for PostgreSQL to close the
  // connection; then the client's session, on its own thread, counts it answered and is told
  // (a Pump) once none is in flight (CancelSettled). Owns `forward`. Runs without its
  // requester: a session's own late cancel spawns it. Keeps the client's session alive only
  // on its own thread, for its destruction to happen there.
  static Task<void> ForwardCancel(CancelForward* forward);
  // A cancel request passed on is over, `settled` (PostgreSQL signalled its backend, or never
  // will) or not: on this session's thread.
  void CancelSettled(bool settled);

  // On the client's own thread: its query, waiting for a server connection, is cancelled. The
  // wait ends (a Queue wait at once; an Acquire under way is left to finish, and what it gets
  // serves the client's next query or goes back), the client is answered 57014 and
  // ReadyForQuery as a server would, and the rest of the query is dropped (drop_until_sync_).
  // A client that got its server connection meanwhile has the request passed on there.
  void CancelWaiting();

  // Looks the client's user up with auth.query, as auth.user, on the database it named: its
  // secret, or none (no such user, a NULL secret, one that is not a secret). An error when the
  // lookup itself fails (the server unreachable, the query refused: the log says which).
  Task<absl::StatusOr<std::optional<UserSecret>>> LookUpSecret(const PoolerConfig& config);

  // `certificate_user`: the common name of the client's verified TLS certificate, or empty.
  Task<bool> Authenticate(const PoolerConfig& config, const UserList& users,
                          const std::string& certificate_user, std::string* looked_up_md5,
                          ScramKeys* proof);

  // --- relay (session_relay.cc, which says how it runs) -----------------------------------

  void StartRelay();
  // Swaps the client's socket for the WebSocket's (AdoptWebSocket), once relaying.
  void SwapToWebSocket();
  // Whether nothing waits to be written to the client (to_client, and the WebSocket's frames).
  bool ClientOutputEmpty() const;

  void OnReady(int fd, uint32_t events) override;

  // Does what the sockets allow, until nothing moves; then watches for what is awaited.
  void Pump();

  bool Settled() const;

  // Reads what the client sent and relays its messages (the client's side of Pump).
  bool ClientSide();

  // How much of the client's bytes may wait in cbuf before it is no longer read: kFlushAt, or
  // a message that must be read whole (RelayProtocol::need()).
  size_t ClientReadLimit() const;

  // Relays the client's buffered messages as far as they go: until one waits for more of its
  // bytes (RelayProtocol::parsed()), for a server connection, or for to_server to be written.
  void ProcessClientInput();

  // Under the tenant's max_queries_per_second (`rate`): takes a turn for each query (Q, or E:
  // an Execute) in r.cbuf past pace_->until, and returns where the unit of the first that
  // must wait begins (cbuf's size: none waits); that one's turn, taken, comes when
  // pace_'s timer ends (pacing()).
  size_t PaceQueries(const RelayState& r, int rate);

  // The client's first message of a transaction needs a server connection: an idle one now.
  bool TryAttach();

  // ...else one handed over by the pool when a client gives one back (Pool::Queue: no
  // coroutine, no timer), or, when the pool has room to open one, is paused, or the wait goes
  // on past the reserve pool's or query_wait_timeout's time, one Pool::Acquire gets, in a
  // coroutine that resumes the relay.
  void StartAttach();
  const StartupSettings* startup_settings() const {
    return protocol_.mode() == PoolMode::kSession ? startup_.get() : nullptr;
  }

  // The pool answered the Queue wait (posted to this thread).
  void PoolAnswered(const std::shared_ptr<Pool::Waiter>& waiter) override;
  // Ends the Queue wait: with the connection handed to it, else through Acquire.
  void EndWait();

  void AcquireLater(const std::shared_ptr<Pool::Waiter>& resumed);
  struct AttachArgs {
    std::shared_ptr<Session> self;
    std::shared_ptr<Pool::Waiter> resumed;  // a Queue wait gone on with, or null
  };
  static Task<void> AttachLater(AttachArgs* args);
  void AttachDone(absl::StatusOr<std::unique_ptr<ServerConn>> server);

  void Attached(std::unique_ptr<ServerConn> server);

  // Reads what `fd` holds into `buffer` without waiting (through the thread's scratch): the
  // bytes read, `in` cleared once a short read shows the socket emptied; 0 when it had
  // nothing, `in` and `hup` cleared (a hung-up socket reads its end, not EAGAIN, so a hang-up
  // report is stale then); -1 at the end of the stream (errno 0) or on an error (errno set).
  ssize_t ReceivePending(int fd, std::string& buffer, bool& in, bool& hup);
  // The same for a TLS client the relay took over (client_tls_): `in` stays set while the
  // channel holds bytes the socket no longer shows.
  ssize_t ReceiveTls(std::string& buffer, bool& in, bool& hup);

  // What ended a ReceivePending that gave -1.
  static const char* ReadFailure();

  // Writes what `out` holds past `sent` to `fd` without waiting, keeping the count: the bytes
  // written (0 when the socket is full: `blocked` until the reactor reports it writable,
  // `writable`), -1 on an error (errno set). `out` is emptied once all of it is written.
  static ssize_t SendPending(int fd, std::string& out, size_t& sent, bool& blocked, bool& writable);
  // The same for a TLS client the relay took over; records sealed and not yet taken by the
  // socket keep it `blocked` too.
  ssize_t SendTls(std::string& out, size_t& sent, bool& blocked, bool& writable);
  // After either: `blocked` (and not `writable`) while `out` is not all written, else `out`
  // emptied.
  static void AfterWrite(std::string& out, size_t& sent, bool& blocked, bool& writable);

  // Writes what waits for the server, as far as the socket takes it.
  bool WriteServer();

  // Writes what waits for the client; a client closing once told (kClosing) is closed when
  // it is written.
  bool WriteClient();

  // Watches each socket for what the relay awaits of it.
  void UpdateInterest();

  // epoll refused a registration (out of memory or watches): the client is ended, its server
  // connection closed (Pump, posted: this runs at the end of one).
  void WatchFailed(std::string_view what);

  // The client is told `message` and closed once it has read it; its server connection (if
  // any) is closed.
  void EndWithFatal(std::string_view sqlstate, std::string_view message);

  // The client left, broke the protocol, was killed or was closed: its socket is closed, and
  // its server connection, if it holds one, cleaned up before it goes back (SettleAfterClientGone).
  void ClientGone();

  void CloseClientFd();

  void Unlink();

  // The relay is over: the session goes once the handler running this returns.
  void Finish();

  const std::string& user() const { return info_.user; }
  const std::string& database() const { return info_.database; }

  // --- relay: server to client ------------------------------------------------------------

  // Reads what the server sent and relays its messages (the server's side of Pump).
  bool ServerSide();

  // Relays the server's buffered messages (RelayProtocol::ProcessServerBuffer); whether
  // anything was taken. An answer that cannot be relayed ends the client (EndWithFatal).
  bool ProcessServerInput();

  // Gives the server connection back once nothing more is owed on it.
  bool Release();

  // The client left while holding its server connection: a connection in the middle of an
  // answer or a message is closed, one inside a transaction (or in session mode, or pinned)
  // is rolled back and reset first, then given back.
  bool SettleAfterClientGone();

  // The server connection failed under the client: what was in flight gets an error (its
  // outcome unknown), and the client goes on with its next transaction on another connection.
  // A client in the middle of an answer, inside a transaction or in session mode is closed.
  void ServerLost();

  // Gives the server connection back (`reusable` false: closed), with what was owed on it;
  // whether it did. A reusable connection is kept while a cancel request passed on to it is
  // unanswered (false: ForwardCancel pumps the session when it is), and closed instead when
  // one went unanswered.
  bool Detach(bool reusable);

  void CloseClient();

  // --- admin console (session_login.cc) ---------------------------------------------------

  Task<void> AdminLoop();

  // What a session holds until its relay starts (the console's session, to its end): asio's
  // socket for the client, and what the login learns on the way; an idle client keeps none
  // of it.
  struct LoginState {
    LoginState(Socket client, std::optional<Tunnel> through)
        : socket(std::move(client)), tunnel(std::move(through)) {}
    Socket socket;
    std::optional<Tunnel> tunnel;  // the client came through the gateway (Tunnel)
    std::shared_ptr<TlsLink> tls_link;  // its TLS pump, until the relay takes it over
    // Read from the socket past the message ReadExactly returned: the start of the next one
    // (handed to the relay, or the console, when the login is over).
    std::string read_ahead;
    // For the client, to go with the next SendToClient (the SASL final message goes with
    // AuthenticationOk, in one write).
    std::string unsent;
    const Deadline* deadline = nullptr;  // the login's, while Login runs
    std::string server_name;  // the host name the client's TLS hello named (SNI), if any
    // For the log of a login that fails (LogRefusal):
    std::string address;  // the client's IP address, or "unix"
    std::string refusal;  // the FATAL sent, or why the TLS handshake failed; empty: none
    // What a refused password's FATAL does not tell the client: "unknown user", "wrong
    // password", ... (a user's existence is not given away).
    std::string_view password_detail;
  };
  Socket& client() { return login_->socket; }

  Pooler::Impl* impl() const { return thread_->impl; }
  NetThread* thread_;
  std::unique_ptr<LoginState> login_;
  // Its user and database from the startup packet on (Admit); registered once logged in.
  ClientInfo info_;
  std::shared_ptr<Pool> pool_;
  std::shared_ptr<Tenant> tenant_;  // its database's (JoinPool on)
  // Pacing (PaceQueries), made at a paced tenant's first query: the bytes of cbuf whose
  // queries have had their turn (it may pass cbuf's end: a query charged before all of it
  // came); whether one waits for its turn (the client is read on, up to ClientReadLimit, but
  // not relayed), and the timer of that wait.
  struct Pace {
    explicit Pace(asio::io_context& context) : timer(context) {}
    Timer timer;
    size_t until = 0;
    bool waiting = false;
  };
  std::unique_ptr<Pace> pace_;
  bool pacing() const { return pace_ != nullptr && pace_->waiting; }
  // Routing (pooler/router.h): the pool the held or awaited server connection is from (pool_,
  // or a replica's).
  Pool* target_ = nullptr;
  // A routed database's client (one with a router): the router, the choice the held or
  // awaited server connection was taken for, and the replicas' pools, taken at first use.
  // The query cache (pooler/router.h's QueryCache): at the routing seam, a cacheable simple
  // query is answered from it (kServed), waits for its fence (kWaiting), or runs (kRun), on
  // the primary when cacheable, its answer gathered for the cache: `probe` is that of the
  // query waiting for its fence, or whose answer is gathered.
  struct Routed {
    std::shared_ptr<Router> router;
    RouteChoice choice;
    std::vector<std::shared_ptr<Pool>> replica_pools;
    std::unique_ptr<QueryCache::Probe> probe;
    bool cache_wait = false;   // waiting for probe's fence
    bool cache_ready = false;  // probe's fence ended: its answer may be served
  };
  std::unique_ptr<Routed> routed_;  // null: not routed
  bool cache_waiting() const { return routed_ != nullptr && routed_->cache_wait; }
  uint64_t routing_version_ = 0;    // the configuration version routed_ was looked up at
  // The pool of `node` (the primary's when the replica is no longer configured).
  Pool* NodePool(int node);
  // The database's router as the configuration now has it (RELOAD may have changed it).
  void FollowRouter();
  enum class CacheStep : uint8_t { kRun, kWaiting, kServed };
  CacheStep ServeFromCache(RelayState& r, size_t* position);
  // The fence the query waits for ended (on the session's thread).
  void CacheReady();
  // The client's settings that bear on an answer, as the cache's key holds them.
  std::string CacheSettings();
  // Session mode, a client with settings: those its server connections start with.
  std::unique_ptr<StartupSettings> startup_;

  std::unique_ptr<ServerConn> server_;
  std::unique_ptr<RelayState> relay_;  // while the client speaks (RelayState)
  // What the relay does with the messages, and the client's state in the protocol: its mode,
  // settings, named statements, transaction status. Started at login (JoinPool).
  RelayProtocol protocol_;
  // Its TLS connection once the relay reads and writes it (client_fd_).
  std::unique_ptr<TlsChannel> client_tls_;
  // KILL or shutdown asked the session to end (Kill): the next Pump closes the client and
  // its server connection, whatever the phase.
  bool killed_ = false;
  // The client's query was cancelled while it waited for a server connection
  // (RelayProtocol::DropQuery), and an Acquire under way (AttachLater) has no query to serve.
  bool wait_cancelled_ = false;
  bool tls_ = false;    // the client speaks TLS (through a pump: pooler/tls.h, or its tunnel)
  bool tls_read_wants_write_ = false;  // a TLS read waits for the socket to take writes
  bool local_ = false;  // the client came through the Unix socket
  bool counted_ = false;  // counted in impl()->clients (released by the destructor)
  bool admin_ = false;    // the admin console's client (counted in impl()->consoles)

  // The relay's state machine (Pump).
  Phase phase_ = Phase::kLogin;
  std::shared_ptr<Session> self_;  // keeps the session while it relays
  // A WebSocket client's framing, once adopted (AdoptWebSocket); until the relay starts, what
  // it is to adopt.
  std::unique_ptr<WebSocket> ws_;
  Session* prev_ = nullptr;        // in thread_->relaying
  Session* next_ = nullptr;
  int client_fd_ = -1;  // the client's socket, taken from asio at the relay's start
  bool pumping_ = false;  // Pump runs (a call from within it returns at once)
  // Waiting for a server connection (Queue, AttachLater); then server_ is null. Apart from the
  // phase: the wait goes on to its end when the client goes meanwhile.
  bool attaching_ = false;
  bool cleanup_sent_ = false;  // kClientGone: the ROLLBACK and reset of its connection were sent
  // What the reactor reported and the last read or write left: *_in_ readable (until a read
  // comes back short), *_out_ writable, *_hup_ hung up or failed, *_blocked_ a write waits.
  bool client_in_ = false, client_out_ = false, client_hup_ = false, client_blocked_ = false;
  bool server_in_ = false, server_out_ = false, server_hup_ = false, server_blocked_ = false;
};

}  // namespace pgflow::pooler
