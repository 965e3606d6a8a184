#include "engine/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/config_testing.h"
#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using namespace config_testing;  // NOLINT(build/namespaces): the fixture and its helpers

// ---------------------------------------------------------------------------------------------
// Valid files.

TEST_F(ConfigTest, FullFile) {
  setenv("PGFLOW_TEST_PASSWORD", "s3cret", 1);
  absl::StatusOr<PipelineConfig> config = Parse(R"(
pipeline: shop_2
source:
  postgres:
    url: postgres://replicator:${PGFLOW_TEST_PASSWORD}@db:5432/shop?sslmode=require
    tables:
      - public.products
      - Sales.Orders
      - '"My Schema"."Order"'
      - audit.*
    snapshot: {mode: only, workers: 4, chunk_size: 16MiB}
    slot: my_slot
    publication: my_pub
    status_interval: 500ms
    heartbeat_interval: 1m
transforms: []
sinks:
  out:
    fake: {path: /var/lib/pgflow/shop.jsonl, fsync: yes}
    flush_interval: 2s
  second-sink: {fake: {path: "-"}}
buffer: {queue_bytes: 1GiB}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->file, "p.yaml");
  EXPECT_EQ(config->name, "shop_2");
  const PostgresSourceOptions& pg = Pg(*config);
  EXPECT_EQ(pg.url, "postgres://replicator:s3cret@db:5432/shop?sslmode=require");
  EXPECT_EQ(
      pg.tables,
      (std::vector<TableRef>{
          {"public", "products"}, {"sales", "orders"}, {"My Schema", "Order"}, {"audit", "*"}}));
  EXPECT_EQ(pg.snapshot.mode, SnapshotMode::kOnly);
  EXPECT_EQ(pg.snapshot.workers, 4);
  EXPECT_EQ(pg.snapshot.chunk_bytes, 16ull << 20);
  EXPECT_EQ(pg.slot, "my_slot");
  EXPECT_EQ(pg.publication, "my_pub");
  EXPECT_EQ(pg.status_interval, milliseconds(500));
  EXPECT_EQ(pg.heartbeat_interval, milliseconds(60000));
  EXPECT_TRUE(config->transforms.empty());
  ASSERT_EQ(config->sinks.size(), 2u);
  EXPECT_EQ(config->sinks[0].name, "out");
  EXPECT_EQ(config->sinks[0].type, "fake");
  EXPECT_EQ(config->sinks[0].common.flush_interval, milliseconds(2000));
  auto* out = dynamic_cast<const FakeSinkOptions*>(config->sinks[0].options.get());
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->path, "/var/lib/pgflow/shop.jsonl");
  EXPECT_TRUE(out->fsync);
  EXPECT_EQ(config->sinks[1].name, "second-sink");
  EXPECT_EQ(config->sinks[1].common.flush_interval, milliseconds(200));
  auto* second = dynamic_cast<const FakeSinkOptions*>(config->sinks[1].options.get());
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->path, "-");
  EXPECT_FALSE(second->fsync);
  EXPECT_EQ(config->buffer.queue_bytes, 1ull << 30);
  unsetenv("PGFLOW_TEST_PASSWORD");
}

