// The webhook sink against a real PostgreSQL and the webhook test receiver
// (tests/integration/support/webhook_receiver.h), which checks Standard Webhooks signatures with
// code of its own: every change arrives once per endpoint it belongs to, signed, in order per
// row; a batch is all or nothing; outages, 500s, 429s, timeouts and a kill -9 of pgflow lose
// nothing and duplicate only under the same webhook-id; a refusal stops the pipeline naming it,
// or with dead_letter: is recorded and replayed later.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/integration/support/test_support.h"
#include "tests/integration/support/webhook_receiver.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// Two secrets, as during a rotation: pgflow signs with both, each receiver knows one.
constexpr char kOldSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr char kNewSecret[] = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

// The row an event is about: its new row's id, or its old row's for a delete.
int RowOf(const json& event) {
  const json& data = event["data"];
  if (data.contains("after")) return data["after"]["id"].get<int>();
  return data["before"]["id"].get<int>();
}

// (commit LSN as a number, sequence) of an event: its place in the stream.
std::pair<uint64_t, uint64_t> PlaceOf(const json& event) {
  const std::string lsn = event["data"]["lsn"].get<std::string>();
  const size_t slash = lsn.find('/');
  const uint64_t hi = std::stoull(lsn.substr(0, slash), nullptr, 16);
  const uint64_t lo = std::stoull(lsn.substr(slash + 1), nullptr, 16);
  return {(hi << 32) | lo, event["data"]["seq"].get<uint64_t>()};
}

// Checks what an endpoint accepted: every webhook-id always with the same event (so a
// duplicate is a duplicate by id), and, counting each event once (its first acceptance), the
// events of each row in stream order. Returns the events once each, as accepted.
std::vector<json> CheckOncePerIdInRowOrder(const std::vector<json>& accepted,
                                           const std::string& pipeline) {
  std::map<std::string, std::string> body_of_id;
  std::set<std::string> seen;
  std::map<int, std::pair<uint64_t, uint64_t>> last_of_row;
  std::vector<json> once;
  for (const json& a : accepted) {
    const json& event = a["event"];
    const std::string id = a["webhook_id"].get<std::string>();
    std::string expected_id = pipeline + ":" + event["id"].get<std::string>();
    std::replace(expected_id.begin(), expected_id.end(), '.', '_');
    EXPECT_EQ(id, expected_id);
    auto [it, fresh] = body_of_id.emplace(id, event.dump());
    EXPECT_EQ(it->second, event.dump()) << "webhook-id " << id << " came with two bodies";
    if (!seen.insert(event["id"].get<std::string>()).second) continue;
    if (event["data"]["op"] == "read") {
      once.push_back(event);
      continue;
    }
    const int row = RowOf(event);
    const auto place = PlaceOf(event);
    if (auto last = last_of_row.find(row); last != last_of_row.end()) {
      EXPECT_LT(last->second, place) << "row " << row << " out of order at " << event.dump();
    }
    last_of_row[row] = place;
    once.push_back(event);
  }
  return once;
}

