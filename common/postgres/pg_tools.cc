#include "common/postgres/pg_tools.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "engine/str_cat.h"

extern char** environ;

namespace pgflow {
namespace {

constexpr size_t kKeptOutput = 1u << 20;

}  // namespace

std::string FindPgTool(std::string_view tool) {
  std::error_code ec;
  int best_major = -1;
  std::string best;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    int major = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &major)) continue;
    std::filesystem::path candidate = entry.path() / "bin" / tool;
    if (major > best_major && ::access(candidate.c_str(), X_OK) == 0) {
      best_major = major;
      best = candidate.string();
    }
  }
  return best.empty() ? std::string(tool) : best;
}

absl::StatusOr<ToolRun> RunPgTool(std::string_view tool, const std::vector<std::string>& args,
                                  const std::string& password) {
  return RunProgram(FindPgTool(tool), args, password);
}

absl::StatusOr<ToolRun> RunProgram(const std::string& path, const std::vector<std::string>& args,
                                   const std::string& password) {
  const std::string_view tool(path.c_str() + (path.rfind('/') == std::string::npos
                                                  ? 0
                                                  : path.rfind('/') + 1));
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!password.empty() && std::string_view(*e).starts_with("PGPASSWORD=")) continue;
    env_storage.emplace_back(*e);
  }
  if (!password.empty()) env_storage.push_back(Cat("PGPASSWORD=", password));
  std::vector<char*> env;
  for (std::string& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);
  std::vector<std::string> argv_storage = {path};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(Cat("pipe for ", tool, ": ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  pid_t pid = 0;
  int spawned = ::posix_spawnp(&pid, path.c_str(), &actions, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    if (spawned == ENOENT) {
      return absl::NotFoundError(
          Cat(tool, " is not installed (Debian: apt-get install postgresql-client)"));
    }
    return absl::InternalError(Cat("starting ", path, ": ", std::strerror(spawned)));
  }
  ToolRun run;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(pipe_fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const size_t room = kKeptOutput - std::min(kKeptOutput, run.output.size());
    run.output.append(buf, std::min(room, static_cast<size_t>(n)));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

}  // namespace pgflow
