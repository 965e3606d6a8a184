// High availability (cluster/node.h): three `pgflow node`s, each beside its own PostgreSQL
// server, on three real etcd members (Debian's etcd-server) shared by the tests of this file.
// The nodes run as the postgres user (PostgreSQL refuses root) on free loopback ports.
//
// What is checked: a cluster forms by itself (the first node initializes, the others clone
// it); a primary whose node is killed with -9 is replaced within the ttl and a little more,
// and with `synchronous: on` every acknowledged commit is on the new primary; the old primary
// comes back as a standby (pg_rewind); a switchover; `pgflow cluster status`; the endpoints
// load balancers route on. Partitions: ha_partition_test.cc.

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "nlohmann/json.hpp"
#include "tests/integration/support/etcd_cluster.h"
#include "tests/integration/support/ledger_writer.h"
#include "tests/integration/support/node_cluster.h"
#include "tests/integration/support/pooler_support.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kNodes = NodeCluster::kNodes;

class HaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { etcd_ = new EtcdCluster(3); }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  static EtcdCluster* etcd_;
};
EtcdCluster* HaTest::etcd_ = nullptr;

// Inserts ids from `first` on into `table`, one transaction each, until one fails: the ids
// acknowledged.
std::vector<int> InsertUntilError(const std::string& url, const std::string& table, int first,
                                  int count) {
  std::vector<int> acknowledged;
  PGconn* conn = PQconnectdb(absl::StrCat(url, "?connect_timeout=3").c_str());
  for (int id = first; id < first + count && PQstatus(conn) == CONNECTION_OK; ++id) {
    PGresult* r = PQexec(conn, absl::StrCat("INSERT INTO ", table, " VALUES (", id, ")").c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) break;
    acknowledged.push_back(id);
  }
  PQfinish(conn);
  return acknowledged;
}

TEST_F(HaTest, AClusterFormsFailsOverWithoutLosingACommitAndTheOldPrimaryRejoins) {
  NodeCluster cluster({.name = "failover", .etcd = etcd_->urls(), .synchronous = true});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  const std::string first = *cluster.Leader();
  const int leader = cluster.Index(first);

  // The endpoints a load balancer routes on.
  EXPECT_EQ(Curl(cluster.Api(leader, "/primary")).code, 200);
  EXPECT_EQ(Curl(cluster.Api((leader + 1) % kNodes, "/primary")).code, 503);
  const std::string standby_replica = cluster.Api((leader + 1) % kNodes, "/replica?lag=16MB");
  EXPECT_TRUE(WaitFor([&] { return Curl(standby_replica).code == 200; }, seconds(10)));
  EXPECT_EQ(Curl(cluster.Api(leader, "/replica")).code, 503);
  EXPECT_EQ(Curl(cluster.Api(leader, "/health")).code, 200);
  EXPECT_EQ(Curl(cluster.Api(leader, "/replica?lag=lots")).code, 400);
  EXPECT_NE(Curl(cluster.Api(leader, "/metrics")).body.find("pgflow_node_leader{"),
            std::string::npos);

  {
    Sql sql(cluster.Url(leader));
    sql.Exec("CREATE TABLE acked (id int PRIMARY KEY)");
  }
  const std::vector<int> acknowledged = InsertUntilError(cluster.Url(leader), "acked", 1, 300);
  ASSERT_EQ(acknowledged.size(), 300u);

  // kill -9 of the leader's node: its server dies with it, and its lease ends within the ttl.
  const auto killed = std::chrono::steady_clock::now();
  cluster.Kill(leader);
  ASSERT_TRUE(WaitFor([&] { return cluster.Leader().value_or(first) != first; }, seconds(30)))
      << cluster.Logs();
  const std::string second = *cluster.Leader();
  const int promoted = cluster.Index(second);
  ASSERT_TRUE(WaitFor([&] { return Curl(cluster.Api(promoted, "/primary")).code == 200; },
                      seconds(30)))
      << cluster.Logs();
  const double failover_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::printf("failover in %.1f s (ttl 6 s)\n", failover_seconds);
  EXPECT_LT(failover_seconds, 6 + 10) << cluster.Logs();

  // Synchronous: every acknowledged commit is on the new primary.
  {
    Sql sql(cluster.Url(promoted));
    EXPECT_EQ(sql.Scalar("SELECT count(*) FROM acked WHERE id BETWEEN 1 AND 300"), "300");
    sql.Exec("INSERT INTO acked VALUES (1000)");
  }

  // The old primary comes back as a standby of the new one.
  cluster.Start(leader);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(first); }, seconds(120))) << cluster.Logs();
  EXPECT_TRUE(WaitFor(
      [&] {
        Sql sql(cluster.Url(leader));
        return sql.Scalar("SELECT count(*) FROM acked") == "301";
      },
      seconds(30)));
  EXPECT_EQ(Curl(cluster.Api(leader, "/primary")).code, 503);
}

