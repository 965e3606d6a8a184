// Load and latency tools for bench/kv_cache.sh (no Debian package drives memcached against
// keys of our choosing, nor measures commit-to-visible latency).
//
//   kv_bench memcached PORT CLIENTS SECONDS PIPELINE KEYS
//       CLIENTS threads, each on its own connection, send `get items:<12-digit key>` for random
//       keys in 0..KEYS-1, PIPELINE requests per write, and read every answer to END; prints
//       "<requests/s> <hits> <misses>".
//   kv_bench latency URL REDIS_PORT RATE SECONDS KEYS
//       One thread commits `UPDATE items SET qty = <n> WHERE id = <key>` at RATE per second;
//       another polls HGET items:<key> qty over Redis until each value shows. Prints the p50,
//       p99 and max from commit return to visible, in milliseconds, and the rate achieved.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

std::string Key(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "items:%012llu", static_cast<unsigned long long>(n));
  return buf;
}

void WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      std::perror("write");
      std::exit(1);
    }
    off += static_cast<size_t>(n);
  }
}

int Memcached(int port, int clients, int seconds, int pipeline, uint64_t keys) {
  std::atomic<uint64_t> requests{0}, hits{0}, misses{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      int fd = Connect(port);
      std::mt19937_64 rng(c + 1);
      std::string in;
      char buf[65536];
      while (!stop.load(std::memory_order_relaxed)) {
        std::string out;
        for (int i = 0; i < pipeline; ++i) out += "get " + Key(rng() % keys) + "\r\n";
        WriteAll(fd, out);
        int ends = 0;
        while (ends < pipeline) {
          ssize_t n = read(fd, buf, sizeof(buf));
          if (n <= 0) return;
          in.append(buf, n);
          size_t pos = 0;
          // Each answer is "VALUE <key> <flags> <len>\r\n<data>\r\nEND\r\n" or "END\r\n".
          while (true) {
            if (in.compare(pos, 5, "END\r\n") == 0) {
              ++ends;
              misses.fetch_add(1, std::memory_order_relaxed);
              pos += 5;
              continue;
            }
            if (in.compare(pos, 6, "VALUE ") == 0) {
              size_t eol = in.find("\r\n", pos);
              if (eol == std::string::npos) break;
              size_t sp = in.rfind(' ', eol);
              size_t len = std::strtoull(in.c_str() + sp + 1, nullptr, 10);
              size_t end = eol + 2 + len + 2 + 5;
              if (in.size() < end) break;
              ++ends;
              hits.fetch_add(1, std::memory_order_relaxed);
              pos = end;
              continue;
            }
            break;
          }
          in.erase(0, pos);
        }
        requests.fetch_add(pipeline, std::memory_order_relaxed);
      }
      close(fd);
    });
  }
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%.0f %llu %llu\n", requests.load() / elapsed,
              static_cast<unsigned long long>(hits.load()),
              static_cast<unsigned long long>(misses.load()));
  return misses.load() == 0 ? 0 : 2;
}

int Latency(const char* url, int port, int rate, int seconds, uint64_t keys) {
  PGconn* conn = PQconnectdb(url);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "%s", PQerrorMessage(conn));
    return 1;
  }
  struct Write {
    uint64_t key;
    long value;
    Clock::time_point committed;
  };
  std::mutex mu;
  std::deque<Write> pending;
  std::atomic<bool> done{false};
  std::vector<double> latencies;
  std::thread poller([&] {
    int fd = Connect(port);
    char buf[4096];
    while (true) {
      Write w;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (pending.empty()) {
          if (done) break;
        } else {
          w = pending.front();
        }
      }
      if (w.committed == Clock::time_point()) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        continue;
      }
      std::string want = std::to_string(w.value);
      std::string request = "HGET " + Key(w.key) + " qty\r\n";
      while (true) {
        WriteAll(fd, request);
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) return;
        std::string reply(buf, n);
        // "$<len>\r\n<value>\r\n"
        size_t eol = reply.find("\r\n");
        if (eol != std::string::npos && reply.compare(eol + 2, want.size(), want) == 0 &&
            reply.compare(eol + 2 + want.size(), 2, "\r\n") == 0) {
          break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      latencies.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - w.committed).count());
      std::lock_guard<std::mutex> lock(mu);
      pending.pop_front();
    }
    close(fd);
  });
  const auto interval = std::chrono::nanoseconds(1000000000LL / rate);
  auto start = Clock::now();
  auto next = start;
  long total = static_cast<long>(rate) * seconds;
  std::mt19937_64 rng(7);
  for (long i = 1; i <= total; ++i) {
    std::this_thread::sleep_until(next);
    next += interval;
    uint64_t key = rng() % keys;
    std::string sql = "UPDATE items SET qty = " + std::to_string(1000000 + i) + " WHERE id = '" +
                      Key(key).substr(6) + "'";
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      std::fprintf(stderr, "%s", PQerrorMessage(conn));
      return 1;
    }
    PQclear(res);
    std::lock_guard<std::mutex> lock(mu);
    pending.push_back(Write{key, 1000000 + i, Clock::now()});
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  done = true;
  poller.join();
  PQfinish(conn);
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) { return latencies[static_cast<size_t>(p * (latencies.size() - 1))]; };
  std::printf("%.3f %.3f %.3f %.0f\n", pct(0.5), pct(0.99), latencies.back(), total / elapsed);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "memcached" && argc == 7) {
    return Memcached(std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
                     std::strtoull(argv[6], nullptr, 10));
  }
  if (mode == "latency" && argc == 7) {
    return Latency(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
                   std::strtoull(argv[6], nullptr, 10));
  }
  std::fprintf(stderr,
               "usage: kv_bench memcached PORT CLIENTS SECONDS PIPELINE KEYS\n"
               "       kv_bench latency URL REDIS_PORT RATE SECONDS KEYS\n");
  return 2;
}
