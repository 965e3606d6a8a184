#pragma once

// The relay's protocol logic, without sockets: what the pooler does with the bytes a
// logged-in client and its server connection send each other. A Session (session_relay.cc)
// reads its sockets into a RelayState's buffers, calls ProcessClientBuffer and
// ProcessServerBuffer, and writes what they leave in to_server and to_client; the unit tests
// (tests/unit/pooler/relay_protocol_test.cc) do the same with byte strings.
//
// What it keeps in step, message by message:
//   - the expectations (ExpectQueue): the answers the server connection owes, in order, each
//     to pass on to the client or to swallow (those of the pooler's own messages);
//   - transaction pooling's named statements: a client's Parse, Bind, Describe and Close of a
//     named statement are rewritten to the server connection's copy of it (prepared on
//     demand under a name derived from the query, described to learn its shape);
//   - where the client stands: messages since its last Sync (unsynced), the server's
//     transaction status (ReadyForQuery), COPY IN, session state taken (pinned), and the
//     client's settings (ParameterStatus, DISCARD ALL).
//
// Routing (the seam a routing proxy plugs into): ProcessClientBuffer returns kAttach, with
// *position at the message, when the client's next message needs a server connection and
// the session holds none, before anything of that message is relayed: the first message of
// each transaction in transaction and statement pooling (in session mode, of the session).
// The session takes a connection there (Session::TryAttach, StartAttach), and a router
// choosing where a transaction runs (a primary or a replica, a cached answer) decides there,
// from that message (its type, and QueryText for 'Q' and 'P'). Per query inside a
// transaction, the place is ProcessClientBuffer's handling of each message's query text
// (where TakesSessionState and DeallocatesAll look at it). Both are plain, non-virtual code
// paths: a router adds its work there, none on other messages.
//
// Cost: nothing here allocates, copies or calls through a pointer per relayed message,
// except where a message is rewritten (named statements) or inspected whole (ReadyForQuery,
// ParameterStatus, errors, CommandComplete in transaction pooling).
//
// Thread-safety: a RelayProtocol belongs to one session, used on the session's thread only.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/protocol.h"
#include "pooler/router.h"

