#include "cluster/ha_decision.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::cluster {
namespace {

using ::testing::HasSubstr;
using State = ServerStatus::State;

NodeConfig Node(const std::string& name) {
  NodeConfig config;
  config.name = name;
  config.cluster = "main";
  config.maximum_lag_on_failover = 1000;
  return config;
}

ServerStatus Standby(uint64_t position, uint32_t timeline = 1) {
  ServerStatus status;
  status.state = State::kRunning;
  status.in_recovery = true;
  status.streaming = true;
  status.position = position;
  status.timeline = timeline;
  return status;
}

ServerStatus Primary(uint64_t position, uint32_t timeline = 1) {
  ServerStatus status = Standby(position, timeline);
  status.in_recovery = false;
  status.streaming = false;
  return status;
}

MemberView Running(const std::string& name, uint64_t position, uint32_t timeline = 1) {
  return MemberView{name, "replica", "running", timeline, position};
}

// A cluster whose leader's lease just ended: n1 was the primary, n2 and n3 its standbys.
ClusterView Leaderless(uint64_t last_position) {
  ClusterView view;
  view.initialized = true;
  view.last_position = last_position;
  view.members = {Running("n2", last_position), Running("n3", last_position)};
  return view;
}

TEST(HaDecisionTest, AnEmptyDirectoryInitializesANewClusterAndClonesAnExistingOne) {
  ServerStatus empty;
  ClusterView fresh;
  EXPECT_EQ(Decide(Node("n1"), fresh, empty, false).action, Action::kInitialize);
  ClusterView led;
  led.initialized = true;
  led.leader = "n2";
  EXPECT_EQ(Decide(Node("n1"), led, empty, false).action, Action::kClone);
  // Initialized but leaderless: nothing to clone from, and initdb would fork the cluster.
  ClusterView orphan;
  orphan.initialized = true;
  const Decision wait = Decide(Node("n1"), orphan, empty, false);
  EXPECT_EQ(wait.action, Action::kWait);
  EXPECT_THAT(wait.reason, HasSubstr("no leader to clone"));
}

TEST(HaDecisionTest, TheLeaderRenewsPromotesRestartsAndStepsDown) {
  ClusterView view = Leaderless(100);
  view.leader = "n1";
  EXPECT_EQ(Decide(Node("n1"), view, Primary(100), true).action, Action::kRenew);
  EXPECT_EQ(Decide(Node("n1"), view, Standby(100), true).action, Action::kPromote);
  ServerStatus stopped = Primary(100);
  stopped.state = State::kStopped;
  EXPECT_EQ(Decide(Node("n1"), view, stopped, true).action, Action::kStart);
  view.switchover_to = "n3";
  view.switchover_from = "n1";
  EXPECT_EQ(Decide(Node("n1"), view, Primary(100), true).action, Action::kStepDown);
  view.switchover_to = "";
  EXPECT_EQ(Decide(Node("n1"), view, Primary(100), true).action, Action::kStepDown);
}

TEST(HaDecisionTest, ALeaderWhoseKeyIsGoneOrTakenDemotesAtOnce) {
  ClusterView view = Leaderless(100);
  Decision gone = Decide(Node("n1"), view, Primary(100), true);
  EXPECT_EQ(gone.action, Action::kDemote);
  EXPECT_THAT(gone.reason, HasSubstr("gone"));
  view.leader = "n2";
  EXPECT_EQ(Decide(Node("n1"), view, Primary(100), true).action, Action::kDemote);
}

TEST(HaDecisionTest, AFollowerFollowsAndAPrimaryUnderAnotherLeaderIsFenced) {
  ClusterView view = Leaderless(100);
  view.leader = "n1";
  EXPECT_EQ(Decide(Node("n2"), view, Standby(100), false).action, Action::kFollow);
  const Decision fenced = Decide(Node("n2"), view, Primary(100), false);
  EXPECT_EQ(fenced.action, Action::kDemote);
  EXPECT_THAT(fenced.reason, HasSubstr("n1 leads"));
  ServerStatus stopped = Primary(100);
  stopped.state = State::kStopped;
  EXPECT_EQ(Decide(Node("n2"), view, stopped, false).action, Action::kStart);
}

TEST(HaDecisionTest, AKeyNamingThisNodeFromBeforeARestartIsNotTrusted) {
  ClusterView view = Leaderless(100);
  view.leader = "n2";
  const Decision wait = Decide(Node("n2"), view, Standby(100), false);
  EXPECT_EQ(wait.action, Action::kWait);
  EXPECT_THAT(wait.reason, HasSubstr("expire"));
}

TEST(HaDecisionTest, TheMostAdvancedStandbyTakesTheLeadAndTiesGoByName) {
  ClusterView view = Leaderless(100);
  view.members = {Running("n2", 100), Running("n3", 90)};
  EXPECT_EQ(Decide(Node("n2"), view, Standby(100), false).action, Action::kTakeLead);
  const Decision behind = Decide(Node("n3"), view, Standby(90), false);
  EXPECT_EQ(behind.action, Action::kWait);
  EXPECT_THAT(behind.reason, HasSubstr("n2 is further ahead"));
  view.members = {Running("n2", 100), Running("n3", 100)};
  EXPECT_EQ(Decide(Node("n2"), view, Standby(100), false).action, Action::kTakeLead);
  EXPECT_THAT(Decide(Node("n3"), view, Standby(100), false).reason,
              HasSubstr("n2 is as far ahead and first by name"));
  // A later timeline wins whatever the positions.
  view.members = {Running("n2", 10, 2), Running("n3", 100, 1)};
  EXPECT_THAT(Decide(Node("n3"), view, Standby(100, 1), false).reason,
              HasSubstr("later timeline"));
  // A member that is not running is no rival.
  view.members = {Running("n2", 100), Running("n3", 90)};
  view.members[0].state = "stopped";
  EXPECT_EQ(Decide(Node("n3"), view, Standby(90), false).action, Action::kTakeLead);
}

TEST(HaDecisionTest, AStandbyPastMaximumLagSaysWhyInsteadOfLeading) {
  ClusterView view = Leaderless(5000);
  view.members = {Running("n2", 3000)};
  const Decision decision = Decide(Node("n2"), view, Standby(3000), false);
  EXPECT_EQ(decision.action, Action::kWait);
  EXPECT_THAT(decision.reason, HasSubstr("2000 bytes behind"));
  EXPECT_THAT(decision.reason, HasSubstr("maximum_lag_on_failover"));
  NodeConfig unbounded = Node("n2");
  unbounded.maximum_lag_on_failover = 0;
  EXPECT_EQ(Decide(unbounded, view, Standby(3000), false).action, Action::kTakeLead);
}

TEST(HaDecisionTest, SynchronousModeLetsOnlyTheSynchronousStandbyLead) {
  NodeConfig n2 = Node("n2");
  NodeConfig n3 = Node("n3");
  n2.synchronous = n3.synchronous = true;
  ClusterView view = Leaderless(100);
  view.members = {Running("n2", 100), Running("n3", 100)};
  // No synchronous standby: none is known to hold every acknowledged commit.
  EXPECT_THAT(Decide(n2, view, Standby(100), false).reason,
              HasSubstr("no standby was synchronous"));
  view.synchronous = {"n3"};
  EXPECT_THAT(Decide(n2, view, Standby(100), false).reason,
              HasSubstr("the synchronous standby is n3"));
  // n3 leads though n2 is first by name, even further ahead: only n3 is known to hold every
  // acknowledged commit, and n2 may never lead.
  view.members = {Running("n2", 100), Running("n3", 100)};
  EXPECT_EQ(Decide(n3, view, Standby(100), false).action, Action::kTakeLead);
  view.members = {Running("n2", 120), Running("n3", 100)};
  EXPECT_EQ(Decide(n3, view, Standby(100), false).action, Action::kTakeLead);
  // While it changes both are named, and both must be here to be compared.
  view.synchronous = {"n2", "n3"};
  view.members = {Running("n3", 100)};
  EXPECT_THAT(Decide(n3, view, Standby(100), false).reason, HasSubstr("n2, also named"));
  // Here but its server down: it may hold commits n3 lacks, and cannot be compared with.
  view.members = {Running("n2", 100), Running("n3", 100)};
  view.members[0].state = "stopped";
  EXPECT_THAT(Decide(n3, view, Standby(100), false).reason, HasSubstr("n2, also named"));
  // The synchronous standby holds every acknowledged commit however far behind the last
  // published position: the lag guard does not hold it back.
  view.synchronous = {"n3"};
  view.last_position = 100000;
  EXPECT_EQ(Decide(n3, view, Standby(100), false).action, Action::kTakeLead);
}

TEST(HaDecisionTest, TheClustersSynchronousSettingOverridesTheNodesFile) {
  ClusterView view = Leaderless(100);
  view.synchronous = {"n3"};
  // The file says off, the cluster on: only the synchronous standby may lead.
  view.synchronous_mode = true;
  EXPECT_THAT(Decide(Node("n2"), view, Standby(100), false).reason,
              HasSubstr("the synchronous standby is n3"));
  // The file says on, the cluster off: `sync` (left over) is no reason to wait.
  NodeConfig n2 = Node("n2");
  n2.synchronous = true;
  view.synchronous_mode = false;
  EXPECT_EQ(Decide(n2, view, Standby(100), false).action, Action::kTakeLead);
  // Not written yet: the file's.
  view.synchronous_mode.reset();
  EXPECT_THAT(Decide(n2, view, Standby(100), false).reason,
              HasSubstr("the synchronous standby is n3"));
  // Asked for (on) but not applied yet (off): the server still acknowledges alone, so the
  // elections go by the applied mode, and the other way round.
  view.synchronous_mode = true;
  view.synchronous_applied = false;
  EXPECT_EQ(Decide(Node("n2"), view, Standby(100), false).action, Action::kTakeLead);
  view.synchronous_mode = false;
  view.synchronous_applied = true;
  EXPECT_THAT(Decide(Node("n2"), view, Standby(100), false).reason,
              HasSubstr("the synchronous standby is n3"));
}

TEST(HaDecisionTest, ASwitchoverToAnotherNodeHoldsTheRestBack) {
  ClusterView view = Leaderless(100);
  view.switchover_to = "n3";
  EXPECT_THAT(Decide(Node("n2"), view, Standby(100), false).reason,
              HasSubstr("switchover to n3"));
  // The leader that handed the lead over (to the best placed) does not take it back, however
  // placed it is.
  view.switchover_to = "";
  view.switchover_from = "n1";
  view.members = {Running("n2", 90), Running("n3", 90)};
  EXPECT_THAT(Decide(Node("n1"), view, Standby(100), false).reason, HasSubstr("handing the lead"));
  EXPECT_EQ(Decide(Node("n2"), view, Standby(90), false).action, Action::kTakeLead);
  // Nor does it hold the others back, running as a standby as far ahead and first by name.
  view.members = {Running("n1", 90), Running("n2", 90), Running("n3", 90)};
  EXPECT_EQ(Decide(Node("n2"), view, Standby(90), false).action, Action::kTakeLead);
  view.switchover_to = "n3";
  // Its target does not yield to one as far ahead and first by name, only to one further.
  view.members = {Running("n2", 100), Running("n3", 100)};
  EXPECT_EQ(Decide(Node("n3"), view, Standby(100), false).action, Action::kTakeLead);
  view.members = {Running("n2", 110), Running("n3", 100)};
  EXPECT_EQ(Decide(Node("n3"), view, Standby(100), false).action, Action::kWait);
}

TEST(HaDecisionTest, AStoppedServerWithNoLeaderStartsAsAStandby) {
  ServerStatus stopped = Primary(100);
  stopped.state = State::kStopped;
  const Decision decision = Decide(Node("n2"), Leaderless(100), stopped, false);
  EXPECT_EQ(decision.action, Action::kStart);
  EXPECT_THAT(decision.reason, HasSubstr("standby"));
}

}  // namespace
}  // namespace pgflow::cluster