TEST(WebhookSinkTest, RoutesSignedEventsOncePerEndpointInRowOrder) {
  Sql sql(NewDatabase("hooked"));
  sql.Exec(R"sql(
    CREATE TABLE orders (id int PRIMARY KEY, total int, note text);
    INSERT INTO orders VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c');
  )sql");
  WebhookReceiver receiver(kNewSecret);  // knows the new secret only
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("hooked", "[public.orders]") +
                      "sinks:\n  hooks:\n    webhook:\n      secret: \"" + kOldSecret + " " +
                      kNewSecret + "\"\n      routes:\n        - url: " + receiver.url("/all") +
                      "\n        - {url: \"" + receiver.url("/big") +
                      "\", table: public.orders, op: [insert, update], where: \"total > 10\"}\n"
                      "    flush_interval: 50ms\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out;
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO orders VALUES (4, 5, 'd'), (5, 50, 'e')");
  sql.Exec("UPDATE orders SET total = total + 1");
  sql.Exec("BEGIN; UPDATE orders SET total = 100 WHERE id = 4; "
           "UPDATE orders SET total = 101 WHERE id = 4; COMMIT");
  sql.Exec("UPDATE orders SET id = 40 WHERE id = 4");
  sql.Exec("DELETE FROM orders WHERE id = 5");
  // /all: 3 snapshot rows, 2 inserts, 5 + 2 + 1 updates, 1 delete. /big: what has total > 10.
  auto on = [&](const std::string& path) {
    std::vector<json> events;
    for (const json& a : receiver.Accepted()) {
      if (a["path"] == path) events.push_back(a);
    }
    return events;
  };
  EXPECT_TRUE(WaitFor([&] { return on("/all").size() >= 14 && on("/big").size() >= 8; },
                      std::chrono::seconds(60)))
      << on("/all").size() << " " << on("/big").size() << "\n" << ReadFile(dir.File("pgflow.log"));
  // Nothing more comes. (A fixed wait: that nothing arrives over it is what is tested.)
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  for (const json& request : receiver.Requests()) {
    EXPECT_EQ(request["valid"], true) << request.dump();
    EXPECT_EQ(request["answered"], 200) << request.dump();
    // Two signatures, one per secret.
    const std::string signature = request["signature"].get<std::string>();
    EXPECT_EQ(std::count(signature.begin(), signature.end(), ' '), 1) << signature;
    EXPECT_EQ(request["headers"]["content-type"], "application/json");
  }
  const std::vector<json> all = on("/all");
  ASSERT_EQ(all.size(), 14u);
  std::vector<json> once = CheckOncePerIdInRowOrder(all, "hooked");
  EXPECT_EQ(once.size(), 14u);  // exactly once each
  std::multiset<std::string> types;
  for (const json& e : once) types.insert(e["type"].get<std::string>());
  EXPECT_EQ(types.count("public.orders.read"), 3u);
  EXPECT_EQ(types.count("public.orders.insert"), 2u);
  EXPECT_EQ(types.count("public.orders.update"), 8u);
  EXPECT_EQ(types.count("public.orders.delete"), 1u);
  // The key change: the update carries the old key.
  const auto moved = std::find_if(once.begin(), once.end(), [](const json& e) {
    return e["data"].contains("after") && e["data"]["after"]["id"] == 40;
  });
  ASSERT_NE(moved, once.end());
  EXPECT_EQ((*moved)["data"]["before"]["id"], 4);

  const std::vector<json> big = on("/big");
  ASSERT_EQ(big.size(), 8u);
  for (const json& a : big) {
    EXPECT_GT(a["event"]["data"]["after"]["total"].get<int>(), 10) << a.dump();
    EXPECT_NE(a["event"]["data"]["op"], "read");
  }
}

