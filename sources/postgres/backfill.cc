#include "sources/postgres/backfill.h"

#include <chrono>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/postgres/catalog_tables.h"
#include "common/postgres/keyless.h"
#include "engine/log.h"
#include "sources/postgres/copy_binary.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {
namespace {

// A key as a string: each part length-prefixed, so that ("a:b", "c") and ("a", "b:c") differ.
void AppendKeyPart(std::string_view part, std::string* key) {
  absl::StrAppend(key, part.size(), ":");
  key->append(part);
}

}  // namespace

absl::StatusOr<int64_t> RequestBackfill(const std::string& url, const std::string& pipeline,
                                        const std::vector<TableRef>& tables) {
  absl::StatusOr<PgConnPtr> conn = Connect(url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = EnsureSnapshotState(conn->get()); !s.ok()) return s;
  std::vector<std::string> quoted;
  for (const TableRef& t : tables) quoted.push_back(QuoteLiteral(t.Quoted()));
  std::string array = absl::StrCat("ARRAY[", absl::StrJoin(quoted, ","), "]::text[]");
  // One transaction: the request row and its announcement in the WAL.
  auto res =
      Exec(conn->get(), absl::StrCat("WITH r AS (INSERT INTO pgflow.backfills (pipeline, tables) "
                                     "VALUES (",
                                     QuoteLiteral(pipeline), ", ", array,
                                     ") RETURNING id) SELECT id, pg_logical_emit_message(true, ",
                                     QuoteLiteral(kBackfillPrefix), ", id::text) FROM r"));
  if (!res.ok()) return res.status();
  int64_t id = 0;
  if (!absl::SimpleAtoi(PQgetvalue(res->get(), 0, 0), &id)) {
    return absl::InternalError("pgflow.backfills returned no id");
  }
  return id;
}

absl::StatusOr<BackfillStatus> GetBackfillStatus(PGconn* conn, int64_t id) {
  auto res = Exec(conn,
                  "SELECT started_at IS NOT NULL, finished_at IS NOT NULL, rows, "
                  "coalesce(error, '') FROM pgflow.backfills WHERE id = $1",
                  {absl::StrCat(id)});
  if (!res.ok()) return res.status();
  if (PQntuples(res->get()) != 1) return absl::NotFoundError("no such backfill");
  BackfillStatus status;
  status.started = PQgetvalue(res->get(), 0, 0)[0] == 't';
  status.finished = PQgetvalue(res->get(), 0, 1)[0] == 't';
  status.rows = std::stoll(PQgetvalue(res->get(), 0, 2));
  status.error = PQgetvalue(res->get(), 0, 3);
  return status;
}

Backfill::Backfill(Options options) : options_(std::move(options)) {
  run_ = absl::StrCat(options_.id, ".", std::random_device()());
  worker_ = std::thread([this] { Work(); });
}

Backfill::~Backfill() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

absl::Status Backfill::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

std::optional<Backfill::Watermark> Backfill::ParseWatermark(std::string_view content) const {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(content.data(), content.size()), ':');
  if (parts.size() != 3 || parts[0] != run_) return std::nullopt;
  Watermark w;
  if (!absl::SimpleAtoi(parts[1], &w.chunk)) return std::nullopt;
  if (parts[2] != "low" && parts[2] != "high") return std::nullopt;
  w.high = parts[2] == "high";
  return w;
}

void Backfill::OpenWindow(uint64_t chunk) {
  std::lock_guard<std::mutex> lock(mu_);
  if (announced_chunk_ != chunk) return;  // not announced: nothing to watch
  open_chunk_ = chunk;
  watched_relation_ = announced_relation_;
  watched_key_ = announced_key_;
  changed_.clear();
  truncated_ = false;
  if (announced_replace_) {  // a keyless table's first chunk
    keyless_span_ = true;
    keyless_changed_ = false;
  }
}

bool Backfill::Watches(uint32_t relation_id) const {
  return (open_chunk_ != 0 || keyless_span_) && relation_id == watched_relation_;
}

