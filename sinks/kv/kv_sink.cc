#include "sinks/kv/kv_sink.h"

#include <array>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "engine/log.h"
#include "engine/pg_connection.h"

namespace pgflow {

// Writes HSET/DEL through to the source by primary key, over one libpq connection (calls are
// serialised; each statement commits on its own). Values are parameters whose types the
// server infers from the target columns; identifiers are quoted.
class PgWriteThrough : public KvWriteThrough {
 public:
  PgWriteThrough(KvStore* store, std::string url) : store_(store), url_(std::move(url)) {}

  absl::StatusOr<Lsn> Upsert(std::string_view redis_key,
                             const std::vector<std::pair<std::string, std::string>>& values,
                             int64_t* added) override {
    absl::StatusOr<Target> target = Resolve(redis_key);
    if (!target.ok()) return target.status();
    const TableSchema& shape = *target->shape;
    std::vector<std::string> params = target->key_values;
    std::vector<std::string> columns = target->key_columns;
    std::vector<std::string> placeholders;
    for (size_t i = 0; i < params.size(); ++i) placeholders.push_back(absl::StrCat("$", i + 1));
    std::vector<std::string> updates;
    for (const auto& [field, value] : values) {
      bool found = false;
      for (const Column& c : shape.columns) found = found || c.name == field;
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat("table ", shape.QualifiedName(), " has no column '", field, "'"));
      }
      bool is_key = false;
      for (const std::string& k : target->key_columns) is_key = is_key || k == field;
      if (is_key) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", field, "' is part of the key: it is set by the key name"));
      }
      columns.push_back(field);
      params.push_back(value);
      placeholders.push_back(absl::StrCat("$", params.size()));
      updates.push_back(absl::StrCat(QuoteIdent(field), " = EXCLUDED.", QuoteIdent(field)));
    }
    std::vector<std::string> quoted_columns;
    for (const std::string& c : columns) quoted_columns.push_back(QuoteIdent(c));
    std::vector<std::string> quoted_keys;
    for (const std::string& c : target->key_columns) quoted_keys.push_back(QuoteIdent(c));
    std::string sql = absl::StrCat(
        "INSERT INTO ", QuoteIdent(shape.schema), ".", QuoteIdent(shape.name), " (",
        absl::StrJoin(quoted_columns, ", "), ") VALUES (", absl::StrJoin(placeholders, ", "),
        ") ON CONFLICT (", absl::StrJoin(quoted_keys, ", "), ") DO UPDATE SET ",
        absl::StrJoin(updates, ", "), " RETURNING (xmax = 0)");
    KvRowPtr before = store_->Lookup(redis_key, "");
    absl::MutexLock lock(&mu_);
    absl::StatusOr<PgResultPtr> res = Run(sql, params);
    if (!res.ok()) return res.status();
    bool inserted = PQntuples(res->get()) == 1 && PQgetvalue(res->get(), 0, 0)[0] == 't';
    *added = 0;
    for (const auto& [field, value] : values) {
      *added += inserted || before == nullptr || !before->Field(field);
    }
    return CurrentLsn();
  }

  absl::StatusOr<Lsn> Delete(const std::vector<std::string>& redis_keys,
                             int64_t* deleted) override {
    *deleted = 0;
    absl::MutexLock lock(&mu_);
    for (const std::string& key : redis_keys) {
      absl::StatusOr<Target> target = Resolve(key);
      if (!target.ok()) return target.status();
      std::vector<std::string> where;
      for (size_t i = 0; i < target->key_columns.size(); ++i) {
        where.push_back(absl::StrCat(QuoteIdent(target->key_columns[i]), " = $", i + 1));
      }
      std::string sql =
          absl::StrCat("DELETE FROM ", QuoteIdent(target->shape->schema), ".",
                       QuoteIdent(target->shape->name), " WHERE ", absl::StrJoin(where, " AND "));
      absl::StatusOr<PgResultPtr> res = Run(sql, target->key_values);
      if (!res.ok()) return res.status();
      int64_t n = 0;
      absl::SimpleAtoi(PQcmdTuples(res->get()), &n);
      *deleted += n;
    }
    return CurrentLsn();
  }

 private:
  struct Target {
    TableSchemaPtr shape;
    std::vector<std::string> key_columns;
    std::vector<std::string> key_values;
  };

  absl::StatusOr<Target> Resolve(std::string_view redis_key) {
    size_t colon = redis_key.find(':');
    std::shared_ptr<const KvTable> table =
        colon == std::string_view::npos ? nullptr : store_->FindTable(redis_key.substr(0, colon));
    if (table == nullptr || table->shape() == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no cached table for key '", absl::string_view(redis_key.data(), redis_key.size()),
          "' (keys are <table>:<key>)"));
    }
    Target t;
    t.shape = table->shape();
    for (const Column& c : t.shape->columns) {
      if (c.is_key) t.key_columns.push_back(c.name);
    }
    std::string_view key = redis_key.substr(colon + 1);
    for (size_t i = 0; i < t.key_columns.size(); ++i) {
      size_t end = i + 1 == t.key_columns.size() ? key.size() : key.find(':');
      if (end == std::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("the key of ", t.shape->QualifiedName(), " has ", t.key_columns.size(),
                         " columns: write <table>:", absl::StrJoin(t.key_columns, ":")));
      }
      t.key_values.emplace_back(key.substr(0, end));
      key = end < key.size() ? key.substr(end + 1) : std::string_view();
    }
    return t;
  }

  absl::StatusOr<PgResultPtr> Run(const std::string& sql, const std::vector<std::string>& params)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (conn_ == nullptr || PQstatus(conn_.get()) != CONNECTION_OK) {
        absl::StatusOr<PgConnPtr> conn = Connect(url_, ConnectionKind::kRegular);
        if (!conn.ok()) return conn.status();
        conn_ = *std::move(conn);
      }
      absl::StatusOr<PgResultPtr> res = Exec(conn_.get(), sql, params);
      if (res.ok() || !absl::IsUnavailable(res.status())) return res;
      conn_.reset();  // a lost connection: once more on a new one
    }
    return absl::UnavailableError("PostgreSQL is unreachable for write-through");
  }

  absl::StatusOr<Lsn> CurrentLsn() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<PgResultPtr> res = Run("SELECT pg_current_wal_lsn()", {});
    if (!res.ok()) return res.status();
    std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(res->get(), 0, 0));
    if (!lsn) return absl::InternalError("pg_current_wal_lsn() returned no LSN");
    return *lsn;
  }

  KvStore* store_;
  const std::string url_;
  absl::Mutex mu_;
  PgConnPtr conn_ ABSL_GUARDED_BY(mu_);
};

