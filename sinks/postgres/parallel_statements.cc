#include "sinks/postgres/parallel_statements.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {

std::vector<absl::Status> RunInParallel(const std::string& url,
                                        const std::vector<ParallelStatement>& statements,
                                        int connections,
                                        const std::function<absl::Status(PGconn*)>& setup) {
  std::vector<absl::Status> results(statements.size());
  if (statements.empty()) return results;
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  absl::Status unconnected;  // the first connection's failure, for statements nobody took
  auto work = [&] {
    absl::StatusOr<PgConnPtr> conn = Connect(url, ConnectionKind::kRegular);
    absl::Status ready =
        conn.ok() ? setup(conn->get())
                  : absl::Status(conn.status().code(),
                                 absl::StrCat("postgres target: ", conn.status().message()));
    if (!ready.ok()) {
      absl::MutexLock lock(&mu);
      if (unconnected.ok()) unconnected = std::move(ready);
      return;
    }
    PGconn* c = conn->get();
    for (size_t i; (i = next.fetch_add(1)) < statements.size();) {
      PgResultPtr res(PQexec(c, statements[i].sql.c_str()));
      const ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
      if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        results[i] =
            ResultError(c, res.get(),
                        absl::StrCat("postgres target ", Describe(c), ": ", statements[i].context));
      }
    }
  };
  const int n = std::clamp<int>(connections, 1, static_cast<int>(statements.size()));
  std::vector<std::thread> threads;
  for (int i = 1; i < n; ++i) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  for (size_t i = next.load(); i < statements.size(); ++i) results[i] = unconnected;
  return results;
}

}  // namespace pgflow
