#pragma once

// PostgreSQL's client programs (pg_dump, pg_restore), run as child processes.
//
// The newest installed version is used (/usr/lib/postgresql/<major>/bin, as Debian installs
// them, else the PATH): pg_dump reads servers of its own version and older ones.
//
// Thread-safety: plain functions; any thread may call them.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

// What a program printed and how it ended.
struct ToolRun {
  int exit_code = 0;
  std::string output;  // stdout and stderr together, the first 1 MiB
};

// Runs PostgreSQL client program `tool` ("pg_dump") with `args` and waits for it. NotFound
// when the program is not installed, naming the package; a run that ends with an exit code
// other than 0 is returned as it is, for the caller to judge. `password`, when not empty, is
// handed over in PGPASSWORD (the environment `ps` does not show to other users) instead of the
// command line: pass connection strings through WithoutPassword (conninfo.h).
absl::StatusOr<ToolRun> RunPgTool(std::string_view tool, const std::vector<std::string>& args,
                                  const std::string& password = "");

// The same with the program at `path` ("/usr/lib/postgresql/15/bin/initdb"), or looked up in
// the PATH when it names no directory.
absl::StatusOr<ToolRun> RunProgram(const std::string& path, const std::vector<std::string>& args,
                                   const std::string& password = "");

// The newest /usr/lib/postgresql/<major>/bin/<tool>, or `tool` itself (for the PATH).
std::string FindPgTool(std::string_view tool);

}  // namespace pgflow
