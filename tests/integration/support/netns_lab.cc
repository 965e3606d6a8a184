#include "tests/integration/support/netns_lab.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <regex>

#include "absl/strings/str_cat.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

// Runs `ip <args>` (its output into *output): whether it succeeded; when it did not and
// `must`, aborts the test binary saying why.
bool Ip(const std::string& args, bool must = true, std::string* output = nullptr) {
  TempDir tmp;
  const std::string out = tmp.File("out");
  const int status = std::system(absl::StrCat("ip ", args, " >", out, " 2>&1").c_str());
  if (output != nullptr) *output = ReadFile(out);
  if (status == 0) return true;
  if (must) {
    std::fprintf(stderr, "ip %s failed (the tests make network namespaces: they run as root "
                         "with Debian's iproute2):\n%s\n", args.c_str(), ReadFile(out).c_str());
    std::abort();
  }
  return false;
}

bool Alive(const std::string& pid) { return ::kill(std::stoi(pid), 0) == 0 || errno != ESRCH; }

// The namespaces and bridges of runs that were killed before removing theirs.
void RemoveLeftovers() {
  std::string list;
  Ip("netns list", false, &list);
  const std::regex netns(R"(pgflow-(\d+)-h\d+)");
  for (std::sregex_iterator it(list.begin(), list.end(), netns), end; it != end; ++it) {
    if (!Alive((*it)[1])) Ip(absl::StrCat("netns del ", it->str()), false);
  }
  Ip("-o link show type bridge", false, &list);
  const std::regex bridge(R"(pgfb(\d+))");
  for (std::sregex_iterator it(list.begin(), list.end(), bridge), end; it != end; ++it) {
    if (!Alive((*it)[1])) Ip(absl::StrCat("link del ", it->str()), false);
  }
}

int OpenNamespace(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return fd;
}

}  // namespace

NetnsLab::NetnsLab(int hosts) {
  RemoveLeftovers();
  const pid_t pid = ::getpid();
  const std::string subnet = absl::StrCat("10.213.", pid % 250 + 1, ".");
  bridge_ = absl::StrCat("pgfb", pid);
  bridge_address_ = subnet + "1";
  Ip(absl::StrCat("link add ", bridge_, " type bridge"));
  Ip(absl::StrCat("addr add ", bridge_address_, "/24 dev ", bridge_));
  Ip(absl::StrCat("link set ", bridge_, " up"));
  for (int i = 0; i < hosts; ++i) {
    Host h{.netns = absl::StrCat("pgflow-", pid, "-h", i + 1),
           .link = absl::StrCat("pgfv", pid, "h", i + 1),
           .address = absl::StrCat(subnet, 11 + i)};
    Ip("netns add " + h.netns);
    Ip(absl::StrCat("link add ", h.link, " type veth peer name eth0 netns ", h.netns));
    Ip(absl::StrCat("link set ", h.link, " master ", bridge_, " up"));
    Ip(absl::StrCat("-n ", h.netns, " addr add ", h.address, "/24 dev eth0"));
    Ip(absl::StrCat("-n ", h.netns, " link set eth0 up"));
    Ip(absl::StrCat("-n ", h.netns, " link set lo up"));
    hosts_.push_back(std::move(h));
  }
}

NetnsLab::~NetnsLab() {
  for (const Host& h : hosts_) {
    // The veth pair first: deleting it is synchronous, while a namespace's own links go with
    // it only once the kernel's cleanup gets to it, which a busy machine defers past the next
    // lab's constructor (its same names: "File exists").
    Ip("link del " + h.link, false);
    Ip("netns del " + h.netns, false);
  }
  Ip("link del " + bridge_, false);
}

void NetnsLab::Cut(int i) { Ip(absl::StrCat("link set ", hosts_[i].link, " down")); }
void NetnsLab::Heal(int i) { Ip(absl::StrCat("link set ", hosts_[i].link, " up")); }

void NetnsLab::Enter(int i) const {
  const int fd = OpenNamespace("/var/run/netns/" + hosts_[i].netns);
  if (::setns(fd, CLONE_NEWNET) != 0) {
    std::perror("setns");
    std::abort();
  }
  ::close(fd);
}

NetnsLab::InHost::InHost(const NetnsLab& lab, int i)
    : home_(OpenNamespace("/proc/thread-self/ns/net")) {
  lab.Enter(i);
}

NetnsLab::InHost::~InHost() {
  if (::setns(home_, CLONE_NEWNET) != 0) {
    std::perror("setns");
    std::abort();
  }
  ::close(home_);
}

}  // namespace pgflow::testing
