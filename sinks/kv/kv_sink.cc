#include "sinks/kv/kv_sink.h"

#include <malloc.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/postgres_origin.h"
#include "common/postgres/table_ref.h"
#include "engine/listen_address.h"
#include "engine/log.h"

namespace pgflow {

namespace {

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

}  // namespace

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

absl::Status ReadColumns(const ConfigNode& node,
                         absl::flat_hash_map<std::string, std::vector<std::string>>* columns) {
  if (!node.IsMap()) return node.Error("expected a mapping of schema.table: [column, ...]");
  for (auto& [table, list] : node.Entries()) {
    absl::StatusOr<TableRef> ref = ParseTableRef(table);
    if (!ref.ok() || ref->is_schema()) {
      return node.KeyNode(table)->Error(
          absl::StrCat("'", table, "' is not schema.table",
                       ref.ok() ? "" : absl::StrCat(": ", ref.status().message())));
    }
    absl::StatusOr<std::vector<std::string>> names = list.AsStringList();
    if (!names.ok()) return names.status();
    (*columns)[ref->ToString()] = *std::move(names);
  }
  return absl::OkStatus();
}

const OptionTable<KvSinkOptions>& KvSinkTable() {
  using O = KvSinkOptions;
  static const auto* table = new OptionTable<O>(
      {
          StringOption("redis", &O::listen, &KvListenOptions::redis)
              .Check(CheckListenAddress)
              .NoDefault()
              .Help("host:port of the Redis listener (RESP2 and RESP3)."),
          StringOption("memcached", &O::listen, &KvListenOptions::memcached)
              .Check(CheckListenAddress)
              .NoDefault()
              .Help("host:port of the memcached listener (text protocol)."),
          StringOption("http", &O::listen, &KvListenOptions::http)
              .Check(CheckListenAddress)
              .NoDefault()
              .Help("host:port of the HTTP listener."),
          StringOption("password", &O::service, &KvServiceConfig::password)
              .NoDefault()
              .Help("Password Redis clients give with AUTH or HELLO."),
          StringOption("http_token", &O::service, &KvServiceConfig::http_token)
              .NoDefault()
              .Help("Bearer token HTTP clients must send."),
          CustomOption("columns", OptionType::kMap, ReadColumns, &O::store,
                       &KvStoreOptions::columns)
              .NoDefault()
              .Help("Per table (schema.table), the columns to keep; key columns are always "
                    "kept."),
          BytesOption("max_memory", &O::store, &KvStoreOptions::max_memory)
              .Help("Memory the rows may take (each row's allocation and its index slots, "
                    "INFO's used_memory); past it the pipeline stops rather than serve a "
                    "partial table."),
          IntOption("threads", &O::listen, &KvListenOptions::threads)
              .Range(1, 64)
              .DefaultText("half the cores")
              .Help("Network threads."),
          IntOption("spin_us", &O::listen, &KvListenOptions::spin_us)
              .Range(0, 10000)
              .Help("Microseconds a network thread keeps polling for the next request before "
                    "it sleeps; 0: sleep at once."),
          IntOption("max_connections", &O::listen, &KvListenOptions::max_connections)
              .Range(1, 1000000)
              .Help("Client connections across the listeners."),
          BytesOption("max_request_bytes", &O::service, &KvServiceConfig::max_request_bytes)
              .Range(1024, 512 << 20)
              .Help("Largest request a client may send."),
          BytesOption("max_output_bytes", &O::service, &KvServiceConfig::max_output_bytes)
              .AtLeast(64 * 1024)
              .Help("Replies and notifications buffered per connection before it is cut off."),
          BoolOption("write_through", &O::write_through)
              .Help("Redis HSET and DEL write to PostgreSQL by primary key, answered once back "
                    "in the cache."),
          StringOption("publication", &O::service, &KvServiceConfig::publication)
              .DefaultText("the pipeline's")
              .Help("Name for PGEC-style keys <publication>.<table>.<key>."),
          BoolOption("numeric_as_number", &O::store, &KvStoreOptions::json,
                     &JsonOptions::numeric_as_number)
              .Help("numeric columns as JSON numbers instead of strings."),
          CustomOption("documents", OptionType::kList, documents::ReadDocumentNames,
                       &O::documents)
              .NoDefault()
              .Help("Joined documents to hold instead of tables' rows, by their names under "
                    "the pipeline's `documents:`: <document>:<root key>, the document as JSON "
                    "and each field as a hash field."),
      },
      [](const O& o, const ConfigNode& node) -> absl::Status {
        if (o.listen.redis.empty() && o.listen.memcached.empty() && o.listen.http.empty()) {
          return node.Error("a kv sink needs at least one listener: redis, memcached or http");
        }
        if (!o.documents.names.empty() && o.write_through) {
          return o.documents.node->Error(
              "documents are rendered from several tables: they cannot be written through "
              "(write_through: true) to one");
        }
        if (!o.documents.names.empty() && !o.store.columns.empty()) {
          return o.documents.node->Error(
              "a kv sink with documents holds their fields as described under `documents:`; "
              "`columns` does not apply to it");
        }
        return absl::OkStatus();
      });
  return *table;
}

// Caches by "<pipeline>/<sink name>", for the life of the process (see kv_sink.h).
absl::Mutex registry_mu(absl::kConstInit);
absl::flat_hash_map<std::string, std::shared_ptr<KvCache>>& Registry() {
  static auto* registry = new absl::flat_hash_map<std::string, std::shared_ptr<KvCache>>();
  return *registry;
}

class KvSinkFactory : public SinkFactoryOf<KvSinkOptions> {
 public:
  std::string_view type() const override { return "kv"; }
  std::string_view help() const override {
    return "An in-memory cache of the tables' rows, served over the Redis, memcached and HTTP "
           "protocols.";
  }
  absl::Status CheckPipeline(const SinkOptions& options,
                             const SinkContext& context) const override {
    const auto& mine = static_cast<const KvSinkOptions&>(options);
    return documents::CheckDocumentNames(
        mine.documents, context.documents, context.transforms,
        context.source.postgres != nullptr ? &context.source.postgres->tables : nullptr);
  }
  absl::Status CheckSource(const SourceTraits& source) const override {
    if (source.postgres != nullptr) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "the kv sink cannot follow a ", source.type,
        " source: it copies every row from the PostgreSQL source when it starts empty, and "
        "writes through to it; give it a postgres source (the capture pipeline)"));
  }

 protected:
  const OptionTable<KvSinkOptions>& table() const override { return KvSinkTable(); }
  absl::Status CheckTableOf(const KvSinkOptions& options, const TableSchema& table) const override {
    auto selected = options.store.columns.find(table.QualifiedName());
    if (selected == options.store.columns.end()) return absl::OkStatus();
    const std::string missing = MissingSelectedColumns(table, selected->second);
    if (missing.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("kv.", missing, ": correct it"));
  }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const KvSinkOptions> options) const override {
    const PostgresOrigin& origin = *context.source.postgres;  // CheckSource made sure
    std::string id = absl::StrCat(context.pipeline, "/", context.sink);
    absl::MutexLock lock(&registry_mu);
    std::shared_ptr<KvCache>& cache = Registry()[id];
    bool fresh = cache == nullptr;
    if (fresh) {
      KvSinkOptions effective = *options;
      if (effective.service.publication.empty()) {
        effective.service.publication = origin.publication;
      }
      cache = std::make_shared<KvCache>(effective, origin.url);
    }
    std::optional<KvDocuments::Setup> documents;
    if (!options->documents.names.empty()) {
      documents = KvDocuments::Setup{context.documents,
                                     options->documents.names,
                                     origin.url,
                                     absl::StrCat("sink ", context.sink, " (kv)"),
                                     context.transforms,
                                     context.pipeline};
    }
    return std::make_unique<KvSink>(cache, fresh, context.source.positions,
                                    std::move(documents));
  }
};

}  // namespace

