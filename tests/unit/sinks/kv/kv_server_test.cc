#include "sinks/kv/kv_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "sinks/kv/kv_protocols.h"
#include "sinks/kv/kv_store.h"
#include "tests/unit/support/wait_until.h"

namespace pgflow {
namespace {

// The server's own I/O (one read per request, replies sent per turn, partial writes, the
// back-pressure on a client that does not read) over a real loopback socket.
class KvServerTest : public ::testing::Test {
 protected:
  KvServerTest() : store_(KvStoreOptions{}) {
    auto t = std::make_shared<TableSchema>();
    t->relation_id = 1;
    t->schema = "public";
    t->name = "users";
    t->columns = {{"id", oid::kInt4, -1, true, ""}, {"name", oid::kText, -1, false, ""}};
    for (int i = 1; i <= 100; ++i) {
      Change c;
      c.op = Op::kInsert;
      c.table = t;
      c.after = {Value::Text(oid::kInt4, std::to_string(i)),
                 Value::Text(oid::kText, std::string(200, static_cast<char>('a' + i % 26)))};
      c.txn.commit_lsn = Lsn(0x100);
      EXPECT_TRUE(store_.Stage(c).ok());
    }
    EXPECT_TRUE(store_.Commit(Lsn(0x200)).ok());
    store_.SetReady();
  }

  static int Connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      return -1;
    }
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;  // a request's second piece is not held back by Nagle
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }

  // Writes all of `data` (blocking); stops early if the connection fails.
  static void SendAll(int fd, const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      ssize_t n = write(fd, data.data() + off, data.size() - off);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  // Waits until the server's replies on `fd` stop piling up unread: the socket buffers are
  // full and the server's writes go short. False after 10 s.
  static bool WaitUntilBuffersFill(int fd) {
    int last = -1;
    return test_support::WaitUntil(
        [&] {
          int queued = 0;
          if (ioctl(fd, FIONREAD, &queued) != 0) return false;
          const bool still = queued > 0 && queued == last;
          last = queued;
          return still;
        },
        std::chrono::seconds(10), std::chrono::milliseconds(50));
  }

  KvStore store_;
};

// A client that writes a long pipeline before reading anything: the server's replies fill the
// socket buffers, its writes go short, it stops reading until they drain, and every reply
// arrives, in order, once the client reads.
TEST_F(KvServerTest, ALongPipelineReadLateGetsEveryReplyInOrder) {
  KvServiceConfig config;
  config.max_output_bytes = 64 * 1024;
  KvService service(&store_, config, nullptr);
  KvListenOptions listen;
  listen.redis = "127.0.0.1:0";
  listen.threads = 2;
  KvServer server(&service, listen);
  ASSERT_TRUE(server.Start().ok());

  constexpr int kRequests = 20000;
  std::string expected;
  std::string request;
  for (int i = 0; i < kRequests; ++i) {
    const int id = 1 + i % 100;
    request += "HGET users:" + std::to_string(id) + " name\r\n";
    expected += "$200\r\n" + std::string(200, static_cast<char>('a' + id % 26)) + "\r\n";
  }
  int fd = Connect(server.redis_port());
  ASSERT_GE(fd, 0);
  std::thread writer([&] { SendAll(fd, request); });
  ASSERT_TRUE(WaitUntilBuffersFill(fd));
  std::string got;
  char buf[65536];
  while (got.size() < expected.size()) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  writer.join();
  close(fd);
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected);
  server.Stop();
}

// Many connections at once, requests sent in pieces: each gets its own replies.
TEST_F(KvServerTest, ConnectionsGetTheirOwnRepliesWhenRequestsArriveInPieces) {
  KvService service(&store_, KvServiceConfig{}, nullptr);
  KvListenOptions listen;
  listen.redis = "127.0.0.1:0";
  listen.memcached = "127.0.0.1:0";
  listen.threads = 2;
  KvServer server(&service, listen);
  ASSERT_TRUE(server.Start().ok());
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      const bool redis = c % 2 == 0;
      int fd = Connect(redis ? server.redis_port() : server.memcached_port());
      if (fd < 0) return;
      bool all = true;
      for (int i = 0; i < 200 && all; ++i) {
        const int id = 1 + (c * 31 + i) % 100;
        const std::string key = "users:" + std::to_string(id);
        const std::string req = redis ? "GET " + key + "\r\n" : "get " + key + "\r\n";
        // In two pieces, the second after a pause: the first read is short. (A fixed pause:
        // the gap between the pieces is what is tested.)
        (void)!write(fd, req.data(), 3);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        (void)!write(fd, req.data() + 3, req.size() - 3);
        std::string reply;
        char buf[4096];
        const std::string end = redis ? "}\r\n" : "END\r\n";
        while (reply.size() < end.size() ||
               reply.compare(reply.size() - end.size(), end.size(), end) != 0) {
          ssize_t n = read(fd, buf, sizeof(buf));
          if (n <= 0) break;
          reply.append(buf, static_cast<size_t>(n));
        }
        const std::string json = "{\"id\":" + std::to_string(id) + ",\"name\":\"" +
                                 std::string(200, static_cast<char>('a' + id % 26)) + "\"}";
        all = reply.find(json) != std::string::npos;
      }
      if (all) ++ok;
      close(fd);
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok.load(), 8);
  server.Stop();
}

// The server stops with connections suspended in every way one can be: waiting for a request,
// waiting on WAITLSN, held by a client that does not read its replies, subscribed. Stop
// returns at once, every client finds its connection closed, and nothing leaks (valgrind).
TEST_F(KvServerTest, StoppingClosesConnectionsWhereverTheyWait) {
  KvServiceConfig config;
  config.max_output_bytes = 64 * 1024;
  KvService service(&store_, config, nullptr);
  KvListenOptions listen;
  listen.redis = "127.0.0.1:0";
  listen.memcached = "127.0.0.1:0";
  listen.threads = 2;
  KvServer server(&service, listen);
  ASSERT_TRUE(server.Start().ok());
  const int idle = Connect(server.memcached_port());
  const int waiting = Connect(server.redis_port());
  const int not_reading = Connect(server.redis_port());
  const int subscribed = Connect(server.redis_port());
  for (int fd : {idle, waiting, not_reading, subscribed}) ASSERT_GE(fd, 0);
  SendAll(waiting, "WAITLSN FF/0 60000\r\n");
  std::string pipeline;
  for (int i = 0; i < 5000; ++i) pipeline += "HGET users:1 name\r\n";
  std::thread writer([&] { SendAll(not_reading, pipeline); });
  SendAll(subscribed, "SUBSCRIBE news\r\n");
  char buf[256];
  ASSERT_GT(read(subscribed, buf, sizeof(buf)), 0);  // the subscription's confirmation
  ASSERT_TRUE(WaitUntilBuffersFill(not_reading));

  const auto started = std::chrono::steady_clock::now();
  server.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  shutdown(not_reading, SHUT_RD);  // the writer's pipeline may still be in flight
  writer.join();
  for (int fd : {idle, waiting, subscribed}) {
    ssize_t n = 0;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
    }
    EXPECT_EQ(n, 0) << "a connection was left open: " << strerror(errno);
    close(fd);
  }
  close(not_reading);
}

}  // namespace
}  // namespace pgflow