TEST_F(HaTest, ASwitchoverMovesThePrimaryToTheNamedStandby) {
  NodeCluster cluster({.name = "switchover", .etcd = etcd_->urls(), .synchronous = false});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  const std::string first = *cluster.Leader();
  const std::string target = first == "n3" ? "n2" : "n3";
  {
    Sql sql(cluster.Url(cluster.Index(first)));
    sql.Exec("CREATE TABLE moved (id int PRIMARY KEY); INSERT INTO moved VALUES (1)");
  }
  std::string out;
  ASSERT_EQ(RunPgflow({"cluster", "switchover", "--config", cluster.file(0), "--to", target}, &out),
            0)
      << out << cluster.Logs();
  EXPECT_NE(out.find(target + " leads"), std::string::npos) << out;
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(first); }, seconds(60))) << cluster.Logs();
  EXPECT_EQ(*cluster.Leader(), target);
  Sql sql(cluster.Url(cluster.Index(target)));
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM moved"), "1");
  sql.Exec("INSERT INTO moved VALUES (2)");

  // The table a person reads.
  ASSERT_EQ(RunPgflow({"cluster", "status", "--config", cluster.file(1)}, &out), 0) << out;
  EXPECT_NE(out.find("leader " + target), std::string::npos) << out;
  EXPECT_NE(out.find("MEMBER"), std::string::npos) << out;
  EXPECT_NE(out.find("synchronous off"), std::string::npos) << out;

  // The cluster's setting, in etcd, over the nodes' files (which say off): on, then off again.
  ASSERT_EQ(RunPgflow({"cluster", "set", "synchronous", "on", "--config", cluster.file(2)}, &out),
            0)
      << out << cluster.Logs();
  EXPECT_NE(out.find("the synchronous standby"), std::string::npos) << out;
  ASSERT_EQ(RunPgflow({"cluster", "status", "--json", "--config", cluster.file(0)}, &out), 0);
  const nlohmann::json status = nlohmann::json::parse(out);
  EXPECT_EQ(status["synchronous"], true) << out;
  std::string named;
  for (const nlohmann::json& member : status["members"]) {
    if (member["synchronous"] == true) named += member["name"].get<std::string>();
  }
  ASSERT_TRUE(named == "n1" || named == "n2" || named == "n3") << out;
  {
    Sql sql(cluster.Url(cluster.Index(target)));
    EXPECT_NE(sql.Scalar("SHOW synchronous_standby_names").find(named), std::string::npos);
  }
  EXPECT_NE(ReadFile(cluster.Log(cluster.Index(target))).find("the cluster's is followed"),
            std::string::npos);
  ASSERT_EQ(RunPgflow({"cluster", "set", "synchronous", "off", "--config", cluster.file(2)},
                      &out),
            0)
      << out << cluster.Logs();
  EXPECT_NE(out.find("acknowledged by the primary alone"), std::string::npos) << out;
  EXPECT_EQ(RunPgflow({"cluster", "set", "synchronous", "maybe", "--config", cluster.file(2)},
                      &out),
            2);
  EXPECT_NE(out.find("neither on nor off"), std::string::npos) << out;

  // reinit: the old primary, now a standby, cloned afresh; refused for the leader.
  EXPECT_EQ(RunPgflow({"cluster", "reinit", target, "--config", cluster.file(0)}, &out), 2);
  EXPECT_NE(out.find("switchover` first"), std::string::npos) << out;
  ASSERT_EQ(RunPgflow({"cluster", "reinit", first, "--config", cluster.file(0)}, &out), 0)
      << out << cluster.Logs();
  EXPECT_NE(out.find(first + " streams from " + target + " again"), std::string::npos) << out;
  EXPECT_NE(ReadFile(cluster.Log(cluster.Index(first))).find("the data directory was moved to"),
            std::string::npos);
  EXPECT_TRUE(WaitFor(
      [&] {
        Sql reinitialized(cluster.Url(cluster.Index(first)));
        return reinitialized.Scalar("SELECT count(*) FROM moved") == "2";
      },
      seconds(30)));
}

