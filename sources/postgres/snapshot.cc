#include "sources/postgres/snapshot.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/postgres/keyless.h"
#include "engine/bounded_queue.h"
#include "engine/log.h"
#include "schemas/json_encoding.h"
#include "sources/postgres/copy_binary.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kBatchRows = 1024;
constexpr size_t kBatchBytes = 1 << 20;
constexpr size_t kWorkerQueueBytes = 16 << 20;
// The smallest chunk a table's end is cut into (see CutIntoChunks), unless chunk_size is less:
// each chunk costs the source a statement and a savepoint of its own.
constexpr uint64_t kMinChunkBytes = 4 << 20;

std::string Qualified(const std::string& schema, const std::string& name) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name));
}

// What a worker hands the coordinator: rows, and possibly the end of a chunk.
struct WorkerOutput {
  EventBatch batch;
  std::string table;                     // "schema.table" the rows belong to
  uint64_t rows = 0;                     // rows in `batch`
  std::optional<size_t> finished_chunk;  // index into the plan
  uint64_t chunk_rows = 0;
};

// Threads that are halted and joined at the latest when this goes: `halt` must make each of
// them return soon.
class JoinedThreads {
 public:
  explicit JoinedThreads(std::function<void()> halt) : halt_(std::move(halt)) {}
  ~JoinedThreads() { Join(); }
  JoinedThreads(const JoinedThreads&) = delete;
  JoinedThreads& operator=(const JoinedThreads&) = delete;

  void Start(std::function<void()> body) { threads_.emplace_back(std::move(body)); }
  int size() const { return static_cast<int>(threads_.size()); }
  // Halts and joins every thread; once.
  void Join() {
    if (joined_) return;
    joined_ = true;
    halt_();
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::function<void()> halt_;
  std::vector<std::thread> threads_;
  bool joined_ = false;
};

}  // namespace

std::vector<SnapshotChunk> CutIntoChunks(const SnapshotChunk& relation, uint32_t pages,
                                         uint32_t pages_per_chunk, uint32_t min_pages, int workers,
                                         uint32_t block_size) {
  std::vector<SnapshotChunk> chunks;
  pages_per_chunk = std::max<uint32_t>(pages_per_chunk, 1);
  min_pages = std::clamp<uint32_t>(min_pages, 1, pages_per_chunk);
  const uint32_t share = 2 * static_cast<uint32_t>(std::max(workers, 1));
  uint32_t first = 0;
  do {
    SnapshotChunk chunk = relation;
    chunk.first_page = first;
    const uint32_t size = std::clamp((pages - first) / share, min_pages, pages_per_chunk);
    uint32_t end = pages - first > size ? first + size : pages;
    chunk.bytes = static_cast<uint64_t>(end - first) * block_size;
    if (end < pages) chunk.end_page = end;  // the last chunk stays open-ended
    chunks.push_back(std::move(chunk));
    first = end;
  } while (first < pages);
  return chunks;
}

