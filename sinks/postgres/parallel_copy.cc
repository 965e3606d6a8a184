#include "sinks/postgres/parallel_copy.h"

#include <libpq-fe.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {

absl::Status RewriteArrayElementTypes(std::string* tuples, size_t column_count,
                                      const std::vector<std::pair<size_t, uint32_t>>& columns) {
  auto read32 = [&](size_t at) {
    const auto* p = reinterpret_cast<const unsigned char*>(tuples->data() + at);
    return static_cast<int32_t>((uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
                                (uint32_t{p[2]} << 8) | uint32_t{p[3]});
  };
  size_t at = 0;
  while (at < tuples->size()) {
    if (at + 2 > tuples->size()) return absl::DataLossError("truncated COPY tuple");
    const auto* p = reinterpret_cast<const unsigned char*>(tuples->data() + at);
    size_t fields = (size_t{p[0]} << 8) | p[1];
    if (fields != column_count) return absl::DataLossError("COPY tuple of unexpected width");
    at += 2;
    size_t next = 0;
    for (size_t f = 0; f < fields; ++f) {
      if (at + 4 > tuples->size()) return absl::DataLossError("truncated COPY tuple");
      int32_t len = read32(at);
      at += 4;
      if (len < 0) continue;
      if (at + static_cast<size_t>(len) > tuples->size()) {
        return absl::DataLossError("truncated COPY tuple");
      }
      while (next < columns.size() && columns[next].first < f) ++next;
      if (next < columns.size() && columns[next].first == f && len >= 12) {
        uint32_t oid = columns[next].second;
        char* o = tuples->data() + at + 8;
        o[0] = static_cast<char>(oid >> 24);
        o[1] = static_cast<char>(oid >> 16);
        o[2] = static_cast<char>(oid >> 8);
        o[3] = static_cast<char>(oid);
      }
      at += static_cast<size_t>(len);
    }
  }
  return absl::OkStatus();
}

// One connection, its thread and its queue. The thread alone touches the connection.
class ParallelCopy::Worker {
 public:
  Worker(ParallelCopy& owner, size_t queue_bytes) : owner_(owner), queue_(queue_bytes) {}
  ~Worker() { Stop(); }

  absl::Status Connect(const std::string& url) {
    absl::StatusOr<PgConnPtr> conn = ::pgflow::Connect(url, ConnectionKind::kRegular);
    if (!conn.ok()) {
      return absl::Status(conn.status().code(),
                          absl::StrCat("postgres target: ", conn.status().message()));
    }
    conn_ = std::move(*conn);
    // No target trigger fires for copied rows, as on the sink's own connection.
    if (absl::StatusOr<PgResultPtr> res =
            Exec(conn_.get(), "SET session_replication_role = replica");
        !res.ok()) {
      return absl::Status(
          res.status().code(),
          absl::StrCat("postgres target ", Describe(conn_.get()), ": ", res.status().message()));
    }
    return absl::OkStatus();
  }
  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  // Queues `work`, blocking while the queue is full. False once stopped.
  bool Push(Work work) {
    const size_t bytes = work.tuples.size() + sizeof(Work);
    return queue_.Push(&work, bytes, absl::InfiniteDuration()) ==
           BoundedQueue<Work>::PushResult::kOk;
  }
  // Lets the thread finish what is queued, then joins it.
  void Stop() {
    queue_.Close();
    if (thread_.joinable()) thread_.join();
  }
  uint64_t done() const { return done_.load(); }

 private:
  void Run() {
    bool failed = false;
    while (std::optional<Work> work = queue_.Pop(absl::InfiniteDuration())) {
      if (failed) continue;  // drained, so that the caller never waits on a full queue
      if (absl::Status s = Handle(*work); !s.ok()) {
        failed = true;
        owner_.Fail(std::move(s));
      }
    }
    // What was not committed rolls back when the connection closes.
    conn_.reset();
  }

  absl::Status Handle(Work& work) {
    if (work.table == nullptr) {
      if (absl::Status s = EndCopy(); !s.ok()) return s;
      if (in_transaction_) {
        if (absl::Status s = Run("COMMIT", "committing copied snapshot rows"); !s.ok()) return s;
        in_transaction_ = false;
      }
      owner_.rows_ += uncommitted_rows_;
      uncommitted_rows_ = 0;
      done_.store(work.chunk);
      return absl::OkStatus();
    }
    if (!in_transaction_) {
      if (absl::Status s = Run("BEGIN", "starting a transaction"); !s.ok()) return s;
      in_transaction_ = true;
    }
    if (copying_ != work.table) {
      if (absl::Status s = EndCopy(); !s.ok()) return s;
      if (absl::Status s = StartCopy(work.table); !s.ok()) return s;
    }
    const Table& table = *work.table;
    if (!table.array_elements.empty()) {
      if (absl::Status s =
              RewriteArrayElementTypes(&work.tuples, table.column_count, table.array_elements);
          !s.ok()) {
        return absl::DataLossError(
            absl::StrCat("snapshot rows of ", table.name, ": ", s.message()));
      }
    }
    if (PQputCopyData(conn_.get(), work.tuples.data(), static_cast<int>(work.tuples.size())) != 1) {
      return Error(nullptr, absl::StrCat("copying into ", table.name));
    }
    uncommitted_rows_ += work.rows;
    return absl::OkStatus();
  }

  absl::Status StartCopy(const std::shared_ptr<const Table>& table) {
    PgResultPtr res(
        PQexec(conn_.get(), absl::StrCat("COPY ", table->quoted,
                                         // A table whose columns were all dropped has none.
                                         table->column_list.empty()
                                             ? ""
                                             : absl::StrCat(" (", table->column_list, ")"),
                                         " FROM STDIN (FORMAT binary)")
                                .c_str()));
    if (!res || PQresultStatus(res.get()) != PGRES_COPY_IN) {
      return Error(res.get(), absl::StrCat("COPY into ", table->name));
    }
    if (PQputCopyData(conn_.get(), kCopyHeader, kCopyHeaderSize) != 1) {
      return Error(nullptr, absl::StrCat("COPY into ", table->name));
    }
    copying_ = table;
    return absl::OkStatus();
  }

  absl::Status EndCopy() {
    if (copying_ == nullptr) return absl::OkStatus();
    const std::string context = absl::StrCat("COPY into ", copying_->name);
    copying_ = nullptr;
    if (PQputCopyData(conn_.get(), kCopyTrailer, kCopyTrailerSize) != 1 ||
        PQputCopyEnd(conn_.get(), nullptr) != 1) {
      return Error(nullptr, context);
    }
    absl::Status status;
    while (PGresult* r = PQgetResult(conn_.get())) {
      PgResultPtr res(r);
      if (status.ok() && PQresultStatus(r) != PGRES_COMMAND_OK) status = Error(r, context);
    }
    return status;
  }

  absl::Status Run(const char* sql, absl::string_view context) {
    PgResultPtr res(PQexec(conn_.get(), sql));
    if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) return Error(res.get(), context);
    return absl::OkStatus();
  }

  absl::Status Error(const PGresult* res, absl::string_view context) {
    return ResultError(conn_.get(), res,
                       absl::StrCat("postgres target ", Describe(conn_.get()), ": ", context));
  }

  ParallelCopy& owner_;
  BoundedQueue<Work> queue_;
  std::thread thread_;
  PgConnPtr conn_;
  bool in_transaction_ = false;
  std::shared_ptr<const Table> copying_;  // the table of the COPY in progress, if any
  uint64_t uncommitted_rows_ = 0;
  std::atomic<uint64_t> done_{0};
};