TEST_F(ConfigTest, AdminEndpointAndRetainedWalGuard) {
  absl::StatusOr<PipelineConfig> config =
      Parse(std::string(kMinimal) + "admin: {listen: 127.0.0.1:9187}\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->admin.listen, "127.0.0.1:9187");
  EXPECT_EQ(Pg(*config).max_retained_wal, 1ull << 30);
}

TEST_F(ConfigTest, Defaults) {
  absl::StatusOr<PipelineConfig> config = Parse(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  const PostgresSourceOptions& pg = Pg(*config);
  EXPECT_EQ(pg.slot, "pgflow_shop");
  EXPECT_EQ(pg.publication, "pgflow_shop");
  EXPECT_EQ(pg.snapshot.mode, SnapshotMode::kInitial);
  EXPECT_EQ(pg.snapshot.workers, 0);
  EXPECT_EQ(pg.snapshot.chunk_bytes, 64ull << 20);
  EXPECT_EQ(pg.status_interval, milliseconds(1000));
  EXPECT_EQ(pg.heartbeat_interval, milliseconds(10000));
  EXPECT_EQ(pg.max_retained_wal, 1ull << 30);
  EXPECT_EQ(config->buffer.queue_bytes, 64ull << 20);
  EXPECT_EQ(config->admin.listen, "");
  EXPECT_EQ(config->sinks[0].common.flush_interval, milliseconds(200));
}

TEST_F(ConfigTest, NullSectionsAreAbsentAndKeyValueConninfoIsAccepted) {
  absl::StatusOr<PipelineConfig> config = Parse(R"(
pipeline: shop
source:
  postgres:
    url: host=db port=5432 dbname=shop user=app
    tables: public.*
    snapshot:
    slot: ~
transforms:
sinks:
  out: {fake: {path: x}}
buffer:
admin: ~
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(Pg(*config).tables, (std::vector<TableRef>{{"public", "*"}}));
  EXPECT_EQ(Pg(*config).slot, "pgflow_shop");
  EXPECT_EQ(config->admin.listen, "");
}

// ---------------------------------------------------------------------------------------------
// YAML syntax and structure.

TEST_F(ConfigTest, MalformedYaml) {
  std::string message = ErrorOf(R"(
pipeline: shop
source:
  postgres:
    tables: [public.orders
sinks: {}
)");
  // yaml-cpp reports an unclosed flow sequence where it gave up looking for the ']'.
  EXPECT_EQ(message, "p.yaml:5:6: end of sequence flow not found");

  EXPECT_EQ(ErrorOf("pipeline: shop\n  bad: indent\n"), "p.yaml:2:6: illegal map value");
}

TEST_F(ConfigTest, EmptyFileAndWrongRoot) {
  EXPECT_THAT(ErrorOf(""), HasSubstr("p.yaml:1:1: the file is empty"));
  EXPECT_THAT(ErrorOf("# only a comment\n"), HasSubstr("p.yaml:1:1: the file is empty"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"),
              HasSubstr("p.yaml:1:1: expected a mapping with the keys pipeline, source and "
                        "sinks, got a sequence"));
}

TEST_F(ConfigTest, MultipleDocuments) {
  EXPECT_THAT(ErrorOf("pipeline: a\n---\npipeline: b\n"),
              HasSubstr("p.yaml:3:1: expected one YAML document, found 2"));
}

TEST_F(ConfigTest, DuplicateKey) {
  std::string message = ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    url: postgres://other/shop
sinks:
  out: {fake: {path: x}}
)");
  EXPECT_EQ(message, "p.yaml:6:5: source.postgres: duplicate key 'url' (first at p.yaml:4:5)");
}

TEST_F(ConfigTest, DuplicateSinkName) {
  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out: {fake: {path: x}}
  out: {fake: {path: y}}
)"),
              HasSubstr("p.yaml:5:3: sinks: duplicate key 'out' (first at p.yaml:4:3)"));
}

TEST_F(ConfigTest, NonScalarKey) {
  EXPECT_THAT(ErrorOf("? [a, b]\n: x\n"), HasSubstr("p.yaml:1:3: a key must be a string"));
}

TEST_F(ConfigTest, RecursiveAliasIsBounded) {
  EXPECT_THAT(ErrorOf("pipeline: shop\nx: &a [1, *a]\n"), HasSubstr("is an alias recursive?"));
}

TEST_F(ConfigTest, DeepNesting) {
  std::string yaml = "pipeline: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  EXPECT_THAT(ErrorOf(yaml), AllOf(StartsWith("p.yaml:"), HasSubstr("nested too deeply")));
}

// ---------------------------------------------------------------------------------------------
// Unknown keys, at every level, with suggestions.

TEST_F(ConfigTest, UnknownTopLevelKey) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sink:
  out: {fake: {path: x}}
)"),
            "p.yaml:3:1: unknown key 'sink' (did you mean 'sinks'? expected one of: pipeline, "
            "source, transforms, sinks, documents, buffer, admin)");
}