void Backfill::NoteChanged(const TableSchema& table, const Row& row) {
  if (keyless_span_) {
    keyless_changed_ = true;
    return;
  }
  std::string key;
  for (const std::string& name : watched_key_) {
    std::string_view part;
    for (size_t i = 0; i < table.columns.size() && i < row.size(); ++i) {
      if (table.columns[i].name == name) part = row[i].data;
    }
    AppendKeyPart(part, &key);
  }
  changed_.insert(std::move(key));
}

absl::StatusOr<Backfill::Chunk> Backfill::CloseWindow(uint64_t chunk) {
  std::unique_lock<std::mutex> lock(mu_);
  // The worker hands the rows over before it writes the high watermark we are reading, so
  // they are there unless it failed.
  if (!ready_.has_value() || ready_->chunk != chunk) {
    open_chunk_ = 0;
    keyless_span_ = false;
    if (!error_.ok()) return error_;
    return absl::InternalError(
        absl::StrCat("backfill ", options_.id, ": no rows for chunk ", chunk));
  }
  Copied copied = std::move(*ready_);
  ready_.reset();
  const bool keyless = copied.key_columns.empty();
  const bool voided = keyless && keyless_changed_;
  voided_ = voided;
  taken_ = true;
  lock.unlock();
  cv_.notify_all();

  Chunk out;
  out.table = copied.table;
  if (keyless) {
    if (!voided) {
      out.rows = std::move(copied.rows);
      out.replace = copied.replace;
      out.last = copied.last;
    }
    if (voided || copied.table_last) keyless_span_ = false;
  } else {
    out.last = copied.last;
    for (size_t i = 0; i < copied.rows.size() && !truncated_; ++i) {
      if (!changed_.contains(copied.keys[i])) out.rows.push_back(std::move(copied.rows[i]));
    }
  }
  open_chunk_ = 0;
  changed_.clear();
  return out;
}

// The chunk's select must see every transaction whose commit precedes the low watermark in the
// WAL. WAL order is not visibility order: a transaction whose commit record is already written
// can still look in progress to a new snapshot for a moment (until it leaves the proc array).
// So wait until every transaction running just after the watermark has completed; transactions
// committing later are in the window anyway.
absl::Status Backfill::AwaitEarlierCommits(PGconn* c) {
  auto running = Exec(c, "SELECT pg_current_snapshot()::text");
  if (!running.ok()) return running.status();
  const std::string snapshot = PQgetvalue(running->get(), 0, 0);
  auto started = std::chrono::steady_clock::now();
  bool told = false;
  while (true) {
    auto done = Exec(c,
                     "SELECT coalesce(bool_and(pg_visible_in_snapshot(x, pg_current_snapshot())), "
                     "true) FROM pg_snapshot_xip($1::pg_snapshot) x",
                     {snapshot});
    if (!done.ok()) return done.status();
    if (PQgetvalue(done->get(), 0, 0)[0] == 't') return absl::OkStatus();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return absl::CancelledError("stopped");
    }
    if (!told && std::chrono::steady_clock::now() - started > std::chrono::seconds(5)) {
      LogInfo("backfill %d: waiting for transactions older than its watermark to end (%s)",
              options_.id, snapshot);
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Backfill::Work() {
  absl::Status s = CopyAll();
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) error_ = s;
  }
}