ParallelCopy::ParallelCopy(std::string url, int workers, size_t queue_bytes)
    : url_(std::move(url)) {
  for (int i = 0; i < std::max(1, workers); ++i) {
    workers_.push_back(std::make_unique<Worker>(*this, queue_bytes));
  }
}

ParallelCopy::~ParallelCopy() {
  for (auto& worker : workers_) worker->Stop();
}

absl::Status ParallelCopy::Start() {
  for (auto& worker : workers_) {
    if (absl::Status s = worker->Connect(url_); !s.ok()) return s;
  }
  for (auto& worker : workers_) worker->Start();
  return absl::OkStatus();
}

void ParallelCopy::Fail(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (status_.ok()) status_ = std::move(status);
}

absl::Status ParallelCopy::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

absl::Status ParallelCopy::Add(std::shared_ptr<const Table> table, std::string tuples,
                               uint64_t rows) {
  if (absl::Status s = status(); !s.ok()) return s;
  Worker& worker = *workers_[next_];
  next_ = (next_ + 1) % workers_.size();
  if (!worker.Push(Work{std::move(table), std::move(tuples), rows, 0})) {
    return absl::InternalError("snapshot rows given to a stopped COPY worker");
  }
  return absl::OkStatus();
}

absl::Status ParallelCopy::EndChunk(uint64_t chunk) {
  if (absl::Status s = status(); !s.ok()) return s;
  ended_chunk_ = chunk;
  for (auto& worker : workers_) {
    if (!worker->Push(Work{nullptr, {}, 0, chunk})) {
      return absl::InternalError("a chunk ended on a stopped COPY worker");
    }
  }
  return absl::OkStatus();
}

uint64_t ParallelCopy::DurableChunkThrough() const {
  uint64_t through = ended_chunk_;
  for (const auto& worker : workers_) through = std::min(through, worker->done());
  return through;
}

bool ParallelCopy::Pending() const { return DurableChunkThrough() < ended_chunk_; }

absl::Status ParallelCopy::Finish() {
  for (auto& worker : workers_) worker->Stop();
  return status();
}

}  // namespace pgflow