TEST(WebhookSinkTest, BatchesAreAllOrNothingUnderOneId) {
  Sql sql(NewDatabase("batched"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, n int)");
  WebhookReceiver receiver(kNewSecret);
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("batched", "[public.items]") +
                      "sinks:\n  hooks:\n    webhook: {url: \"" + receiver.url() +
                      "\", secret: " + kNewSecret +
                      ", batch: 10, linger: 200ms, gzip: true, backoff: 50ms}\n"
                      "    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  receiver.Control({{"status", 500}, {"count", 1}});
  sql.Exec("INSERT INTO items SELECT g, 0 FROM generate_series(1, 25) g");
  EXPECT_TRUE(WaitFor([&] { return receiver.Accepted().size() >= 25; }, std::chrono::seconds(60)))
      << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  std::vector<json> requests = receiver.Requests();
  ASSERT_GE(requests.size(), 4u);
  // The refused batch came again whole: the same id, the same body, then accepted.
  EXPECT_EQ(requests[0]["answered"], 500);
  const auto again = std::find_if(requests.begin() + 1, requests.end(), [&](const json& r) {
    return r["id"] == requests[0]["id"];
  });
  ASSERT_NE(again, requests.end());
  EXPECT_EQ((*again)["body"], requests[0]["body"]);
  EXPECT_EQ((*again)["answered"], 200);
  for (const json& r : requests) {
    EXPECT_EQ(r["valid"], true);
    EXPECT_EQ(r["gzip"], true);
    json body = json::parse(r["body"].get<std::string>());
    ASSERT_TRUE(body.is_array());
    EXPECT_LE(body.size(), 10u);
    // A batch's id names its first and last event.
    EXPECT_THAT(r["id"].get<std::string>(), HasSubstr("~")) << r["id"];
  }
  std::set<int> rows;
  for (const json& a : receiver.Accepted()) rows.insert(RowOf(a["event"]));
  EXPECT_EQ(rows.size(), 25u);
}

TEST(WebhookSinkTest, OutagesErrorsTimeoutsAndKill9LoseNothingAndKeepRowOrder) {
  Sql sql(NewDatabase("outage"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, n int)");
  sql.Exec("INSERT INTO items SELECT g, 0 FROM generate_series(1, 10) g");
  WebhookReceiver receiver(kNewSecret);
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("outage", "[public.items]") +
                      "sinks:\n  hooks:\n    webhook: {url: \"" + receiver.url() +
                      "\", secret: " + kNewSecret +
                      ", concurrency: 4, timeout: 500ms, backoff: 50ms, max_backoff: 400ms}\n"
                      "    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  int updates = 0;
  auto update_rounds = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      sql.Exec("UPDATE items SET n = n + 1 WHERE id = " + std::to_string(1 + updates % 10));
      ++updates;
      // (A fixed pause: the faults are to meet a stream of writes over time, not one burst.)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  // Each fault is used up before the next.
  receiver.Control({{"status", 500}, {"count", 5}});
  update_rounds(20);
  receiver.WaitUntilRuleUsed();
  receiver.Control({{"status", 429}, {"count", 2}, {"retry_after", 1}});
  update_rounds(20);
  receiver.WaitUntilRuleUsed();
  // Requests the receiver answered nothing (pgflow gave up waiting, or went away).
  auto unanswered = [&] {
    size_t n = 0;
    for (const json& request : receiver.Requests()) n += request.value("answered", 0) == 0;
    return n;
  };
  const size_t unanswered_before = unanswered();
  receiver.Control({{"status", 200}, {"count", 2}, {"stall_ms", 1500}});  // past the timeout
  update_rounds(20);
  receiver.WaitUntilRuleUsed();
  // Both stalls end (pgflow's timeout) and are logged.
  EXPECT_TRUE(
      WaitFor([&] { return unanswered() >= unanswered_before + 2; }, std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  receiver.Kill();  // down...
  update_rounds(20);
  // (A fixed wait: pgflow is to be killed some way into retrying against a receiver that is
  // down, where nothing can be observed of it.)
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // ...and pgflow killed while it retries; started again, and the receiver with it.
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));
  update_rounds(20);
  receiver.Start();
  pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow2.log"), {},
                                  "replication stream: streaming");
  update_rounds(20);
  // Every update arrived: each row's last accepted state is its final one.
  std::map<int, int> final_n;
  for (const auto& row : sql.Query("SELECT id, n FROM items")) {
    final_n[std::stoi(row[0])] = std::stoi(row[1]);
  }
  auto distinct_updates = [&] {
    std::set<std::string> ids;
    for (const json& a : receiver.Accepted()) {
      if (a["event"]["data"]["op"] == "update") ids.insert(a["event"]["id"].get<std::string>());
    }
    return ids.size();
  };
  EXPECT_TRUE(WaitFor([&] { return distinct_updates() == static_cast<size_t>(updates); },
                      std::chrono::seconds(90)))
      << distinct_updates() << " of " << updates << "\n" << ReadFile(dir.File("pgflow2.log"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow2.log"));

  std::vector<json> once = CheckOncePerIdInRowOrder(receiver.Accepted(), "outage");
  std::map<int, int> last_n;
  for (const json& e : once) last_n[RowOf(e)] = e["data"]["after"]["n"].get<int>();
  EXPECT_EQ(last_n, final_n);
  // The faults were met: errors, a Retry-After, timeouts (answered 0: pgflow gave up waiting).
  std::map<int, int> answered;
  for (const json& r : receiver.Requests()) {
    ++answered[r["answered"].get<int>()];
    EXPECT_EQ(r["valid"], true);
  }
  EXPECT_GE(answered[500], 5);
  EXPECT_GE(answered[429], 2);
  EXPECT_GE(answered[0], 2);
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")), HasSubstr("retrying in"));
}

// An endpoint that keeps failing makes no data loss, but the pipeline is not healthy: /readyz
// answers 503 naming what is retried and `pgflow status` says degraded, until the endpoint
// takes deliveries again.
TEST(WebhookSinkTest, AnEndpointThatKeepsFailingMakesThePipelineNotReadyUntilItRecovers) {
  Sql sql(NewDatabase("retrying"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, n int)");
  WebhookReceiver receiver(kNewSecret);
  TempDir dir;
  const int port = FreeLoopbackPort();
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("retrying", "[public.items]") +
                      "sinks:\n  hooks:\n    webhook: {url: \"" + receiver.url() +
                      "\", secret: " + kNewSecret +
                      ", backoff: 50ms, max_backoff: 200ms}\n    flush_interval: 50ms\n"
                      "admin: {listen: 127.0.0.1:" +
                      std::to_string(port) + "}\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  const std::string readyz = "http://127.0.0.1:" + std::to_string(port) + "/readyz";
  ASSERT_TRUE(WaitFor([&] { return Curl(readyz).code == 200; }, std::chrono::seconds(30)));
  receiver.Control({{"status", 503}, {"count", 100000}});
  sql.Exec("INSERT INTO items VALUES (1, 0)");
  HttpAnswer down;
  EXPECT_TRUE(WaitFor([&] { return (down = Curl(readyz)).code == 503; }, std::chrono::seconds(30)));
  EXPECT_THAT(down.body, HasSubstr("sink hooks: retrying deliveries to " + receiver.url()));
  EXPECT_THAT(down.body, HasSubstr("HTTP 503"));
  std::string out;
  EXPECT_EQ(RunPgflow({"status", yaml}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("degraded"));
  EXPECT_THAT(out, HasSubstr("retrying deliveries to"));
  receiver.Control(nlohmann::json::object());
  EXPECT_TRUE(WaitFor([&] { return Curl(readyz).code == 200; }, std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  EXPECT_EQ(RunPgflow({"status", yaml}, &out), 0) << out;
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

// A first run that fails before anything was delivered (the endpoint refuses the very first
// rows of the copy) leaves no replication slot keeping WAL on the server, and says so; the
// next run starts afresh.
// A first run whose endpoint refuses the copy stops; the slot it made stays (the copy reached
// a sink, which may hold part of it), and the log says so and how to remove it. The next run
// delivers every row.
TEST(WebhookSinkTest, AFirstRunThatFailsAtItsEndpointSaysWhatItLeaves) {
  Sql sql(NewDatabase("firstfail"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, note text)");
  sql.Exec("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g");
  WebhookReceiver receiver(kNewSecret);
  receiver.Control({{"status", 400}, {"count", -1}});
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("firstfail", "[public.items]") +
                      "    snapshot: {mode: initial}\nsinks:\n  hooks:\n    webhook: {url: \"" +
                      receiver.url() + "\", secret: " + kNewSecret +
                      "}\n    flush_interval: 50ms\n");
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("replication slot pgflow_firstfail keeps WAL on the server until "
                             "pipeline firstfail runs again, or `pgflow teardown "));
  receiver.Control(nlohmann::json::object());
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("again.log"), {},
                                       "replication stream: streaming");
  EXPECT_TRUE(WaitFor([&] { return receiver.Accepted().size() >= 20; }, std::chrono::seconds(60)));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("again.log"));
}

TEST(WebhookSinkTest, ARefusalStopsThePipelineNamingItOrIsSetAsideAndReplayed) {
  Sql sql(NewDatabase("refused"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, note text)");
  WebhookReceiver receiver(kNewSecret);
  receiver.Control({{"status", 400}, {"match", "poison"}, {"count", -1}});
  TempDir dir;
  const std::string head = PipelineHead("refused", "[public.items]") +
                           "sinks:\n  hooks:\n    webhook: {url: \"" + receiver.url() +
                           "\", secret: " + kNewSecret + "}\n    flush_interval: 50ms\n";
  // Without a dead-letter path the pipeline stops, naming the endpoint, the event and answer.
  const std::string stops = dir.File("stops.yaml");
  WriteFile(stops, head);
  auto pgflow = StartPgflowUntilLogged({"run", stops}, dir.File("stops.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO items VALUES (1, 'fine')");
  sql.Exec("INSERT INTO items VALUES (2, 'poison')");
  EXPECT_NE(pgflow->Wait(std::chrono::seconds(60)), 0);
  const std::string log = ReadFile(dir.File("stops.log"));
  EXPECT_THAT(log, HasSubstr(receiver.url() + ": request refused:"));
  EXPECT_THAT(log, HasSubstr("refused: HTTP 400"));

  // With one, the event is recorded and the rest goes on; replayed once the receiver takes it.
  const std::string goes_on = dir.File("goes_on.yaml");
  WriteFile(goes_on, head + "    dead_letter: {path: " + dir.File("rejected.jsonl") + "}\n");
  pgflow = StartPgflowUntilLogged({"run", goes_on}, dir.File("goes_on.log"), {},
                                  "replication stream: streaming");
  sql.Exec("INSERT INTO items VALUES (3, 'after')");
  auto accepted_rows = [&] {
    std::set<int> rows;
    for (const json& a : receiver.Accepted()) rows.insert(RowOf(a["event"]));
    return rows;
  };
  EXPECT_TRUE(WaitFor([&] { return accepted_rows().contains(3); }, std::chrono::seconds(60)))
      << ReadFile(dir.File("goes_on.log"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("goes_on.log"));
  std::vector<json> letters = ReadJsonl(dir.File("rejected.jsonl"));
  ASSERT_EQ(letters.size(), 1u) << ReadFile(dir.File("rejected.jsonl"));
  EXPECT_EQ(letters[0]["code"], "400");
  EXPECT_EQ(letters[0]["destination"], receiver.url());
  EXPECT_THAT(letters[0]["change"].get<std::string>(), HasSubstr("poison"));
  EXPECT_FALSE(accepted_rows().contains(2));

  std::string out;
  EXPECT_NE(RunPgflow({"dlq", "replay", goes_on}, &out), 0) << out;  // still refused
  receiver.Control(json::object());
  ASSERT_EQ(RunPgflow({"dlq", "replay", goes_on}, &out), 0) << out;
  EXPECT_TRUE(accepted_rows().contains(2));
  for (const json& line : ReadJsonl(dir.File("rejected.jsonl"))) {
    EXPECT_FALSE(line.contains("event_id")) << "still recorded: " << line.dump();
  }
  // Sent again under the id it was refused with.
  std::set<std::string> ids_of_2;
  for (const json& r : receiver.Requests()) {
    if (r["body"].get<std::string>().find("poison") != std::string::npos) {
      ids_of_2.insert(r["id"].get<std::string>());
    }
  }
  EXPECT_EQ(ids_of_2.size(), 1u);
}

TEST(WebhookSinkTest, PrivateAddressesAreRefusedWhenAsked) {
  Sql sql(NewDatabase("ssrf"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY)");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("ssrf", "[public.items]") +
                      "sinks:\n  hooks:\n    webhook: {url: \"http://127.0.0.1:9/hook\", "
                      "secret: " + std::string(kNewSecret) + ", deny_private_addresses: true}\n");
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0);
  EXPECT_THAT(out, HasSubstr("resolves to the internal address 127.0.0.1, which "
                             "deny_private_addresses refuses"));
}

// The receiver docs/guides/webhooks.md shows (examples/webhook_receiver.py) takes pgflow's
// requests: they pass both its checks, the standardwebhooks library's from PyPI and its few lines
// of plain code (a request failing either is answered 400, which would stop the pipeline).
TEST(WebhookSinkTest, TheExampleReceiverVerifiesWithTheStandardWebhooksLibrary) {
  // A virtual environment with the library, kept beside the build for the next runs.
  const std::string venv =
      std::filesystem::path(PGFLOW_BINARY).parent_path().string() + "/webhook-venv";
  if (!std::filesystem::exists(venv + "/bin/python") ||
      std::system((venv + "/bin/python -c 'import standardwebhooks'").c_str()) != 0) {
    ASSERT_EQ(std::system(("python3 -m venv " + venv + " && " + venv +
                           "/bin/pip install -q standardwebhooks==1.1.0")
                              .c_str()),
              0)
        << "could not install the standardwebhooks library from PyPI";
  }
  Sql sql(NewDatabase("example"));
  sql.Exec("CREATE TABLE orders (id int PRIMARY KEY, total int)");
  TempDir dir;
  const int port = FreeLoopbackPort();
  const std::string printed = dir.File("printed.txt");
  const pid_t receiver = fork();
  if (receiver == 0) {
    setenv("WEBHOOK_SECRET", kNewSecret, 1);
    const int fd = open(printed.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const std::string python = venv + "/bin/python";
    const std::string script = std::string(PGFLOW_SOURCE_DIR) + "/examples/webhook_receiver.py";
    execl(python.c_str(), python.c_str(), script.c_str(), std::to_string(port).c_str(), nullptr);
    _exit(127);
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/orders";
  EXPECT_TRUE(WaitFor([&] { return Curl(url).code != 0; }, std::chrono::seconds(30)));
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("example", "[public.orders]") +
                      "sinks:\n  hooks:\n    webhook: {url: \"" + url + "\", secret: " +
                      kNewSecret + ", batch: 2, linger: 50ms}\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO orders VALUES (1, 10), (2, 20), (3, 30)");
  sql.Exec("UPDATE orders SET total = 11 WHERE id = 1");
  sql.Exec("DELETE FROM orders WHERE id = 2");
  auto lines = [&] { return CountInFile(printed, "/orders public.orders."); };
  EXPECT_TRUE(WaitFor([&] { return lines() == 5; }, std::chrono::seconds(60)))
      << ReadFile(printed) << ReadFile(dir.File("pgflow.log"));
  EXPECT_THAT(ReadFile(printed), HasSubstr("/orders public.orders.update {\"id\": 1, \"total\": 11}"));
  EXPECT_TRUE(pgflow->Running()) << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
  kill(receiver, SIGKILL);
  waitpid(receiver, nullptr, 0);
}

}  // namespace
}  // namespace pgflow::testing