absl::Status Backfill::CopyAll() {
  absl::StatusOr<PgConnPtr> conn = Connect(options_.url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  PGconn* c = conn->get();
  auto mark = Exec(c, "UPDATE pgflow.backfills SET started_at = now() WHERE id = $1",
                   {absl::StrCat(options_.id)});
  if (!mark.ok()) return mark.status();

  // The tables, as they are now (a schema's tables expanded).
  std::vector<std::pair<std::string, std::string>> tables;
  std::vector<std::string> skipped;
  for (const TableRef& ref : options_.tables) {
    absl::StatusOr<std::vector<CatalogTable>> named = TablesNamed(c, ref);
    if (!named.ok()) return named.status();
    if (named->empty() && ref.table != "*") {
      // Dropped since the request (a table copied again after a rewrite, then dropped): its
      // rows are gone from the sinks with the DROP the stream carries.
      LogInfo("backfill %d: table %s no longer exists; nothing to copy", options_.id, ref.Quoted());
    }
    for (const CatalogTable& found : *named) {
      if (found.partition) continue;  // copied through its parent
      if (options_.skip_keyless && found.keyless) {
        skipped.push_back(TableRef{found.schema, found.name}.Quoted());
        continue;
      }
      tables.emplace_back(found.schema, found.name);
    }
  }
  if (!skipped.empty()) {
    LogInfo("backfill %d: %d table(s) without a primary key not copied (keyless_tables: skip): %s",
            options_.id, skipped.size(), absl::StrJoin(skipped, ", "));
  }

  uint64_t chunk = 0;
  bool ended = false;  // the final chunk was handed over
  for (size_t t = 0; t < tables.size(); ++t) {
    const auto& [schema, name] = tables[t];
    const std::string quoted = TableRef{schema, name}.Quoted();
    const std::string from = absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name));
    const bool last_table = t + 1 == tables.size();
    bool done = false;
    bool gone = false;
    // Described again when its columns change while it is copied (ALTER TABLE after ALTER
    // TABLE): what was selected no longer exists.
    std::string last_shape;  // the select list that last failed for a missing column
    int same_shape = 0;      // how many times in a row it failed
    // Copies of a table without a key that its changes voided, however often it is described
    // again: at kKeylessAttempts the backfill stops.
    int voided = 0;
    for (int described = 1; described <= kDescribeAttempts && !done && !gone; ++described) {
      absl::StatusOr<TableReader> reader = DescribeTable(c, schema, name);
      if (absl::IsNotFound(reader.status())) {
        LogInfo("backfill %d: table %s no longer exists; nothing to copy", options_.id, quoted);
        gone = true;
        break;
      }
      if (!reader.ok()) return reader.status();
      same_shape = reader->select_list == last_shape ? same_shape + 1 : 1;
      const int attempts = reader->primary_key.empty() ? kKeylessAttempts : 1;
      bool describe_again = false;
      while (!done && !describe_again && voided < attempts) {
        if (voided > 0) {
          LogInfo(
              "backfill %d: table %s (no primary key) changed during its copy: copying it "
              "again (attempt %d of %d)",
              options_.id, quoted, voided + 1, attempts);
        }
        absl::Status s = CopyTable(c, *reader, from, last_table, &chunk, &done);
        const std::string state = SqlState(s);
        if (state == "42P01") {
          // Dropped while being copied: its rows leave the sinks with the DROP in the stream.
          LogInfo("backfill %d: table %s was dropped while being copied; nothing more to copy",
                  options_.id, quoted);
          gone = true;
          break;
        }
        if (state == "42703" && described < kDescribeAttempts &&
            same_shape < kSameShapeAttempts) {
          LogInfo(
              "backfill %d: table %s changed its columns while being copied; copying it "
              "again",
              options_.id, quoted);
          last_shape = reader->select_list;
          describe_again = true;
          break;
        }
        if (!s.ok()) return s;
        if (!done) ++voided;
      }
      if (!describe_again) break;
    }
    if (gone) continue;
    ended = done && last_table;
    if (!done) {
      return absl::FailedPreconditionError(absl::StrCat(
          "table ", quoted, " has no primary key and changed during each of its ", voided,
          " copies: without a key it can only be copied exactly while it does not change, so "
          "the sinks' copy of it is incomplete. Add a primary key to it, or run `pgflow "
          "snapshot --tables ",
          quoted, "` when it is quieter"));
    }
  }
  if (!ended) {
    // Nothing (more) to copy: a schema without tables, a last table dropped since. Still end
    // at a point of the stream, so the stream thread sees the backfill finish.
    ++chunk;
    {
      std::lock_guard<std::mutex> lock(mu_);
      announced_chunk_ = chunk;
      announced_relation_ = 0;
      Copied empty;
      empty.chunk = chunk;
      empty.last = true;
      ready_ = std::move(empty);
      taken_ = false;
    }
    for (const char* which : {"low", "high"}) {
      auto res = Exec(
          c, absl::StrCat("SELECT pg_logical_emit_message(true, ", QuoteLiteral(kWatermarkPrefix),
                          ", ", QuoteLiteral(absl::StrCat(run_, ":", chunk, ":", which)), ")"));
      if (!res.ok()) return res.status();
    }
  }
  return absl::OkStatus();
}

