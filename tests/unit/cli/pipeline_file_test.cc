// A migration's pipeline files across cutovers (cli/pipeline_file.h): which one runs now, the
// name of the next, and the stream back's file a cutover writes (cli/reverse_pipeline.h), read
// back as `pgflow run` reads it.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli/pipeline_file.h"
#include "cli/reverse_pipeline.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/config_testing.h"

namespace pgflow {
namespace {

using config_testing::ConfigTest;
using config_testing::Pg;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class PipelineFileTest : public ConfigTest {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/pgflow-files.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(Path(name)) << text;
  }
  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dir_;
};

constexpr char kForward[] = R"(pipeline: shop_migrate
source:
  postgres:
    url: ${SOURCE_URL}
    tables: [public.*]
    slot: my_slot
    publication: my_pub
    snapshot: {mode: initial, workers: 2}
    status_interval: 200ms
sinks:
  target:
    postgres: {url: '${TARGET_URL}', load_workers: 2, batch_rows: 500}
    flush_interval: 20ms
  search:
    fake: {path: /tmp/out}
admin: {listen: 127.0.0.1:9187}
)";

TEST_F(PipelineFileTest, GenerationsAndTheOneThatRunsNow) {
  Write("migrate.yaml", kForward);
  const PipelineFile first = CurrentPipelineFile(Path("migrate.yaml"));
  EXPECT_EQ(first.path, Path("migrate.yaml"));  // no marker yet
  EXPECT_EQ(first.generation, 0);
  const PipelineFile second = NextPipelineFile(first);
  EXPECT_EQ(second.path, Path("migrate.cutover-1.yaml"));
  EXPECT_EQ(second.generation, 1);
  EXPECT_EQ(NextPipelineFile(second).path, Path("migrate.cutover-2.yaml"));

  // The marker names a file that does not exist (yet): the one named runs.
  ASSERT_TRUE(MarkCurrent(second).ok());
  EXPECT_EQ(Read("migrate.current"), "migrate.cutover-1.yaml\n");
  EXPECT_EQ(CurrentPipelineFile(Path("migrate.yaml")).path, Path("migrate.yaml"));
  Write("migrate.cutover-1.yaml", "pipeline: x\n");
  // Any file of the family leads to it, and the earlier ones are listed.
  EXPECT_EQ(CurrentPipelineFile(Path("migrate.yaml")).path, Path("migrate.cutover-1.yaml"));
  EXPECT_EQ(CurrentPipelineFile(Path("migrate.cutover-1.yaml")).generation, 1);
  const std::vector<PipelineFile> earlier = EarlierPipelineFiles(second);
  ASSERT_EQ(earlier.size(), 1u);
  EXPECT_EQ(earlier[0].path, Path("migrate.yaml"));
  // Another family's marker, or a path in the marker, is not followed.
  Write("other.current", "migrate.cutover-1.yaml\n");
  Write("other.yaml", kForward);
  EXPECT_EQ(CurrentPipelineFile(Path("other.yaml")).path, Path("other.yaml"));
  Write("migrate.current", "../etc/migrate.cutover-1.yaml\n");
  EXPECT_EQ(CurrentPipelineFile(Path("migrate.yaml")).path, Path("migrate.yaml"));
}

TEST_F(PipelineFileTest, TheStreamBackIsThePipelineTheOtherWay) {
  Write("migrate.yaml", kForward);
  ::setenv("SOURCE_URL", "postgres://flow@old:5432/shop", 1);
  ::setenv("TARGET_URL", "postgres://flow@new:5432/shop", 1);
  absl::StatusOr<PipelineConfig> forward = LoadPipelineConfig(Path("migrate.yaml"));
  ASSERT_TRUE(forward.ok()) << forward.status();
  const PipelineFile file = CurrentPipelineFile(Path("migrate.yaml"));
  absl::StatusOr<ReversePipeline> reverse = PlanReversePipeline(file, *forward, "target");
  ASSERT_TRUE(reverse.ok()) << reverse.status();
  EXPECT_EQ(reverse->name, "shop_migrate_cutover_1");
  EXPECT_EQ(reverse->file.path, Path("migrate.cutover-1.yaml"));
  EXPECT_THAT(reverse->left_out, ElementsAre("search"));
  ASSERT_TRUE(WriteReversePipeline(file, "target", *reverse).ok());
  EXPECT_EQ(std::filesystem::status(reverse->file.path).permissions() &
                std::filesystem::perms::others_read,
            std::filesystem::perms::none);

  const std::string text = Read("migrate.cutover-1.yaml");
  EXPECT_THAT(text, HasSubstr("${TARGET_URL}"));  // as written: no secret in the file
  EXPECT_THAT(text, Not(HasSubstr("flow@new")));
  absl::StatusOr<PipelineConfig> back = LoadPipelineConfig(reverse->file.path);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(back->name, "shop_migrate_cutover_1");
  EXPECT_EQ(Pg(*back).url, "postgres://flow@new:5432/shop");
  EXPECT_EQ(Pg(*back).slot, "pgflow_shop_migrate_cutover_1");
  EXPECT_EQ(Pg(*back).publication, "pgflow_shop_migrate_cutover_1");
  EXPECT_EQ(Pg(*back).snapshot.mode, SnapshotMode::kNever);
  EXPECT_EQ(Pg(*back).status_interval, std::chrono::milliseconds(200));
  ASSERT_EQ(back->sinks.size(), 1u);
  EXPECT_EQ(back->sinks[0].name, "target");
  const auto& sink = static_cast<const PostgresSinkOptions&>(*back->sinks[0].options);
  EXPECT_EQ(sink.url, "postgres://flow@old:5432/shop");
  EXPECT_EQ(sink.batch_rows, 500);
  EXPECT_FALSE(sink.create_tables);
  EXPECT_EQ(back->sinks[0].common.flush_interval, std::chrono::milliseconds(20));
  EXPECT_EQ(back->admin.listen, "127.0.0.1:9187");

  // The cutover back writes generation 2, named after the base name again.
  ASSERT_TRUE(MarkCurrent(reverse->file).ok());
  absl::StatusOr<ReversePipeline> again =
      PlanReversePipeline(CurrentPipelineFile(Path("migrate.yaml")), *back, "target");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->name, "shop_migrate_cutover_2");
  EXPECT_EQ(again->file.path, Path("migrate.cutover-2.yaml"));
}

TEST_F(PipelineFileTest, NoStreamBackThroughARenamingSink) {
  std::string renaming = kForward;
  renaming.replace(renaming.find("load_workers: 2"), 15, "schema: moved");
  Write("migrate.yaml", renaming);
  ::setenv("SOURCE_URL", "postgres://flow@old:5432/shop", 1);
  ::setenv("TARGET_URL", "postgres://flow@new:5432/shop", 1);
  absl::StatusOr<PipelineConfig> forward = LoadPipelineConfig(Path("migrate.yaml"));
  ASSERT_TRUE(forward.ok()) << forward.status();
  absl::StatusOr<ReversePipeline> reverse =
      PlanReversePipeline(CurrentPipelineFile(Path("migrate.yaml")), *forward, "target");
  ASSERT_FALSE(reverse.ok());
  EXPECT_THAT(reverse.status().message(), HasSubstr("writes into another schema (schema: moved)"));
  EXPECT_THAT(reverse.status().message(), HasSubstr("--no-reverse"));
}

}  // namespace
}  // namespace pgflow
