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
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "nlohmann/json.hpp"
#include "tests/integration/support/etcd_cluster.h"
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

// Commits one row at a time through `url` from a thread of its own (reconnecting after an
// error), recording the ids acknowledged and the errors seen.
class PoolerWriter {
 public:
  explicit PoolerWriter(std::string url) : url_(std::move(url)), thread_([this] { Run(); }) {}
  ~PoolerWriter() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int acknowledged() const { return acknowledged_.load(); }
  int errors() const { return errors_.load(); }
  // The ids acknowledged, once stopped.
  const std::vector<int>& ids() const { return ids_; }

 private:
  void Run() {
    PGconn* conn = nullptr;
    for (int id = 1; !stop_.load(); ++id) {
      if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
        PQfinish(conn);
        conn = PQconnectdb(absl::StrCat(url_, "?connect_timeout=5").c_str());
      }
      PGresult* r = PQexec(conn, absl::StrCat("INSERT INTO pooled VALUES (", id, ")").c_str());
      if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        ids_.push_back(id);
        acknowledged_.fetch_add(1);
      } else {
        errors_.fetch_add(1);
        std::this_thread::sleep_for(milliseconds(20));
      }
      PQclear(r);
    }
    PQfinish(conn);
  }

  const std::string url_;
  std::atomic<bool> stop_{false};
  std::atomic<int> acknowledged_{0};
  std::atomic<int> errors_{0};
  std::vector<int> ids_;
  std::thread thread_;
};

TEST_F(HaTest, APoolerFollowingTheClusterCarriesItsClientsOverAFailover) {
  NodeCluster cluster({.name = "pooled", .etcd = etcd_->urls(), .synchronous = true});
  for (int i = 0; i < kNodes; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  const std::string first = *cluster.Leader();
  {
    Sql sql(cluster.Url(cluster.Index(first)));
    sql.Exec("CREATE TABLE pooled (id int PRIMARY KEY)");
  }
  std::string etcd;
  for (const std::string& url : etcd_->urls()) {
    absl::StrAppend(&etcd, etcd.empty() ? "" : ", ", url);
  }
  // (The url's host is nobody's: the cluster says where the primary is.)
  PoolerProcess pooler("trust", "\"postgres\" \"\"\n",
                       absl::StrCat("  app: {url: 'postgres://postgres@127.0.0.1:1/postgres', "
                                    "cluster: {name: pooled, etcd: [", etcd, "]}}\n"));
  PoolerWriter writer(pooler.Url("app"));
  ASSERT_TRUE(WaitFor([&] { return writer.acknowledged() > 50; }, seconds(30))) << pooler.Log();
  const int errors_before = writer.errors();

  cluster.Kill(cluster.Index(first));
  ASSERT_TRUE(WaitFor([&] { return cluster.Leader().value_or(first) != first; }, seconds(30)))
      << cluster.Logs();
  const int at_failover = writer.acknowledged();
  ASSERT_TRUE(WaitFor([&] { return writer.acknowledged() > at_failover + 50; }, seconds(60)))
      << pooler.Log() << cluster.Logs();
  writer.Stop();
  const int errors = writer.errors() - errors_before;
  std::printf("through the pooler: %d commits, %d errors across the failover\n",
              writer.acknowledged(), errors);
  // Only what was under way when the primary died fails; what came after waits for the new one.
  EXPECT_LE(errors, 3) << pooler.Log();
  EXPECT_NE(pooler.Log().find("follows cluster pooled's leader"), std::string::npos);
  // Synchronous: every acknowledged id is on the new primary (and an id whose commit came
  // back as an error may be there too: its outcome was not known).
  Sql sql(cluster.Url(cluster.Index(*cluster.Leader())));
  EXPECT_EQ(sql.Scalar(absl::StrCat("SELECT count(*) FROM pooled WHERE id IN (",
                                    absl::StrJoin(writer.ids(), ","), ")")),
            std::to_string(writer.ids().size()));
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