absl::Status Backfill::CopyTable(PGconn* c, const TableReader& reader, const std::string& from,
                                 bool last_table, uint64_t* chunk, bool* done) {
  const TableSchema& table = *reader.schema;
  Copied base;
  base.table = reader.schema;
  if (reader.primary_key.empty()) {
    // CTID ranges over the largest relation of the table's tree (a partitioned or inheritance
    // parent's ranges apply to each of its children); the last range is open-ended, so rows
    // added since are in it.
    auto size = Exec(c,
                     "WITH RECURSIVE tree(relid) AS (SELECT $1::regclass::oid UNION "
                     "SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid) "
                     "SELECT coalesce(max(pg_relation_size(relid)), 0) / "
                     "current_setting('block_size')::bigint FROM tree",
                     {from});
    if (!size.ok()) return size.status();
    const uint64_t pages = std::stoull(PQgetvalue(size->get(), 0, 0));
    for (uint64_t first = 0;; first += kKeylessChunkPages) {
      const bool final_range = first + kKeylessChunkPages >= pages;
      std::string where = absl::StrCat(" WHERE ctid >= '(", first, ",0)'::tid");
      if (!final_range) {
        absl::StrAppend(&where, " AND ctid < '(", first + kKeylessChunkPages, ",0)'::tid");
      }
      Copied copied = base;
      copied.chunk = ++*chunk;
      copied.replace = first == 0;
      copied.table_last = final_range;
      copied.last = final_range && last_table;
      size_t rows = 0;
      bool voided = false;
      absl::Status s =
          CopyChunk(c, reader, absl::StrCat("SELECT ", reader.select_list, " FROM ", from, where),
                    std::move(copied), nullptr, &rows, &voided);
      if (!s.ok()) return s;
      if (voided) return absl::OkStatus();
      if (final_range) break;
    }
    *done = true;
    return absl::OkStatus();
  }
  std::vector<std::string> key_select;
  std::vector<std::string> key_order;
  for (int k : reader.primary_key) {
    const std::string col = QuoteIdent(table.columns[k].name);
    base.key_columns.push_back(table.columns[k].name);
    key_select.push_back(absl::StrCat("format('%s', ", col, ")"));
    key_order.push_back(col);
  }
  std::vector<std::string> last_key;  // text of the last key copied
  while (true) {
    std::string where;
    if (!last_key.empty()) {
      std::vector<std::string> literals;
      for (size_t k = 0; k < last_key.size(); ++k) {
        literals.push_back(
            absl::StrCat(QuoteLiteral(last_key[k]), "::", reader.types[reader.primary_key[k]]));
      }
      where = absl::StrCat(" WHERE (", absl::StrJoin(key_order, ", "), ") > (",
                           absl::StrJoin(literals, ", "), ")");
    }
    Copied copied = base;
    copied.chunk = ++*chunk;
    copied.last = last_table;  // if this is the table's last chunk
    size_t rows = 0;
    bool voided = false;
    absl::Status s =
        CopyChunk(c, reader,
                  absl::StrCat("SELECT ", reader.select_list, ", ", absl::StrJoin(key_select, ", "),
                               " FROM ", from, where, " ORDER BY ", absl::StrJoin(key_order, ", "),
                               " LIMIT ", options_.chunk_rows),
                  std::move(copied), &last_key, &rows, &voided);
    if (!s.ok()) return s;
    if (rows < options_.chunk_rows) break;
  }
  *done = true;
  return absl::OkStatus();
}

