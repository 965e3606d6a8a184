// The admin console's command parsing and replies, over a recording AdminTarget (no pooler).

#include "pooler/admin_console.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

// Remembers what the console asked of it; knows one database, `app`.
class RecordingTarget : public AdminTarget {
 public:
  std::vector<PoolView> Pools() override { return {}; }
  std::vector<ClientView> Clients() override { return {}; }
  std::vector<std::pair<std::string, std::string>> ConfigRows() override { return {}; }
  std::vector<DatabaseView> Databases() override {
    DatabaseView d;
    d.name = "app";
    d.host = "10.0.0.2";
    d.port = 5433;
    d.dbname = "app";
    d.retargeted = !retargets.empty();
    return {d};
  }
  std::vector<ReplicaView> Replicas() override {
    Router::NodeView primary{.node = 0,
                             .role = "primary",
                             .address = "10.0.0.2:5433",
                             .state = "healthy",
                             .position = 0x3001618,
                             .lag_bytes = 0,
                             .lag_seconds = 0,
                             .reads = 4};
    Router::NodeView replica{.node = 1,
                             .role = "replica",
                             .address = "10.0.0.3:5433",
                             .state = "lagging",
                             .position = 0x3000000,
                             .lag_bytes = 5656,
                             .lag_seconds = 2.5,
                             .reads = 17};
    return {{"app", primary}, {"app", replica}};
  }
  bool HasDatabase(const std::string& database) override { return database == "app"; }
  void Pause(const std::string&) override {}
  void Resume(const std::string&) override {}
  void Reconnect(const std::string&) override {}
  void Kill(const std::string&) override {}
  void Suspend() override {}
  absl::Status Reload() override { return absl::OkStatus(); }
  absl::Status Retarget(const std::string& database, const std::string& url) override {
    if (database != "app") return absl::NotFoundError("no such database: " + database);
    if (url.find("bad") != std::string::npos) return absl::InvalidArgumentError("url: bad host");
    retargets.emplace_back(database, url);
    return absl::OkStatus();
  }
  void Shutdown(ShutdownMode) override {}
  ShutdownMode Draining() override { return ShutdownMode::kNow; }
  absl::Status Ban(const std::string& kind, const std::string& who) override {
    if (kind == "address" && who == "nowhere") return absl::InvalidArgumentError("not an IP");
    bans.emplace_back(kind, who);
    return absl::OkStatus();
  }
  absl::Status Unban(const std::string& kind, const std::string& who) override {
    for (auto it = bans.begin(); it != bans.end(); ++it) {
      if (*it == std::pair(kind, who)) {
        bans.erase(it);
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError(kind + " " + who + " is not banned");
  }
  std::vector<std::pair<std::string, std::string>> Bans() override { return bans; }

  std::vector<std::pair<std::string, std::string>> bans;
  std::vector<std::pair<std::string, std::string>> retargets;
};

// The message types of a reply, in order ("TDC": RowDescription, DataRow, CommandComplete).
std::string Types(const std::string& messages) {
  std::string types;
  for (size_t at = 0; at + 5 <= messages.size();) {
    types += messages[at];
    const uint32_t length = (static_cast<uint8_t>(messages[at + 1]) << 24) |
                            (static_cast<uint8_t>(messages[at + 2]) << 16) |
                            (static_cast<uint8_t>(messages[at + 3]) << 8) |
                            static_cast<uint8_t>(messages[at + 4]);
    at += 1 + length;
  }
  return types;
}

TEST(AdminConsoleTest, RetargetKeepsTheUrlAsTypedWithItsQuotes) {
  RecordingTarget target;
  AdminReply reply =
      RunAdminCommand(&target, "  RETARGET App 'postgres://App:it''s@10.0.0.3:5432/Orders' ; ");
  EXPECT_EQ(Types(reply.messages), "C");
  EXPECT_THAT(reply.messages, HasSubstr("RETARGET"));
  EXPECT_THAT(target.retargets,
              ElementsAre(Pair("app", "postgres://App:it's@10.0.0.3:5432/Orders")));
}

TEST(AdminConsoleTest, RetargetRefusesWhatItCannotUseAndChangesNothing) {
  RecordingTarget target;
  for (const char* sql : {"RETARGET", "RETARGET app", "RETARGET app postgres://h/app",
                          "RETARGET app 'postgres://h/app", "RETARGET app 'postgres://h/app' x",
                          "RETARGET 'postgres://h/app'"}) {
    AdminReply reply = RunAdminCommand(&target, sql);
    EXPECT_EQ(Types(reply.messages), "E") << sql;
    EXPECT_THAT(reply.messages, HasSubstr("42601")) << sql;
  }
  AdminReply unknown = RunAdminCommand(&target, "RETARGET shop 'postgres://h/shop'");
  EXPECT_THAT(unknown.messages, HasSubstr("3D000"));
  EXPECT_THAT(unknown.messages, HasSubstr("no such database: shop"));
  AdminReply bad = RunAdminCommand(&target, "RETARGET app 'postgres://bad/app'");
  EXPECT_THAT(bad.messages, HasSubstr("RETARGET failed, the database stays where it was: url: "
                                      "bad host"));
  EXPECT_THAT(target.retargets, IsEmpty());
}

TEST(AdminConsoleTest, ShowMemListsWhatTheTargetMeasures) {
  RecordingTarget target;
  AdminReply reply = RunAdminCommand(&target, "SHOW MEM");
  EXPECT_EQ(Types(reply.messages), "TC");  // (the recording target measures nothing)
  EXPECT_THAT(reply.messages, HasSubstr("item"));
  EXPECT_THAT(RunAdminCommand(&target, "SHOW NOTHING").messages, HasSubstr("MEM"));
}

TEST(AdminConsoleTest, ShowDatabasesSaysWhichWereRetargeted) {
  RecordingTarget target;
  AdminReply before = RunAdminCommand(&target, "SHOW DATABASES");
  EXPECT_EQ(Types(before.messages), "TDC");
  EXPECT_THAT(before.messages, HasSubstr("retargeted"));
  ASSERT_EQ(Types(RunAdminCommand(&target, "RETARGET app 'postgres://h/app'").messages), "C");
  // The column retargeted (the 13th) of the one row: "0" before, "1" after.
  auto retargeted = [](const std::string& messages) {
    size_t at = 0;  // (message by message: a 'D' byte may be inside another's)
    while (at + 5 <= messages.size() && messages[at] != 'D') {
      at += 1 + ReadInt32(messages.data() + at + 1);
    }
    if (at + 5 > messages.size()) return std::string("no row");
    at += 1 + 4 + 2;  // type, length, column count
    for (int column = 0; column < 12; ++column) {
      at += 4 + std::max(0, ReadInt32(messages.data() + at));  // (-1: NULL)
    }
    return messages.substr(at + 4, ReadInt32(messages.data() + at));
  };
  EXPECT_EQ(retargeted(before.messages), "0");
  AdminReply after = RunAdminCommand(&target, "SHOW DATABASES");
  EXPECT_EQ(retargeted(after.messages), "1");
}

TEST(AdminConsoleTest, ShowReplicasGivesEachNodesStateLagAndReads) {
  RecordingTarget target;
  AdminReply reply = RunAdminCommand(&target, "show replicas;");
  EXPECT_EQ(Types(reply.messages), "TDDC");
  for (const char* text : {"lag_bytes", "lagging", "10.0.0.3:5433", "0/3001618", "5656", "2.5"}) {
    EXPECT_THAT(reply.messages, HasSubstr(text));
  }
}

TEST(AdminConsoleTest, BanKeepsTheNameAsWrittenAndUnbanUndoesIt) {
  RecordingTarget target;
  EXPECT_EQ(Types(RunAdminCommand(&target, "BAN USER Alice;").messages), "C");
  EXPECT_EQ(Types(RunAdminCommand(&target, "ban address 10.0.0.7").messages), "C");
  EXPECT_EQ(Types(RunAdminCommand(&target, "BAN USER \"Bob Two\"").messages), "E");  // 4 words
  EXPECT_EQ(Types(RunAdminCommand(&target, "BAN USER \"bob\"").messages), "C");
  EXPECT_THAT(target.bans, ElementsAre(Pair("user", "Alice"), Pair("address", "10.0.0.7"),
                                       Pair("user", "bob")));
  AdminReply shown = RunAdminCommand(&target, "SHOW BANS");
  EXPECT_EQ(Types(shown.messages), "TDDDC");
  EXPECT_THAT(shown.messages, HasSubstr("10.0.0.7"));
  EXPECT_EQ(Types(RunAdminCommand(&target, "UNBAN USER Alice").messages), "C");
  AdminReply again = RunAdminCommand(&target, "UNBAN USER Alice");
  EXPECT_THAT(again.messages, HasSubstr("42704"));
  EXPECT_THAT(again.messages, HasSubstr("user Alice is not banned"));
  EXPECT_EQ(Types(RunAdminCommand(&target, "BAN DATABASE shop").messages), "C");
  EXPECT_EQ(Types(RunAdminCommand(&target, "UNBAN DATABASE shop").messages), "C");
  for (const char* sql : {"BAN", "BAN USER", "BAN TENANT x", "UNBAN ADDRESS"}) {
    EXPECT_THAT(RunAdminCommand(&target, sql).messages, HasSubstr("42601")) << sql;
  }
  EXPECT_THAT(RunAdminCommand(&target, "BAN ADDRESS nowhere").messages, HasSubstr("22023"));
  EXPECT_THAT(target.bans, ElementsAre(Pair("address", "10.0.0.7"), Pair("user", "bob")));
}

}  // namespace
}  // namespace pgflow::pooler