TEST_F(ConfigTest, UnknownSourceType) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  mysql: {url: x}
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:3:3: source: unknown key 'mysql' (expected one of: kafka, postgres)");
}

TEST_F(ConfigTest, UnknownPostgresKey) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tabels: [public.a]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:5:5: source.postgres: unknown key 'tabels' (did you mean 'tables'? expected "
            "one of: url, tables, snapshot, keyless_tables, slot, publication, "
            "status_interval, heartbeat_interval, max_retained_wal)");
}

TEST_F(ConfigTest, UnknownSnapshotKey) {
  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    snapshot: {mode: never, worker: 3}
sinks: {out: {fake: {path: x}}}
)"),
              HasSubstr("p.yaml:6:29: source.postgres.snapshot: unknown key 'worker' (did you "
                        "mean 'workers'? expected one of: mode, workers, chunk_size)"));
}

TEST_F(ConfigTest, UnknownSinkKey) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out:
    fake:
      pth: /tmp/x
)"),
            "p.yaml:6:7: sinks.out.fake: unknown key 'pth' (did you mean 'path'? expected one "
            "of: path, fsync)");
}

TEST_F(ConfigTest, UnknownBufferAndAdminKeysWithoutSuggestion) {
  std::string base(kMinimal.substr(1));  // 7 lines
  EXPECT_EQ(ErrorOf(base + "buffer: {queue_bytes: 2MiB, zzzzz: 1}\n"),
            "p.yaml:8:29: buffer: unknown key 'zzzzz' (expected one of: queue_bytes)");
  EXPECT_EQ(ErrorOf(base + "admin: {lisen: 127.0.0.1:1}\n"),
            "p.yaml:8:9: admin: unknown key 'lisen' (did you mean 'listen'? expected one of: "
            "listen, users)");
}

// ---------------------------------------------------------------------------------------------
// Wrong types and missing keys.

TEST_F(ConfigTest, WrongTypes) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: [postgres://db/shop]
    tables: [public.a]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:4:10: source.postgres.url: expected a string, got a sequence");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: {public: a}
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:5:13: source.postgres.tables: expected a list, got a mapping");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a, [public.b]]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:5:24: source.postgres.tables[1]: expected a string, got a sequence");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    snapshot: never
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:6:15: source.postgres.snapshot: expected a mapping, got a string");
  EXPECT_EQ(ErrorOf(R"(
pipeline: {name: shop}
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:1:11: pipeline: expected a string, got a mapping");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {out: {fake: {path: x, fsync: maybe}}}
)"),
            "p.yaml:3:38: sinks.out.fake.fsync: expected true or false, got 'maybe'");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: [out]
)"),
            "p.yaml:3:8: sinks: expected a mapping, got a sequence");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {out: {fake: {path: x}}}
transforms: {mask: {}}
)"),
            "p.yaml:4:13: transforms: expected a list, got a mapping");
}

TEST_F(ConfigTest, MissingRequiredKeys) {
  EXPECT_EQ(ErrorOf(R"(
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:1:1: missing required key 'pipeline'");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
)"),
            "p.yaml:1:1: missing required key 'sinks'");
  // At the mapping that should hold it.
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    tables: [public.a]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:4:5: source.postgres: missing required key 'url'");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out:
    fake: {fsync: true}
)"),
            "p.yaml:5:11: sinks.out.fake: missing required key 'path'");
  // Present without a value: at the key.
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url:
    tables: [public.a]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:4:5: source.postgres: required key 'url' has no value");
  // A sink type with no options at all is an empty mapping.
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out:
    fake:
)"),
            "p.yaml:5:5: sinks.out.fake: missing required key 'path'");
}

