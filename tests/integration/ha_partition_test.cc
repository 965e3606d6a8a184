// High availability under real faults (issue 46), in the manner of Patroni's Jepsen suite:
// three hosts, each a network namespace of its own (NetnsLab: veth links to one bridge) with an
// etcd member and a `pgflow node` beside its PostgreSQL server, and a pooler following the
// cluster from the tests' own namespace.
//
// Writers commit unique ids the whole time: one through the pooler, and one on each host
// straight to that host's own server (a client on the primary's side of a partition). Each
// acknowledged write records the server's system identifier and timeline and when it was sent
// and acknowledged. The faults, one after another under that load: the primary's host cut off
// from everyone (then healed), the primary's postmaster killed with -9, the primary's node
// killed with -9 (then started again), the primary stopped (SIGSTOP) longer than the ttl (then
// continued), a switchover, one etcd member killed (then started again). After each the
// cluster must converge, every node streaming from one primary.
//
// What is checked at the end, over the whole ledger: two timelines never took writes at once
// (no write acknowledged on a timeline was sent after a later timeline had acknowledged one);
// with `synchronous: on` every acknowledged id is on the final primary, with it off the ids
// lost are counted and were all acknowledged after a fault began (none that had been
// replicated before); the pooler's client saw at most the error of the transaction under way
// at each fault.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/integration/support/etcd_cluster.h"
#include "tests/integration/support/ledger_writer.h"
#include "tests/integration/support/netns_lab.h"
#include "tests/integration/support/node_cluster.h"
#include "tests/integration/support/pooler_support.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kHosts = NodeCluster::kNodes;

using Write = LedgerWrite;

// "Two timelines took writes at once": for each pair of servers (system identifier and
// timeline), the later one's first acknowledgement came before a write the earlier one
// acknowledged had even been sent. Returns the descriptions of each such overlap.
std::vector<std::string> Overlaps(const std::vector<Write>& writes) {
  struct Span {
    Clock::time_point first_acknowledged = Clock::time_point::max();
    Clock::time_point last_sent = Clock::time_point::min();
    int writes = 0;
  };
  std::map<std::string, Span> spans;
  for (const Write& w : writes) {
    Span& s = spans[w.server];
    s.first_acknowledged = std::min(s.first_acknowledged, w.acknowledged);
    s.last_sent = std::max(s.last_sent, w.sent);
    ++s.writes;
  }
  std::vector<std::string> overlaps;
  for (const auto& [a, earlier] : spans) {
    for (const auto& [b, later] : spans) {
      if (a == b || earlier.first_acknowledged > later.first_acknowledged) continue;
      if (earlier.last_sent > later.first_acknowledged) {
        overlaps.push_back(absl::StrCat(
            a, " (", earlier.writes, " writes) took a write sent ",
            std::chrono::duration_cast<milliseconds>(earlier.last_sent -
                                                     later.first_acknowledged)
                .count(),
            " ms after ", b, " had acknowledged its first"));
      }
    }
  }
  return overlaps;
}

// The time of day, as the nodes' logs write it (to read the test's steps beside them).
std::string Now() { return absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()); }

class HaPartitionTest : public ::testing::TestWithParam<bool> {};

