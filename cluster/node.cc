#include "cluster/node.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/log.h"
#include "engine/lsn.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view kMembers = "members/";
constexpr std::string_view kReinit = "reinit/";

int64_t Nanos(steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

const char* StateName(ServerStatus::State state) {
  switch (state) {
    case ServerStatus::State::kEmpty: return "empty";
    case ServerStatus::State::kStopped: return "stopped";
    case ServerStatus::State::kRunning: return "running";
  }
  return "?";
}

// "1048576", "16MB", "64kB", "1GB" (units of 1024): bytes, or nullopt.
std::optional<uint64_t> ParseLag(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(text[digits])) ++digits;
  uint64_t value = 0;
  if (digits == 0 || !absl::SimpleAtoi(std::string(text.substr(0, digits)), &value)) {
    return std::nullopt;
  }
  const std::string unit = absl::AsciiStrToLower(std::string(text.substr(digits)));
  if (unit.empty() || unit == "b") return value;
  if (unit == "kb" || unit == "kib") return value << 10;
  if (unit == "mb" || unit == "mib") return value << 20;
  if (unit == "gb" || unit == "gib") return value << 30;
  return std::nullopt;
}

}  // namespace

std::string ClusterKey(std::string_view cluster, std::string_view name) {
  return Cat("/pgflow/", cluster, "/", name);
}

absl::StatusOr<ClusterRead> ReadCluster(Etcd& etcd, const std::string& cluster) {
  const std::string prefix = ClusterKey(cluster, "");
  absl::StatusOr<std::vector<EtcdKeyValue>> keys = etcd.List(prefix);
  if (!keys.ok()) return keys.status();
  ClusterRead read;
  for (const EtcdKeyValue& kv : *keys) {
    const std::string_view name = std::string_view(kv.key).substr(prefix.size());
    if (name == "leader") {
      read.view.leader = kv.value;
      read.leader_lease = kv.lease;
    } else if (name == "initialize") {
      read.view.initialized = true;
    } else if (name == "position") {
      (void)absl::SimpleAtoi(kv.value, &read.view.last_position);
    } else if (name == "config") {
      const json config = json::parse(kv.value, nullptr, /*allow_exceptions=*/false);
      if (config.is_object() && config.contains("synchronous") &&
          config["synchronous"].is_boolean()) {
        read.view.synchronous_mode = config["synchronous"].get<bool>();
      } else {
        read.view.config_problem =
            !config.is_object() ? "not a JSON object"
                                : (config.contains("synchronous") ? "its synchronous is no boolean"
                                                                  : "it has no synchronous");
      }
    } else if (name == "sync_mode") {
      if (kv.value == "on" || kv.value == "off") read.view.synchronous_applied = kv.value == "on";
    } else if (name == "sync") {
      read.view.synchronous = absl::StrSplit(kv.value, ',', absl::SkipEmpty());
    } else if (name == "switchover") {
      const json request = json::parse(kv.value, nullptr, /*allow_exceptions=*/false);
      if (!request.is_object()) continue;
      read.view.switchover_to = request.value("to", "");
      read.view.switchover_from = request.value("from", "");
    } else if (name.starts_with(kReinit)) {
      read.reinit.emplace_back(name.substr(kReinit.size()));
    } else if (name.starts_with(kMembers)) {
      json member = json::parse(kv.value, nullptr, /*allow_exceptions=*/false);
      if (!member.is_object()) continue;  // (not one of ours)
      MemberView view;
      view.name = std::string(name.substr(kMembers.size()));
      view.role = member.value("role", "");
      view.state = member.value("state", "");
      view.timeline = member.value("timeline", 0u);
      view.position = member.value("position", uint64_t{0});
      read.view.members.push_back(view);
      read.members[view.name] = std::move(member);
    }
  }
  return read;
}

Node::Node(NodeConfig config)
    : config_(std::move(config)),
      // (An etcd call tries each member in turn: all of them within retry_timeout.)
      etcd_(config_.etcd, milliseconds(std::max<int64_t>(
                              500, config_.retry_timeout.count() /
                                       std::max<int64_t>(1, config_.etcd.size())))),
      server_(config_) {}

Node::~Node() {
  fence_stop_.store(true);
  if (fence_thread_.joinable()) fence_thread_.join();
  if (api_ != nullptr) api_->Stop();
  (void)server_.Stop(/*fast=*/true);
  if (holds_lead_) (void)etcd_.DeleteIf(Key("leader"), config_.name);
  if (lease_ != 0) (void)etcd_.Revoke(lease_);
}