// ---------------------------------------------------------------------------------------------
// Sinks and transforms.

TEST_F(ConfigTest, UnknownSinkType) {
  std::string message = ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out: {fak: {path: x}}
)");
  EXPECT_THAT(message, StartsWith("p.yaml:4:9: sinks.out: unknown sink type 'fak' (did you mean "
                                  "'fake'? known types: "));
  EXPECT_THAT(message, HasSubstr("fake"));
}

TEST_F(ConfigTest, SinkShapes) {
  auto with_sinks = [](std::string_view sinks) {
    return ErrorOf(std::string(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
)") + std::string(sinks));
  };
  EXPECT_EQ(with_sinks("  out: {fake: {path: x}, jsonl: {}}\n"),
            "p.yaml:4:26: sinks.out: a sink has one type, but 'fake' and 'jsonl' are both here; "
            "use one sink per type");
  // A misspelt option beside the type is an unknown key, not a second type.
  EXPECT_EQ(with_sinks("  out: {fake: {path: x}, flush_intervall: 1s}\n"),
            "p.yaml:4:26: sinks.out: unknown key 'flush_intervall' (did you mean "
            "'flush_interval'? expected one of: blackhole, fake, jsonl, kafka, kv, opensearch, postgres, "
            "webhook, flush_interval, ddl, transforms, dead_letter)");
  EXPECT_THAT(with_sinks("  out: {flush_interval: 1s}\n"),
              HasSubstr("p.yaml:4:8: sinks.out: missing the sink type"));
  EXPECT_THAT(with_sinks("  out: fake\n"),
              HasSubstr("p.yaml:4:8: sinks.out: expected a mapping with one key naming the sink "
                        "type"));
  EXPECT_THAT(with_sinks("  out:\n  other: {fake: {path: x}}\n"),
              HasSubstr("p.yaml:4:3: sinks.out: expected a mapping with one key naming the sink "
                        "type"));
  EXPECT_EQ(with_sinks("  out: {fake: /tmp/x}\n"),
            "p.yaml:4:15: sinks.out.fake: expected a mapping of fake options, got a string");
  EXPECT_EQ(with_sinks("  my.sink: {fake: {path: x}}\n"),
            "p.yaml:4:3: sinks: invalid sink name 'my.sink': use letters, digits, '_' and '-'");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {}
)"),
            "p.yaml:3:8: sinks: define at least one sink, like {out: {jsonl: {path: out.jsonl}}}");
}

TEST_F(ConfigTest, UnknownTransform) {
  std::string base(kMinimal.substr(1));  // 7 lines
  EXPECT_EQ(ErrorOf(base + "transforms:\n  - musk: {table: public.customers}\n"),
            "p.yaml:9:5: transforms[0]: unknown transform 'musk' (expected one of: cast, drop_columns, filter, lua, mask, rename, route, select, set)");
  EXPECT_EQ(ErrorOf(base + "transforms:\n  - mask: {table: public.customers}\n"),
            "p.yaml:9:11: transforms[0].mask: missing required key 'columns'");
  EXPECT_EQ(ErrorOf(base + "transforms:\n  - mask\n"),
            "p.yaml:9:5: transforms[0]: expected a mapping with one key naming the transform "
            "type");
}

// ---------------------------------------------------------------------------------------------
// ${VAR} expansion.