KvSink::KvSink(std::shared_ptr<KvCache> cache, bool fresh, SourcePositions positions,
               std::optional<KvDocuments::Setup> documents)
    : TransactionalSink(positions),
      cache_(std::move(cache)),
      fresh_(fresh),
      documents_setup_(std::move(documents)) {}

KvSink::~KvSink() = default;

absl::Status KvSink::Open() {
  if (documents_setup_.has_value() && documents_ == nullptr) {
    absl::StatusOr<std::unique_ptr<KvDocuments>> documents = KvDocuments::Open(*documents_setup_);
    if (!documents.ok()) return documents.status();
    documents_ = *std::move(documents);
  }
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

Lsn KvSink::AppliedThrough() const { return cache_->store.applied(); }

absl::Status KvSink::CommitStagedReads() {
  if (staged_reads_ == 0) return absl::OkStatus();
  staged_reads_ = 0;
  return cache_->store.Commit(Lsn());
}

absl::Status KvSink::RenderDocuments(Lsn end) {
  if (absl::Status s = documents_->Render(&cache_->store); !s.ok()) return s;
  return cache_->store.Commit(end);
}

absl::Status KvSink::Flush() {
  if (documents_ == nullptr) return absl::OkStatus();
  // Everything noted is applied, and with it every transaction taken so far (within one, the
  // transactions before it), so that what the engine acknowledges after a flush is there.
  return RenderDocuments(documents_end_);
}

absl::Status KvSink::OnBegin(const TxnInfo& txn) {
  if (documents_ != nullptr) documents_->NoteCommit(txn.commit_lsn);
  return CommitStagedReads();
}

absl::Status KvSink::OnChange(const Change& change, bool in_txn) {
  if (documents_ != nullptr) return documents_->OnChange(change, in_txn, &cache_->store);
  if (absl::Status s = cache_->store.Stage(change); !s.ok()) return s;
  // Snapshot rows outside a transaction are applied a few thousand at a time.
  if (!in_txn && ++staged_reads_ >= 4096) return CommitStagedReads();
  return absl::OkStatus();
}

absl::Status KvSink::OnCommit(const TxnInfo& txn) {
  if (documents_ != nullptr) {
    // Applied once the documents it touched are rendered (at once when it touched none).
    documents_end_ = txn.end_lsn;
    if (documents_->noted() > 0) return absl::OkStatus();
  }
  return cache_->store.Commit(txn.end_lsn);
}

absl::Status KvSink::OnRollback() {
  cache_->store.Discard();
  return absl::OkStatus();
}

absl::Status KvSink::OnPosition(Lsn position) {
  if (in_txn()) return absl::OkStatus();
  staged_reads_ = 0;
  if (documents_ != nullptr) {
    documents_end_ = std::max(documents_end_, position);
    if (documents_->noted() > 0) return absl::OkStatus();
  }
  return cache_->store.Commit(position);
}

absl::Status KvSink::OnChunkDone(uint64_t, const TableSchemaPtr&) {
  staged_reads_ = 0;
  if (documents_ != nullptr) return RenderDocuments(Lsn());
  return cache_->store.Commit(Lsn());
}

absl::Status KvSink::OnSnapshotDone() {
  staged_reads_ = 0;
  if (documents_ != nullptr) {
    if (absl::Status s = RenderDocuments(Lsn()); !s.ok()) return s;
  }
  absl::Status s = cache_->store.Commit(Lsn());
  if (!cache_->store.ready()) {
    LogInfo("kv cache: loaded, %d rows; serving", cache_->store.TotalRows());
    // (Which also asks for the pages the copy's batches left free, in several threads' malloc
    // arenas, to be given back: now, and again by the kv server once the last are freed.)
    cache_->store.SetReady();
    malloc_trim(0);
  }
  return s;
}

void KvSink::CollectMetrics(MetricsRegistry* metrics, const MetricLabels& labels) const {
  const KvStore& store = cache_->store;
  metrics->GetGauge("pgflow_kv_rows", "Rows the kv cache holds", labels)
      ->Set(static_cast<double>(store.TotalRows()));
  metrics
      ->GetGauge("pgflow_kv_used_memory_bytes",
                 "Bytes the kv cache's rows hold, with their indexes (INFO's used_memory)", labels)
      ->Set(static_cast<double>(store.MemoryBytes()));
  metrics
      ->GetGauge("pgflow_kv_max_memory_bytes",
                 "The kv cache's max_memory: past it, the sink stops rather than drop rows", labels)
      ->Set(static_cast<double>(store.max_memory()));
}

absl::Status KvSink::Close() {
  // The cache lives on for a restart of the pipeline in this process; an uncommitted snapshot
  // batch is applied (the rows are real), an open transaction is not.
  if (!in_txn() && staged_reads_ > 0) return cache_->store.Commit(Lsn());
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