struct KvCache {
  explicit KvCache(const KvSinkOptions& options, const std::string& source_url)
      : store(options.store),
        write_through(options.write_through ? std::make_unique<PgWriteThrough>(&store, source_url)
                                            : nullptr),
        service(&store, options.service, write_through.get()),
        server(&service, options.listen) {}

  KvStore store;
  std::unique_ptr<PgWriteThrough> write_through;
  KvService service;
  KvServer server;
  bool started = false;
};

namespace {

constexpr std::array<OptionSpec, 15> kOptions = {{
    {"redis", "string", false, "", "host:port of the Redis listener (RESP2 and RESP3)"},
    {"memcached", "string", false, "", "host:port of the memcached listener (text protocol)"},
    {"http", "string", false, "", "host:port of the HTTP listener"},
    {"password", "string", false, "", "password Redis clients give with AUTH or HELLO"},
    {"http_token", "string", false, "", "bearer token HTTP clients must send"},
    {"columns", "map", false, "",
     "per table (\"schema.table\"), the columns to keep; key columns are always kept"},
    {"max_memory", "bytes", false, "1GiB",
     "memory the rows may take; past it the pipeline stops rather than serve a partial table"},
    {"threads", "int", false, "half the cores", "network threads (at least one)"},
    {"spin_us", "int", false, "50",
     "microseconds a network thread keeps polling for the next request before it sleeps; 0: "
     "sleep at once"},
    {"max_connections", "int", false, "10000", "client connections across the listeners"},
    {"max_request_bytes", "bytes", false, "1MiB", "largest request a client may send"},
    {"max_output_bytes", "bytes", false, "64MiB",
     "replies and notifications buffered per connection before it is cut off"},
    {"write_through", "bool", false, "false",
     "Redis HSET and DEL write to PostgreSQL by primary key, answered once back in the cache"},
    {"publication", "string", false, "the pipeline's",
     "name for PGEC-style keys <publication>.<table>.<key>"},
    {"numeric_as_number", "bool", false, "false",
     "numeric columns as JSON numbers instead of strings"},
}};

// Caches by "<pipeline>/<sink name>", for the life of the process (see kv_sink.h).
absl::Mutex registry_mu(absl::kConstInit);
absl::flat_hash_map<std::string, std::shared_ptr<KvCache>>& Registry() {
  static auto* registry = new absl::flat_hash_map<std::string, std::shared_ptr<KvCache>>();
  return *registry;
}

class KvSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "kv"; }
  std::span<const OptionSpec> options() const override { return kOptions; }

  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (!node.IsMap()) {
      return node.Error("expected a mapping like {redis: 127.0.0.1:6380, http: 127.0.0.1:8080}");
    }
    if (absl::Status s = node.CheckKeys(kOptions); !s.ok()) return s;
    auto options = std::make_shared<KvSinkOptions>();
    auto read_string = [&](std::string_view key, std::string* out) -> absl::Status {
      if (auto v = node.Get(key)) {
        absl::StatusOr<std::string> s = v->AsString();
        if (!s.ok()) return s.status();
        *out = *s;
      }
      return absl::OkStatus();
    };
    for (auto [key, out] :
         {std::pair<std::string_view, std::string*>{"redis", &options->listen.redis},
          {"memcached", &options->listen.memcached},
          {"http", &options->listen.http},
          {"password", &options->service.password},
          {"http_token", &options->service.http_token},
          {"publication", &options->service.publication}}) {
      if (absl::Status s = read_string(key, out); !s.ok()) return s;
    }
    for (std::string_view key : {"redis", "memcached", "http"}) {
      auto v = node.Get(key);
      if (!v) continue;
      std::string address = *v->AsString();
      size_t colon = address.rfind(':');
      int port = -1;
      if (colon == std::string::npos || colon == 0 ||
          !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
        return v->Error(absl::StrCat("'", address, "' is not host:port (e.g. 127.0.0.1:6380)"));
      }
    }
    if (options->listen.redis.empty() && options->listen.memcached.empty() &&
        options->listen.http.empty()) {
      return node.Error("a kv sink needs at least one listener: redis, memcached or http");
    }
    if (auto v = node.Get("columns")) {
      for (auto& [table, list] : v->Entries()) {
        if (table.find('.') == std::string::npos) {
          return list.Error(absl::StrCat("'", table, "' is not schema.table"));
        }
        absl::StatusOr<std::vector<std::string>> names = list.AsStringList();
        if (!names.ok()) return names.status();
        options->store.columns[table] = *names;
      }
    }
    if (auto v = node.Get("max_memory")) {
      absl::StatusOr<uint64_t> b = v->AsBytes();
      if (!b.ok()) return b.status();
      options->store.max_memory = *b;
    }
    if (auto v = node.Get("threads")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 64);
      if (!n.ok()) return n.status();
      options->listen.threads = static_cast<int>(*n);
    }
    if (auto v = node.Get("spin_us")) {
      absl::StatusOr<int64_t> n = v->AsInt(0, 10000);
      if (!n.ok()) return n.status();
      options->listen.spin_us = static_cast<int>(*n);
    }
    if (auto v = node.Get("max_connections")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 1000000);
      if (!n.ok()) return n.status();
      options->listen.max_connections = static_cast<size_t>(*n);
    }
    if (auto v = node.Get("max_request_bytes")) {
      absl::StatusOr<uint64_t> b = v->AsBytes();
      if (!b.ok()) return b.status();
      if (*b < 1024 || *b > (512ull << 20)) return v->Error("must be between 1KiB and 512MiB");
      options->service.max_request_bytes = *b;
    }
    if (auto v = node.Get("max_output_bytes")) {
      absl::StatusOr<uint64_t> b = v->AsBytes();
      if (!b.ok()) return b.status();
      if (*b < 64 * 1024) return v->Error("must be at least 64KiB");
      options->service.max_output_bytes = *b;
    }
    if (auto v = node.Get("write_through")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->write_through = *b;
    }
    if (auto v = node.Get("numeric_as_number")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->store.json.numeric_as_number = *b;
    }
    return options;
  }

  absl::Status CheckSource(std::string_view source_type) const override {
    if (source_type == "postgres") return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "the kv sink cannot follow a ", std::string(source_type),
        " source: it copies every row from the PostgreSQL source when it starts empty, and "
        "writes through to it; give it a postgres source (the capture pipeline)"));
  }

  std::unique_ptr<Sink> Build(const PipelineConfig& pipeline,
                              const SinkConfig& sink) const override {
    auto options = std::static_pointer_cast<const KvSinkOptions>(sink.options);
    std::string id = absl::StrCat(pipeline.name, "/", sink.name);
    absl::MutexLock lock(&registry_mu);
    std::shared_ptr<KvCache>& cache = Registry()[id];
    bool fresh = cache == nullptr;
    if (fresh) {
      KvSinkOptions effective = *options;
      if (effective.service.publication.empty()) {
        effective.service.publication = pipeline.source.publication;
      }
      cache = std::make_shared<KvCache>(effective, pipeline.source.url);
    }
    return std::make_unique<KvSink>(cache, fresh);
  }
};

}  // namespace