TEST_F(ConfigTest, EnvironmentExpansion) {
  setenv("PGFLOW_TEST_DB", "db.internal", 1);
  setenv("PGFLOW_TEST_EMPTY", "", 1);
  unsetenv("PGFLOW_TEST_UNSET");
  absl::StatusOr<PipelineConfig> config = Parse(R"(
pipeline: shop
source:
  postgres:
    url: "postgres://${PGFLOW_TEST_DB}:${PGFLOW_TEST_UNSET:-5432}/shop?application_name=a$$b"
    tables: ['${PGFLOW_TEST_SCHEMA:-public}.orders']
    snapshot: {workers: '${PGFLOW_TEST_UNSET:-3}'}
sinks:
  out: {fake: {path: "${PGFLOW_TEST_EMPTY:-/tmp/default}$HOME"}}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(Pg(*config).url, "postgres://db.internal:5432/shop?application_name=a$b");
  EXPECT_EQ(Pg(*config).tables, (std::vector<TableRef>{{"public", "orders"}}));
  EXPECT_EQ(Pg(*config).snapshot.workers, 3);
  auto* out = dynamic_cast<const FakeSinkOptions*>(config->sinks[0].options.get());
  ASSERT_NE(out, nullptr);
  // An empty variable takes the default, as in the shell; `$` not before `{` is kept.
  EXPECT_EQ(out->path, "/tmp/default$HOME");
  unsetenv("PGFLOW_TEST_DB");
  unsetenv("PGFLOW_TEST_EMPTY");
}

TEST_F(ConfigTest, UnsetVariable) {
  unsetenv("PGFLOW_TEST_UNSET");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://app:${PGFLOW_TEST_UNSET}@db/shop
    tables: [public.a]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:4:10: source.postgres.url: environment variable PGFLOW_TEST_UNSET is not set "
            "(write ${PGFLOW_TEST_UNSET:-default} to give a default)");
  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
sinks: {out: {fake: {path: "${PGFLOW_TEST_UNSET"}}}
)"),
              HasSubstr("p.yaml:6:28: sinks.out.fake.path: unterminated '${'"));
  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
sinks: {out: {fake: {path: "${1X}"}}}
)"),
              HasSubstr("p.yaml:6:28: sinks.out.fake.path: invalid variable reference '${1X}'"));
}

// ---------------------------------------------------------------------------------------------
// ConfigNode's mappings (its typed reads: config_node_test.cc).

ConfigNode NodeOf(const std::string& yaml) {
  return ConfigNode(std::make_shared<const YAML::Node>(YAML::Load(yaml)), "n.yaml", "x");
}

TEST_F(ConfigTest, MappingAccessors) {
  ConfigNode node = NodeOf("b: 1\na: ~\nc: [x]\n");
  ASSERT_TRUE(node.IsMap());
  EXPECT_TRUE(node.Get("b").has_value());
  EXPECT_EQ(node.Get("b")->path(), "x.b");
  EXPECT_FALSE(node.Get("a").has_value());  // null counts as absent
  EXPECT_FALSE(node.Get("zz").has_value());
  EXPECT_EQ(node.KeyNode("c")->Position(), "n.yaml:3:1");
  EXPECT_EQ(node.Get("c")->Position(), "n.yaml:3:4");
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].first, "b");
  EXPECT_EQ(entries[1].first, "a");
  EXPECT_TRUE(entries[1].second.IsNull());
  EXPECT_EQ(entries[2].second.Items().at(0).path(), "x.c[0]");
  // Non-mappings: nothing, and CheckKeys says why.
  ConfigNode scalar = NodeOf("hello");
  EXPECT_FALSE(scalar.Get("a").has_value());
  EXPECT_TRUE(scalar.Entries().empty());
  EXPECT_TRUE(scalar.Items().empty());
  EXPECT_EQ(Message(FakeTable().CheckKeys(scalar)),
            "n.yaml:1:1: x: expected a mapping, got a string");
}

// ---------------------------------------------------------------------------------------------
// Files, registry and option tables.

