// The relay's protocol logic (pooler/relay_protocol.h) driven with byte strings, as a session
// drives it with what its sockets read: what goes to the server, what comes back to the
// client, and the expectations kept between them, for the simple and extended protocols,
// pipelines, errors, COPY and messages split across reads.

#include "pooler/relay_protocol.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "pooler/pool.h"
#include "pooler/pooler_internal.h"
#include "pooler/protocol.h"
#include "pooler/query_text.h"

namespace pgflow::pooler {
namespace {

using Step = RelayProtocol::ClientStep;

// Client messages.
std::string Query(std::string_view sql) {
  std::string out;
  AppendQuery(&out, sql);
  return out;
}
// What follows a Parse's name: the query and no parameter types.
std::string ParseRest(std::string_view sql) {
  std::string rest(sql);
  rest.push_back('\0');
  AppendInt16(&rest, 0);
  return rest;
}
std::string Parse(std::string_view name, std::string_view sql) {
  std::string out;
  AppendParse(&out, name, ParseRest(sql));
  return out;
}
// What follows a Bind's statement name: no parameters, results in text.
std::string BindRest() {
  std::string rest;
  AppendInt16(&rest, 0);
  AppendInt16(&rest, 0);
  AppendInt16(&rest, 0);
  return rest;
}
std::string Bind(std::string_view statement) {
  std::string out;
  AppendBind(&out, "", statement, BindRest());
  return out;
}
std::string Describe(std::string_view statement) {
  std::string out;
  AppendTarget(&out, 'D', 'S', statement);
  return out;
}
std::string CloseStatement(std::string_view statement) {
  std::string out;
  AppendTarget(&out, 'C', 'S', statement);
  return out;
}
std::string Execute() {
  std::string body(1, '\0');  // the unnamed portal
  AppendInt32(&body, 0);
  std::string out;
  AppendMessage(&out, 'E', body);
  return out;
}
std::string Message(char type, std::string_view body = {}) {
  std::string out;
  AppendMessage(&out, type, body);
  return out;
}
std::string Sync() { return Message('S'); }
std::string Flush() { return Message('H'); }

// Server messages.
std::string ParseComplete() { return Message('1'); }
std::string BindComplete() { return Message('2'); }
std::string CloseComplete() { return Message('3'); }
std::string NoParameters() {
  std::string body;
  AppendInt16(&body, 0);
  return Message('t', body);
}
std::string Columns(const std::vector<std::string>& names) {
  std::string out;
  AppendRowDescription(&out, names);
  return out;
}
std::string Row(const std::string& value) {
  std::string out;
  AppendDataRow(&out, {value});
  return out;
}
std::string Complete(std::string_view tag) {
  std::string out;
  AppendCommandComplete(&out, tag);
  return out;
}
std::string Ready(char status = 'I') {
  std::string out;
  AppendReadyForQuery(&out, status);
  return out;
}
std::string Error(std::string_view sqlstate, std::string_view message) {
  std::string out;
  AppendError(&out, "ERROR", sqlstate, message);
  return out;
}

PoolSettings Settings(PoolMode mode) {
  PoolSettings settings;
  settings.database = "app";
  settings.mode = mode;
  return settings;
}

// A client of a pool in `mode` with one server connection (none until Attach), fed bytes as a
// session feeds what it reads.
class RelayProtocolTest : public ::testing::Test {
 protected:
  explicit RelayProtocolTest(PoolMode mode = PoolMode::kTransaction)
      : pool_(Settings(mode), LoginCredentials{}) {
    info_.id = 7;
    info_.user = "alice";
    info_.database = "app";
    protocol_.Start(&pool_, &info_);
  }

  void Attach() { protocol_.Attach(&server_); }

  // Relays the client's buffer with `bytes` added, as far as it goes, and takes off what was
  // relayed; what it stopped for.
  Step Client(std::string_view bytes) {
    relay_.cbuf.append(bytes);
    protocol_.Unparse();
    size_t position = 0;
    std::string fatal_message;
    const Step step = protocol_.ProcessClientBuffer(relay_, config_, &position, &fatal_message);
    relay_.cbuf.erase(0, position);
    return step;
  }

  // The same for the server's buffer.
  RelayProtocol::ServerStep Server(std::string_view bytes) {
    relay_.sbuf.append(bytes);
    std::string fatal_message;
    return protocol_.ProcessServerBuffer(relay_, &fatal_message);
  }

  std::string ToServer() { return std::exchange(relay_.to_server, {}); }
  std::string ToClient() { return std::exchange(relay_.to_client, {}); }

