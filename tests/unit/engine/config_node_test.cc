// ConfigNode's typed reads: sizes, durations, integers, booleans, strings and lists, each with
// the error a wrong value gets, at its place in the file.

#include "engine/config_node.h"

#include <chrono>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

ConfigNode NodeOf(const std::string& yaml) {
  return ConfigNode(std::make_shared<const YAML::Node>(YAML::Load(yaml)), "n.yaml", "x");
}

TEST(ConfigNodeTest, AsBytes) {
  struct Case {
    std::string text;
    uint64_t bytes;
  };
  for (const Case& c : std::vector<Case>{{"0", 0},
                                         {"1048576", 1048576},
                                         {"100B", 100},
                                         {"512kB", 512ull << 10},
                                         {"512KB", 512ull << 10},
                                         {"512KiB", 512ull << 10},
                                         {"64MB", 64ull << 20},
                                         {"64 MiB", 64ull << 20},
                                         {"2GB", 2ull << 30},
                                         {"1GiB", 1ull << 30},
                                         {"1TiB", 1ull << 40}}) {
    absl::StatusOr<uint64_t> bytes = NodeOf(c.text).AsBytes();
    ASSERT_TRUE(bytes.ok()) << c.text << ": " << bytes.status();
    EXPECT_EQ(*bytes, c.bytes) << c.text;
  }
  for (std::string bad : {"", "MiB", "-1", "1.5GiB", "64mib", "64 M", "0x10", "[1]", "{a: 1}",
                          "99999999999999999999", "99999999999TiB"}) {
    absl::StatusOr<uint64_t> bytes = NodeOf(bad).AsBytes();
    EXPECT_FALSE(bytes.ok()) << bad;
    EXPECT_THAT(Message(bytes.status()), StartsWith("n.yaml:1:1: x: ")) << bad;
  }
  EXPECT_THAT(Message(NodeOf("99999999999TiB").AsBytes().status()), HasSubstr("too large"));
}

TEST(ConfigNodeTest, AsDuration) {
  struct Case {
    std::string text;
    int64_t ms;
  };
  for (const Case& c : std::vector<Case>{{"0", 0},
                                         {"5", 5000},
                                         {"250ms", 250},
                                         {"5s", 5000},
                                         {"2m", 120000},
                                         {"1h", 3600000},
                                         {"10 s", 10000}}) {
    absl::StatusOr<milliseconds> d = NodeOf(c.text).AsDuration();
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status();
    EXPECT_EQ(d->count(), c.ms) << c.text;
  }
  for (std::string bad :
       {"", "s", "1.5s", "-5s", "5 sec", "1d", "5S", "[1s]", "9999999999999999999h"}) {
    absl::StatusOr<milliseconds> d = NodeOf(bad).AsDuration();
    EXPECT_FALSE(d.ok()) << bad;
    EXPECT_THAT(Message(d.status()), StartsWith("n.yaml:1:1: x: ")) << bad;
  }
}

TEST(ConfigNodeTest, AsIntAsBoolAsStringList) {
  EXPECT_EQ(*NodeOf("-3").AsInt(-5, 5), -3);
  EXPECT_EQ(Message(NodeOf("6").AsInt(-5, 5).status()),
            "n.yaml:1:1: x: must be between -5 and 5, got 6");
  EXPECT_FALSE(NodeOf("99999999999999999999").AsInt(0, 10).ok());
  EXPECT_FALSE(NodeOf("+3").AsInt(0, 10).ok());

  for (std::string yes : {"true", "True", "yes", "on"}) EXPECT_TRUE(*NodeOf(yes).AsBool()) << yes;
  for (std::string no : {"false", "FALSE", "no", "off"}) EXPECT_FALSE(*NodeOf(no).AsBool()) << no;
  EXPECT_FALSE(NodeOf("1").AsBool().ok());

  EXPECT_EQ(*NodeOf("a").AsStringList(), std::vector<std::string>{"a"});
  EXPECT_EQ(*NodeOf("[a, b]").AsStringList(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Message(NodeOf("[a, {b: c}]").AsStringList().status()),
            "n.yaml:1:5: x[1]: expected a string, got a mapping");
  EXPECT_EQ(Message(NodeOf("{b: c}").AsString().status()),
            "n.yaml:1:1: x: expected a string, got a mapping");
  EXPECT_EQ(Message(NodeOf("~").AsString().status()), "n.yaml:1:1: x: expected a string, got null");
}

}  // namespace
}  // namespace pgflow