absl::Status Backfill::CopyChunk(PGconn* c, const TableReader& reader, const std::string& select,
                                 Copied copied, std::vector<std::string>* last_key, size_t* rows,
                                 bool* voided) {
  const TableSchema& table = *reader.schema;
  const uint64_t chunk = copied.chunk;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::CancelledError("stopped");
    announced_chunk_ = chunk;
    announced_relation_ = table.relation_id;
    announced_key_ = copied.key_columns;
    announced_replace_ = copied.replace;
  }
  auto watermark = [&](const char* which) {
    return Exec(c, absl::StrCat("SELECT pg_logical_emit_message(true, ",
                                QuoteLiteral(kWatermarkPrefix), ", ",
                                QuoteLiteral(absl::StrCat(run_, ":", chunk, ":", which)), ")"))
        .status();
  };
  if (absl::Status s = watermark("low"); !s.ok()) return s;
  if (absl::Status s = AwaitEarlierCommits(c); !s.ok()) return s;

  const std::string sql = absl::StrCat("COPY (", select, ") TO STDOUT (FORMAT binary)");
  PgResultPtr res(PQexec(c, sql.c_str()));
  if (PQresultStatus(res.get()) != PGRES_COPY_OUT) {
    return ResultError(c, res.get(), absl::StrCat("backfill of ", table.QualifiedName()));
  }
  const size_t ncols = table.columns.size();
  const size_t nkey = copied.key_columns.size();
  BinaryCopyParser parser(ncols + nkey);
  CopyOutReader copy(c);
  while (true) {
    char* buf = nullptr;
    int n = copy.Next(&buf);
    if (n == -1) break;
    if (n == -2) return ResultError(c, nullptr, "reading a backfill chunk");
    absl::Status s = parser.Parse(
        std::string_view(buf, static_cast<size_t>(n)),
        [&](std::span<const BinaryCopyParser::Field> fields) {
          Row row;
          row.reserve(ncols);
          for (size_t i = 0; i < ncols; ++i) {
            uint32_t oid = table.columns[i].type_oid;
            row.push_back(fields[i].is_null
                              ? Value::Null(oid)
                              : Value{reader.kinds[i], oid, std::string(fields[i].bytes)});
          }
          if (nkey > 0) {
            std::string key;
            last_key->clear();
            for (size_t k = 0; k < nkey; ++k) {
              AppendKeyPart(fields[ncols + k].bytes, &key);
              last_key->emplace_back(fields[ncols + k].bytes);
            }
            copied.keys.push_back(std::move(key));
          }
          copied.rows.push_back(std::move(row));
        });
    PQfreemem(buf);
    if (!s.ok()) return s;
  }
  copy.Release();
  PgResultPtr end(PQgetResult(c));
  if (PQresultStatus(end.get()) != PGRES_COMMAND_OK) {
    return ResultError(c, end.get(), "finishing a backfill chunk");
  }
  while (PGresult* extra = PQgetResult(c)) PQclear(extra);
  *rows = copied.rows.size();
  if (nkey > 0) {
    copied.table_last = *rows < options_.chunk_rows;
    copied.last = copied.table_last && copied.last;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready_ = std::move(copied);
    taken_ = false;
  }
  if (absl::Status s = watermark("high"); !s.ok()) return s;
  // One chunk in memory at a time: wait until the stream thread has taken it.
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return taken_ || stop_; });
    if (stop_) return absl::CancelledError("stopped");
    *voided = voided_;
  }
  if (*voided) return absl::OkStatus();
  return Exec(c, "UPDATE pgflow.backfills SET rows = rows + $2 WHERE id = $1",
              {absl::StrCat(options_.id), absl::StrCat(*rows)})
      .status();
}

}  // namespace pgflow