  asio::io_context context_;
  Pool pool_;
  ServerConn server_{&context_};
  ClientInfo info_;
  PoolerConfig config_;
  RelayState relay_;
  RelayProtocol protocol_;
};

class SessionModeRelayTest : public RelayProtocolTest {
 protected:
  SessionModeRelayTest() : RelayProtocolTest(PoolMode::kSession) {}
};

TEST_F(RelayProtocolTest, ATransactionsFirstMessageWaitsForAServerConnection) {
  // The routing seam: the message is left where it is, nothing of it relayed.
  const std::string query = Query("SELECT 1");
  relay_.cbuf = query;
  size_t position = 0;
  std::string fatal_message;
  EXPECT_EQ(protocol_.ProcessClientBuffer(relay_, config_, &position, &fatal_message),
            Step::kAttach);
  EXPECT_EQ(position, 0u);
  EXPECT_EQ(relay_.to_server, "");
  EXPECT_TRUE(relay_.expect.empty());

  Attach();
  EXPECT_EQ(protocol_.ProcessClientBuffer(relay_, config_, &position, &fatal_message), Step::kMore);
  EXPECT_EQ(position, query.size());
  EXPECT_EQ(relay_.to_server, query);
}

TEST_F(RelayProtocolTest, ASimpleQueryIsRelayedAndItsAnswerPassedOn) {
  Attach();
  EXPECT_EQ(Client(Query("SELECT 1")), Step::kMore);
  EXPECT_TRUE(protocol_.parsed());
  EXPECT_EQ(ToServer(), Query("SELECT 1"));
  ASSERT_EQ(relay_.expect.size(), 1u);
  EXPECT_EQ(relay_.expect.front().kind, Expect::kSync);
  EXPECT_FALSE(protocol_.Releasable(&relay_));  // an answer is owed

  const std::string answer = Columns({"?column?"}) + Row("1") + Complete("SELECT 1") + Ready();
  EXPECT_EQ(Server(answer), RelayProtocol::ServerStep::kProgress);
  EXPECT_EQ(ToClient(), answer);
  EXPECT_TRUE(relay_.expect.empty());
  EXPECT_EQ(protocol_.txn_status(), 'I');
  EXPECT_TRUE(protocol_.Releasable(&relay_));
  EXPECT_EQ(pool_.stats().queries.load(), 1u);
  EXPECT_EQ(pool_.stats().transactions.load(), 1u);
}

TEST_F(RelayProtocolTest, AnOpenTransactionKeepsItsServerConnection) {
  Attach();
  Client(Query("BEGIN"));
  ToServer();
  Server(Complete("BEGIN") + Ready('T'));
  EXPECT_EQ(ToClient(), Complete("BEGIN") + Ready('T'));
  EXPECT_EQ(protocol_.txn_status(), 'T');
  EXPECT_FALSE(protocol_.Releasable(&relay_));
  Client(Query("COMMIT"));
  ToServer();
  Server(Complete("COMMIT") + Ready('I'));
  EXPECT_TRUE(protocol_.Releasable(&relay_));
}

std::string Fatal(std::string_view sqlstate, std::string_view message) {
  std::string out;
  AppendError(&out, "FATAL", sqlstate, message);
  return out;
}

TEST_F(RelayProtocolTest, AServerShuttingDownUnderAStatementOutsideATransactionIsHidden) {
  // Its postmaster died (or a fast shutdown) while the statement ran: the client, at a unit's
  // start, goes on, told by the session (Session::ServerLost) that the outcome is unknown,
  // not by a FATAL that would end its connection.
  Attach();
  Client(Query("INSERT INTO t VALUES (1)"));
  ToServer();
  EXPECT_EQ(Server(Fatal("57P01", "terminating connection due to unexpected postmaster exit")),
            RelayProtocol::ServerStep::kProgress);
  EXPECT_EQ(ToClient(), "");
  EXPECT_FALSE(protocol_.server_fatal_relayed());
  EXPECT_TRUE(protocol_.SurvivesLoss(relay_));
}

TEST_F(RelayProtocolTest, AServersFatalInATransactionReachesTheClient) {
  // The transaction is lost with the connection: the client sees the server's own FATAL, and
  // nothing more is added (a second error would be read as the answer to its next statement).
  Attach();
  Client(Query("BEGIN"));
  ToServer();
  Server(Complete("BEGIN") + Ready('T'));
  ToClient();
  const std::string fatal = Fatal("57P01", "terminating connection due to administrator command");
  Server(fatal);
  EXPECT_EQ(ToClient(), fatal);
  EXPECT_TRUE(protocol_.server_fatal_relayed());
  EXPECT_FALSE(protocol_.SurvivesLoss(relay_));
}

TEST_F(RelayProtocolTest, AFatalOfAnotherClassReachesTheClient) {
  // Not the server's stopping: the client is shown what ended its connection.
  Attach();
  Client(Query("SELECT 1"));
  ToServer();
  const std::string fatal = Fatal("28000", "role \"alice\" is not permitted to log in");
  Server(fatal);
  EXPECT_EQ(ToClient(), fatal);
  EXPECT_TRUE(protocol_.server_fatal_relayed());
}

TEST_F(RelayProtocolTest, NamedStatementsAreRewrittenToTheServersCopy) {
  Attach();
  const std::string rest = ParseRest("SELECT $1::int");
  const std::string name = ServerStatementName(rest);
  EXPECT_EQ(
      Client(Parse("s1", "SELECT $1::int") + Bind("s1") + Describe("s1") + Execute() + Sync()),
      Step::kMore);
  // The client's Parse becomes a Close, a Parse and a Describe of the server's name (the
  // Describe learns the statement's shape); its Bind and Describe name the server's copy.
  std::string parse;
  AppendParse(&parse, name, rest);
  std::string bind;
  AppendBind(&bind, "", name, BindRest());
  EXPECT_EQ(ToServer(), CloseStatement(name) + parse + Describe(name) + bind + Describe(name) +
                            Execute() + Sync());
  EXPECT_EQ(protocol_.unsynced(), 0);
  ASSERT_TRUE(server_.prepared.contains(name));

  // The answers to what the pooler added are swallowed; the client's pass.
  const std::string columns = Columns({"int4"});
  Server(CloseComplete() + ParseComplete() + NoParameters() + columns + BindComplete() +
         NoParameters() + columns + Row("1") + Complete("SELECT 1") + Ready());
  EXPECT_EQ(ToClient(), ParseComplete() + BindComplete() + NoParameters() + columns + Row("1") +
                            Complete("SELECT 1") + Ready());
  EXPECT_TRUE(relay_.expect.empty());
  EXPECT_NE(server_.prepared[name].shape, 0u);
  EXPECT_TRUE(protocol_.Releasable(&relay_));

  // The client's Close forgets its name; the server's copy stays for other clients.
  Client(CloseStatement("s1") + Sync());
  EXPECT_EQ(ToServer(), CloseStatement("pgflow_closed") + Sync());
  Server(CloseComplete() + Ready());
  EXPECT_EQ(ToClient(), CloseComplete() + Ready());
  EXPECT_TRUE(server_.prepared.contains(name));
}

TEST_F(RelayProtocolTest, ANamedStatementIsPreparedAgainOnAnotherServerConnection) {
  Attach();
  const std::string rest = ParseRest("SELECT 2");
  const std::string name = ServerStatementName(rest);
  Client(Parse("s1", "SELECT 2") + Sync());
  ToServer();
  Server(CloseComplete() + ParseComplete() + NoParameters() + Columns({"x"}) + Ready());
  EXPECT_EQ(ToClient(), ParseComplete() + Ready());
  ASSERT_TRUE(protocol_.Releasable(&relay_));
  protocol_.Detach(&relay_);

  // Another connection, which has no copy: the Bind waits for one to be prepared.
  ServerConn other(&context_);
  protocol_.Attach(&other);
  EXPECT_EQ(Client(Bind("s1") + Execute() + Sync()), Step::kWait);
  EXPECT_TRUE(protocol_.shape_wait());
  std::string parse;
  AppendParse(&parse, name, rest);
  EXPECT_EQ(ToServer(), CloseStatement(name) + parse + Describe(name) + Flush());
  Server(CloseComplete() + ParseComplete() + NoParameters() + Columns({"x"}));
  EXPECT_EQ(ToClient(), "");  // all of it the pooler's own
  EXPECT_FALSE(protocol_.shape_wait());
  EXPECT_FALSE(protocol_.parsed());  // the waiting Bind goes on now

  EXPECT_EQ(Client(""), Step::kMore);
  std::string bind;
  AppendBind(&bind, "", name, BindRest());
  EXPECT_EQ(ToServer(), bind + Execute() + Sync());
  Server(BindComplete() + Row("2") + Complete("SELECT 1") + Ready());
  EXPECT_EQ(ToClient(), BindComplete() + Row("2") + Complete("SELECT 1") + Ready());
  EXPECT_TRUE(protocol_.Releasable(&relay_));
}

TEST_F(RelayProtocolTest, APipelineOfSeveralSyncsIsAnsweredInOrder) {
  Attach();
  std::string batch;
  for (int i = 0; i < 3; ++i) batch += Parse("", "SELECT 1") + Bind("") + Execute() + Sync();
  EXPECT_EQ(Client(batch), Step::kMore);
  EXPECT_EQ(ToServer(), batch);         // unnamed statements are not rewritten
  EXPECT_EQ(relay_.expect.size(), 6u);  // a ParseComplete and a ReadyForQuery each

  const std::string answer =
      ParseComplete() + BindComplete() + Row("1") + Complete("SELECT 1") + Ready();
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(protocol_.Releasable(&relay_));
    Server(answer);
    EXPECT_EQ(ToClient(), answer);
    EXPECT_EQ(relay_.expect.size(), static_cast<size_t>(4 - 2 * i));
  }
  EXPECT_TRUE(protocol_.Releasable(&relay_));
  EXPECT_EQ(pool_.stats().queries.load(), 3u);
}

TEST_F(RelayProtocolTest, AnErrorInAPipelineSkipsItsBatchUpToTheSync) {
  Attach();
  const std::string rest = ParseRest("SELECT 3");
  const std::string name = ServerStatementName(rest);
  // The second batch fails at its Execute; the named Parse after it is never run.
  Client(Parse("", "SELECT 1") + Bind("") + Execute() + Sync() + Bind("") + Execute() +
         Parse("s3", "SELECT 3") + Sync() + Parse("", "SELECT 1") + Sync());
  ToServer();
  EXPECT_TRUE(server_.prepared.contains(name));

  const std::string first = ParseComplete() + BindComplete() + Complete("SELECT 1") + Ready();
  const std::string failed = BindComplete() + Error("22012", "division by zero") + Ready('I');
  const std::string last = ParseComplete() + Ready();
  Server(first + failed + last);
  EXPECT_EQ(ToClient(), first + failed + last);
  EXPECT_TRUE(relay_.expect.empty());
  // The statement the error skipped is not on the connection: it is prepared again.
  EXPECT_FALSE(server_.prepared.contains(name));
  EXPECT_TRUE(protocol_.Releasable(&relay_));
}

TEST_F(RelayProtocolTest, CopyInIsRelayedWithTheSyncItsExtendedFormIgnores) {
  Attach();
  // Simple protocol.
  Client(Query("COPY items FROM STDIN"));
  EXPECT_EQ(ToServer(), Query("COPY items FROM STDIN"));
  std::string copy_in_body(1, '\0');
  AppendInt16(&copy_in_body, 0);
  const std::string copy_in = Message('G', copy_in_body);
  Server(copy_in);
  EXPECT_EQ(ToClient(), copy_in);
  const std::string data = Message('d', "1\tone\n") + Message('d', "2\ttwo\n") + Message('c');
  Client(data);
  EXPECT_EQ(ToServer(), data);
  Server(Complete("COPY 2") + Ready());
  EXPECT_EQ(ToClient(), Complete("COPY 2") + Ready());
  EXPECT_TRUE(protocol_.Releasable(&relay_));

  // Extended protocol: the Sync after Execute comes during the copy, and is not answered.
  Client(Parse("", "COPY items FROM STDIN") + Bind("") + Execute() + Sync());
  ToServer();
  Server(ParseComplete() + BindComplete() + copy_in);
  EXPECT_EQ(ToClient(), ParseComplete() + BindComplete() + copy_in);
  Client(Message('d', "3\tthree\n") + Message('c') + Sync());
  EXPECT_EQ(ToServer(), Message('d', "3\tthree\n") + Message('c') + Sync());
  Server(Complete("COPY 1") + Ready());
  EXPECT_EQ(ToClient(), Complete("COPY 1") + Ready());
  EXPECT_TRUE(relay_.expect.empty());
  EXPECT_TRUE(protocol_.Releasable(&relay_));
}

TEST_F(RelayProtocolTest, AMessageSplitAcrossReadsIsRelayedWhole) {
  Attach();
  // A query streams through as its bytes come, once its header has.
  const std::string query = Query("SELECT 'a long enough query'");
  EXPECT_EQ(Client(query.substr(0, 3)), Step::kMore);
  EXPECT_EQ(ToServer(), "");
  EXPECT_EQ(Client(query.substr(3, 10)), Step::kMore);
  EXPECT_EQ(ToServer(), query.substr(0, 13));
  EXPECT_EQ(Client(query.substr(13)), Step::kMore);
  EXPECT_EQ(ToServer(), query.substr(13));
  ASSERT_EQ(relay_.expect.size(), 1u);

  // A server's answer too; a ReadyForQuery, inspected, waits to be whole.
  const std::string answer = Complete("SELECT 1") + Ready();
  Server(answer.substr(0, 4));
  Server(answer.substr(4, answer.size() - 7));
  EXPECT_EQ(ToClient(), Complete("SELECT 1"));
  EXPECT_EQ(relay_.expect.size(), 1u);
  Server(answer.substr(answer.size() - 3));
  EXPECT_EQ(ToClient(), Ready());
  EXPECT_TRUE(relay_.expect.empty());

  // A Parse of a named statement is rewritten: it is read whole first.
  const std::string parse = Parse("s1", "SELECT 1");
  EXPECT_EQ(Client(parse.substr(0, 8)), Step::kMore);
  EXPECT_EQ(protocol_.need(), parse.size());
  EXPECT_EQ(ToServer(), "");
  EXPECT_EQ(Client(parse.substr(8) + Sync()), Step::kMore);
  EXPECT_EQ(protocol_.need(), 0u);
  EXPECT_NE(ToServer(), "");
}

TEST_F(RelayProtocolTest, AMalformedClientMessageIsFatal) {
  std::string fatal_message;
  relay_.cbuf = std::string("Q\0\0\0\1", 5);  // a length below 4
  size_t position = 0;
  EXPECT_EQ(protocol_.ProcessClientBuffer(relay_, config_, &position, &fatal_message),
            Step::kFatal);
  EXPECT_NE(fatal_message, "");  // told, as it holds no server connection
}

TEST_F(RelayProtocolTest, TerminateEndsTheClient) {
  Attach();
  EXPECT_EQ(Client(Message('X')), Step::kLeave);
}

// Clients that log in with the same settings hold one copy of them (an idle client's memory):
// one that changes a setting gets its own copy, and the others keep theirs as they were.
TEST_F(RelayProtocolTest, ClientsWhoLogInAlikeShareTheirSettingsTillOneChangesThem) {
  const SettingsMap startup = {{"application_name", "shop"}, {"datestyle", "ISO, MDY"}};
  const uint64_t stamp = pool_.SettingsStamp(startup, nullptr);
  std::shared_ptr<SettingsMap> shared = pool_.ShareSettings(stamp, startup);
  ASSERT_NE(shared, nullptr);
  EXPECT_EQ(pool_.ShareSettings(stamp, startup), shared);  // (one copy, whoever asks)
  EXPECT_EQ(pool_.ShareSettings(pool_.SettingsStamp({}, nullptr), {}), nullptr);
  protocol_.settings().Share(shared);
  ClientInfo other_info;
  RelayProtocol other;
  other.Start(&pool_, &other_info);
  other.settings().Share(pool_.ShareSettings(stamp, startup));
  EXPECT_EQ(&other.settings().params(), &protocol_.settings().params());

  Attach();
  EXPECT_EQ(Client(Query("SET application_name = 'cart'")), Step::kMore);
  ToServer();
  std::string answer;
  AppendParameterStatus(&answer, "application_name", "cart");
  Server(answer + Complete("SET") + Ready());
  EXPECT_EQ(protocol_.settings().params().at("application_name"), "cart");
  EXPECT_EQ(protocol_.settings().params().at("datestyle"), "ISO, MDY");
  EXPECT_EQ(other.settings().params().at("application_name"), "shop");
  EXPECT_EQ(shared->at("application_name"), "shop");
  EXPECT_NE(protocol_.settings().stamp, stamp);

  // A set this client alone holds (the pool no longer keeps it) is changed in place.
  const SettingsMap* own = &protocol_.settings().params();
  protocol_.settings().MutableParams()["search_path"] = "shop";
  EXPECT_EQ(&protocol_.settings().params(), own);
  other.settings().Share(std::make_shared<SettingsMap>(startup));
  const SettingsMap* alone = &other.settings().params();
  other.settings().MutableParams()["search_path"] = "shop";
  EXPECT_EQ(&other.settings().params(), alone);
}

TEST_F(SessionModeRelayTest, NamedStatementsPassAsTheyAre) {
  Attach();
  const std::string batch = Parse("s1", "SELECT 1") + Bind("s1") + Execute() + Sync();
  EXPECT_EQ(Client(batch), Step::kMore);
  EXPECT_EQ(ToServer(), batch);
  Server(ParseComplete() + BindComplete() + Complete("SELECT 1") + Ready());
  EXPECT_EQ(ToClient(), ParseComplete() + BindComplete() + Complete("SELECT 1") + Ready());
  EXPECT_TRUE(relay_.expect.empty());
  EXPECT_FALSE(protocol_.Releasable(&relay_));  // session mode keeps its connection
}

// --- Routing (pooler/router.h): where units go, and the primary's position after writes ----

// A router that sends a unit to replica 1 unless one of its statements says INSERT, BEGIN or
// COPY, or it was not seen whole; it records what it is told.
class RecordingRouting : public ClientRouting {
 public:
  RouteChoice Choose(const RouteUnit& unit) override {
    ++chosen;
    return Decide(unit, 1);
  }
  RouteChoice Judge(const RouteUnit& unit) override {
    ++judged;
    return Decide(unit, kPrimaryNode);
  }
  void Unavailable(int) override {}
  void Done() override { ++done; }
  void Wrote() override { ++wrote; }
  void Committed(uint64_t lsn) override { committed.push_back(lsn); }
  uint64_t position() const override { return 0; }
  bool awaiting_position() const override { return false; }
  bool read_your_writes() const override { return true; }