namespace pgflow::pooler {

struct ClientInfo;

// Bytes gathered for one side before they are written out mid-batch; the client is read
// while less than this waits to be relayed, the server while less waits for the client.
inline constexpr size_t kFlushAt = 64 * 1024;

// The relay's bookkeeping of what a server connection owes.
enum class Expect : uint8_t {
  kParse,            // a ParseComplete to pass on
  kParseSwallow,     // a ParseComplete of a Parse the pooler added
  kClose,            // a CloseComplete to pass on
  kCloseSwallow,     // a CloseComplete of a Close the pooler added
  kSync,             // a ReadyForQuery to pass on (after Sync, Query, FunctionCall)
  kSyncSwallow,      // everything up to a ReadyForQuery of a query the pooler sent
  kDescribeSwallow,  // the ParameterDescription and RowDescription/NoData of a statement the
                     // pooler prepared: its shape (StatementShape)
  kErrorReplace,     // the error of a statement that fails in place of a client's stale one:
                     // what the client is told instead is PostgreSQL's for a changed plan
};
struct Expectation {
  Expect kind;
  std::string statement;  // kParse/kParseSwallow/kDescribeSwallow: the server's name for it
  char origin = 0;        // kSync: the message that asked for it ('Q', 'S', 'F')
  std::string client_statement = {};  // kDescribeSwallow after a client's Parse: the client's name
};
// A FIFO of expectations on a vector: empty, it holds no memory (a std::deque allocates
// its first block when constructed, half a kilobyte per idle client).
class ExpectQueue {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  Expectation& front() { return items_[head_]; }
  void push_back(Expectation e) { items_.push_back(std::move(e)); }
  void pop_front() {
    if (++head_ == items_.size()) {
      clear();
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
      // Never empty (a pipelining client in session mode): what was answered goes.
      items_.erase(items_.begin(), items_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void clear() {
    items_.clear();
    head_ = 0;
  }
  // Empty; its memory goes back only when it grew past `keep` items (a spare relay state
  // keeps a transaction's few, so that the next transaction allocates none).
  void Reset(size_t keep) {
    if (items_.capacity() > keep) std::vector<Expectation>().swap(items_);
    clear();
  }
  auto begin() const { return items_.begin() + static_cast<ptrdiff_t>(head_); }
  auto end() const { return items_.end(); }

 private:
  std::vector<Expectation> items_;
  size_t head_ = 0;
};

// What a session needs only while its client speaks: taken when it first does, given back
// when it parks (Park), so that an idle client holds none of it.
struct RelayState {
  std::string cbuf;        // read from the client, not yet relayed
  std::string sbuf;        // read from the server, not yet relayed
  std::string to_server;   // for the server connection, not yet written
  std::string to_client;   // for the client, not yet written
  size_t server_sent = 0;  // bytes of to_server written (the rest waits for the socket)
  size_t client_sent = 0;  // bytes of to_client written
  size_t client_pass = 0;  // bytes of the client's current message still to relay
  size_t server_pass = 0;  // bytes of the server's current message still to relay
  ExpectQueue expect;      // the answers owed by the server connection, in order
  // The ParameterDescription of a Describe the pooler sent, until its RowDescription or NoData
  // comes (RelayProtocol::LearnShape).
  std::string described_parameters;
  // The session's wait for a server connection (Pool::Queue), while it waits: here, since a
  // client waits only while it speaks.
  std::shared_ptr<Pool::Waiter> wait;
};

// The client's settings, as the pooler brings its server connections to them.
class ClientSettings {
 public:
  // Lower-case names: the client's startup parameters and what it changed since.
  const SettingsMap& params() const { return params_ != nullptr ? *params_ : Empty(); }
  // The same, to change: a set shared with other clients (Share) is copied first.
  SettingsMap& MutableParams();
  // Takes `params`, a set other clients of the pool may hold too and that none changes
  // (Pool::ShareSettings: clients that log in alike hold one copy); null: none.
  void Share(std::shared_ptr<SettingsMap> params) { params_ = std::move(params); }

  // The values every client of the pool is shown at login (Pool::Defaults).
  std::shared_ptr<const SettingsMap> defaults;
  uint64_t stamp = 0;  // Pool::SettingsStamp of params over defaults

 private:
  static const SettingsMap& Empty();
  // Null: none. Held by this client alone (use_count 1), it may be changed in place: a set
  // shared is one the pool keeps (so held twice at least) or that a client took from it.
  std::shared_ptr<SettingsMap> params_;
};

class RelayProtocol {
 public:
  // What relaying the client's buffer stopped for.
  enum class ClientStep : uint8_t {
    kMore,    // all of it relayed, or a message waits for more of its bytes (parsed())
    kAttach,  // the message at the position needs a server connection first (the routing seam)
    kFlush,   // to_server is full: send it, then go on
    kFatal,   // a malformed message (*fatal_message: what to tell a client holding no server)
    kLeave,   // Terminate
    kWait,    // the message at the position waits for a statement's shape (shape_wait())
    kHold,    // routed: the message at the position begins the client's next unit while the
              // replica it holds still owes answers; it waits for them (holding())
    kDetach,  // routed: the message at the position begins a unit to be placed again; the
              // replica connection, owed nothing, is to be given back first (then kAttach)
  };

  // The client's pool (its mode, settings, counters, statement stamps), which must outlive
  // this, and the client's entry (for the log). REQUIRES: before any other call but settings().
  void Start(Pool* pool, const ClientInfo* client);

  // Routing (pooler/router.h): the client's, for a database with replicas. Before Attach.
  void SetRouting(std::unique_ptr<ClientRouting> routing) { routing_ = std::move(routing); }
  bool routed() const { return routing_ != nullptr; }
  ClientRouting* routing() const { return routing_.get(); }
  // Where the unit beginning at `position` in relay.cbuf runs (the primary when not routed).
  // REQUIRES: ProcessClientBuffer returned kAttach there.
  RouteChoice Route(const RelayState& relay, size_t position);
  // The unit at `position`, when it is a simple query, is refused without running
  // (RouteChoice::refusal): its error and ReadyForQuery go to the client, and *position moves
  // past it. False for another unit (it runs).
  bool Refuse(RelayState& relay, size_t* position, std::string_view message);

  // The query cache (pooler/router.h's QueryCache): a unit it may answer, beginning at
  // `position` in relay.cbuf, held whole, while the client is between transactions. A simple
  // query; or extended-protocol messages Parse of the unnamed statement (or none, for a
  // statement the client prepared before), Bind of it to the unnamed portal, Describe of
  // that portal (or of the unnamed statement) or none, Execute of all its rows, Sync.
  struct CacheableUnit {
    std::string_view text;  // the statement's
    // What identifies its answer: the text and parameter types, the values and formats
    // bound, what was described and executed (not the names the client gave).
    std::string key;
    size_t size = 0;  // its bytes in relay.cbuf
  };
  std::optional<CacheableUnit> CacheableAt(const RelayState& relay, size_t position) const;
  // That unit (of `size` bytes) is answered with `answer` (a cached one) and ReadyForQuery,
  // without running; *position moves past it.
  void ServeCached(RelayState& relay, size_t* position, size_t size, std::string_view answer);
  // The answer to the unit the server connection was just taken for is gathered too, up to
  // `limit` bytes, to be offered to the cache: captured() once its ReadyForQuery came with the
  // client between transactions and nothing but rows before it (RowDescription, DataRow,
  // CommandComplete, EmptyQueryResponse; ParseComplete, BindComplete, ParameterDescription,
  // NoData); anything else ends the gathering.
  void Capture(size_t limit) {
    capture_ = std::make_unique<Gathered>();
    capture_->limit = limit;
  }
  bool captured() const { return captured_; }
  // Whether the client may have changed a setting the pooler does not follow (a SET or RESET
  // of anything, set_config; routed clients): the query cache does not answer it, whose key
  // holds only the settings the pooler knows (a search_path, a role, bytea_output...).
  bool changed_settings() const { return changed_settings_; }
  std::string TakeCapture() {
    captured_ = false;
    std::string answer = std::move(capture_->answer);
    capture_.reset();
    return answer;
  }

  // A server connection is the client's (REQUIRES: none was; `server` outlives its Detach),
  // from node `choice.node` for the unit at the position kAttach stopped at.
  void Attach(ServerConn* server, const RouteChoice& choice = {}) {
    server_ = server;
    node_ = choice.node;
    wrote_ = choice.node == kPrimaryNode && choice.may_write && wants_positions();
    unit_open_ = true;
    holding_ = false;
  }
  // The server connection goes (given back or closed): what was owed on it is forgotten, in
  // `relay` (may be null) too.
  void Detach(RelayState* relay);
  // It was lost under the client: the client's next message starts afresh.
  void Lost() {
    unsynced_ = 0;
    txn_status_ = 'I';
  }
  // Whether the client may go on if the server connection is lost now: the pooler is at a
  // message boundary on both sides, outside a transaction, owing the client answers (it is told
  // that its statement's outcome is unknown; its next unit runs on a new connection). The
  // session adds its own conditions (Session::ServerLost).
  bool SurvivesLoss(const RelayState& relay) const {
    return mode_ != PoolMode::kSession && relay.server_pass == 0 && relay.client_pass == 0 &&
           unsynced_ == 0 && !relay.expect.empty() && txn_status_ == 'I';
  }
  // Whether the server's own FATAL error was relayed to the client: the connection then ends
  // for the client as a direct one would, with nothing added.
  bool server_fatal_relayed() const { return server_fatal_relayed_; }

  // Appends to *out the SETs and RESETs that bring the server connection to the client's
  // settings, and notes that it has them: what the client gave at startup or changed since,
  // and, for the rest, the values every client is shown at login (defaults), which another
  // client may have changed on this connection. REQUIRES: a server connection.
  void AddSettingsSync(std::string* out);
  // Whether the server connection may differ from the client's settings.
  bool SettingsDiffer() const {
    return settings_.stamp == 0 || server_->settings_stamp != settings_.stamp;
  }

  // Relays the messages in relay.cbuf from *position on into relay.to_server (rewritten
  // where transaction pooling needs it), keeping the expectations and counters in step, and
  // advances *position past what it took. Called again after each step the caller takes for
  // the one it returned.
  ClientStep ProcessClientBuffer(RelayState& relay, const PoolerConfig& config, size_t* position,
                                 std::string* fatal_message);

  // What relaying the server's buffer came to.
  enum class ServerStep : uint8_t {
    kNone,      // nothing taken (a message waits for more of its bytes)
    kProgress,  // messages relayed or swallowed
    kFatal,     // the answer cannot be relayed (*fatal_message): the client is to be closed
  };
  // Relays the server's messages in relay.sbuf into relay.to_client (swallowing the answers
  // the pooler's own messages get), until one waits for more of its bytes or to_client holds
  // kFlushAt. REQUIRES: a server connection.
  ServerStep ProcessServerBuffer(RelayState& relay, std::string* fatal_message);

  // The client's query, waiting for a server connection, was cancelled: its messages are
  // dropped up to its end (a Sync, Query or FunctionCall), answered ReadyForQuery.
  void DropQuery() {
    drop_until_sync_ = true;
    parsed_ = false;
  }

  // New client bytes came: the buffer is to be parsed again.
  void Unparse() { parsed_ = false; }
  // Nothing more is relayed until new bytes come or Unparse (a kDetach that must wait).
  void Stall() { parsed_ = true; }

  // Whether the client's buffer was relayed as far as it goes (only the start of a message
  // left), until more bytes come.
  bool parsed() const { return parsed_; }
  // Whether the client's messages are being dropped (DropQuery).
  bool dropping() const { return drop_until_sync_; }
  // Whether the client's next message waits for a statement's shape (ClientStep::kWait).
  bool shape_wait() const { return shape_wait_; }
  // Whether the client's next unit waits for its replica's answers (ClientStep::kHold).
  bool holding() const { return holding_; }
  // How large a message the client's buffer must hold whole before it goes on (0: none).
  size_t need() const { return need_; }
  // The server's transaction status, from its last ReadyForQuery ('I', 'T', 'E').
  char txn_status() const { return txn_status_; }
  // Extended-protocol messages sent since the client's last Sync.
  int unsynced() const { return unsynced_; }
  // The client took session state (TakesSessionState): it keeps its server connection.
  bool pinned() const { return pinned_; }
  PoolMode mode() const { return mode_; }
  ClientSettings& settings() { return settings_; }

  // Whether the server connection is owed nothing and the client is between transactions:
  // it may go back to the pool (never in session mode, nor pinned).
  bool Releasable(const RelayState* relay) const;

 private:
  struct Statement {
    std::string server_name;
    std::string parse_rest;
    // The Pool::NextPrepareStamp of the client's Parse (PreparedCopy::stamp of the copy it
    // made), and the shape that copy had (StatementShape; 0 until known).
    uint64_t parsed = 0;
    uint64_t shape = 0;
  };

  // Rewrites a Parse, Bind, Describe or Close for transaction pooling into to_server.
  void Rewrite(RelayState& r, char type, std::string_view message, const PoolerConfig& config);

  // The client's statement `name`; nullptr when it has none.
  const Statement* Prepared(std::string_view name) const;

  // What a Bind or Describe of the client's statement `name` does on the current server
  // connection (ResolveStatement). A client's statement runs on the connection's copy of the
  // same query when that copy has the shape the client's own copy had when it prepared it (a
  // schema change since then may have changed it): PostgreSQL would run the client's own
  // statement, or fail it 0A000 "cached plan must not change result type", the same way.
  enum class StatementUse : uint8_t {
    kReady,  // it runs (renamed to the server's copy); also a name the client never prepared
    kWait,   // a copy is being prepared (none, or an older one of another shape) or its shape
             // learned: the message waits for the answer, before anything it does runs
    kStale,  // it changed shape since the client prepared it: it fails, as PostgreSQL fails it
  };
  StatementUse ResolveStatement(RelayState& r, std::string_view name, const PoolerConfig& config);

  // The messages of ProcessClientBuffer, which notes what it stopped for.
  ClientStep RelayClientMessages(RelayState& r, const PoolerConfig& config, size_t* position,
                                 std::string* fatal_message);

  // A Bind or Describe (`type`, `body`) in transaction pooling, of the client's statement
  // named in it: kWait with a Flush sent (the message waits), kStale with a failing
  // statement sent in its place (the message is dropped), or kReady (it goes on).
  StatementUse ResolveNamed(RelayState& r, char type, std::string_view body,
                            const PoolerConfig& config);

  // A query (`type`, its body from `from_body`) that takes session state: the client is
  // pinned to its server connection (session_state: pin; returns empty), or the message to
  // send instead of it, which fails as the refused query should.
  std::string PinOrRefuse(char type, std::string_view from_body);

  // Prepares statement `name` on the server connection (`expected` tells whether the client
  // sees the ParseComplete), and describes it to learn its shape: the stamp the copy gets.
  // `client_statement`: the client's name, for its own Parse (its Statement::shape is set
  // when the Describe is answered). A Close of the name goes first: after an error skipped a
  // batch, the server may still hold a statement this connection's list forgot (the same
  // query: names are digests), and an older copy of another shape is replaced. A connection
  // holding max_prepared_statements closes them all first.
  uint64_t PrepareOnServer(RelayState& r, const std::string& name, std::string_view rest,
                           Expect expected, const PoolerConfig& config,
                           std::string_view client_statement);

  // The server answered a Describe the pooler sent (ParameterDescription, then RowDescription
  // or NoData): the copy's shape, and the client's statement's.
  void LearnShape(RelayState& r, char type, std::string_view body);

  // Notes the client message `type` in the counters and expectations (`rewrite`: its
  // expectation is Rewrite's).
  void Expecting(RelayState& r, char type, bool rewrite);

  // Drops what the server will not answer after an error: everything up to the next Sync.
  void DropUntilSync(RelayState& r);

  // A ParseComplete or CloseComplete: the expectation it answers (`pass`, or `swallow` for one
  // the pooler added) is taken off; whether to relay it to the client.
  bool Answered(RelayState& r, Expect pass, Expect swallow, bool swallowing);
  // Handles one whole inspected message from the server; false to swallow it.
  bool OnServerMessage(RelayState& r, char type, std::string_view body);
  // An ErrorResponse (`body`) of severity FATAL or PANIC: whether it is relayed (else it is
  // swallowed: the client survives the connection's end); nullopt for another severity.
  std::optional<bool> OnServerFatal(RelayState& r, std::string_view body);
  // A CommandComplete (tag `body`) and a ParameterStatus: what they change of the settings.
  void OnCommandComplete(std::string_view body);
  void OnParameterStatus(std::string_view body, bool swallowing);

  bool Inspected(char type) const;

  // Routing: whether the message `type` at the start of a unit (no unit under way) may be
  // relayed on the held connection, or waits (kHold) or is to be placed again (kDetach).
  ClientStep RouteNextUnit(const RelayState& r, size_t position);
  // The unit of the client's messages beginning at `position` in r.cbuf.
  RouteUnit UnitAt(const RelayState& r, size_t position) const;
  // Whether the primary's positions after the client's transactions are read (routed, with
  // read_your_writes).
  bool wants_positions() const { return routing_ != nullptr && routing_->read_your_writes(); }
  // The gathering (Capture) of a server message of `type` and `size` bytes relayed to the
  // client: whether its bytes are to be gathered.
  bool CaptureMessage(char type, size_t size, std::string_view ready_body);

  const std::string& database() const;

  // (Members by size, so that the session a client keeps while idle stays small.)
  Pool* pool_ = nullptr;
  std::unique_ptr<ClientRouting> routing_;  // routed databases only
  struct Gathered {
    std::string answer;  // gathered so far
    size_t limit = 0;    // its size at most
  };
  std::unique_ptr<Gathered> capture_;  // the answer gathered (Capture), while it is
  const ClientInfo* client_ = nullptr;
  ServerConn* server_ = nullptr;  // the client's server connection, or none
  ClientSettings settings_;
  // The client's named statements (transaction pooling), made at its first.
  using Statements = absl::flat_hash_map<std::string, Statement>;
  std::unique_ptr<Statements> statements_;
  Statements& statements() {
    if (statements_ == nullptr) statements_ = std::make_unique<Statements>();
    return *statements_;
  }
  size_t need_ = 0;  // a message of this size is to be read whole
  // When the transaction under way began (its first message relayed, txn_timed_), for xact_us.
  std::chrono::steady_clock::time_point txn_began_;
  int unsynced_ = 0;  // extended-protocol messages sent since the last Sync
  // Describes the pooler sent that the server has not answered (kDescribeSwallow).
  int describing_ = 0;
  // Routing. node_: the node of the server connection held. unit_open_: the unit it was taken
  // for is still being relayed (its end, a Sync or a simple query, not yet). wrote_: a
  // transaction on the primary may have written since its last end there: when it ends, the
  // client's routing is told (ClientRouting::Wrote). holding_: ClientStep::kHold.
  int node_ = kPrimaryNode;
  PoolMode mode_ = PoolMode::kTransaction;
  char txn_status_ = 'I';
  bool txn_timed_ = false;
  bool parsed_ = false;               // cbuf holds only the start of a message
  bool client_drop_ = false;          // client_pass bytes are dropped (the rest of a refused query)
  bool server_pass_swallow_ = false;  // server_pass bytes are swallowed
  bool statement_violation_ = false;  // a transaction began in statement pooling
  bool copy_in_ = false;  // the server copies in (CopyInResponse seen, no CopyDone/Fail yet)
  bool pinned_ = false;   // took session state: keeps its server connection (TakesSessionState)
  // The client's query was cancelled while it waited for a server connection: its messages
  // are dropped up to its end (a Sync, Query or FunctionCall), answered ReadyForQuery.
  bool drop_until_sync_ = false;
  bool shape_wait_ = false;  // the client's next message waits for one (StatementUse::kWait)
  // An error skipped a Describe the client's next message waited for: the server skips what
  // comes up to the client's next Sync, which is relayed as it is, without preparing.
  bool skipping_ = false;
  bool unit_open_ = false;
  bool wrote_ = false;
  bool holding_ = false;
  bool server_fatal_relayed_ = false;  // server_fatal_relayed()
  bool capture_pass_ = false;  // the bytes of the message being relayed are gathered too
  bool captured_ = false;      // the answer gathered is whole (captured())
  bool changed_settings_ = false;
};

}  // namespace pgflow::pooler
