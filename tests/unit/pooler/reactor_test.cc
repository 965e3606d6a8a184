#include "pooler/reactor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

namespace asio = asio_support::asio;

// Records what the reactor hands it; reads what is there, as the relay does.
class Recorder : public Reactor::Target {
 public:
  void OnReady(int fd, uint32_t events) override {
    reports.emplace_back(fd, events);
    if (drain) {
      char buffer[256];
      while (::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) > 0) {
      }
    }
  }
  std::vector<std::pair<int, uint32_t>> reports;
  bool drain = true;
};

// A connected pair of stream sockets, closed at the end.
struct Pair {
  Pair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0); }
  ~Pair() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  int fd[2] = {-1, -1};
};

void Spin(asio::io_context& context) {
  context.restart();
  context.run_for(std::chrono::milliseconds(50));
}

TEST(ReactorTest, HandsReadySocketsToTheirOwners) {
  asio::io_context context(1);
  Reactor reactor(&context);
  ASSERT_TRUE(reactor.Open().ok());
  Recorder a, b;
  Pair one, two;
  ASSERT_TRUE(reactor.Add(one.fd[0], Reactor::kRead, &a));
  ASSERT_TRUE(reactor.Add(two.fd[0], Reactor::kRead, &b));
  ASSERT_EQ(::write(one.fd[1], "x", 1), 1);
  Spin(context);
  ASSERT_EQ(a.reports.size(), 1u);  // once: it read what came, level-triggered is quiet again
  EXPECT_EQ(a.reports[0].first, one.fd[0]);
  EXPECT_TRUE(a.reports[0].second & EPOLLIN);
  EXPECT_TRUE(b.reports.empty());

  // Watched for writing too: reported writable.
  ASSERT_TRUE(reactor.Modify(two.fd[0], Reactor::kRead | Reactor::kWrite));
  Spin(context);
  ASSERT_FALSE(b.reports.empty());
  EXPECT_TRUE(b.reports.back().second & EPOLLOUT);
  ASSERT_TRUE(reactor.Modify(two.fd[0], Reactor::kRead));
  b.reports.clear();
  Spin(context);
  EXPECT_TRUE(b.reports.empty());

  // Removed: no more reports.
  reactor.Remove(one.fd[0]);
  ASSERT_EQ(::write(one.fd[1], "y", 1), 1);
  a.reports.clear();
  Spin(context);
  EXPECT_TRUE(a.reports.empty());
}

// An idle server connection's socket stays registered without owner; a report takes it out of
// the set (level-triggered, it would come every turn), and the next taker's Watch puts it back.
TEST(ReactorTest, ASocketReportedWithoutOwnerIsTakenOutUntilWatchedAgain) {
  asio::io_context context(1);
  Reactor reactor(&context);
  ASSERT_TRUE(reactor.Open().ok());
  Recorder owner;
  Pair server;
  int watched_by = -1;
  ASSERT_TRUE(reactor.Watch(server.fd[0], &watched_by, Reactor::kRead, &owner));
  EXPECT_EQ(watched_by, reactor.epfd());
  reactor.Unwatch(server.fd[0], Reactor::kRead);
  ASSERT_EQ(::write(server.fd[1], "E", 1), 1);  // the server says something while idle
  Spin(context);
  EXPECT_TRUE(owner.reports.empty());
  Spin(context);  // taken out: not reported again
  EXPECT_EQ(reactor.events(server.fd[0]), 0u);

  ASSERT_TRUE(reactor.Watch(server.fd[0], &watched_by, Reactor::kRead, &owner));
  Spin(context);
  ASSERT_EQ(owner.reports.size(), 1u);  // back in the set, with what is still there
  EXPECT_EQ(owner.reports[0].first, server.fd[0]);
}

// A connection taken by another thread: its socket leaves the first set for the second.
TEST(ReactorTest, WatchMovesASocketBetweenSets) {
  asio::io_context first_context(1), second_context(1);
  Reactor first(&first_context), second(&second_context);
  ASSERT_TRUE(first.Open().ok());
  ASSERT_TRUE(second.Open().ok());
  Recorder on_first, on_second;
  Pair server;
  int watched_by = -1;
  ASSERT_TRUE(first.Watch(server.fd[0], &watched_by, Reactor::kRead, &on_first));
  first.Unwatch(server.fd[0], Reactor::kRead);
  ASSERT_TRUE(second.Watch(server.fd[0], &watched_by, Reactor::kRead, &on_second));
  EXPECT_EQ(watched_by, second.epfd());
  ASSERT_EQ(::write(server.fd[1], "Z", 1), 1);
  Spin(first_context);
  Spin(second_context);
  EXPECT_TRUE(on_first.reports.empty());
  EXPECT_EQ(on_second.reports.size(), 1u);
}

}  // namespace
}  // namespace pgflow::pooler