  int chosen = 0;
  int judged = 0;
  int done = 0;
  int wrote = 0;  // transactions that may have written ended on the primary
  std::vector<uint64_t> committed;

 private:
  static RouteChoice Decide(const RouteUnit& unit, int read_node) {
    RouteChoice choice;
    bool writes = !unit.whole;
    for (std::string_view text : unit.statements) {
      for (std::string_view word : {"INSERT", "BEGIN", "COPY"}) {
        writes = writes || text.find(word) != std::string_view::npos;
      }
    }
    if (!writes) {
      choice.node = read_node;
      choice.may_write = false;
    }
    return choice;
  }
};

class RoutedRelayTest : public RelayProtocolTest {
 protected:
  RoutedRelayTest() {
    auto routing = std::make_unique<RecordingRouting>();
    routing_ = routing.get();
    protocol_.SetRouting(std::move(routing));
  }

  // Places the unit at the front of the client's buffer as a session does: kAttach, the
  // router's choice, the connection attached, the unit relayed; what the choice was.
  RouteChoice Place(std::string_view bytes) {
    relay_.cbuf.append(bytes);
    protocol_.Unparse();
    size_t position = 0;
    std::string fatal_message;
    EXPECT_EQ(protocol_.ProcessClientBuffer(relay_, config_, &position, &fatal_message),
              Step::kAttach);
    const RouteChoice choice = protocol_.Route(relay_, position);
    protocol_.Attach(&server_, choice);
    Client("");
    return choice;
  }

