// The `pgflow` command: sets up the process, parses the command line (cli/app.h) and runs the
// subcommand it names. Each subcommand lives in its own cli/*_command.cc.

#include <malloc.h>

#include <cstdio>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "cli/app.h"
#include "cli/components.h"
#include "engine/log.h"

namespace pgflow {
namespace {

// Applies --log-level and --log-format; false after saying what is wrong with them.
bool SetUpLogging(const CommandLine& line) {
  LogLevel level;
  if (!ParseLogLevel(line.log_level, &level)) {
    std::fprintf(stderr, "--log-level: unknown level '%s' (debug, info, warn, error)\n",
                 line.log_level.c_str());
    return false;
  }
  SetLogLevel(level);
  LogFormat format;
  if (!ParseLogFormat(line.log_format, &format)) {
    std::fprintf(stderr, "--log-format: unknown format '%s' (text, json)\n",
                 line.log_format.c_str());
    return false;
  }
  SetLogFormat(format);
  return true;
}

int Main(int argc, char** argv) {
  RegisterComponents();
  std::unique_ptr<CommandLine> line = MakeCommandLine();
  if (argc == 1) {
    std::printf("%s\n", line->app.help().c_str());
    std::fprintf(stderr, "pgflow: name a command (pgflow run pipeline.yaml, pgflow --help)\n");
    return kExitConfig;
  }
  try {
    line->app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end with 0; a wrong command line with kExitConfig, not CLI11's own
    // codes (106 and the like).
    return line->app.exit(e) == 0 ? kExitOk : kExitConfig;
  }
  if (!SetUpLogging(*line)) return kExitConfig;
  for (const Command& command : line->commands) {
    if (command.app->parsed()) return command.run();
  }
  return kExitOk;
}

}  // namespace
}  // namespace pgflow

int main(int argc, char** argv) {
  // Debian's Abseil is built with deadlock detection on, which books every lock and unlock
  // of every absl::Mutex (hundreds of instructions, under a process-wide lock): a debugging aid
  // the queues and the kv store's readers should not pay for in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Batches of rows (a MiB or so) are allocated by one thread and freed by another, all the time.
  // glibc's defaults give each to mmap, or hand a freed arena top back to the kernel, so that
  // every batch faults its pages in anew: a quarter of pgflow's CPU in a snapshot. Memory is
  // bounded by the pipeline's queues, not by giving it back.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  return pgflow::Main(argc, argv);
}