absl::Status Node::Run(const StopSignal& stop) {
  if (!config_.api.empty()) {
    AdminServerOptions options;
    options.listen = config_.api;
    options.pages = [this](std::string_view path, std::string_view query) {
      return Page(path, query);
    };
    api_ = std::make_unique<AdminServer>(std::move(options), &metrics_, nullptr);
    if (absl::Status s = api_->Start(); !s.ok()) return s;
    LogInfo("node %s: API on port %d: /primary /replica /health /status /metrics", config_.name,
            api_->port());
  }
  if (server_.Read().state == ServerStatus::State::kRunning) {
    // A server this node did not start could not be fenced: stopped, then run as the node's.
    LogWarning("node %s: a server already runs in %s: stopping it to run it as the node's",
               config_.name, config_.data_dir);
    if (absl::Status s = server_.StopForeign(); !s.ok()) return s;
  }
  const int collector = metrics_.AddCollector([this] { Collect(); });
  fence_thread_ = std::thread([this] { FenceLoop(); });
  LogInfo("node %s: cluster %s, etcd %s, ttl %d ms, loop_wait %d ms", config_.name,
          config_.cluster, absl::StrJoin(config_.etcd, ","), config_.ttl.count(),
          config_.loop_wait.count());
  while (!stop.requested()) {
    const auto next = steady_clock::now() + Round();
    while (!stop.requested() && steady_clock::now() < next) {
      std::this_thread::sleep_for(std::min<steady_clock::duration>(
          milliseconds(50), next - steady_clock::now()));
    }
  }
  LogInfo("node %s: stopping", config_.name);
  metrics_.RemoveCollector(collector);
  return absl::OkStatus();
}

void Node::Collect() {
  absl::MutexLock lock(&mu_);
  const MetricLabels labels = {{"node", config_.name}, {"cluster", config_.cluster}};
  metrics_.GetGauge("pgflow_node_leader", "1 while this node holds the cluster's lead", labels)
      ->Set(leading_ ? 1 : 0);
  metrics_.GetGauge("pgflow_node_server_running", "1 while the node's server answers", labels)
      ->Set(status_.state == ServerStatus::State::kRunning ? 1 : 0);
  metrics_.GetGauge("pgflow_node_timeline", "The server's timeline", labels)
      ->Set(static_cast<double>(status_.timeline));
  metrics_.GetGauge("pgflow_node_wal_position_bytes",
                    "The server's WAL position (a primary's insert, a standby's received)", labels)
      ->Set(static_cast<double>(status_.position));
  metrics_.GetGauge("pgflow_node_lag_bytes",
                    "Bytes behind the leader's last published position (0 on the leader)", labels)
      ->Set(static_cast<double>(leader_position_ > status_.position
                                    ? leader_position_ - status_.position
                                    : 0));
}