// Whether an INSERT on `sql`'s connection, opened before, still commits.
bool Writes(Sql& sql, int id) {
  PGresult* r = PQexec(sql.conn(), absl::StrCat("INSERT INTO fenced VALUES (", id, ")").c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok;
}

TEST_F(HaTest, AStoppedPrimaryAndALeaderCutOffFromEtcdTakeNoMoreWrites) {
  NodeCluster cluster({.name = "fencing", .etcd = etcd_->urls(), .synchronous = false});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  int leader = cluster.Index(*cluster.Leader());
  {
    Sql sql(cluster.Url(leader));
    sql.Exec("CREATE TABLE fenced (id int PRIMARY KEY)");
  }

  // The primary stopped (SIGSTOP, every process of it) for longer than the ttl: its node kills
  // it; woken, a session opened before cannot write.
  {
    Sql before(cluster.Url(leader));
    ASSERT_TRUE(Writes(before, 1));
    // (Every backend is a session leader of its own: each process is stopped.)
    const std::vector<pid_t> server = cluster.ServerPids(leader);
    ASSERT_GT(server.size(), 3u);
    for (pid_t pid : server) ::kill(pid, SIGSTOP);
    std::this_thread::sleep_for(seconds(8));
    for (pid_t pid : server) ::kill(pid, SIGCONT);
    EXPECT_FALSE(Writes(before, 2)) << "a stopped primary took a write once woken";
  }
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged() && cluster.Primaries() == 1; },
                      seconds(60)))
      << cluster.Logs();

  // Every etcd member stopped: no lease can be renewed, so the primary must stop taking
  // writes before its lease could end (ttl - retry_timeout after its last renewal).
  leader = cluster.Index(*cluster.Leader());
  {
    Sql before(cluster.Url(leader));
    ASSERT_TRUE(Writes(before, 3));
    for (int i = 0; i < etcd_->size(); ++i) etcd_->Pause(i);
    const auto paused = std::chrono::steady_clock::now();
    int id = 4;
    const bool fenced = WaitFor([&] { return !Writes(before, id++); }, seconds(10));
    const double after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - paused).count();
    for (int i = 0; i < etcd_->size(); ++i) etcd_->Resume(i);
    EXPECT_TRUE(fenced) << cluster.Logs();
    EXPECT_LT(after, 6.0) << "the primary took writes past its lease's ttl";
    std::printf("the primary stopped taking writes %.1f s after etcd stopped (ttl 6 s)\n", after);
  }
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged() && cluster.Primaries() == 1; },
                      seconds(60)))
      << cluster.Logs();
  // (Its server may still be starting again as the primary.)
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::optional<std::string> leader = cluster.Leader();
        return leader.has_value() &&
               InsertUntilError(cluster.Url(cluster.Index(*leader)), "fenced", 5000000, 1)
                       .size() == 1;
      },
      seconds(30)))
      << cluster.Logs();
}

// Column `column` of SHOW DATABASES's row of `database` (11: paused).
std::string DatabaseColumn(const PoolerProcess& pooler, const std::string& database,
                           size_t column) {
  for (absl::string_view line : absl::StrSplit(Console(pooler, "SHOW DATABASES"), '\n')) {
    std::vector<std::string> row = absl::StrSplit(line, '|');
    if (row.size() > column && row[0] == database) return row[column];
  }
  return "";
}

