#include "engine/options.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

enum class Color { kRed, kGreen };

struct Inner {
  int depth = 2;
  std::string name;
};

struct Demo {
  std::string path;
  bool fsync = true;
  int workers = 0;
  uint64_t chunk = 64ull << 20;
  milliseconds every{1000};
  milliseconds heartbeat{0};
  Color color = Color::kGreen;
  std::vector<std::string> tags;
  Inner inner;
  std::string word = "on";
};

const OptionTable<Inner>& InnerTable() {
  static const auto* table = new OptionTable<Inner>({
      IntOption("depth", &Inner::depth).Range(1, 9).Help("how deep"),
      StringOption("name", &Inner::name).NonEmpty().Help("what it is called"),
  });
  return *table;
}

const OptionTable<Demo>& DemoTable() {
  static const auto* table = new OptionTable<Demo>(
      {
          StringOption("path", &Demo::path).Required().NonEmpty().Help("where"),
          BoolOption("fsync", &Demo::fsync).Help("whether"),
          IntOption("workers", &Demo::workers).Range(0, 64).DefaultText("one per core").Help("w"),
          BytesOption("chunk", &Demo::chunk).AtLeast(1ull << 20).Help("c"),
          DurationOption("every", &Demo::every)
              .Range(milliseconds(100), milliseconds(30000))
              .Help("e"),
          DurationOption("heartbeat", &Demo::heartbeat)
              .AtLeast(milliseconds(100))
              .ZeroMeansOff()
              .Help("h"),
          ChoiceOption("color", &Demo::color)
              .Choices({{"red", Color::kRed}, {"green", Color::kGreen}}, "colour")
              .Help("which"),
          ListOption("tags", &Demo::tags).Help("labels"),
          SectionOption("inner", &Demo::inner, InnerTable()).Help("nested"),
          StringOption("word", &Demo::word)
              .Check([](const std::string& w) {
                return w == "off" ? absl::InvalidArgumentError("'off' is not allowed here")
                                  : absl::OkStatus();
              })
              .Help("a word"),
      },
      [](const Demo& demo, const ConfigNode& node) -> absl::Status {
        if (demo.workers > 8 && demo.color == Color::kRed) {
          return node.Error("red allows at most 8 workers");
        }
        return absl::OkStatus();
      });
  return *table;
}

ConfigNode NodeOf(const std::string& yaml) {
  return ConfigNode(std::make_shared<const YAML::Node>(YAML::Load(yaml)), "d.yaml", "demo");
}

absl::StatusOr<Demo> ParseDemo(const std::string& yaml) { return DemoTable().Parse(NodeOf(yaml)); }

std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<Demo> demo = ParseDemo(yaml);
  EXPECT_FALSE(demo.ok()) << yaml;
  return demo.ok() ? "" : std::string(demo.status().message());
}

TEST(OptionsTest, AbsentKeysKeepTheFieldsInitialValues) {
  absl::StatusOr<Demo> demo = ParseDemo("{path: /x}");
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_EQ(demo->path, "/x");
  EXPECT_TRUE(demo->fsync);
  EXPECT_EQ(demo->chunk, 64ull << 20);
  EXPECT_EQ(demo->every, milliseconds(1000));
  EXPECT_EQ(demo->color, Color::kGreen);
  EXPECT_EQ(demo->inner.depth, 2);
  EXPECT_EQ(demo->word, "on");
}