void Node::FenceLoop() {
  while (!fence_stop_.load()) {
    const int64_t at = fence_at_.load();
    if (at != 0 && Nanos(steady_clock::now()) >= at) {
      // (Killed again at each pass until the loop has dropped the lead: a server it started
      // meanwhile goes too.)
      if (!fenced_.exchange(true)) {
        LogError("node %s: the lead's lease was not renewed in time: killing the server before "
                 "another node can take the lead",
                 config_.name);
      }
      server_.Kill();
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

void Node::Fence(const std::string& why) {
  fence_at_.store(0);
  if (holds_lead_) LogError("node %s: %s: stopping the server at once", config_.name, why);
  server_.Kill();
  (void)server_.Stop(/*fast=*/false);  // (reaps it)
  holds_lead_ = false;
}

void Node::RenewLease() {
  auto sent = steady_clock::now();
  // (Rounded up: etcd may keep the lease longer than the node counts on, never shorter.)
  const int64_t ttl_seconds = (config_.ttl.count() + 999) / 1000;
  if (lease_ == 0) {
    absl::StatusOr<int64_t> lease = etcd_.Grant(ttl_seconds);
    if (!lease.ok()) {
      LogWarning("node %s: %s", config_.name, lease.status().message());
      return;
    }
    lease_ = *lease;
    renewed_ = sent;
    return;
  }
  absl::StatusOr<int64_t> left = etcd_.KeepAlive(lease_);
  // The leader tries again until its fence would fire: etcd electing a leader of its own (its
  // leader's machine lost, say) stalls every call for a second or two, well within the lease.
  while (!left.ok() && holds_lead_ && !fenced_.load() &&
         Nanos(steady_clock::now() + milliseconds(200)) < fence_at_.load()) {
    LogWarning("node %s: renewing its lease (trying again): %s", config_.name,
               left.status().message());
    std::this_thread::sleep_for(milliseconds(100));
    sent = steady_clock::now();
    left = etcd_.KeepAlive(lease_);
  }
  if (!left.ok()) {
    LogWarning("node %s: renewing its lease: %s", config_.name, left.status().message());
    return;
  }
  if (*left > 0) {
    renewed_ = sent;
    // (Not once the fence fired: the lead is given up first, at the next round's start.)
    if (holds_lead_ && !fenced_.load()) {
      fence_at_.store(Nanos(sent + config_.ttl - config_.retry_timeout));
    }
    return;
  }
  lease_ = 0;  // (gone: a new one next round)
  if (holds_lead_) Fence("its lease ended");
}

milliseconds Node::Round() {
  if (fenced_.load()) {
    // The fence fired: the lead is dropped (and its key, if it is still held by this node's
    // lease) before anything else; only then does the fence stand down.
    holds_lead_ = false;
    (void)etcd_.DeleteIf(Key("leader"), config_.name);
    fence_at_.store(0);
    fenced_.store(false);
    (void)server_.Stop(/*fast=*/false);  // (reaps it)
  }
  RenewLease();
  if (fenced_.load()) return milliseconds(0);  // (fired meanwhile: handled above, at once)
  const auto reading = steady_clock::now();
  ServerStatus status = server_.Read();
  if (status.state == ServerStatus::State::kStopped && server_.Alive() &&
      steady_clock::now() - reading < milliseconds(500)) {
    // One read refused at once (a connection at max_connections, say) is no stopped server:
    // read again before telling anyone, or whoever follows the leader would hold its clients
    // until the next round. (One that timed out is looked at below.)
    std::this_thread::sleep_for(milliseconds(50));
    status = server_.Read();
  }
  if (status.state == ServerStatus::State::kStopped && server_.Alive() &&
      !server_.Answers(1)) {
    // Its process runs but does not answer at all (stopped with SIGSTOP, say; one starting or
    // recovering rejects connections, which is an answer): past retry_timeout it is killed and
    // started again like a crashed one. It may hold clients' sessions that would write once
    // it woke.
    const auto now = steady_clock::now();
    if (!unanswered_since_.has_value()) unanswered_since_ = now;
    if (now - *unanswered_since_ >= config_.retry_timeout) {
      LogError("node %s: its server has not answered for %d ms: killing it", config_.name,
               std::chrono::duration_cast<milliseconds>(now - *unanswered_since_).count());
      server_.Kill();
      (void)server_.Stop(/*fast=*/false);  // (reaps it)
      unanswered_since_.reset();
    }
    return milliseconds(std::min<int64_t>(500, config_.loop_wait.count()));
  }
  unanswered_since_.reset();
  absl::StatusOr<ClusterRead> cluster = ReadCluster(etcd_, config_.cluster);
  if (!cluster.ok()) {
    LogWarning("node %s: reading the cluster: %s", config_.name, cluster.status().message());
    return milliseconds(std::min<int64_t>(1000, config_.loop_wait.count()));
  }
  if (!holds_lead_ && cluster->view.leader == config_.name && lease_ != 0 &&
      cluster->leader_lease == lease_) {
    // The key this node gave up is still held by its lease (a delete that failed): again.
    (void)etcd_.DeleteIf(Key("leader"), config_.name);
    return milliseconds(std::min<int64_t>(500, config_.loop_wait.count()));
  }
  if (std::find(cluster->reinit.begin(), cluster->reinit.end(), config_.name) !=
      cluster->reinit.end()) {
    Reinitialize(*cluster);
    return milliseconds(std::min<int64_t>(500, config_.loop_wait.count()));
  }
  if (cluster->view.leader.has_value()) {
    election_published_ = false;
    lease_ran_out_ = false;
  } else {
    if (ending_lease_.has_value() && !lease_ran_out_) {
      // This node watched the leader's lease through its last second, publishing its position
      // each round as every standby did. The key is gone: if the lease went with it, the lease
      // ended unrenewed (etcd swept it, or a rival revoked it with WatchLeaderLease's proof), and
      // what revoking proves holds here too. (A leader giving the key up deletes the key alone
      // and keeps its lease: then the election waits as usual.)
      absl::StatusOr<Etcd::LeaseTime> time = etcd_.TimeToLive(ending_lease_->lease);
      lease_ran_out_ = time.ok() && time->left < 0;
    }
    ending_lease_.reset();
  }
  Decision decision = Decide(config_, cluster->view, status, holds_lead_);
  if (decision.action == Action::kTakeLead && !election_published_ &&
      !SoleSynchronous(cluster->view) && !lease_ran_out_) {
    // The others compare themselves with what this node published: its position now first,
    // then a moment for theirs (they all woke as the lease ended). The synchronous standby
    // named alone has no rival to wait for; nor does a node that saw the leader's lease end
    // unrenewed (lease_ran_out_): that leader's server was fenced at least retry_timeout
    // before, and the standbys have published their final positions since (each round, every
    // 100 ms in the lease's last second).
    election_published_ = true;
    Publish(status);
    return milliseconds(std::min<int64_t>(kElectionWait.count(), config_.loop_wait.count()));
  }
  if (decision.action == Action::kWait || decision.action == Action::kRenew ||
      decision.action == Action::kFollow) {
    const auto now = steady_clock::now();
    if (!decision.reason.empty() && decision.action == Action::kWait &&
        (decision.reason != last_reason_ || now - last_reason_at_ > std::chrono::seconds(30))) {
      LogWarning("node %s: %s", config_.name, decision.reason);
      last_reason_ = decision.reason;
      last_reason_at_ = now;
    }
  } else {
    LogInfo("node %s: %s (%s)", config_.name, ActionName(decision.action), decision.reason);
    last_reason_.clear();
  }
  Act(decision, status, *cluster);
  status = server_.Read();
  Publish(status);
  if (holds_lead_) {
    (void)etcd_.Put(Key("position"), std::to_string(status.position));
    FollowSettings(*cluster);
  }
  {
    absl::MutexLock lock(&mu_);
    status_ = status;
    leading_ = holds_lead_;
    leader_position_ = holds_lead_ ? status.position : cluster->view.last_position;
  }
  // The next round: at loop_wait, or as the leader's lease may end.
  milliseconds wait = config_.loop_wait;
  if (!holds_lead_ && cluster->leader_lease.has_value() && *cluster->leader_lease != 0) {
    wait = std::min(wait, WatchLeaderLease(*cluster->leader_lease));
  }
  if (decision.action != Action::kRenew && decision.action != Action::kFollow) {
    wait = std::min(wait, milliseconds(1000));  // (something is under way)
  }
  return wait;
}

milliseconds Node::WatchLeaderLease(int64_t lease) {
  const auto asked = steady_clock::now();
  absl::StatusOr<Etcd::LeaseTime> time = etcd_.TimeToLive(lease);
  const auto got = steady_clock::now();
  if (!time.ok()) return config_.loop_wait;
  if (time->left >= 1) {
    // (In whole seconds, rounded down: at least that long left.)
    ending_lease_.reset();
    return time->left == 1 ? kLastSecondPoll : milliseconds((time->left - 1) * 1000);
  }
  if (time->left < 0) return kLastSecondPoll;  // (gone: its key goes with it)
  // Under a second left as etcd read it, or ended and not swept yet: etcd revokes ended leases
  // only every 500 ms. The reading was made between `asked` and `got`. A reading of 0 made a
  // second or more after an earlier one (asked again a second after the first answer came)
  // proves the lease ended unrenewed, provided no renewal could hide between the two: one
  // would leave it granted - 1 s or more for as long as granted - 1 s, so both readings must
  // fall within that (the second answered before then, counted from the first asked). etcd
  // renews no ended lease, and its leader fenced itself retry_timeout before: this node revokes
  // it then, so that the next leader need not wait for the sweep.
  // The next reading that may prove it: a second (and the margin) after this first answer,
  // not at the next 100 ms tick.
  auto until_proof = [this] {
    const auto due = ending_lease_->got + std::chrono::seconds(1) + kLeaseEndMargin;
    const auto left = std::chrono::ceil<milliseconds>(due - steady_clock::now());
    return std::clamp(left, milliseconds(0), kLastSecondPoll);
  };
  if (!ending_lease_.has_value() || ending_lease_->lease != lease) {
    ending_lease_ = EndingLease{.lease = lease, .asked = asked, .got = got};
    return until_proof();
  }
  const auto window = std::chrono::seconds(time->granted - 1) - kLeaseEndMargin;
  if (asked - ending_lease_->got >= std::chrono::seconds(1) + kLeaseEndMargin &&
      got - ending_lease_->asked <= window) {
    if (etcd_.Revoke(lease).ok()) {
      LogInfo("node %s: the leader's lease ended: revoked", config_.name);
      lease_ran_out_ = true;
      return milliseconds(0);
    }
  } else if (got - ending_lease_->asked > window) {
    ending_lease_ = EndingLease{.lease = lease, .asked = asked, .got = got};  // (start again)
  }
  return until_proof();
}

void Node::Act(const Decision& decision, const ServerStatus& status, const ClusterRead& cluster) {
  switch (decision.action) {
    case Action::kWait:
    case Action::kRenew:
      return;
    case Action::kInitialize:
      return Initialize();
    case Action::kClone: {
      const std::string primary = LeaderConninfo(cluster);
      if (primary.empty()) return;
      if (absl::Status s = server_.Clone(primary); !s.ok()) {
        // (pg_basebackup removes what it wrote: tried again next round.)
        LogError("node %s: cloning %s: %s", config_.name, *cluster.view.leader, s.message());
        return;
      }
      return StartStandby(primary);
    }
    case Action::kPromote:
      if (absl::Status s = server_.Promote(); !s.ok()) {
        LogError("node %s: promoting: %s", config_.name, s.message());
      }
      return;
    case Action::kTakeLead:
      return TakeLead(status);
    case Action::kDemote:
      Fence(decision.reason);
      return;
    case Action::kFollow:
      return FollowLeader(status, cluster);
    case Action::kStart:
      return StartServer(cluster);
    case Action::kStepDown:
      // (A switchover: the poolers following the cluster pause once they see it; what they
      // had under way ends before the server stops, and before the fence could fire.)
      server_.WaitForTransactions(std::min<milliseconds>(kSwitchoverDrain, FenceMargin()));
      return StepDown();
  }
}

void Node::Initialize() {
  absl::StatusOr<bool> mine = etcd_.Create(Key("initialize"), "initializing", 0);
  if (!mine.ok() || !*mine) return;  // (another node initializes)
  absl::Status s = server_.Initialize();
  if (s.ok()) s = server_.Start(false, "");
  if (!s.ok()) {
    LogError("node %s: initializing the cluster: %s", config_.name, s.message());
    (void)server_.Stop(/*fast=*/false);
    // (initdb removes what it wrote; a server that would not start keeps its directory, for
    // a person to look at: nobody initializes the cluster until it is empty again.)
    (void)etcd_.Delete(Key("initialize"));
    return;
  }
  const ServerStatus status = server_.Read();
  (void)etcd_.Put(Key("initialize"), std::to_string(status.system_id));
  LogInfo("node %s: initialized the cluster (system identifier %d)", config_.name,
          status.system_id);
  TakeLead(status);
}

void Node::TakeLead(const ServerStatus& status) {
  if (lease_ == 0) return;
  absl::StatusOr<bool> won = etcd_.Create(Key("leader"), config_.name, lease_);
  if (!won.ok() || !*won) return;
  holds_lead_ = true;
  fence_at_.store(Nanos(renewed_ + config_.ttl - config_.retry_timeout));
  LogInfo("node %s: took the lead at %s, timeline %d", config_.name,
          Lsn{status.position}.ToString(), status.timeline);
  (void)etcd_.Delete(Key("switchover"));
  if (status.in_recovery) {
    if (absl::Status s = server_.Promote(); !s.ok()) {
      LogError("node %s: promoting: %s", config_.name, s.message());
    }
  }
}

std::string Node::LeaderConninfo(const ClusterRead& cluster) const {
  if (!cluster.view.leader.has_value()) return "";
  auto it = cluster.members.find(*cluster.view.leader);
  if (it == cluster.members.end()) return "";
  return it->second.value("conninfo", "");
}

void Node::StartServer(const ClusterRead& cluster) {
  if (holds_lead_) {
    if (absl::Status s = server_.Start(false, ""); !s.ok()) {
      LogError("node %s: restarting the primary: %s; giving up the lead", config_.name,
               s.message());
      StepDown();
    }
    return;
  }
  const std::string primary = LeaderConninfo(cluster);
  if (!primary.empty() && !server_.WasStandby()) {
    // A primary before: what it wrote past the new leader's timeline goes.
    LogInfo("node %s: rewinding from %s", config_.name, *cluster.view.leader);
    return RewindAndStart(primary);
  }
  StartStandby(primary);
}

void Node::StartStandby(const std::string& primary) {
  absl::Status s = server_.Start(true, primary);
  if (s.ok()) {
    standby_start_failures_ = 0;
    return;
  }
  LogError("node %s: %s", config_.name, s.message());
  // (Only a server that ended while starting counts: one still starting or recovering is let
  // be, and a running server's data directory is never moved.)
  if (server_.Alive()) return;
  if (++standby_start_failures_ < kStandbyStartAttempts || primary.empty()) return;
  // (A data directory that recovery cannot take up: a rewind gone wrong, a lost WAL file.)
  LogError("node %s: the server did not start as a standby %d times in a row: cloning the "
           "leader's instead",
           config_.name, standby_start_failures_);
  standby_start_failures_ = 0;
  (void)server_.SetAside();  // (an empty data directory: cloned next round)
}

bool Node::SoleSynchronous(const ClusterView& view) const {
  return view.SynchronousApplied(config_.synchronous) && view.synchronous.size() == 1 &&
         view.synchronous[0] == config_.name;
}

milliseconds Node::FenceMargin() const {
  const int64_t at = fence_at_.load();
  if (at == 0) return config_.retry_timeout;
  const int64_t left = at - Nanos(steady_clock::now());
  return milliseconds(std::max<int64_t>(0, left / 1000000 - 1000));
}

void Node::Reinitialize(const ClusterRead& cluster) {
  const std::string key = Cat(kReinit, config_.name);
  const MemberView* leader =
      cluster.view.leader.has_value() ? cluster.view.Member(*cluster.view.leader) : nullptr;
  if (holds_lead_) {
    LogWarning("node %s: reinit refused: this node leads (`pgflow cluster switchover` first)",
               config_.name);
  } else if (leader == nullptr || leader->role != "primary") {
    // (Its data may be what a failover needs.)
    LogWarning("node %s: reinit refused: no leader runs a primary to clone", config_.name);
  } else {
    LogInfo("node %s: reinit asked: stopping the server and cloning the leader afresh",
            config_.name);
    absl::Status s = server_.Stop(/*fast=*/true);
    if (s.ok()) s = server_.SetAside();
    if (!s.ok()) LogError("node %s: reinit: %s", config_.name, s.message());
    Publish(server_.Read());  // (no longer streaming, before the request is seen taken up)
  }
  (void)etcd_.Delete(Key(key));
}

void Node::RewindAndStart(const std::string& primary) {
  if (absl::Status s = server_.Rewind(primary); !s.ok()) {
    if (absl::IsUnavailable(s)) {  // (the leader's server not answering yet)
      LogWarning("node %s: rewinding: %s (tried again next round)", config_.name, s.message());
      return;
    }
    LogError("node %s: %s; cloning instead", config_.name, s.message());
    (void)server_.SetAside();  // (an empty data directory: cloned next round)
    return;
  }
  StartStandby(primary);
}

void Node::FollowLeader(const ServerStatus& status, const ClusterRead& cluster) {
  const std::string primary = LeaderConninfo(cluster);
  if (primary.empty()) return;
  if (server_.primary() != primary) {
    LogInfo("node %s: following %s", config_.name, *cluster.view.leader);
    not_streaming_since_.reset();
    if (absl::Status s = server_.Follow(primary); !s.ok()) {
      LogError("node %s: %s", config_.name, s.message());
    }
    return;
  }
  const auto now = steady_clock::now();
  if (status.streaming) {
    not_streaming_since_.reset();
    return;
  }
  if (!not_streaming_since_.has_value()) not_streaming_since_ = now;
  const MemberView* leader = cluster.view.Member(*cluster.view.leader);
  // A standby that went past the point where the leader's timeline forked cannot follow it:
  // it never streams. (One replaying what it has first, or waiting for a primary that is
  // restarting, is given time.)
  const auto patience = std::max<steady_clock::duration>(std::chrono::seconds(30),
                                                         5 * config_.loop_wait);
  if (now - *not_streaming_since_ >= patience && leader != nullptr &&
      leader->timeline > status.timeline) {
    LogWarning("node %s: not streaming from %s (timeline %d, its %d): rewinding", config_.name,
               *cluster.view.leader, status.timeline, leader->timeline);
    not_streaming_since_.reset();
    (void)server_.Stop(/*fast=*/true);
    RewindAndStart(primary);
  }
}

void Node::StepDown() {
  // A clean stop first: every WAL record reaches the standbys before the key is given up.
  fence_at_.store(0);
  (void)server_.Stop(/*fast=*/true);
  (void)etcd_.DeleteIf(Key("leader"), config_.name);
  holds_lead_ = false;
  LogInfo("node %s: gave up the lead", config_.name);
}

void Node::KeepSynchronous(const ClusterRead& cluster) {
  // The members' standbys only: not a clone's pg_basebackup, not a pipeline's logical slot.
  std::vector<LocalServer::Standby> standbys = server_.Standbys();
  std::erase_if(standbys, [&](const LocalServer::Standby& s) {
    return s.name == config_.name || cluster.view.Member(s.name) == nullptr;
  });
  auto find = [&](const std::string& name) -> const LocalServer::Standby* {
    for (const LocalServer::Standby& s : standbys) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  auto synchronous = [&](const std::string& name) {
    const LocalServer::Standby* s = find(name);
    return s != nullptr && s->sync_state == "sync";
  };
  const std::vector<std::string>& named = cluster.view.synchronous;
  // The standby kept: the one named alone if it still streams, else the first streaming.
  std::string chosen;
  if (named.size() == 1 && find(named[0]) != nullptr) {
    chosen = named[0];
  } else if (named.size() > 1) {
    for (const std::string& name : named) {
      if (synchronous(name)) chosen = name;
    }
    if (chosen.empty() && find(named.back()) != nullptr) chosen = named.back();
  }
  if (chosen.empty() && !standbys.empty()) chosen = standbys.front().name;
  if (chosen.empty()) {
    // No member's standby streams. While one named is a live member (its server restarting,
    // say) commits wait for it; once none is, the primary acknowledges them alone, and no
    // standby may lead (`sync` emptied first) until one is synchronous again.
    const bool named_alive = std::any_of(named.begin(), named.end(), [&](const std::string& n) {
      return cluster.view.Member(n) != nullptr;
    });
    if (named_alive) return;
    if (!named.empty()) {
      if (!etcd_.Put(Key("sync"), "").ok()) return;
      LogWarning("node %s: no standby streams: commits are acknowledged by the primary alone, "
                 "and no standby may take the lead until one is synchronous again",
                 config_.name);
    }
    (void)server_.SetSynchronous("");
    return;
  }
  (void)server_.SetSynchronous(chosen);
  if (named.empty()) {
    // Until now commits were acknowledged by the primary alone: the standby is named once it
    // is synchronous and has flushed every commit made before it was (the primary's position
    // read after seeing it synchronous, checked the round after).
    if (!synchronous(chosen)) {
      sync_floor_.reset();
      return;
    }
    if (!sync_floor_.has_value() || sync_floor_->first != chosen) {
      sync_floor_ = {chosen, server_.Read().position};
      return;
    }
    if (find(chosen)->flushed >= sync_floor_->second && etcd_.Put(Key("sync"), chosen).ok()) {
      LogInfo("node %s: %s is the synchronous standby", config_.name, chosen);
      sync_floor_.reset();
    }
    return;
  }
  if (std::find(named.begin(), named.end(), chosen) == named.end()) {
    // Named before PostgreSQL waits for it, beside the one it replaces.
    std::vector<std::string> both = named;
    both.push_back(chosen);
    if (!etcd_.Put(Key("sync"), absl::StrJoin(both, ",")).ok()) return;
    LogInfo("node %s: %s becomes the synchronous standby", config_.name, chosen);
  }
  if (synchronous(chosen) && (named.size() != 1 || named[0] != chosen)) {
    (void)etcd_.Put(Key("sync"), chosen);  // (now alone: it has every acknowledged commit)
  }
}

void Node::FollowSettings(const ClusterRead& cluster) {
  const ClusterView& view = cluster.view;
  if (view.config_problem.empty()) warned_config_ = false;
  if (!view.config_problem.empty()) {
    if (!warned_config_) {
      LogWarning("node %s: the cluster's settings in etcd (%s) cannot be read: %s; this node "
                 "follows its file (synchronous %s) until `pgflow cluster set synchronous "
                 "on|off` writes them anew",
                 config_.name, Key("config"), view.config_problem,
                 config_.synchronous ? "on" : "off");
      warned_config_ = true;
    }
  } else if (!view.synchronous_mode.has_value()) {
    // The cluster's first leader (or one from before the setting lived in etcd) writes it
    // from its file; from then on etcd's is the one every node follows.
    const json config = {{"synchronous", config_.synchronous}};
    (void)etcd_.Create(Key("config"), config.dump(), 0);
  } else if (*view.synchronous_mode != config_.synchronous &&
             warned_synchronous_ != *view.synchronous_mode) {
    LogWarning("node %s: its file says synchronous %s, the cluster's setting in etcd %s: the "
               "cluster's is followed (`pgflow cluster set synchronous on|off` changes it)",
               config_.name, config_.synchronous ? "on" : "off",
               *view.synchronous_mode ? "on" : "off");
    warned_synchronous_ = *view.synchronous_mode;
  }
  // `sync_mode` says what is applied, for the elections: on once a standby is named (only it
  // may lead from then on), off once the server waits for none and `sync` names none.
  if (view.SynchronousAsked(config_.synchronous)) {
    KeepSynchronous(cluster);
    if (!view.synchronous.empty() && view.synchronous_applied != true &&
        etcd_.Put(Key("sync_mode"), "on").ok()) {
      LogInfo("node %s: synchronous on: commits wait for %s", config_.name,
              absl::StrJoin(view.synchronous, " and "));
    }
    return;
  }
  if (!server_.SetSynchronous("").ok()) return;
  if (!view.synchronous.empty() && !etcd_.Put(Key("sync"), "").ok()) return;
  if (view.synchronous_applied != false && etcd_.Put(Key("sync_mode"), "off").ok()) {
    LogInfo("node %s: synchronous off: commits are acknowledged by the primary alone",
            config_.name);
  }
}

void Node::Publish(const ServerStatus& status) {
  json member = {
      {"role", status.state == ServerStatus::State::kRunning && !status.in_recovery ? "primary"
                                                                                     : "replica"},
      {"state", StateName(status.state)},
      {"conninfo", server_.ReplicationConninfo()},
      {"address", server_.address()},
      {"api", config_.api},
      {"timeline", status.timeline},
      {"position", status.position},
      {"streaming", status.streaming},
  };
  {
    absl::MutexLock lock(&mu_);
    member_ = member;
  }
  if (lease_ == 0) return;
  if (etcd_.Put(Key(Cat(kMembers, config_.name)), member.dump(), lease_).ok()) {
    published_position_ = status.position;
  }
}

std::optional<AdminPage> Node::Page(std::string_view path, std::string_view query) {
  absl::MutexLock lock(&mu_);
  const bool running = status_.state == ServerStatus::State::kRunning;
  auto answer = [](bool ok, std::string body) {
    return AdminPage{ok ? 200 : 503, "text/plain; charset=utf-8", std::move(body) + "\n"};
  };
  if (path == "/primary") {
    const bool primary = leading_ && running && !status_.in_recovery;
    return answer(primary, primary ? "primary" : "not the primary");
  }
  if (path == "/replica") {
    std::optional<uint64_t> lag;
    if (query.starts_with("lag=")) {
      lag = ParseLag(query.substr(4));
      if (!lag.has_value()) {
        return AdminPage{400, "text/plain; charset=utf-8",
                         "lag: bytes, or with a unit (16MB, 512kB)\n"};
      }
    }
    if (!running || !status_.in_recovery || !status_.streaming) {
      return answer(false, "not a streaming replica");
    }
    const uint64_t behind =
        leader_position_ > status_.position ? leader_position_ - status_.position : 0;
    if (lag.has_value() && behind > *lag) {
      return answer(false, Cat("replica, ", behind, " bytes behind"));
    }
    return answer(true, "replica");
  }
  if (path == "/health") return answer(running, running ? "running" : "not running");
  if (path == "/status" || path == "/") {
    json body = member_;
    body["name"] = config_.name;
    body["leader"] = leading_;
    return AdminPage{200, "application/json", body.dump(2) + "\n"};
  }
  return std::nullopt;
}

}  // namespace pgflow::cluster