// SHOW REPLICAS's rows of `database` (database|node|role|address|state|position|lag_bytes|
// lag_seconds|reads) that are replicas.
std::vector<std::vector<std::string>> ReplicaRows(const PoolerProcess& pooler,
                                                  const std::string& database) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(Console(pooler, "SHOW REPLICAS"), '\n')) {
    std::vector<std::string> row = absl::StrSplit(line, '|');
    if (row.size() == 9 && row[0] == database && row[2] == "replica") rows.push_back(row);
  }
  return rows;
}

int HealthyReplicas(const PoolerProcess& pooler, const std::string& database) {
  int healthy = 0;
  for (const auto& row : ReplicaRows(pooler, database)) healthy += row[4] == "healthy";
  return healthy;
}

uint64_t ReplicaReads(const PoolerProcess& pooler, const std::string& database) {
  uint64_t reads = 0;
  for (const auto& row : ReplicaRows(pooler, database)) reads += std::stoull(row[8]);
  return reads;
}

TEST_F(HaTest, APoolerFollowingTheClusterCarriesItsClientsOverAFailover) {
  NodeCluster cluster({.name = "pooled", .etcd = etcd_->urls(), .synchronous = true});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  const std::string first = *cluster.Leader();
  {
    Sql sql(cluster.Url(cluster.Index(first)));
    sql.Exec("CREATE TABLE ledger (id bigint PRIMARY KEY)");
  }
  std::string etcd;
  for (const std::string& url : etcd_->urls()) {
    absl::StrAppend(&etcd, etcd.empty() ? "" : ", ", url);
  }
  // (The url's host is nobody's: the cluster says where the primary is. `ro` reads from the
  // cluster's standbys through the routing proxy.)
  PoolerProcess pooler("trust", "\"postgres\" \"\"\n",
                       absl::StrCat("  app: {url: 'postgres://postgres@127.0.0.1:1/postgres', "
                                    "cluster: {name: pooled, etcd: [", etcd, "]}}\n",
                                    "  ro: {url: 'postgres://postgres@127.0.0.1:1/postgres', "
                                    "cluster: {name: pooled, etcd: [", etcd,
                                    "], replicas: true}}\n"));
  ASSERT_TRUE(WaitFor([&] { return HealthyReplicas(pooler, "ro") == 2; }, seconds(30)))
      << Console(pooler, "SHOW REPLICAS") << pooler.Log();
  {
    Sql ro(pooler.Url("ro"));
    for (int i = 0; i < 20; ++i) ro.Scalar("SELECT 1");
    EXPECT_GT(ReplicaReads(pooler, "ro"), 0u) << Console(pooler, "SHOW REPLICAS");
    ro.Exec("INSERT INTO ledger VALUES (-1)");  // (writes go to the primary)
  }
  // A second pooler follows the same cluster, its `app` PAUSEd from the console: the cluster
  // moving on must not end the console's PAUSE.
  PoolerProcess second("trust", "\"postgres\" \"\"\n",
                       absl::StrCat("  app: {url: 'postgres://postgres@127.0.0.1:1/postgres', "
                                    "cluster: {name: pooled, etcd: [", etcd, "]}}\n"));
  ASSERT_TRUE(WaitFor([&] { return second.Log().find("follows cluster") != std::string::npos; },
                      seconds(30)))
      << second.Log();
  EXPECT_EQ(Console(second, "PAUSE app"), "PAUSE\n");
  LedgerWriter writer(0, pooler.Url("app"));
  ASSERT_TRUE(WaitFor([&] { return writer.acknowledged() > 50; }, seconds(30))) << pooler.Log();
  const int errors_before = writer.errors();

  cluster.Kill(cluster.Index(first));
  ASSERT_TRUE(WaitFor([&] { return cluster.Leader().value_or(first) != first; }, seconds(30)))
      << cluster.Logs();
  const int at_failover = writer.acknowledged();
  ASSERT_TRUE(WaitFor([&] { return writer.acknowledged() > at_failover + 50; }, seconds(60)))
      << pooler.Log() << cluster.Logs();
  writer.Stop();
  // The standby left streams from the new primary, and `ro` reads from it alone.
  EXPECT_TRUE(WaitFor([&] { return HealthyReplicas(pooler, "ro") == 1; }, seconds(30)))
      << Console(pooler, "SHOW REPLICAS") << pooler.Log();
  const int errors = writer.errors() - errors_before;
  std::printf("through the pooler: %d commits, %d errors across the failover\n",
              writer.acknowledged(), errors);
  // Only what was under way when the primary died fails; what came after waits for the new one.
  EXPECT_LE(errors, 3) << pooler.Log();
  EXPECT_NE(pooler.Log().find("follows cluster pooled's leader"), std::string::npos);
  // The second pooler followed too, and its `app` stayed PAUSEd until RESUME.
  const std::string address = cluster.Address(cluster.Index(*cluster.Leader()));
  ASSERT_TRUE(WaitFor(
      [&] {
        return second.Log().find("follows cluster pooled's leader at " + address) !=
               std::string::npos;
      },
      seconds(30)))
      << second.Log();
  EXPECT_EQ(DatabaseColumn(second, "app", 11), "1") << Console(second, "SHOW DATABASES");
  EXPECT_EQ(Console(second, "RESUME app"), "RESUME\n");
  {
    Sql through_second(second.Url("app"));
    through_second.Exec("INSERT INTO ledger VALUES (-2)");
  }
  // Synchronous: every acknowledged id is on the new primary (and an id whose commit came
  // back as an error may be there too: its outcome was not known).
  Sql sql(cluster.Url(cluster.Index(*cluster.Leader())));
  EXPECT_EQ(sql.Scalar(absl::StrCat("SELECT count(*) FROM ledger WHERE id IN (", writer.Ids(),
                                    ")")),
            std::to_string(writer.acknowledged()));
}

