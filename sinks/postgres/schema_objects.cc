#include "sinks/postgres/schema_objects.h"

#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_tools.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

// pg_restore's descriptions of what a table may depend on (a line reads "<id>; <classid>
// <oid> <desc> <schema> <name> <owner>").
constexpr std::array<std::string_view, 17> kKinds = {
    "SCHEMA ",          "EXTENSION ",          "TYPE ",      "SHELL TYPE ",  "DOMAIN ",
    "FUNCTION ",        "PROCEDURE ",          "AGGREGATE ", "COLLATION ",   "CONVERSION ",
    "OPERATOR ",        "OPERATOR CLASS ",     "CAST ",      "TEXT SEARCH ", "TRANSFORM ",
    "OPERATOR FAMILY ", "PROCEDURAL LANGUAGE "};

// A temporary file, removed with this.
class TempFile {
 public:
  TempFile() {
    char path[] = "/tmp/pgflow-schema-XXXXXX";
    int fd = ::mkstemp(path);
    if (fd >= 0) {
      ::close(fd);
      path_ = path;
    }
  }
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

bool IsSchemaObjectEntry(std::string_view line) {
  if (line.empty() || line[0] == ';') return false;
  // Skip "<id>; <classid> <oid> ".
  size_t at = line.find("; ");
  if (at == std::string_view::npos) return false;
  std::string_view rest = line.substr(at + 2);
  for (int field = 0; field < 2; ++field) {
    size_t space = rest.find(' ');
    if (space == std::string_view::npos) return false;
    rest = rest.substr(space + 1);
  }
  for (std::string_view kind : kKinds) {
    if (rest.starts_with(kind)) return true;
  }
  return false;
}

absl::StatusOr<size_t> CopySchemaObjects(const std::string& source_url,
                                         const std::string& target_url, std::string_view sink_name,
                                         bool second_pass) {
  const auto started = std::chrono::steady_clock::now();
  TempFile dump;
  TempFile list;
  if (dump.path().empty() || list.path().empty()) {
    return absl::InternalError("cannot create a temporary file in /tmp for pg_dump");
  }
  absl::StatusOr<ConninfoForTool> source = WithoutPassword(source_url);
  if (!source.ok()) return source.status();
  absl::StatusOr<ConninfoForTool> target = WithoutPassword(target_url);
  if (!target.ok()) return target.status();
  absl::StatusOr<ToolRun> dumped = RunPgTool(
      "pg_dump",
      {"--schema-only", "--section=pre-data", "--format=custom", "--exclude-schema=pgflow",
       "--file", dump.path(), absl::StrCat("--dbname=", source->conninfo)},
      source->password);
  if (!dumped.ok()) return dumped.status();
  if (dumped->exit_code != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("pg_dump --schema-only of the source failed: ", dumped->output));
  }
  absl::StatusOr<ToolRun> listed = RunPgTool("pg_restore", {"--list", dump.path()});
  if (!listed.ok()) return listed.status();
  if (listed->exit_code != 0) {
    return absl::InternalError(absl::StrCat("pg_restore --list failed: ", listed->output));
  }
  std::string kept;
  size_t objects = 0;
  for (absl::string_view line : absl::StrSplit(listed->output, '\n')) {
    if (!IsSchemaObjectEntry(Sv(line))) continue;
    absl::StrAppend(&kept, line, "\n");
    ++objects;
  }
  if (objects == 0) return 0;
  {
    std::ofstream out(list.path(), std::ios::trunc);
    out << kept;
    if (!out) return absl::InternalError(absl::StrCat("writing ", list.path()));
  }
  absl::StatusOr<ToolRun> restored =
      RunPgTool("pg_restore",
                {"--no-owner", "--no-acl", "--use-list", list.path(),
                 absl::StrCat("--dbname=", target->conninfo), dump.path()},
                target->password);
  if (!restored.ok()) return restored.status();
  // pg_restore goes on past a failed statement: those the target already had are expected.
  // Most CREATE commands say so; some (CREATE TEXT SEARCH DICTIONARY) only hit the unique
  // index of their catalog, which is the same fact.
  size_t present = 0;
  std::vector<std::string> failures;
  for (absl::string_view line : absl::StrSplit(restored->output, '\n')) {
    if (!absl::StrContains(line, "ERROR:")) continue;
    if (absl::StrContains(line, "already exists") ||
        absl::StrContains(line, "duplicate key value violates unique constraint \"pg_")) {
      ++present;
    } else {
      failures.emplace_back(line);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (second_pass) {
    LogInfo(
        "sink %s (postgres): schema objects that needed the tables restored in %.1fs: %d "
        "object(s)",
        sink_name, seconds, objects - present - failures.size());
  } else {
    LogInfo(
        "sink %s (postgres): the source's types, domains, functions and other schema objects "
        "restored in %.1fs (pg_dump --section=pre-data): %d object(s), %d already there%s",
        sink_name, seconds, objects - present - failures.size(), present,
        failures.empty() ? "" : Cat(", ", failures.size(), " tried again once the tables exist"));
    return failures.size();
  }
  for (size_t i = 0; i < failures.size() && i < 5; ++i) {
    LogWarning("sink %s (postgres): restoring a schema object: %s", sink_name, failures[i]);
  }
  if (failures.size() > 5) {
    LogWarning("sink %s (postgres): %d more schema objects failed to restore", sink_name,
               failures.size() - 5);
  }
  return failures.size();
}

}  // namespace pgflow
