#include "engine/stop_signal.h"

#include <signal.h>
#include <unistd.h>

namespace pgflow {
namespace {

StopSignal* g_stop = nullptr;

void OnSignal(int) {
  if (g_stop == nullptr) return;
  if (g_stop->requested()) {
    static const char kMsg[] = "second signal: exiting without draining\n";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    _exit(130);
  }
  g_stop->Request();
}

}  // namespace

void InstallStopSignalHandlers(StopSignal* stop) {
  g_stop = stop;
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace pgflow