// The ids of `table` the jsonl file holds (inserts, updates, snapshot and backfill reads).
std::set<int> IdsIn(const std::string& jsonl) {
  std::set<int> ids;
  for (const nlohmann::json& e : ReadJsonlWritten(jsonl)) {
    if (e.contains("after") && e["after"].is_object() && e["after"].contains("id")) {
      ids.insert(e["after"]["id"].get<int>());
    }
  }
  return ids;
}

bool HoldsIds(const std::string& jsonl, int first, int last) {
  const std::set<int> ids = IdsIn(jsonl);
  for (int id = first; id <= last; ++id) {
    if (!ids.contains(id)) return false;
  }
  return true;
}

// A pipeline reading the cluster's primary: PostgreSQL 15 keeps no logical slot on standbys,
// so after a failover the slot is gone. The pipeline must stop, naming the gap and the way
// out, never start a new slot silently; after `pgflow snapshot` it goes on with a new slot and
// a copy of every table brings the sink up to date.
TEST_F(HaTest, APipelineOnAClusterStopsAtAFailoverAndGoesOnAfterACopy) {
  NodeCluster cluster({.name = "cdc", .etcd = etcd_->urls(), .synchronous = false});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  const std::string first = *cluster.Leader();
  {
    Sql sql(cluster.Url(cluster.Index(first)));
    sql.Exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50)");
  }
  TempDir dir;
  std::string hosts;
  for (int i = 0; i < kNodes; ++i) {
    absl::StrAppend(&hosts, hosts.empty() ? "" : ",", cluster.Address(i));
  }
  const std::string file = dir.File("cdc.yaml");
  const std::string out = dir.File("out.jsonl");
  WriteFile(file,
            absl::StrCat("pipeline: cdc\nsource:\n  postgres:\n    url: 'postgres://postgres@",
                         hosts, "/postgres?target_session_attrs=read-write'\n",
                         "    tables: [public.t]\nsinks:\n  out: {jsonl: {path: ", out,
                         "}, flush_interval: 50ms}\n"));
  auto run = std::make_unique<PgflowProcess>(std::vector<std::string>{"run", file},
                                             dir.File("run.log"));
  {
    Sql sql(cluster.Url(cluster.Index(first)));
    ASSERT_TRUE(WaitFor([&] { return HoldsIds(out, 1, 50); }, seconds(60)))
        << ReadFile(dir.File("run.log"));
    sql.Exec("INSERT INTO t SELECT generate_series(51, 100)");
    ASSERT_TRUE(WaitFor([&] { return HoldsIds(out, 51, 100); }, seconds(30)))
        << ReadFile(dir.File("run.log"));
  }

  cluster.Kill(cluster.Index(first));
  ASSERT_TRUE(WaitFor([&] { return cluster.Leader().value_or(first) != first; }, seconds(30)))
      << cluster.Logs();
  const int second = cluster.Index(*cluster.Leader());
  ASSERT_TRUE(WaitFor([&] { return Curl(cluster.Api(second, "/primary")).code == 200; },
                      seconds(30)));
  {
    Sql sql(cluster.Url(second));
    sql.Exec("INSERT INTO t SELECT generate_series(101, 150)");  // the gap
  }
  // Stopped, saying why and how to go on; no new slot made.
  EXPECT_EQ(run->Wait(seconds(90)), 1) << ReadFile(dir.File("run.log"));
  const std::string log = ReadFile(dir.File("run.log"));
  EXPECT_NE(log.find("replication slot pgflow_cdc of pipeline cdc is missing"), std::string::npos)
      << log;
  EXPECT_NE(log.find("were not read"), std::string::npos) << log;
  EXPECT_NE(log.find("pgflow snapshot " + file), std::string::npos) << log;
  {
    Sql sql(cluster.Url(second));
    EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_replication_slots"), "0");
  }
  EXPECT_FALSE(HoldsIds(out, 101, 150));

  // The way out: a copy of every table asked for, then the pipeline again.
  std::string said;
  ASSERT_EQ(RunPgflow({"snapshot", file, "--no-wait"}, &said), 0) << said;
  run = std::make_unique<PgflowProcess>(std::vector<std::string>{"run", file},
                                        dir.File("run2.log"));
  EXPECT_TRUE(WaitFor([&] { return HoldsIds(out, 101, 150); }, seconds(60)))
      << ReadFile(dir.File("run2.log"));
  {
    Sql sql(cluster.Url(second));
    sql.Exec("INSERT INTO t VALUES (151)");
  }
  EXPECT_TRUE(WaitFor([&] { return HoldsIds(out, 151, 151); }, seconds(30)))
      << ReadFile(dir.File("run2.log"));
  EXPECT_NE(ReadFile(dir.File("run2.log")).find("brings the sinks up to date"),
            std::string::npos);
  run->Signal(SIGTERM);
  EXPECT_EQ(run->Wait(seconds(30)), 0);
}