TEST_F(ConfigTest, LoadPipelineConfig) {
  std::string dir = ::testing::TempDir() + "/config_test_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  std::string path = dir + "/shop.yaml";
  {
    std::ofstream out(path);
    out << kMinimal.substr(1) << "buffer: {queue_bytes: 1KiB}\n";
  }
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(Message(config.status()),
            path + ":8:23: buffer.queue_bytes: must be at least 1MiB, got 1024 bytes");
  {
    std::ofstream out(path);
    out << kMinimal.substr(1);
  }
  config = LoadPipelineConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->file, path);

  config = LoadPipelineConfig(dir + "/missing.yaml");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(config.status()), HasSubstr(dir + "/missing.yaml: cannot read"));
  config = LoadPipelineConfig(dir);
  EXPECT_FALSE(config.ok());
  EXPECT_THAT(Message(config.status()), HasSubstr(dir + ": cannot read"));
  std::filesystem::remove_all(dir);
}

TEST_F(ConfigTest, Registry) {
  const SinkFactory* fake = FindSinkFactory("fake");
  ASSERT_NE(fake, nullptr);
  EXPECT_EQ(FindSinkFactory("nope"), nullptr);
  RegisterSinkFactory(std::make_unique<FakeSinkFactory>());  // a second "fake" is discarded
  EXPECT_EQ(FindSinkFactory("fake"), fake);
  int count = 0;
  for (const SinkFactory* factory : SinkFactories()) count += factory->type() == "fake";
  EXPECT_EQ(count, 1);
}

// Every table, sections included: unique keys, help on each, no default for a required key.
void ExpectWellFormed(const OptionSchema& schema, const std::string& prefix) {
  std::set<std::string> keys;
  for (const OptionDoc& doc : schema.docs()) {
    std::string key = prefix + "." + doc.key;
    EXPECT_TRUE(keys.insert(doc.key).second) << "duplicate " << key;
    EXPECT_FALSE(doc.help.empty()) << key;
    if (doc.required) {
      EXPECT_TRUE(doc.default_text.empty()) << key;
    }
    if (doc.type == OptionType::kChoice) {
      EXPECT_FALSE(doc.choices.empty()) << key;
    }
    if (doc.type == OptionType::kSection) {
      ASSERT_NE(doc.section, nullptr) << key;
      ExpectWellFormed(*doc.section, key);
    }
  }
}

TEST_F(ConfigTest, OptionTablesAreWellFormed) {
  ExpectWellFormed(PipelineOptions(), "");
  ExpectWellFormed(SinkCommonOptions(), "sinks.<name>");
  for (const SourceFactory* factory : SourceFactories()) {
    ExpectWellFormed(factory->options(), "source." + std::string(factory->type()));
  }
  for (const SinkFactory* factory : SinkFactories()) {
    ExpectWellFormed(factory->options(), "sinks.<name>." + std::string(factory->type()));
  }
}

}  // namespace
}  // namespace pgflow

namespace pgflow {
namespace {

TEST_F(ConfigTest, DdlPolicyPerSink) {
  absl::StatusOr<PipelineConfig> config = Parse(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  a: {fake: {path: /tmp/a}}
  b: {fake: {path: /tmp/b}, ddl: {mode: events, exclude: [index, sequence]}}
  c: {fake: {path: /tmp/c}, ddl: {mode: ignore}}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->sinks.size(), 3u);
  EXPECT_EQ(config->sinks[0].common.ddl.mode, DdlMode::kApply);
  EXPECT_TRUE(config->sinks[0].common.ddl.Passes("index"));
  EXPECT_EQ(config->sinks[1].common.ddl.mode, DdlMode::kEvents);
  EXPECT_FALSE(config->sinks[1].common.ddl.Passes("index"));
  EXPECT_TRUE(config->sinks[1].common.ddl.Passes("table"));
  EXPECT_FALSE(config->sinks[2].common.ddl.Passes("table"));

  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  a: {fake: {path: /tmp/a}, ddl: {mode: replay}}
)"),
            "p.yaml:4:41: sinks.a.ddl.mode: unknown ddl mode 'replay' (expected one of: apply, "
            "events, ignore)");
  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  a: {fake: {path: /tmp/a}, ddl: {exlude: [index]}}
)"),
              ::testing::HasSubstr("unknown key 'exlude' (did you mean 'exclude'?"));
}

}  // namespace
}  // namespace pgflow