TEST(OptionsTest, EveryTypeIsRead) {
  absl::StatusOr<Demo> demo = ParseDemo(
      "{path: /x, fsync: no, workers: 3, chunk: 2MiB, every: 250ms, heartbeat: 0, color: red, "
      "tags: [a, b], inner: {depth: 5, name: n}, word: yes}");
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_FALSE(demo->fsync);
  EXPECT_EQ(demo->workers, 3);
  EXPECT_EQ(demo->chunk, 2ull << 20);
  EXPECT_EQ(demo->every, milliseconds(250));
  EXPECT_EQ(demo->heartbeat, milliseconds(0));
  EXPECT_EQ(demo->color, Color::kRed);
  EXPECT_EQ(demo->tags, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(demo->inner.depth, 5);
  EXPECT_EQ(demo->inner.name, "n");
  EXPECT_EQ(demo->word, "yes");
  EXPECT_EQ(ParseDemo("{path: /x, tags: solo}")->tags, std::vector<std::string>{"solo"});
}

TEST(OptionsTest, ErrorsNameThePlaceAndTheRule) {
  EXPECT_EQ(ErrorOf("{fsync: true}"), "d.yaml:1:1: demo: missing required key 'path'");
  EXPECT_EQ(ErrorOf("{path: }"), "d.yaml:1:2: demo: required key 'path' has no value");
  EXPECT_EQ(ErrorOf("{path: ''}"), "d.yaml:1:8: demo.path: must not be empty");
  EXPECT_EQ(ErrorOf("{path: /x, fsinc: true}"),
            "d.yaml:1:12: demo: unknown key 'fsinc' (did you mean 'fsync'? expected one of: "
            "path, fsync, workers, chunk, every, heartbeat, color, tags, inner, word)");
  EXPECT_EQ(ErrorOf("{path: /x, workers: 65}"),
            "d.yaml:1:21: demo.workers: must be between 0 and 64, got 65");
  EXPECT_EQ(ErrorOf("{path: /x, chunk: 1KiB}"),
            "d.yaml:1:19: demo.chunk: must be at least 1MiB, got 1024 bytes");
  EXPECT_EQ(ErrorOf("{path: /x, every: 1m}"),
            "d.yaml:1:19: demo.every: must be between 100ms and 30s, got 1m");
  EXPECT_EQ(ErrorOf("{path: /x, heartbeat: 5ms}"),
            "d.yaml:1:23: demo.heartbeat: must be 0 (off) or at least 100ms, got 5ms");
  EXPECT_EQ(ErrorOf("{path: /x, color: rad}"),
            "d.yaml:1:19: demo.color: unknown colour 'rad' (did you mean 'red'? expected one of: "
            "red, green)");
  EXPECT_EQ(ErrorOf("{path: /x, inner: {depth: 0}}"),
            "d.yaml:1:27: demo.inner.depth: must be between 1 and 9, got 0");
  EXPECT_EQ(ErrorOf("{path: /x, inner: [1]}"),
            "d.yaml:1:19: demo.inner: expected a mapping, got a sequence");
  EXPECT_EQ(ErrorOf("{path: /x, word: off}"), "d.yaml:1:18: demo.word: 'off' is not allowed here");
  EXPECT_EQ(ErrorOf("{path: /x, workers: 9, color: red}"),
            "d.yaml:1:1: demo: red allows at most 8 workers");
  EXPECT_EQ(ErrorOf("[path]"), "d.yaml:1:1: demo: expected a mapping, got a sequence");
  EXPECT_THAT(ErrorOf("{path: [a]}"), HasSubstr("demo.path: expected a string, got a sequence"));
}

TEST(OptionsTest, DocsCarryTypeDefaultRuleAndChoices) {
  std::span<const OptionDoc> docs = DemoTable().docs();
  ASSERT_EQ(docs.size(), 10u);
  EXPECT_EQ(docs[0].key, "path");
  EXPECT_TRUE(docs[0].required);
  EXPECT_EQ(docs[0].default_text, "");
  EXPECT_EQ(docs[1].default_text, "true");
  EXPECT_EQ(docs[2].type, OptionType::kInt);
  EXPECT_EQ(docs[2].default_text, "one per core");
  EXPECT_EQ(docs[2].rule, "between 0 and 64");
  EXPECT_EQ(docs[3].type, OptionType::kBytes);
  EXPECT_EQ(docs[3].default_text, "64MiB");
  EXPECT_EQ(docs[3].rule, "at least 1MiB");
  EXPECT_EQ(docs[4].default_text, "1s");
  EXPECT_EQ(docs[5].default_text, "0 (off)");
  EXPECT_EQ(docs[5].rule, "0 (off) or at least 100ms");
  EXPECT_EQ(docs[6].default_text, "green");
  EXPECT_EQ(docs[6].choices, (std::vector<std::string>{"red", "green"}));
  EXPECT_EQ(docs[8].type, OptionType::kSection);
  EXPECT_EQ(docs[8].section, &InnerTable());

  std::string markdown;
  AppendOptionsMarkdown("demo", DemoTable(), &markdown);
  EXPECT_THAT(markdown, HasSubstr("| `demo.path` | string | required | where |\n"));
  EXPECT_THAT(markdown,
              HasSubstr("| `demo.workers` | int | `one per core` | w; between 0 and 64. |"));
  EXPECT_THAT(markdown, HasSubstr("| `demo.color` | `red` \\| `green` | `green` | which |"));
  EXPECT_THAT(markdown,
              HasSubstr("| `demo.inner.depth` | int | `2` | how deep; between 1 and 9. |"));
  std::string text;
  AppendOptionsText("demo", DemoTable(), &text);
  EXPECT_THAT(text, HasSubstr("demo\n  path "));
  EXPECT_THAT(text, HasSubstr("\ndemo.inner\n  depth "));
}

struct Client {
  std::string brokers;
  std::string where;
};
struct Outer {
  Client client;
  int n = 1;
};

const OptionTable<Client>& ClientTable() {
  static const auto* table = new OptionTable<Client>(
      {CustomOption<Client>("brokers", OptionType::kList,
                            [](const ConfigNode& node, Client* out) -> absl::Status {
                              absl::StatusOr<std::string> s = node.AsString();
                              if (!s.ok()) return s.status();
                              out->brokers = *s;
                              out->where = node.Position();
                              return absl::OkStatus();
                            })
           .Required()
           .Help("b")},
      [](const Client& c, const ConfigNode& node) -> absl::Status {
        return c.brokers == "none" ? node.Error("no brokers") : absl::OkStatus();
      });
  return *table;
}

TEST(OptionsTest, EmbeddedTablesReadTheirKeysAtTheSameLevel) {
  OptionTable<Outer> table(
      {EmbedOptions(&Outer::client, ClientTable()), IntOption("n", &Outer::n).Help("n")});
  ASSERT_EQ(table.docs().size(), 2u);
  absl::StatusOr<Outer> outer = table.Parse(NodeOf("{brokers: h:1, n: 4}"));
  ASSERT_TRUE(outer.ok()) << outer.status();
  EXPECT_EQ(outer->client.brokers, "h:1");
  EXPECT_EQ(outer->client.where, "d.yaml:1:11");
  EXPECT_EQ(outer->n, 4);
  EXPECT_EQ(table.Parse(NodeOf("{n: 4}")).status().message(),
            "d.yaml:1:1: demo: missing required key 'brokers'");
  EXPECT_EQ(table.Parse(NodeOf("{brokers: none}")).status().message(),
            "d.yaml:1:1: demo: no brokers");
}

}  // namespace
}  // namespace pgflow