absl::StatusOr<ExactSnapshot> TakeExactSnapshot(const std::string& url,
                                                const std::string& pipeline) {
  absl::StatusOr<PgConnPtr> conn = Connect(url, ConnectionKind::kReplication);
  if (!conn.ok()) return conn.status();
  const std::string slot =
      absl::StrCat("pgflow_copy_", getpid(), "_", absl::ToUnixMicros(absl::Now()) % 1000000);
  LogInfo(
      "snapshot: taking a snapshot as of an exact position (temporary slot %s; it waits for the "
      "transactions in progress to end)",
      slot);
  PgResultPtr created(PQexec(
      conn->get(),
      absl::StrCat("CREATE_REPLICATION_SLOT ", slot, " TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
          .c_str()));
  if (PQresultStatus(created.get()) != PGRES_TUPLES_OK) {
    absl::Status error =
        ResultError(conn->get(), created.get(),
                    absl::StrCat("pipeline ", pipeline, ": taking the copy's snapshot"));
    return absl::Status(error.code(),
                        absl::StrCat(error.message(),
                                     " (a copy that does not start with its slot takes its "
                                     "snapshot from a temporary slot: it needs one free "
                                     "replication slot and WAL sender for a moment, "
                                     "max_replication_slots and max_wal_senders)"));
  }
  std::optional<Lsn> as_of = Lsn::Parse(PQgetvalue(created.get(), 0, 1));
  if (!as_of.has_value())
    return absl::DataLossError("CREATE_REPLICATION_SLOT returned no consistent point");
  return ExactSnapshot{*std::move(conn), PQgetvalue(created.get(), 0, 2), *as_of};
}

absl::Status ForgetSlotMade(PGconn* conn, const std::string& pipeline) {
  absl::StatusOr<PgResultPtr> present =
      Exec(conn, "SELECT to_regclass('pgflow.snapshots') IS NOT NULL");
  if (!present.ok()) return present.status();
  if (PQgetvalue(present->get(), 0, 0)[0] != 't') return absl::OkStatus();
  return Exec(conn, "UPDATE pgflow.snapshots SET consistent_point = NULL WHERE pipeline = $1",
              {pipeline})
      .status();
}

absl::Status EnsureSnapshotState(PGconn* conn) {
  // Created by `pgflow init` (a superuser) when a role that may not create in the database runs
  // the pipeline: CREATE ... IF NOT EXISTS would still need that privilege.
  auto present = Exec(conn,
                      "SELECT to_regclass('pgflow.snapshots') IS NOT NULL AND "
                      "to_regclass('pgflow.snapshot_chunks') IS NOT NULL AND "
                      "to_regclass('pgflow.backfills') IS NOT NULL AND EXISTS (SELECT 1 FROM "
                      "pg_attribute WHERE attrelid = to_regclass('pgflow.snapshot_chunks') AND "
                      "attname = 'as_of' AND NOT attisdropped)");
  if (!present.ok()) return present.status();
  if (PQgetvalue(present->get(), 0, 0)[0] == 't') return absl::OkStatus();
  auto res = Exec(conn, R"sql(
    CREATE SCHEMA IF NOT EXISTS pgflow;
    CREATE TABLE IF NOT EXISTS pgflow.snapshots (
      pipeline text PRIMARY KEY,
      consistent_point pg_lsn,
      started_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz);
    CREATE TABLE IF NOT EXISTS pgflow.snapshot_chunks (
      pipeline text NOT NULL,
      table_schema text NOT NULL,
      table_name text NOT NULL,
      leaf_schema text NOT NULL,
      leaf_name text NOT NULL,
      first_page bigint NOT NULL,
      end_page bigint,
      bytes bigint NOT NULL,
      done_at timestamptz,
      rows bigint,
      PRIMARY KEY (pipeline, leaf_schema, leaf_name, first_page));
    -- The position of the snapshot a table was copied whole under, when later than the
    -- stream's start: its changes committed before it are in the copy.
    ALTER TABLE pgflow.snapshot_chunks ADD COLUMN IF NOT EXISTS as_of pg_lsn;
    CREATE TABLE IF NOT EXISTS pgflow.backfills (
      id bigserial PRIMARY KEY,
      pipeline text NOT NULL,
      tables text[] NOT NULL,
      requested_at timestamptz NOT NULL DEFAULT now(),
      started_at timestamptz,
      finished_at timestamptz,
      rows bigint NOT NULL DEFAULT 0,
      error text);
  )sql");
  if (!res.ok() && PQstatus(conn) == CONNECTION_OK) {
    return absl::Status(res.status().code(),
                        absl::StrCat(res.status().message(),
                                     " (pgflow's snapshot tables in the source are an older "
                                     "version's: run `pgflow init` with this pgflow as a "
                                     "superuser)"));
  }
  return res.status();
}

// State shared by the coordinator and the workers.
struct SnapshotCopier::Shared {
  std::vector<SnapshotChunk> plan;
  std::map<std::string, TableReader> readers;  // by "schema.table"
  std::string snapshot_name;
  std::string url;

  absl::Mutex mu;
  size_t next ABSL_GUARDED_BY(mu) = 0;  // next index into `order`
  std::vector<size_t> order;            // plan indices still to copy, largest tables first
  absl::Status error ABSL_GUARDED_BY(mu);
  // Workers that hold the snapshot or will never import it (none left to copy, or failed): once
  // every one is, its exporter may let it go.
  std::atomic<int> settled{0};
  // `read` events carry the snapshot's time and a sequence number unique within it, so
  // (lsn, seq) identifies each row like any change.
  int64_t started_us = 0;
  std::atomic<uint64_t> sequence{0};
  std::atomic<int> finished_workers{0};
  std::atomic<bool> stop{false};
  BoundedQueue<WorkerOutput> out{kWorkerQueueBytes};

  void Fail(absl::Status s) {
    absl::MutexLock lock(&mu);
    if (error.ok()) error = std::move(s);
    stop = true;
  }
  std::optional<size_t> Take() {
    absl::MutexLock lock(&mu);
    if (next >= order.size()) return std::nullopt;
    return order[next++];
  }
  bool Push(WorkerOutput output) {
    size_t bytes = output.batch.bytes + sizeof(WorkerOutput);
    while (!stop.load()) {
      switch (out.Push(&output, bytes, absl::Milliseconds(100))) {
        case BoundedQueue<WorkerOutput>::PushResult::kOk:
          return true;
        case BoundedQueue<WorkerOutput>::PushResult::kClosed:
          return false;
        case BoundedQueue<WorkerOutput>::PushResult::kTimeout:
          break;
      }
    }
    return false;
  }
};

// One worker: a connection holding the snapshot, copying chunks until none are left.
struct SnapshotCopier::Worker {
  Shared& shared;
  Lsn position;

  void Run() {
    bool settled = false;
    absl::Status s = RunChunks(&settled);
    if (!s.ok()) shared.Fail(std::move(s));
    if (!settled) shared.settled.fetch_add(1);
    shared.finished_workers.fetch_add(1);
  }

  // *settled once the worker holds the snapshot (and Shared::settled counts it).
  absl::Status RunChunks(bool* settled) {
    // A chunk first: a worker that starts once the others took every chunk needs no snapshot.
    std::optional<size_t> index = shared.Take();
    if (!index) return absl::OkStatus();
    absl::StatusOr<PgConnPtr> conn = Connect(shared.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    PGconn* c = conn->get();
    auto begin = Exec(c, absl::StrCat("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                                      "SET TRANSACTION SNAPSHOT ",
                                      QuoteLiteral(shared.snapshot_name)));
    if (!begin.ok()) return begin.status();
    shared.settled.fetch_add(1);
    *settled = true;
    for (; index.has_value() && !shared.stop.load(); index = shared.Take()) {
      if (absl::Status s = CopyChunk(c, *index); !s.ok()) return s;
    }
    Exec(c, "COMMIT").IgnoreError();
    return absl::OkStatus();
  }

  absl::Status CopyChunk(PGconn* c, size_t index) {
    const SnapshotChunk& chunk = shared.plan[index];
    const TableReader& reader = shared.readers.at(chunk.TableName());
    std::string where = absl::StrCat("ctid >= '(", chunk.first_page, ",0)'");
    if (chunk.end_page) absl::StrAppend(&where, " AND ctid < '(", *chunk.end_page, ",0)'");
    std::string sql =
        absl::StrCat("COPY (SELECT ", reader.raw ? reader.raw_select_list : reader.select_list,
                     " FROM ONLY ", Qualified(chunk.leaf_schema, chunk.leaf_name), " WHERE ", where,
                     ") TO STDOUT (FORMAT binary)");
    if (auto sp = Exec(c, "SAVEPOINT chunk"); !sp.ok()) return sp.status();
    PgResultPtr res(PQexec(c, sql.c_str()));
    if (PQresultStatus(res.get()) != PGRES_COPY_OUT) {
      const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
      if (state != nullptr && std::string_view(state) == "42P01") {
        // Dropped since the snapshot was taken: its rows are gone from the source too.
        LogWarning(
            "snapshot: %s.%s was dropped while being copied; its remaining chunks are "
            "skipped",
            chunk.leaf_schema, chunk.leaf_name);
        if (auto rb = Exec(c, "ROLLBACK TO SAVEPOINT chunk"); !rb.ok()) return rb.status();
        WorkerOutput done;
        done.finished_chunk = index;
        shared.Push(std::move(done));
        return absl::OkStatus();
      }
      return ResultError(c, res.get(),
                         absl::StrCat("copying ", chunk.leaf_schema, ".", chunk.leaf_name));
    }
    BinaryCopyParser parser(reader.schema->columns.size());
    WorkerOutput output;
    uint64_t rows = 0;
    absl::Status parse_status;
    CopyOutReader copy(c);
    while (true) {
      char* buf = nullptr;
      int n = copy.Next(&buf);
      if (n == -1) break;
      if (n == -2) return ResultError(c, nullptr, "reading a snapshot chunk");
      if (reader.raw) {
        absl::Status s = AppendRaw(std::string_view(buf, static_cast<size_t>(n)), parser, reader,
                                   &output, &rows);
        PQfreemem(buf);
        if (!s.ok()) return s;
        if (output.batch.bytes >= kBatchBytes) {
          output.table = chunk.TableName();
          if (!shared.Push(std::move(output))) return Cancel(c, copy);
          output = WorkerOutput();
        }
        continue;
      }
      absl::Status s = parser.Parse(
          std::string_view(buf, static_cast<size_t>(n)),
          [&](std::span<const BinaryCopyParser::Field> fields) {
            Event event;
            event.kind = EventKind::kChange;
            Change& change = event.change;
            change.op = Op::kRead;
            change.table = reader.schema;
            change.txn.commit_lsn = position;
            change.txn.commit_time_us = shared.started_us;
            change.lsn = position;
            change.sequence = shared.sequence.fetch_add(1, std::memory_order_relaxed);
            change.after.reserve(fields.size());
            for (size_t i = 0; i < fields.size(); ++i) {
              uint32_t oid = reader.schema->columns[i].type_oid;
              if (fields[i].is_null) {
                change.after.push_back(Value::Null(oid));
              } else {
                change.after.push_back(Value{reader.kinds[i], oid, std::string(fields[i].bytes)});
              }
            }
            output.batch.bytes += event.ApproximateBytes();
            output.batch.events.push_back(std::move(event));
            ++rows;
          });
      PQfreemem(buf);
      if (!s.ok()) return s;
      if (output.batch.events.size() >= kBatchRows || output.batch.bytes >= kBatchBytes) {
        output.table = chunk.TableName();
        output.rows = output.batch.events.size();
        if (!shared.Push(std::move(output))) return Cancel(c, copy);
        output = WorkerOutput();
      }
    }
    copy.Release();
    PgResultPtr end(PQgetResult(c));
    if (PQresultStatus(end.get()) != PGRES_COMMAND_OK) {
      return ResultError(c, end.get(), "finishing a snapshot chunk");
    }
    while (PGresult* extra = PQgetResult(c)) PQclear(extra);
    if (!parser.finished()) {
      return absl::DataLossError(absl::StrCat("COPY of ", chunk.leaf_schema, ".", chunk.leaf_name,
                                              " ended without its trailer"));
    }
    if (auto rel = Exec(c, "RELEASE SAVEPOINT chunk"); !rel.ok()) return rel.status();
    output.table = chunk.TableName();
    if (!reader.raw) output.rows = output.batch.events.size();
    output.finished_chunk = index;
    output.chunk_rows = rows;
    shared.Push(std::move(output));
    return absl::OkStatus();
  }

  // Raw path: validates one CopyData message, strips the stream's header and trailer, and
  // appends its tuples, untouched, to the batch's kRawRows event.
  absl::Status AppendRaw(std::string_view message, BinaryCopyParser& parser,
                         const TableReader& reader, WorkerOutput* output, uint64_t* rows) {
    const bool first = parser.stream_offset() == 0;
    uint64_t tuples = 0;
    absl::Status s =
        parser.Parse(message, [&](std::span<const BinaryCopyParser::Field>) { ++tuples; });
    if (!s.ok()) return s;
    if (first) {
      // Signature (11), flags (4), extension length (4), extension.
      uint32_t ext = 0;
      for (int i = 15; i < 19; ++i) ext = (ext << 8) | static_cast<uint8_t>(message[i]);
      message.remove_prefix(19 + ext);
    }
    if (parser.finished()) message.remove_suffix(2);  // the trailer ends the last message
    if (message.empty()) return absl::OkStatus();
    EventBatch& batch = output->batch;
    if (batch.events.empty() || batch.events.back().kind != EventKind::kRawRows) {
      Event event;
      event.kind = EventKind::kRawRows;
      event.change.op = Op::kRead;
      event.change.table = reader.schema;
      event.change.txn.commit_lsn = position;
      event.change.txn.commit_time_us = shared.started_us;
      event.change.lsn = position;
      // The batch is handed on once past kBatchBytes: one allocation, never regrown.
      event.change.content.reserve(kBatchBytes + (64 << 10));
      batch.events.push_back(std::move(event));
    }
    Event& raw = batch.events.back();
    raw.change.content.append(message);
    raw.rows += tuples;
    batch.bytes += message.size();
    output->rows += tuples;
    *rows += tuples;
    return absl::OkStatus();
  }

  // Stops a COPY in progress when the snapshot is stopping.
  absl::Status Cancel(PGconn* c, CopyOutReader& copy) {
    copy.Release();
    if (PGcancel* cancel = PQgetCancel(c)) {
      char err[256];
      PQcancel(cancel, err, sizeof(err));
      PQfreeCancel(cancel);
    }
    char* buf = nullptr;
    while (PQgetCopyData(c, &buf, 0) > 0) PQfreemem(buf);
    while (PGresult* r = PQgetResult(c)) PQclear(r);
    return absl::OkStatus();
  }
};

SnapshotCopier::SnapshotCopier(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::vector<SnapshotChunk>> SnapshotCopier::Plan(PGconn* snap, PGconn* state) {
  auto bs = Exec(snap, "SELECT current_setting('block_size')::int");
  if (!bs.ok()) return bs.status();
  const uint32_t block_size = static_cast<uint32_t>(std::stoul(PQgetvalue(bs->get(), 0, 0)));
  const uint32_t pages_per_chunk =
      static_cast<uint32_t>(std::max<uint64_t>(1, options_.chunk_bytes / block_size));
  const uint32_t min_pages = static_cast<uint32_t>(kMinChunkBytes / block_size);
  std::vector<SnapshotChunk> plan;
  const std::string skip_keyless =
      options_.skip_keyless ? absl::StrCat(" AND NOT (", kKeylessCondition, ")") : "";
  for (const TableRef& ref : options_.tables) {
    auto res = Exec(snap,
                    "SELECT n.nspname, c.relname, ln.nspname, l.relname, "
                    "  pg_relation_size(l.oid) / current_setting('block_size')::int "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "CROSS JOIN LATERAL (SELECT c.oid AS relid WHERE c.relkind = 'r' UNION ALL "
                    "  SELECT p.relid FROM pg_partition_tree(c.oid) p "
                    "  WHERE c.relkind = 'p' AND p.isleaf UNION ALL "
                    // A partitioned table without partitions: one empty chunk of its own, so
                    // that the sinks learn of it (a PostgreSQL target creates it).
                    "  SELECT c.oid WHERE c.relkind = 'p' AND NOT EXISTS (SELECT 1 FROM "
                    "    pg_partition_tree(c.oid) p WHERE p.isleaf)) t "
                    "JOIN pg_class l ON l.oid = t.relid "
                    "JOIN pg_namespace ln ON ln.oid = l.relnamespace "
                    "WHERE n.nspname = $1 AND l.relkind IN ('r', 'p') AND "
                    "  (($2 = '*' AND c.relkind IN ('r', 'p') AND NOT c.relispartition) OR "
                    "   c.relname = $2)" +
                        skip_keyless + " ORDER BY 1, 2, 3, 4",
                    {ref.schema, ref.table});
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    for (int i = 0; i < PQntuples(r); ++i) {
      SnapshotChunk relation;
      relation.table_schema = PQgetvalue(r, i, 0);
      relation.table_name = PQgetvalue(r, i, 1);
      relation.leaf_schema = PQgetvalue(r, i, 2);
      relation.leaf_name = PQgetvalue(r, i, 3);
      uint32_t pages = static_cast<uint32_t>(std::stoul(PQgetvalue(r, i, 4)));
      for (SnapshotChunk& c : CutIntoChunks(relation, pages, pages_per_chunk, min_pages,
                                            options_.workers, block_size)) {
        plan.push_back(std::move(c));
      }
    }
  }
  // Say what will be done with each table: partitions, empty tables, chunking.
  std::map<std::string, std::tuple<std::set<std::string>, size_t, uint64_t>> summary;
  for (const SnapshotChunk& c : plan) {
    auto& [leaves, chunks, bytes] = summary[c.TableName()];
    leaves.insert(c.leaf_schema + "." + c.leaf_name);
    ++chunks;
    bytes += c.bytes;
  }
  for (const auto& [table, entry] : summary) {
    const auto& [leaves, chunks, bytes] = entry;
    std::string how = bytes == 0 ? "empty (one chunk, to be sure)"
                                 : absl::StrCat(bytes >> 20, " MB in ", chunks, " chunk(s)");
    if (leaves.size() > 1 || !leaves.count(table)) {
      absl::StrAppend(&how, "; partitioned: ", leaves.size(),
                      " leaf partition(s) copied under the name ", table);
    }
    LogInfo("snapshot: %s: %s", table, how);
  }
  if (!options_.record_progress || plan.empty()) return plan;
  // Stored in batches of multi-row INSERTs; names are quoted as literals, never spliced raw.
  for (size_t at = 0; at < plan.size(); at += 500) {
    std::vector<std::string> rows;
    for (size_t i = at; i < std::min(plan.size(), at + 500); ++i) {
      const SnapshotChunk& c = plan[i];
      rows.push_back(
          absl::StrCat("(", QuoteLiteral(options_.pipeline), ",", QuoteLiteral(c.table_schema), ",",
                       QuoteLiteral(c.table_name), ",", QuoteLiteral(c.leaf_schema), ",",
                       QuoteLiteral(c.leaf_name), ",", c.first_page, ",",
                       c.end_page ? absl::StrCat(*c.end_page) : "NULL", ",", c.bytes, ")"));
    }
    auto inserted = Exec(state, absl::StrCat("INSERT INTO pgflow.snapshot_chunks (pipeline, "
                                             "table_schema, table_name, leaf_schema, leaf_name, "
                                             "first_page, end_page, bytes) VALUES ",
                                             absl::StrJoin(rows, ",")));
    if (!inserted.ok()) return inserted.status();
  }
  return plan;
}

absl::StatusOr<std::vector<SnapshotChunk>> SnapshotCopier::LoadPlan(PGconn* state) {
  auto res = Exec(state,
                  "SELECT table_schema, table_name, leaf_schema, leaf_name, first_page, "
                  "end_page, bytes, done_at IS NOT NULL, coalesce(rows, 0) "
                  "FROM pgflow.snapshot_chunks WHERE pipeline = $1",
                  {options_.pipeline});
  if (!res.ok()) return res.status();
  std::vector<SnapshotChunk> plan;
  PGresult* r = res->get();
  for (int i = 0; i < PQntuples(r); ++i) {
    SnapshotChunk c;
    c.table_schema = PQgetvalue(r, i, 0);
    c.table_name = PQgetvalue(r, i, 1);
    c.leaf_schema = PQgetvalue(r, i, 2);
    c.leaf_name = PQgetvalue(r, i, 3);
    c.first_page = static_cast<uint32_t>(std::stoul(PQgetvalue(r, i, 4)));
    if (!PQgetisnull(r, i, 5)) c.end_page = static_cast<uint32_t>(std::stoul(PQgetvalue(r, i, 5)));
    c.bytes = std::stoull(PQgetvalue(r, i, 6));
    if (PQgetvalue(r, i, 7)[0] == 't') {
      done_before_.push_back({std::move(c), std::stoull(PQgetvalue(r, i, 8))});
    } else {
      plan.push_back(std::move(c));
    }
  }
  return plan;
}

// What the copy has done, per table ("schema.table"), for Emitter::NoteSnapshot.
struct SnapshotCopier::Progress {
  std::map<std::string, TableProgress> tables;
  Clock::time_point reported_at;

  void Report(Emitter& emitter, bool running) {
    std::vector<TableProgress> list;
    for (const auto& [name, p] : tables) list.push_back(p);
    emitter.NoteSnapshot(std::move(list), running);
    reported_at = Clock::now();
  }
};

absl::Status SnapshotCopier::Run(const std::string& snapshot_name,
                                 const std::function<void()>& imported, Emitter& emitter,
                                 const ChunkTracker& chunks, const StopSignal& stop) {
  Shared shared;
  shared.started_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  shared.url = options_.url;
  shared.snapshot_name = snapshot_name;
  absl::StatusOr<PgConnPtr> planner = OpenPlanner(snapshot_name);
  if (!planner.ok()) return planner.status();
  absl::StatusOr<std::vector<TableSchemaPtr>> truncated = PreparePlan(planner->get(), &shared);
  if (!truncated.ok()) return truncated.status();
  Progress progress = PlannedProgress(shared.plan);
  if (absl::Status s = DescribeTables(planner->get(), &shared); !s.ok()) return s;
  OrderLargestFirst(&shared);
  uint64_t total_bytes = 0;
  for (const auto& [name, p] : progress.tables) total_bytes += p.bytes_total - p.bytes_done;
  LogInfo("snapshot: %d chunks of %d tables to copy (%d MB), %d done before, %d workers",
          shared.plan.size(), progress.tables.size(), total_bytes >> 20, done_before_.size(),
          std::min<size_t>(options_.workers, std::max<size_t>(shared.plan.size(), 1)));

  const int workers = static_cast<int>(
      std::min<size_t>(std::max(options_.workers, 1), std::max<size_t>(shared.plan.size(), 1)));
  JoinedThreads threads([&shared] {
    shared.stop = true;
    shared.out.Close();
    while (shared.out.Pop(absl::ZeroDuration())) {
    }
  });
  for (int i = 0; i < workers && !shared.plan.empty(); ++i) {
    threads.Start([&shared, this] { Worker{shared, options_.position}.Run(); });
  }
  // Until every worker holds the snapshot or never will, its exporter must stay untouched (one
  // that copied every chunk and left is not every worker: another, started late, would find
  // the snapshot gone).
  while (shared.settled.load() < threads.size()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  imported();
  Exec(planner->get(), "COMMIT").IgnoreError();
  planner->reset();

  progress.Report(emitter, true);
  uint64_t ordinal = 0;
  if (!truncated->empty()) {
    if (absl::Status s = EmitTruncates(*truncated, emitter, stop, &ordinal); !s.ok()) {
      threads.Join();
      progress.Report(emitter, false);
      return s;
    }
  }
  absl::StatusOr<bool> handed_on =
      HandOn(&shared, threads.size(), emitter, chunks, stop, &progress, &ordinal);
  threads.Join();
  if (!handed_on.ok()) return handed_on.status();
  if (!*handed_on) {
    progress.Report(emitter, false);
    return absl::OkStatus();
  }
  {
    // A worker that failed after the last output was taken.
    absl::MutexLock lock(&shared.mu);
    if (!shared.error.ok()) return shared.error;
  }
  return Conclude(emitter, chunks, stop, ordinal, &progress);
}

absl::StatusOr<PgConnPtr> SnapshotCopier::OpenPlanner(const std::string& snapshot_name) {
  absl::StatusOr<PgConnPtr> state = Connect(options_.url, ConnectionKind::kRegular);
  if (!state.ok()) return state.status();
  state_conn_ = *std::move(state);
  // The planner holds the snapshot too, and describes the tables as of that instant.
  absl::StatusOr<PgConnPtr> planner = Connect(options_.url, ConnectionKind::kRegular);
  if (!planner.ok()) return planner.status();
  auto begin = Exec(planner->get(), absl::StrCat("BEGIN ISOLATION LEVEL REPEATABLE READ READ "
                                                 "ONLY; SET TRANSACTION SNAPSHOT ",
                                                 QuoteLiteral(snapshot_name)));
  if (!begin.ok()) return begin.status();
  return planner;
}

absl::StatusOr<std::vector<TableSchemaPtr>> SnapshotCopier::PreparePlan(PGconn* planner,
                                                                        Shared* shared) {
  absl::StatusOr<std::vector<SnapshotChunk>> plan =
      options_.record_progress ? LoadPlan(state_conn_.get()) : std::vector<SnapshotChunk>();
  if (!plan.ok()) return plan.status();
  const bool resumed = !plan->empty() || !done_before_.empty();
  if (!resumed) {
    plan = Plan(planner, state_conn_.get());
    if (!plan.ok()) return plan.status();
  }
  shared->plan = *std::move(plan);
  if (!options_.copied_as_of.IsValid() || !options_.record_progress) {
    return std::vector<TableSchemaPtr>();
  }
  if (resumed) return RecopyKeyless(planner, shared);
  auto noted =
      Exec(state_conn_.get(), "UPDATE pgflow.snapshot_chunks SET as_of = $2 WHERE pipeline = $1",
           {options_.pipeline, options_.copied_as_of.ToString()});
  if (!noted.ok()) return noted.status();
  return std::vector<TableSchemaPtr>();
}

SnapshotCopier::Progress SnapshotCopier::PlannedProgress(
    const std::vector<SnapshotChunk>& plan) const {
  // Counting what earlier runs already copied.
  Progress progress;
  for (const SnapshotChunk& c : plan) {
    TableProgress& p = progress.tables[c.TableName()];
    p.name = c.TableName();
    p.bytes_total += c.bytes;
    ++p.chunks_total;
  }
  for (const auto& [c, rows] : done_before_) {
    TableProgress& p = progress.tables[c.TableName()];
    p.name = c.TableName();
    p.bytes_total += c.bytes;
    p.bytes_done += c.bytes;
    p.rows += rows;
    ++p.chunks_total;
    ++p.chunks_done;
  }
  return progress;
}

absl::Status SnapshotCopier::DescribeTables(PGconn* planner, Shared* shared) const {
  for (const SnapshotChunk& c : shared->plan) {
    if (shared->readers.count(c.TableName())) continue;
    absl::StatusOr<TableReader> reader = DescribeTable(planner, c.table_schema, c.table_name);
    if (!reader.ok()) return reader.status();
    reader->raw = reader->raw_capable && options_.raw && options_.raw(*reader->schema);
    shared->readers.emplace(c.TableName(), *std::move(reader));
  }
  size_t raw_tables = 0;
  for (const auto& [name, reader] : shared->readers) raw_tables += reader.raw;
  if (raw_tables == shared->readers.size() && raw_tables > 0) {
    LogInfo("snapshot: every sink takes raw COPY data; rows are not decoded");
  } else if (raw_tables > 0) {
    LogInfo(
        "snapshot: %d of %d tables go on as raw COPY data (rows not decoded); the others "
        "are decoded for a sink or a transform that needs them so",
        raw_tables, shared->readers.size());
  }
  return absl::OkStatus();
}

void SnapshotCopier::OrderLargestFirst(Shared* shared) {
  std::map<std::string, uint64_t> table_bytes;
  for (const SnapshotChunk& c : shared->plan) table_bytes[c.TableName()] += c.bytes;
  for (size_t i = 0; i < shared->plan.size(); ++i) shared->order.push_back(i);
  std::stable_sort(shared->order.begin(), shared->order.end(), [&](size_t a, size_t b) {
    return table_bytes[shared->plan[a].TableName()] > table_bytes[shared->plan[b].TableName()];
  });
}

absl::StatusOr<bool> SnapshotCopier::HandOn(Shared* shared, int workers, Emitter& emitter,
                                            const ChunkTracker& chunks, const StopSignal& stop,
                                            Progress* progress, uint64_t* ordinal) {
  while (true) {
    {
      absl::MutexLock lock(&shared->mu);
      if (!shared->error.ok()) return shared->error;
    }
    if (stop.requested()) return false;
    if (Clock::now() - progress->reported_at >= std::chrono::seconds(1)) {
      progress->Report(emitter, true);
    }
    if (absl::Status s = RecordDurable(chunks); !s.ok()) return s;
    std::optional<WorkerOutput> output = shared->out.Pop(absl::Milliseconds(50));
    if (!output) {
      if (shared->finished_workers.load() == workers && shared->out.used_bytes() == 0) {
        return true;
      }
      continue;
    }
    if (output->finished_chunk) {
      const SnapshotChunk& chunk = shared->plan[*output->finished_chunk];
      Event done;
      done.kind = EventKind::kChunkDone;
      done.chunk = ++*ordinal;
      auto reader = shared->readers.find(chunk.TableName());
      if (reader != shared->readers.end()) done.change.table = reader->second.schema;
      output->batch.events.push_back(std::move(done));
      unrecorded_.push_back({*ordinal, chunk});
      unrecorded_rows_.push_back({*ordinal, output->chunk_rows});
      TableProgress& p = progress->tables[chunk.TableName()];
      p.bytes_done += chunk.bytes;
      ++p.chunks_done;
    }
    if (output->rows > 0) progress->tables[output->table].rows += output->rows;
    auto batch = std::make_shared<const EventBatch>(std::move(output->batch));
    while (true) {
      Emitter::Result r = emitter.Emit(batch, absl::Milliseconds(100));
      if (r == Emitter::Result::kOk) {
        emitted_.store(true, std::memory_order_relaxed);
        break;
      }
      if (r == Emitter::Result::kClosed || stop.requested()) return false;
    }
  }
}

absl::Status SnapshotCopier::Conclude(Emitter& emitter, const ChunkTracker& chunks,
                                      const StopSignal& stop, uint64_t ordinal,
                                      Progress* progress) {
  // Every chunk is handed on: wait until every sink holds them all.
  while (chunks.Confirmed() < ordinal) {
    if (stop.requested()) {
      progress->Report(emitter, false);
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (absl::Status s = RecordDurable(chunks); !s.ok()) return s;
  // Tell the sinks the copy is complete (a PostgreSQL target builds its indexes now).
  auto done = std::make_shared<EventBatch>();
  Event done_event;
  done_event.kind = EventKind::kSnapshotDone;
  done_event.position = options_.position;
  done->events.push_back(std::move(done_event));
  done->bytes = sizeof(Event);
  EventBatchPtr done_batch = std::move(done);
  while (emitter.Emit(done_batch, absl::Milliseconds(100)) == Emitter::Result::kTimeout) {
    if (stop.requested()) break;
  }
  progress->Report(emitter, false);
  uint64_t rows = 0;
  for (const auto& [name, p] : progress->tables) rows += p.rows;
  LogInfo("snapshot: done, %d rows of %d tables copied", rows, progress->tables.size());
  finished_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TableSchemaPtr>> SnapshotCopier::RecopyKeyless(PGconn* snapshot_conn,
                                                                          Shared* shared) {
  std::set<std::pair<std::string, std::string>> tables;
  for (const SnapshotChunk& c : shared->plan) tables.insert({c.table_schema, c.table_name});
  for (const auto& [c, rows] : done_before_) tables.insert({c.table_schema, c.table_name});
  std::vector<TableSchemaPtr> keyless;
  std::vector<TableRef> refs;
  for (const auto& [schema, name] : tables) {
    absl::StatusOr<TableReader> reader = DescribeTable(snapshot_conn, schema, name);
    if (absl::IsNotFound(reader.status())) continue;  // dropped since: nothing to copy
    if (!reader.ok()) return reader.status();
    if (!reader->schema->RowKeyColumns().empty()) continue;
    keyless.push_back(reader->schema);
    refs.push_back({schema, name});
    recopied_keyless_.push_back(reader->schema->QualifiedName());
  }
  if (keyless.empty()) return keyless;
  auto is_keyless = [&](const SnapshotChunk& c) {
    return std::find(recopied_keyless_.begin(), recopied_keyless_.end(), c.TableName()) !=
           recopied_keyless_.end();
  };
  for (auto it = done_before_.begin(); it != done_before_.end();) {
    if (!is_keyless(it->first)) {
      ++it;
      continue;
    }
    shared->plan.push_back(std::move(it->first));
    it = done_before_.erase(it);
  }
  auto [schemas, names] = TableRefArrays(refs);
  auto reset = Exec(state_conn_.get(),
                    "UPDATE pgflow.snapshot_chunks c SET done_at = NULL, rows = NULL, as_of = $4 "
                    "FROM unnest($2::text[], $3::text[]) AS t(nsp, rel) WHERE c.pipeline = $1 "
                    "AND c.table_schema = t.nsp AND c.table_name = t.rel",
                    {options_.pipeline, schemas, names, options_.copied_as_of.ToString()});
  if (!reset.ok()) return reset.status();
  LogInfo(
      "snapshot: %d table(s) without a key are copied again whole, as of %s (what the sinks "
      "hold of them is truncated first; the stream skips their changes before it): %s",
      keyless.size(), options_.copied_as_of.ToString(), absl::StrJoin(recopied_keyless_, ", "));
  return keyless;
}

absl::Status SnapshotCopier::EmitTruncates(const std::vector<TableSchemaPtr>& truncated,
                                           Emitter& emitter, const StopSignal& stop,
                                           uint64_t* ordinal) {
  auto batch = std::make_shared<EventBatch>();
  for (const TableSchemaPtr& table : truncated) {
    Event event;
    event.kind = EventKind::kChange;
    event.change.op = Op::kTruncate;
    event.change.table = table;
    event.change.txn.commit_lsn = options_.position;
    event.change.lsn = options_.position;
    batch->events.push_back(std::move(event));
  }
  Event mark;
  mark.kind = EventKind::kChunkDone;
  mark.chunk = ++*ordinal;
  batch->events.push_back(std::move(mark));
  batch->bytes = batch->events.size() * sizeof(Event);
  unrecorded_.push_back({*ordinal, SnapshotChunk()});
  unrecorded_rows_.push_back({*ordinal, 0});
  const EventBatchPtr shared_batch = std::move(batch);
  while (true) {
    switch (emitter.Emit(shared_batch, absl::Milliseconds(100))) {
      case Emitter::Result::kOk:
        emitted_.store(true, std::memory_order_relaxed);
        return absl::OkStatus();
      case Emitter::Result::kClosed:
        return absl::CancelledError("pipeline closed");
      case Emitter::Result::kTimeout:
        if (stop.requested()) return absl::CancelledError("stopped");
        break;
    }
  }
}

absl::Status SnapshotCopier::RecordDurable(const ChunkTracker& chunks) {
  uint64_t confirmed = chunks.Confirmed();
  std::vector<std::string> values;
  size_t n = 0;
  while (n < unrecorded_.size() && unrecorded_[n].first <= confirmed) {
    const SnapshotChunk& c = unrecorded_[n].second;
    if (c.leaf_name.empty()) {  // (the mark after truncates: no chunk of the plan)
      ++n;
      continue;
    }
    values.push_back(absl::StrCat("(", QuoteLiteral(c.leaf_schema), ",", QuoteLiteral(c.leaf_name),
                                  ",", c.first_page, ",", unrecorded_rows_[n].second, ")"));
    ++n;
  }
  if (n == 0) return absl::OkStatus();
  if (options_.record_progress && state_conn_ != nullptr && !values.empty()) {
    auto res = Exec(state_conn_.get(),
                    absl::StrCat("UPDATE pgflow.snapshot_chunks c SET done_at = now(), rows = "
                                 "v.rows FROM (VALUES ",
                                 absl::StrJoin(values, ","),
                                 ") v(leaf_schema, leaf_name, first_page, rows) "
                                 "WHERE c.pipeline = $1 AND c.leaf_schema = v.leaf_schema AND "
                                 "c.leaf_name = v.leaf_name AND c.first_page = v.first_page"),
                    {options_.pipeline});
    if (!res.ok()) return res.status();
  }
  unrecorded_.erase(unrecorded_.begin(), unrecorded_.begin() + n);
  unrecorded_rows_.erase(unrecorded_rows_.begin(), unrecorded_rows_.begin() + n);
  return absl::OkStatus();
}

}  // namespace pgflow