KvSink::KvSink(std::shared_ptr<KvCache> cache, bool fresh)
    : cache_(std::move(cache)), fresh_(fresh) {}

KvSink::~KvSink() = default;

absl::Status KvSink::Open() {
  if (cache_->started) return absl::OkStatus();
  if (absl::Status s = cache_->server.Start(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("kv: ", s.message()));
  }
  cache_->started = true;
  LogInfo(
      "kv cache: serving%s%s%s",
      cache_->server.redis_port() ? absl::StrCat(" redis on port ", cache_->server.redis_port())
                                  : "",
      cache_->server.memcached_port()
          ? absl::StrCat(" memcached on port ", cache_->server.memcached_port())
          : "",
      cache_->server.http_port() ? absl::StrCat(" http on port ", cache_->server.http_port()) : "");
  return absl::OkStatus();
}

absl::Status KvSink::Write(const Event& event) {
  KvStore& store = cache_->store;
  switch (event.kind) {
    case EventKind::kBegin:
      if (staged_reads_ > 0) {
        if (absl::Status s = store.Commit(Lsn()); !s.ok()) return s;
        staged_reads_ = 0;
      }
      in_txn_ = true;
      // A transaction the cache already applied (replayed after a restart in this process).
      skip_txn_ = event.txn.commit_lsn < store.applied();
      return absl::OkStatus();
    case EventKind::kChange:
      if (in_txn_) {
        return skip_txn_ ? absl::OkStatus() : store.Stage(event.change);
      }
      if (absl::Status s = store.Stage(event.change); !s.ok()) return s;
      if (++staged_reads_ >= 4096) {
        staged_reads_ = 0;
        return store.Commit(Lsn());
      }
      return absl::OkStatus();
    case EventKind::kCommit:
      in_txn_ = false;
      if (skip_txn_) return absl::OkStatus();
      return store.Commit(event.txn.end_lsn);
    case EventKind::kRollback:
      in_txn_ = false;
      store.Discard();
      return absl::OkStatus();
    case EventKind::kPosition:
      if (in_txn_) return absl::OkStatus();
      staged_reads_ = 0;
      return store.Commit(event.position);
    case EventKind::kChunkDone:
      staged_reads_ = 0;
      return store.Commit(Lsn());
    case EventKind::kSnapshotDone: {
      staged_reads_ = 0;
      absl::Status s = store.Commit(Lsn());
      if (!store.ready()) {
        LogInfo("kv cache: loaded, %d rows; serving", store.TotalRows());
        store.SetReady();
      }
      return s;
    }
    case EventKind::kRawRows:
      return absl::InternalError("the kv sink does not take raw COPY rows");
  }
  return absl::OkStatus();
}

absl::Status KvSink::Close() {
  // The cache lives on for a restart of the pipeline in this process; an uncommitted snapshot
  // batch is applied (the rows are real), an open transaction is not.
  if (!in_txn_ && staged_reads_ > 0) return cache_->store.Commit(Lsn());
  cache_->store.Discard();
  return absl::OkStatus();
}

void RegisterKvSink() {
  RegisterSinkFactory(std::make_unique<KvSinkFactory>());
  // The caches outlive the pipeline attempts; their threads are stopped before the process's
  // static objects go.
  static const bool registered = [] {
    std::atexit([] {
      absl::MutexLock lock(&registry_mu);
      for (auto& [id, cache] : Registry()) cache->server.Stop();
    });
    return true;
  }();
  (void)registered;
}

}  // namespace pgflow