  static std::string InsertAnswer() { return Complete("INSERT 0 1") + Ready(); }

  RecordingRouting* routing_;
};

TEST_F(RoutedRelayTest, AReadGoesToAReplicaAndTheNextUnitIsPlacedAgain) {
  const RouteChoice choice = Place(Query("SELECT 1"));
  EXPECT_EQ(choice.node, 1);
  EXPECT_EQ(ToServer(), Query("SELECT 1"));
  const std::string answer = Columns({"?column?"}) + Row("1") + Complete("SELECT 1") + Ready();
  Server(answer);
  EXPECT_EQ(ToClient(), answer);
  // The next unit, a write, is not relayed to the replica: its connection goes back first.
  EXPECT_EQ(Client(Query("INSERT INTO t VALUES (1)")), Step::kDetach);
  EXPECT_EQ(ToServer(), "");
  protocol_.Detach(&relay_);
  EXPECT_EQ(Client(""), Step::kAttach);
  EXPECT_EQ(protocol_.Route(relay_, 0).node, kPrimaryNode);
  EXPECT_TRUE(routing_->committed.empty());  // (nothing was written yet)
}

// The query cache's part of the relay: a cached answer served in place of a whole simple
// query, and the primary's answer gathered for the cache only when it holds rows alone.
TEST_F(RoutedRelayTest, ACachedAnswerIsServedAndOnlyAnAnswerOfRowsIsGathered) {
  auto unit_at = [&](const std::string& bytes) {
    relay_.cbuf = bytes;
    return protocol_.CacheableAt(relay_, 0);
  };
  std::optional<RelayProtocol::CacheableUnit> unit = unit_at(Query("SELECT v FROM t"));
  ASSERT_TRUE(unit.has_value());
  EXPECT_EQ(unit->text, "SELECT v FROM t");
  EXPECT_EQ(unit->size, Query("SELECT v FROM t").size());
  std::string partial = Query("SELECT v FROM t");
  partial.pop_back();
  EXPECT_FALSE(unit_at(partial).has_value());  // (not whole yet)
  EXPECT_FALSE(unit_at("").has_value());

  // Extended: an unnamed statement parsed, bound, described and executed in one unit; keyed by
  // what it does, whatever the order of other clients' names.
  const std::string extended = Parse("", "SELECT v FROM t WHERE id = $1") + Bind("") +
                               Message('D', std::string("P") + '\0') + Execute() + Sync();
  unit = unit_at(extended);
  ASSERT_TRUE(unit.has_value());
  EXPECT_EQ(unit->text, "SELECT v FROM t WHERE id = $1");
  EXPECT_EQ(unit->size, extended.size());
  const std::string extended_key = unit->key;
  EXPECT_NE(
      unit_at(Parse("", "SELECT v FROM t WHERE id = $2") + Bind("") + Execute() + Sync())->key,
      extended_key);
  // Not cacheable: a named Parse, no Sync yet, a Flush, a limited Execute, a Bind of a
  // statement not known.
  std::string limited(1, '\0');
  AppendInt32(&limited, 10);
  for (const std::string& bytes :
       {Parse("s1", "SELECT 1") + Bind("s1") + Execute() + Sync(),
        Parse("", "SELECT 1") + Bind("") + Execute(),
        Parse("", "SELECT 1") + Bind("") + Execute() + Flush() + Sync(),
        Parse("", "SELECT 1") + Bind("") + Message('E', limited) + Sync(),
        Bind("unknown") + Execute() + Sync()}) {
    EXPECT_FALSE(unit_at(bytes).has_value()) << absl::CEscape(bytes);
  }

  relay_.cbuf = Query("SELECT v FROM t") + Query("SELECT 2");
  size_t position = 0;
  const std::string rows = Columns({"v"}) + Row("1") + Complete("SELECT 1");
  protocol_.ServeCached(relay_, &position, Query("SELECT v FROM t").size(), rows);
  EXPECT_EQ(position, Query("SELECT v FROM t").size());
  EXPECT_EQ(relay_.to_client, rows + Ready());
  relay_.cbuf.clear();
  relay_.to_client.clear();

  // Rows alone, the client between transactions: gathered, without the ReadyForQuery.
  Place(Query("SELECT v FROM t"));
  protocol_.Capture(1 << 20);
  Server(rows + Ready());
  EXPECT_EQ(ToClient(), rows + Ready());
  ASSERT_TRUE(protocol_.captured());
  EXPECT_EQ(protocol_.TakeCapture(), rows);
  protocol_.Detach(&relay_);
  Place(extended);
  protocol_.Capture(1 << 20);
  EXPECT_EQ(ToServer(), extended);
  Server(ParseComplete() + BindComplete() + rows + Ready());
  EXPECT_EQ(ToClient(), ParseComplete() + BindComplete() + rows + Ready());
  ASSERT_TRUE(protocol_.captured());
  EXPECT_EQ(protocol_.TakeCapture(), ParseComplete() + BindComplete() + rows);
  protocol_.Detach(&relay_);

  // A notice, an error, an answer past the limit: nothing gathered, all of it relayed.
  const std::string notice = Message('N', std::string("SNOTICE") + '\0' + '\0');
  for (const auto& [answer, limit] :
       std::vector<std::pair<std::string, size_t>>{{notice + rows + Ready(), 1 << 20},
                                                   {Error("42P01", "no t") + Ready(), 1 << 20},
                                                   {rows + Ready(), rows.size() - 1}}) {
    Place(Query("SELECT v FROM t"));
    protocol_.Capture(limit);
    Server(answer);
    EXPECT_EQ(ToClient(), answer);
    EXPECT_FALSE(protocol_.captured());
    protocol_.Detach(&relay_);
  }
}

TEST_F(RoutedRelayTest, APipelinedUnitWaitsForTheReplicasAnswersBeforeItIsPlaced) {
  Place(Query("SELECT 1") + Query("INSERT INTO t VALUES (1)"));
  EXPECT_EQ(ToServer(), Query("SELECT 1"));  // the write stays in the client's buffer
  EXPECT_EQ(Client(""), Step::kHold);
  EXPECT_TRUE(protocol_.holding());
  Server(Columns({"?column?"}) + Row("1") + Complete("SELECT 1") + Ready());
  EXPECT_FALSE(protocol_.holding());
  EXPECT_EQ(Client(""), Step::kDetach);
  EXPECT_EQ(ToServer(), "");
}

TEST_F(RoutedRelayTest, TheRoutingIsToldWhenAWritersTransactionEnds) {
  EXPECT_EQ(Place(Query("BEGIN")).node, kPrimaryNode);
  ToServer();
  Server(Complete("BEGIN") + Ready('T'));
  Client(Query("INSERT INTO t VALUES (1)"));
  Server(Complete("INSERT 0 1") + Ready('T'));
  EXPECT_EQ(routing_->wrote, 0);  // (inside the transaction)
  EXPECT_EQ(ToServer(), Query("INSERT INTO t VALUES (1)"));
  Client(Query("COMMIT"));
  EXPECT_EQ(ToServer(), Query("COMMIT"));
  Server(Complete("COMMIT") + Ready());
  EXPECT_EQ(ToClient(), Complete("BEGIN") + Ready('T') + Complete("INSERT 0 1") + Ready('T') +
                            Complete("COMMIT") + Ready());
  EXPECT_EQ(routing_->wrote, 1);
  // Nothing more is asked of the server: the connection goes back at once.
  EXPECT_EQ(ToServer(), "");
  EXPECT_TRUE(protocol_.Releasable(&relay_));
  protocol_.Detach(&relay_);
  EXPECT_TRUE(routing_->committed.empty());
}

TEST_F(RoutedRelayTest, APipeliningWriterIsToldOfAfterEachEndTillNothingIsUnderWay) {
  const std::string first = Parse("", "INSERT INTO t VALUES (1)") + Bind("") + Execute() + Sync();
  const std::string second = Parse("", "INSERT INTO t VALUES (2)") + Bind("") + Execute();
  Place(first + second);
  EXPECT_EQ(ToServer(), first + second);
  Server(ParseComplete() + BindComplete() + InsertAnswer());
  EXPECT_EQ(routing_->wrote, 1);
  Client(Sync());
  EXPECT_EQ(ToServer(), Sync());
  Server(ParseComplete() + BindComplete() + InsertAnswer());
  EXPECT_EQ(routing_->wrote, 2);  // (the second unit's end too: it may have written)
  EXPECT_EQ(ToServer(), "");
  // A read after it writes nothing: no third.
  EXPECT_EQ(Client(Query("SELECT 1")), Step::kDetach);
  EXPECT_EQ(routing_->wrote, 2);
}

TEST_F(RoutedRelayTest, AnExtendedCopyStaysOneUnitToItsLastSync) {
  Place(Parse("", "COPY t FROM STDIN") + Bind("") + Execute() + Sync());
  ToServer();
  std::string copy_in_body(1, '\0');
  AppendInt16(&copy_in_body, 0);
  Server(ParseComplete() + BindComplete() + Message('G', copy_in_body));
  const std::string data = Message('d', "1\n") + Message('c') + Sync();
  EXPECT_EQ(Client(data), Step::kMore);  // (never kDetach in the middle of the copy)
  EXPECT_EQ(ToServer(), data);
  Server(Complete("COPY 1") + Ready());
  EXPECT_EQ(routing_->wrote, 1);
}

TEST_F(RoutedRelayTest, AWriteWhoseEndWasNeverSeenSendsTheClientsReadsToThePrimary) {
  Place(Query("INSERT INTO t VALUES (1)"));
  EXPECT_EQ(ToServer(), Query("INSERT INTO t VALUES (1)"));
  protocol_.Lost();
  protocol_.Detach(&relay_);  // (the connection was lost before the answer)
  EXPECT_EQ(routing_->wrote, 0);
  EXPECT_EQ(routing_->committed, std::vector<uint64_t>{kPositionUnknown});
}

TEST_F(RoutedRelayTest, ARefusedSimpleQueryIsAnsweredWithoutAServer) {
  relay_.cbuf = Query("SET pgflow.min_lsn = 'x'") + Query("SELECT 1");
  size_t position = 0;
  EXPECT_TRUE(protocol_.Refuse(relay_, &position, "pgflow.min_lsn: 'x' is not a WAL position"));
  EXPECT_EQ(position, Query("SET pgflow.min_lsn = 'x'").size());
  const std::string told = ToClient();
  EXPECT_NE(told.find("22023"), std::string::npos);
  EXPECT_EQ(told.back(), 'I');  // (ReadyForQuery)
  // (Only a simple query is refused so: an extended unit runs.)
  relay_.cbuf = Parse("", "SET pgflow.min_lsn = 'x'") + Bind("") + Execute() + Sync();
  position = 0;
  EXPECT_FALSE(protocol_.Refuse(relay_, &position, "no"));
  EXPECT_EQ(position, 0u);
}

}  // namespace
}  // namespace pgflow::pooler