TEST_F(HaTest, ANodeRefusesRootAndABadFileWithAClearError) {
  TempDir dir;
  const std::string file = dir.File("node.yaml");
  WriteFile(file, "name: n1\ncluster: c\netcd: [http://127.0.0.1:1]\ndata_dir: /tmp/x\n"
                  "postgres: {listen: 127.0.0.1:5999}\napi: 127.0.0.1:0\n");
  std::string out;
  EXPECT_EQ(RunPgflow({"node", "--config", file}, &out), 2);
  EXPECT_NE(out.find("refuses to run as root"), std::string::npos) << out;
  WriteFile(file, "name: n1\ncluster: c\netcd: [127.0.0.1:1]\ndata_dir: /tmp/x\n"
                  "postgres: {listen: 127.0.0.1:5999}\napi: 127.0.0.1:0\n");
  EXPECT_EQ(RunPgflow({"cluster", "status", "--config", file}, &out), 2);
  EXPECT_NE(out.find("'127.0.0.1:1' is no etcd client url"), std::string::npos) << out;
  // etcd not answering: said, exit status 1.
  WriteFile(file, absl::StrCat("name: n1\ncluster: c\netcd: [http://127.0.0.1:",
                               FreeLoopbackPort(), "]\ndata_dir: /tmp/x\n",
                               "postgres: {listen: 127.0.0.1:5999}\napi: 127.0.0.1:0\n"));
  EXPECT_EQ(RunPgflow({"cluster", "status", "--config", file}, &out), 1);
  EXPECT_NE(out.find("etcd"), std::string::npos) << out;
}

}  // namespace
}  // namespace pgflow::testing