namespace pgflow {
namespace {

// One run reports every mistake of a file, each where it is, not one per round.
TEST_F(ConfigTest, DeadLetterPerSink) {
  auto with = [](std::string_view dead_letter) {
    std::string yaml(kMinimal);
    yaml += "  kept: {fake: {path: /tmp/k}, dead_letter: " + std::string(dead_letter) + "}\n";
    return yaml;
  };
  absl::StatusOr<PipelineConfig> config = Parse(with("{path: /var/lib/pgflow/rejected.jsonl}"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->sinks[0].common.dead_letter.enabled());
  EXPECT_EQ(config->sinks[1].common.dead_letter.path, "/var/lib/pgflow/rejected.jsonl");
  EXPECT_EQ(ContextFor(*config, config->sinks[1]).dead_letter.path,
            "/var/lib/pgflow/rejected.jsonl");
  config = Parse(with("{table: pgflow.dead_letters, url: 'postgres://x@y/z'}"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sinks[1].common.dead_letter.table, "pgflow.dead_letters");

  EXPECT_THAT(ErrorOf(with("{}")),
              HasSubstr("p.yaml:8:45: sinks.kept.dead_letter: give `path` (a file) or `table` (a PostgreSQL table)"));
  EXPECT_THAT(ErrorOf(with("{path: a, table: b}")),
              HasSubstr("p.yaml:8:45: sinks.kept.dead_letter: give either `path` or `table`, not both"));
  EXPECT_THAT(ErrorOf(with("{path: a, url: b}")), HasSubstr("`url` goes with `table`"));
  EXPECT_THAT(ErrorOf(with("{file: a}")),
              HasSubstr("sinks.kept.dead_letter: unknown key 'file'"));
  EXPECT_THAT(ErrorOf(with("true")), HasSubstr("sinks.kept.dead_letter"));
  // A sink that sets nothing aside says so.
  std::string jsonl(kMinimal);
  jsonl += "  file: {jsonl: {path: /tmp/f}, dead_letter: {path: /tmp/r}}\n";
  EXPECT_THAT(ErrorOf(jsonl),
              HasSubstr("sinks.file.dead_letter: the jsonl sink sets nothing aside"));
}

TEST_F(ConfigTest, EveryErrorOfAFileInOneRun) {
  std::string message = ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    snapshot: {mode: sometimes}
    status_interval: 5 parsecs
sinks:
  out: {fake: {path: x}, flush_intervall: 1s}
  other: {jsonl: {pth: x.jsonl}}
  third: {fake: {path: y}, flush_interval: forever}
)");
  EXPECT_EQ(message,
            "p.yaml:6:22: source.postgres.snapshot.mode: unknown snapshot mode 'sometimes' "
            "(expected one of: initial, never, only)\n"
            "p.yaml:7:22: source.postgres.status_interval: expected a duration: an integer "
            "with a unit ms, s, m or h (like 250ms or 5s; no unit means seconds), got '5 "
            "parsecs'\n"
            "p.yaml:9:26: sinks.out: unknown key 'flush_intervall' (did you mean "
            "'flush_interval'? expected one of: blackhole, fake, jsonl, kafka, kv, opensearch, postgres, "
            "webhook, flush_interval, ddl, transforms, dead_letter)\n"
            "p.yaml:10:19: sinks.other.jsonl: unknown key 'pth' (did you mean 'path'? expected "
            "one of: path, fsync, numeric_as_number)\n"
            "p.yaml:11:44: sinks.third.flush_interval: expected a duration: an integer with a "
            "unit ms, s, m or h (like 250ms or 5s; no unit means seconds), got 'forever'");
}

}  // namespace
}  // namespace pgflow
