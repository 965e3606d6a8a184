#pragma once

// What the pipeline file's unit tests share (config_test.cc, config_postgres_test.cc): a sink
// type of their own (`fake`), the fixture that registers it beside every real component, and
// parsing helpers.

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cli/components.h"
#include "engine/config.h"
#include "engine/registry.h"
#include "engine/sink.h"
#include "gtest/gtest.h"
#include "sources/postgres/postgres_source_config.h"

namespace pgflow::config_testing {

// A sink type for the tests: {fake: {path: <string, required>, fsync: <bool>}}.
struct FakeSinkOptions : SinkOptions {
  std::string path;
  bool fsync = false;
};

inline const OptionTable<FakeSinkOptions>& FakeTable() {
  static const auto* table = new OptionTable<FakeSinkOptions>({
      StringOption("path", &FakeSinkOptions::path).Required().Help("where"),
      BoolOption("fsync", &FakeSinkOptions::fsync).Help("whether"),
  });
  return *table;
}

class FakeSinkFactory : public SinkFactoryOf<FakeSinkOptions> {
 public:
  std::string_view type() const override { return "fake"; }
  std::string_view help() const override { return "a sink for the tests"; }
  bool SetsAside() const override { return true; }

 protected:
  const OptionTable<FakeSinkOptions>& table() const override { return FakeTable(); }
  std::unique_ptr<Sink> Build(const SinkContext&,
                              std::shared_ptr<const FakeSinkOptions>) const override {
    return nullptr;
  }
};

class ConfigTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RegisterComponents();  // every source type, as `pgflow` registers them
    if (FindSinkFactory("fake") == nullptr) {
      RegisterSinkFactory(std::make_unique<FakeSinkFactory>());
    }
  }
};

// The postgres source's options of a parsed pipeline.
inline const PostgresSourceOptions& Pg(const PipelineConfig& config) {
  return *PostgresSourceOf(config);
}

// Raw string literals below start with a newline, which is dropped: line 1 is the first line
// after `R"(`.
inline absl::StatusOr<PipelineConfig> Parse(std::string_view yaml) {
  if (!yaml.empty() && yaml.front() == '\n') yaml.remove_prefix(1);
  return ParsePipelineConfig(yaml, "p.yaml");
}

inline std::string Message(const absl::Status& status) { return std::string(status.message()); }

// Parses `yaml`, which must fail, and returns the message.
inline std::string ErrorOf(std::string_view yaml) {
  absl::StatusOr<PipelineConfig> config = Parse(yaml);
  EXPECT_FALSE(config.ok()) << "parsed without error:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return Message(config.status());
}

// A minimal valid file; the tests append to or edit it.
inline constexpr std::string_view kMinimal = R"(
pipeline: shop
source:
  postgres:
    url: postgres://app@db:5432/shop
    tables: [public.orders]
sinks:
  out: {fake: {path: /tmp/out}}
)";

}  // namespace pgflow::config_testing