TEST_P(HaPartitionTest, NoTwoPrimariesAndNoAcknowledgedWriteLostUnderFaults) {
  const bool synchronous = GetParam();
  NetnsLab lab(kHosts);
  std::vector<std::string> hosts;
  for (int i = 0; i < kHosts; ++i) hosts.push_back(lab.address(i));
  EtcdCluster etcd(hosts, [&lab](int i) { lab.Enter(i); });
  NodeCluster cluster({.name = "jepsen", .etcd = etcd.urls(), .synchronous = synchronous,
                       .lab = &lab});
  for (int i = 0; i < kHosts; ++i) cluster.Start(i);
  ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120))) << cluster.Logs();
  {
    Sql sql(cluster.Url(cluster.Index(*cluster.Leader())));
    sql.Exec("CREATE TABLE ledger (id bigint PRIMARY KEY)");
  }

  // (The url's host is nobody's: the cluster says where the primary is. Keepalives: a
  // connection to a primary cut off is given up within seconds.)
  PoolerProcess pooler(
      "trust", "\"postgres\" \"\"\n",
      absl::StrCat("  app: {url: 'postgres://postgres@127.0.0.1:1/postgres?keepalives_idle=1&"
                   "keepalives_interval=1&keepalives_count=2&tcp_user_timeout=3000', "
                   "cluster: {name: jepsen, etcd: [",
                   absl::StrJoin(etcd.urls(), ", "), "]}}\n"));
  std::vector<std::unique_ptr<LedgerWriter>> writers;
  writers.push_back(std::make_unique<LedgerWriter>(0, pooler.Url("app"), &lab, -1));
  for (int i = 0; i < kHosts; ++i) {
    writers.push_back(std::make_unique<LedgerWriter>(i + 1, cluster.Url(i), &lab, i));
  }
  LedgerWriter& through_pooler = *writers[0];
  auto progress = [&](int more) {
    const int from = through_pooler.acknowledged();
    return WaitFor([&] { return through_pooler.acknowledged() >= from + more; }, seconds(60));
  };
  ASSERT_TRUE(progress(50)) << pooler.Log() << cluster.Logs();

  // Each fault's span: from its start until the cluster had converged after it.
  std::vector<std::pair<Clock::time_point, Clock::time_point>> faults;
  std::vector<int> pooler_errors;
  // Runs `fault` on the leader (its index), waits for writes through the pooler to go on and
  // the cluster to converge, and records the pooler client's errors.
  auto under_fault = [&](const char* what, auto fault) {
    SCOPED_TRACE(what);
    const std::string leader = *cluster.Leader();
    const int errors_before = through_pooler.errors();
    std::printf("%s %s (leader %s)\n", Now().c_str(), what, leader.c_str());
    const Clock::time_point began = Clock::now();
    fault(cluster.Index(leader));
    ASSERT_TRUE(progress(50)) << what << "\n" << pooler.Log() << cluster.Logs();
    ASSERT_TRUE(WaitFor([&] { return cluster.Converged(); }, seconds(120)))
        << what << "\n" << cluster.Logs();
    faults.emplace_back(began, Clock::now());
    pooler_errors.push_back(through_pooler.errors() - errors_before);
    std::printf("%s %s: over; the pooler's client saw %d errors\n", Now().c_str(), what,
                pooler_errors.back());
  };

  under_fault("the primary's host cut off", [&](int leader) {
    lab.Cut(leader);
    const std::string old_leader = absl::StrCat("n", leader + 1);
    const int other = (leader + 1) % kHosts;
    EXPECT_TRUE(WaitFor([&] { return cluster.Leader(other).value_or(old_leader) != old_leader; },
                        seconds(30)))
        << cluster.Logs();
    std::this_thread::sleep_for(seconds(5));  // (the new primary takes writes a while)
    lab.Heal(leader);
  });
  if (HasFatalFailure()) return;
  under_fault("the primary's postmaster killed", [&](int leader) {
    const std::vector<pid_t> server = cluster.ServerPids(leader);
    ASSERT_FALSE(server.empty());
    ::kill(server[0], SIGKILL);
  });
  if (HasFatalFailure()) return;
  under_fault("the primary's node killed", [&](int leader) {
    cluster.Kill(leader);
    const std::string old_leader = absl::StrCat("n", leader + 1);
    EXPECT_TRUE(WaitFor([&] { return cluster.Leader().value_or(old_leader) != old_leader; },
                        seconds(30)))
        << cluster.Logs();
    cluster.Start(leader);
  });
  if (HasFatalFailure()) return;
  under_fault("the primary stopped longer than the ttl", [&](int leader) {
    // (Every process of it: each backend is a session leader of its own.)
    const std::vector<pid_t> server = cluster.ServerPids(leader);
    ASSERT_GT(server.size(), 3u);
    for (pid_t pid : server) ::kill(pid, SIGSTOP);
    std::this_thread::sleep_for(seconds(8));
    for (pid_t pid : server) ::kill(pid, SIGCONT);
  });
  if (HasFatalFailure()) return;
  under_fault("a switchover", [&](int leader) {
    std::string out;
    EXPECT_EQ(RunPgflow({"cluster", "switchover", "--config", cluster.file(leader)}, &out), 0)
        << out << cluster.Logs();
  });
  if (HasFatalFailure()) return;
  // (The pooler paused while the lead was handed over: nothing under way was cut.)
  EXPECT_EQ(pooler_errors.back(), 0) << "errors through the pooler in a switchover\n"
                                     << pooler.Log();
  under_fault("an etcd member killed", [&](int leader) {
    etcd.Kill(leader);
    ASSERT_TRUE(progress(50)) << cluster.Logs();
    etcd.Start(leader);
  });
  if (HasFatalFailure()) return;

  for (auto& writer : writers) writer->Stop();
  std::vector<Write> writes;
  int direct_errors = 0;
  for (size_t w = 0; w < writers.size(); ++w) {
    const std::vector<Write> some = writers[w]->writes();
    writes.insert(writes.end(), some.begin(), some.end());
    if (w > 0) direct_errors += writers[w]->errors();
  }
  for (const std::string& overlap : Overlaps(writes)) ADD_FAILURE() << overlap;

  std::set<int64_t> kept;
  {
    Sql sql(cluster.Url(cluster.Index(*cluster.Leader())));
    PGresult* r = PQexec(sql.conn(), "SELECT id FROM ledger");
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int row = 0; row < PQntuples(r); ++row) kept.insert(std::stoll(PQgetvalue(r, row, 0)));
    PQclear(r);
  }
  int lost = 0;
  for (const Write& w : writes) {
    if (kept.contains(w.id)) continue;
    ++lost;
    // Lost: acknowledged by a primary while a fault was under way, not before it (what was
    // acknowledged before had reached the replicas) nor once the cluster had recovered.
    const bool during_a_fault = std::any_of(faults.begin(), faults.end(), [&](auto fault) {
      return w.acknowledged >= fault.first - milliseconds(500) &&
             w.acknowledged <= fault.second;
    });
    EXPECT_TRUE(during_a_fault) << "id " << w.id << " on " << w.server
                                << " was acknowledged outside every fault, and lost";
  }
  std::set<std::string> servers;
  for (const Write& w : writes) servers.insert(w.server);
  std::printf("%s: %zu writes acknowledged on %zu timelines, %d lost; %d errors on the hosts' "
              "own writers (replicas refuse writes)\n",
              synchronous ? "synchronous" : "asynchronous", writes.size(), servers.size(), lost,
              direct_errors);
  if (synchronous) {
    EXPECT_EQ(lost, 0) << "acknowledged writes lost in synchronous mode";
  }
  for (int errors : pooler_errors) EXPECT_LE(errors, 3) << pooler.Log();
}

INSTANTIATE_TEST_SUITE_P(Modes, HaPartitionTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Synchronous" : "Asynchronous";
                         });

}  // namespace
}  // namespace pgflow::testing
