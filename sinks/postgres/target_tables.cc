#include "sinks/postgres/target_tables.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/log.h"
#include "nlohmann/json.hpp"
#include "sinks/postgres/create_table.h"
#include "sinks/postgres/ownership.h"
#include "sinks/postgres/parallel_statements.h"
#include "sinks/postgres/schema_objects.h"
#include "sinks/postgres/sql_builders.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

constexpr uint32_t kFirstNonBuiltinOid = 16384;

}  // namespace

TargetTables::TargetTables(TargetSession& session, std::string sink_name, std::string pipeline,
                           std::shared_ptr<const PostgresOrigin> origin,
                           std::shared_ptr<const PostgresSinkOptions> options)
    : session_(session),
      sink_name_(std::move(sink_name)),
      pipeline_(std::move(pipeline)),
      source_url_(origin != nullptr ? origin->url : ""),
      source_is_postgres_(origin != nullptr),
      origin_tables_(origin != nullptr ? origin->tables : std::vector<TableRef>()),
      options_(std::move(options)) {}

TargetTable* TargetTables::Find(const TableSchemaPtr& schema) {
  auto it = tables_.find(schema->QualifiedName());
  if (it == tables_.end()) return nullptr;
  TargetTable* known = it->second.get();
  if (known->schema.get() != schema.get() && !known->schema->SameShape(*schema)) return nullptr;
  known->schema = schema;
  return known;
}

absl::StatusOr<TargetTable*> TargetTables::Load(const TableSchemaPtr& schema) {
  auto table = std::make_shared<TargetTable>();
  if (auto known = tables_.find(schema->QualifiedName()); known != tables_.end()) {
    table->fast_copy = known->second->fast_copy;
    table->plain_inserts = known->second->plain_inserts;
    table->stage = known->second->stage;
  }
  const std::string target_schema = options_->schema.empty() ? schema->schema : options_->schema;
  table->schema = schema;
  table->name = absl::StrCat(target_schema, ".", schema->name);
  table->quoted = absl::StrCat(QuoteIdent(target_schema), ".", QuoteIdent(schema->name));
  std::vector<std::string> columns;
  const bool keyed = schema->replica_identity == 'd' || schema->replica_identity == 'i';
  for (size_t i = 0; i < schema->columns.size(); ++i) {
    columns.push_back(QuoteIdent(schema->columns[i].name));
    if (keyed && schema->columns[i].is_key) table->key.push_back(i);
  }
  table->column_list = absl::StrJoin(columns, ", ");

  auto target_columns = [&]() -> absl::StatusOr<PgResultPtr> {
    absl::StatusOr<PgResultPtr> res =
        Exec(session_.conn(),
             "SELECT a.attname, a.attidentity = 'a', format_type(a.atttypid, -1) FROM "
             "pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 "
             "AND NOT a.attisdropped",
             {table->quoted});
    if (!res.ok()) {
      return absl::Status(
          res.status().code(),
          absl::StrCat("postgres target ", session_.TargetName(), ": checking table ", table->name,
                       ": ", res.status().message()));
    }
    return res;
  };
  absl::StatusOr<PgResultPtr> res = target_columns();
  if (!res.ok()) return res.status();
  bool missing = PQntuples(res->get()) == 0;
  if (missing) {
    // No column: no table, or one whose columns were all dropped (a source table can be so).
    absl::StatusOr<PgResultPtr> exists =
        Exec(session_.conn(), "SELECT to_regclass($1) IS NOT NULL", {table->quoted});
    if (!exists.ok()) return exists.status();
    missing = PQgetvalue(exists->get(), 0, 0)[0] != 't';
  }
  if (missing) {
    if (!options_->create_tables) {
      return absl::FailedPreconditionError(
          absl::StrCat("postgres target ", session_.TargetName(), ": table ", table->name,
                       " does not exist and create_tables is false: create it first"));
    }
    if (absl::Status s = CreateFromSource(*schema, target_schema, table->quoted, table->name);
        !s.ok()) {
      return s;
    }
    table->fast_copy = std::nullopt;
    res = target_columns();
    if (!res.ok()) return res.status();
  }
  // column -> (GENERATED ALWAYS AS IDENTITY, type)
  absl::flat_hash_map<std::string, std::pair<bool, std::string>> present;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    present[PQgetvalue(res->get(), i, 0)] = {PQgetvalue(res->get(), i, 1)[0] == 't',
                                             PQgetvalue(res->get(), i, 2)};
  }
  for (const Column& c : schema->columns) {
    auto it = present.find(c.name);
    if (it == present.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("postgres target ", session_.TargetName(), ": table ", table->name,
                       " has no column ", QuoteIdent(c.name), " (source ", schema->QualifiedName(),
                       " has it): add it to the target table"));
    }
    table->always_identity.push_back(it->second.first);
    table->types.push_back(it->second.second);
    if (absl::StartsWith(it->second.second, "reg")) table->text_casts = false;
  }
  for (size_t i = 0; i < schema->columns.size(); ++i) {
    const Column& c = schema->columns[i];
    size_t dot = c.type_name.find('.');
    if (c.type_oid < kFirstNonBuiltinOid || dot == std::string::npos ||
        c.type_name.compare(dot + 1, 1, "_") != 0) {
      continue;
    }
    std::string element = absl::StrCat(QuoteIdent(c.type_name.substr(0, dot)), ".",
                                       QuoteIdent(c.type_name.substr(dot + 2)));
    absl::StatusOr<PgResultPtr> res =
        Exec(session_.conn(), "SELECT to_regtype($1)::oid", {element});
    if (!res.ok()) return res.status();
    if (PQgetisnull(res->get(), 0, 0)) {
      return absl::FailedPreconditionError(
          absl::StrCat("postgres target ", session_.TargetName(), ": table ", table->name,
                       " column ", c.name, ": type ", element, " does not exist in the target"));
    }
    table->array_elements.push_back(
        {i, static_cast<uint32_t>(std::stoul(PQgetvalue(res->get(), 0, 0)))});
  }
  TargetTable* loaded = table.get();
  tables_[schema->QualifiedName()] = std::move(table);
  return loaded;
}

void TargetTables::RecheckFoldable() {
  for (auto& [name, table] : tables_) table->foldable.reset();
}

absl::Status TargetTables::PrepareSnapshotLoad(TargetTable* table) {
  if (table->fast_copy.has_value()) return absl::OkStatus();
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  absl::StatusOr<PgResultPtr> res =
      Exec(session_.conn(),
           absl::StrCat("SELECT EXISTS (SELECT 1 FROM ", table->quoted,
                        "), EXISTS (SELECT 1 FROM pgflow.pending_ddl WHERE pipeline = $1 AND "
                        "target_table = $2 AND phase < 0 AND NOT done)"),
           {pipeline_, table->name});
  if (!res.ok()) return res.status();
  // Straight COPY only into an empty table: rows already there (a resumed snapshot, a
  // backfill) may include the ones coming, which must then replace them.
  table->fast_copy = PQgetvalue(res->get(), 0, 0)[0] == 'f';
  const bool key_pending = PQgetvalue(res->get(), 0, 1)[0] == 't' && !table->key.empty();
  table->plain_inserts = *table->fast_copy && key_pending;
  if (*table->fast_copy) return absl::OkStatus();
  if (table->key.empty()) {
    LogWarning(
        "sink %s (postgres): %s already holds rows and has no primary key: snapshot rows "
        "copied again (after a crash, or by a backfill) are duplicated; empty it and copy the "
        "table again for an exact copy",
        sink_name_, table->name);
    return absl::OkStatus();
  }
  LogInfo("sink %s (postgres): %s already holds rows: snapshot rows are upserted", sink_name_,
          table->name);
  if (!key_pending) return absl::OkStatus();
  // No row of this run is in yet (this is its first), so the rows a chunk held when the last
  // run stopped are each there once: the key builds, and chunks copied again are upserted.
  LogInfo(
      "sink %s (postgres): %s: the load was interrupted; building its primary key before "
      "going on",
      sink_name_, table->name);
  return BuildPendingKey(table->name);
}

absl::StatusOr<bool> TargetTables::ReadFoldable(TargetTable* table) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  // Every unique index or exclusion constraint but the one on exactly the sink's key columns
  // (the primary key, or the replica identity index the key comes from) is another rule.
  const std::string key = KeyColumnsArray(*table);
  absl::StatusOr<PgResultPtr> res = Exec(
      session_.conn(),
      "SELECT NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND "
      "(i.indisunique OR i.indisexclusion) AND (i.indisexclusion OR i.indpred IS NOT NULL "
      "OR i.indnkeyatts <> $3::int OR EXISTS (SELECT 1 FROM unnest((i.indkey::int2[])[0:"
      "i.indnkeyatts - 1]) k(attnum) LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid "
      "AND a.attnum = k.attnum WHERE a.attname IS NULL OR NOT a.attname::text = ANY($2::text[]))))",
      {table->quoted, key, std::to_string(table->key.size())});
  if (!res.ok()) {
    return absl::Status(res.status().code(), absl::StrCat("postgres target ", session_.TargetName(),
                                                          ": checking the indexes of ", table->name,
                                                          ": ", res.status().message()));
  }
  table->foldable = PQgetvalue(res->get(), 0, 0)[0] == 't';
  return *table->foldable;
}

absl::Status TargetTables::FinishLoad() {
  load_finished_ = true;
  auto started = std::chrono::steady_clock::now();
  auto seconds = [&started] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  bool late_objects = false;
  if (schema_objects_owed_) {
    // What failed before the tables existed (a function of a table's row type), before the
    // constraints that may use it.
    schema_objects_owed_ = false;
    absl::StatusOr<size_t> failed =
        CopySchemaObjects(source_url_, options_->url, sink_name_, /*second_pass=*/true);
    if (!failed.ok()) LogWarning("sink %s (postgres): %s", sink_name_, failed.status().message());
    late_objects = true;
  }
  if (absl::Status s = BuildPending(); !s.ok()) return s;
  // The late objects' owners and grants: the first pass found them missing.
  if (late_objects && options_->CopiesRoles()) {
    if (absl::Status s = CopyRoles(RolesPass::kLateObjects); !s.ok()) return s;
  }
  for (auto& [name, table] : tables_) table->plain_inserts = false;  // keys were built
  if (tables_.empty()) return absl::OkStatus();
  LogInfo("sink %s (postgres): keys, indexes and constraints built in %.1fs", sink_name_,
          seconds());
  // Statistics, as pg_restore users run vacuumdb --analyze-only: the target's planner is not
  // blind right after a cutover. Several tables at once, like the index builds.
  started = std::chrono::steady_clock::now();
  std::vector<ParallelStatement> statements;
  for (const auto& [name, table] : tables_) {
    statements.push_back(
        {absl::StrCat("ANALYZE ", table->quoted), absl::StrCat("analyzing ", table->name)});
  }
  std::vector<absl::Status> results =
      RunInParallel(options_->url, statements, options_->load_workers, [this](PGconn* c) {
        return RaiseMaintenanceWorkMem(c, options_->maintenance_work_mem, sink_name_);
      });
  size_t analyzed = 0;
  for (const absl::Status& s : results) {
    if (absl::IsUnavailable(s)) return s;
    if (s.ok()) {
      ++analyzed;
    } else {
      LogWarning("sink %s (postgres): %s", sink_name_, s.message());
    }
  }
  LogInfo("sink %s (postgres): %d table(s) analyzed in %.1fs", sink_name_, analyzed, seconds());
  return absl::OkStatus();
}

absl::Status TargetTables::BuildPending() {
  absl::Status s = BuildPendingKey("");
  // A unique index of any table may have been built.
  RecheckFoldable();
  return s;
}

absl::StatusOr<PGconn*> TargetTables::SourceConnection() {
  if (source_conn_ == nullptr) {
    absl::StatusOr<PgConnPtr> connected = ConnectToSourceCatalog(source_url_);
    if (!connected.ok()) {
      return absl::Status(
          connected.status().code(),
          absl::StrCat("postgres target ", session_.TargetName(),
                       ": reading table definitions from the ", connected.status().message()));
    }
    source_conn_ = std::move(*connected);
  }
  return source_conn_.get();
}

absl::Status TargetTables::BuildPendingKey(const std::string& name) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  absl::StatusOr<PgResultPtr> res =
      name.empty() ? Exec(session_.conn(),
                          "SELECT id, target_table, statement FROM pgflow.pending_ddl WHERE "
                          "pipeline = $1 AND NOT done ORDER BY phase, id",
                          {pipeline_})
                   : Exec(session_.conn(),
                          "SELECT id, target_table, statement FROM pgflow.pending_ddl WHERE "
                          "pipeline = $1 AND NOT done AND target_table = $2 AND phase < 0 "
                          "ORDER BY id",
                          {pipeline_, name});
  if (!res.ok()) {
    return absl::Status(res.status().code(),
                        absl::StrCat("postgres target ", session_.TargetName(),
                                     ": reading pgflow.pending_ddl: ", res.status().message()));
  }
  struct Pending {
    std::string id, table, statement;
  };
  std::vector<Pending> serial, builds;
  // Outside a transaction, every index build goes first, several at once over connections of
  // their own; nothing deferred needs what another statement builds but a constraint its index
  // (USING INDEX) and a foreign key the key it references, both of which come after.
  const bool parallel = name.empty() && !session_.in_transaction() && options_->load_workers > 1;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    Pending p{PQgetvalue(res->get(), i, 0), PQgetvalue(res->get(), i, 1),
              PQgetvalue(res->get(), i, 2)};
    (parallel && BuildsIndex(p.statement) ? builds : serial).push_back(std::move(p));
  }
  auto context = [](const Pending& p) {
    return absl::StrCat("building on ", p.table, ": ", p.statement);
  };
  auto done = [](const Pending& p) {
    return absl::StrCat("UPDATE pgflow.pending_ddl SET done = true, error = NULL WHERE id = ",
                        p.id);
  };
  // A statement that failed stays pending with its error, unless the target went away.
  auto failed = [&](const Pending& p, const absl::Status& s) -> absl::Status {
    if (absl::IsUnavailable(s)) return s;
    LogWarning(
        "sink %s (postgres): %s; it stays pending in pgflow.pending_ddl and is tried again after "
        "the next snapshot or restart",
        sink_name_, s.message());
    StatementParams params;
    Value error = Value::Text(oid::kText, std::string(s.message()));
    params.Add(error);
    return session_.RunPrepared(
        absl::StrCat("UPDATE pgflow.pending_ddl SET error = $1 WHERE id = ", p.id), params, [&] {
          return absl::StrCat("postgres target ", session_.TargetName(),
                              ": recording a failed statement");
        });
  };
  if (builds.size() == 1) serial.insert(serial.begin(), std::move(builds.front()));
  if (builds.size() > 1) {
    std::vector<ParallelStatement> statements;
    for (const Pending& p : builds) {
      statements.push_back({absl::StrCat(p.statement, "; ", done(p)), context(p)});
    }
    LogInfo("sink %s (postgres): building %d indexes, %d at a time", sink_name_, builds.size(),
            std::min<size_t>(builds.size(), options_->load_workers));
    std::vector<absl::Status> results =
        RunInParallel(options_->url, statements, options_->load_workers, [this](PGconn* c) {
          return RaiseMaintenanceWorkMem(c, options_->maintenance_work_mem, sink_name_);
        });
    for (size_t i = 0; i < builds.size(); ++i) {
      if (results[i].ok()) {
        LogInfo("sink %s (postgres): built on %s: %s", sink_name_, builds[i].table,
                builds[i].statement);
      } else if (absl::Status s = failed(builds[i], results[i]); !s.ok()) {
        return s;
      }
    }
  }
  for (const Pending& p : serial) {
    const bool nested = session_.in_transaction();
    std::string sql = nested ? absl::StrCat("SAVEPOINT pgflow_ddl; ", p.statement, "; ", done(p),
                                            "; RELEASE SAVEPOINT pgflow_ddl")
                             : absl::StrCat(p.statement, "; ", done(p));
    absl::Status s = session_.Run(sql, context(p));
    if (s.ok()) {
      LogInfo("sink %s (postgres): built on %s: %s", sink_name_, p.table, p.statement);
      continue;
    }
    if (absl::IsUnavailable(s)) return s;
    if (nested) {
      if (absl::Status r =
              session_.Run("ROLLBACK TO SAVEPOINT pgflow_ddl; RELEASE SAVEPOINT pgflow_ddl",
                           "rolling back a failed index or constraint");
          !r.ok()) {
        return r;
      }
    }
    if (absl::Status r = failed(p, s); !r.ok()) return r;
  }
  return absl::OkStatus();
}

absl::Status TargetTables::CreateFromSource(const TableSchema& schema,
                                            const std::string& target_schema,
                                            const std::string& quoted, const std::string& name) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  // A table a transform reshaped is not the source's: its columns say what it is.
  if (!source_is_postgres_ || schema.reshaped) {
    return CreateFromShape(schema, target_schema, quoted);
  }
  if (!schema_objects_copied_) {
    schema_objects_copied_ = true;
    if (absl::Status s = BringSchemaObjects(); !s.ok()) return s;
  }
  absl::StatusOr<PGconn*> source = SourceConnection();
  if (!source.ok()) return source.status();
  absl::StatusOr<TableDefinition> def =
      ReadTableDefinition(*source, schema.schema, schema.name, options_->schema);
  if (absl::IsNotFound(def.status())) {
    LogWarning("sink %s (postgres): %s: %s; creating %s from the columns the stream describes",
               sink_name_, schema.QualifiedName(), def.status().message(), name);
    return CreateFromShape(schema, target_schema, quoted);
  }
  if (!def.ok()) {
    source_conn_.reset();
    return absl::Status(def.status().code(), absl::StrCat("postgres target ", session_.TargetName(),
                                                          ": ", def.status().message()));
  }
  std::vector<std::string> sql;
  for (const std::string& s : def->schemas) {
    sql.push_back(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(s)));
  }
  for (std::string& s : def->create) sql.push_back(std::move(s));
  // A table created again (dropped in the target since) starts afresh.
  sql.push_back(absl::StrCat("DELETE FROM pgflow.pending_ddl WHERE pipeline = ",
                             QuoteLiteral(pipeline_), " AND target_table = ", QuoteLiteral(name)));
  std::vector<std::string> rows;
  for (const DeferredStatement& d : def->deferred) {
    rows.push_back(absl::StrCat("(", QuoteLiteral(pipeline_), ", ", QuoteLiteral(name), ", ",
                                d.phase, ", ", QuoteLiteral(d.statement), ")"));
  }
  if (!rows.empty()) {
    sql.push_back(
        absl::StrCat("INSERT INTO pgflow.pending_ddl (pipeline, target_table, phase, statement) "
                     "VALUES ",
                     absl::StrJoin(rows, ", ")));
  }
  // One simple-protocol query: the table and its pending DDL commit together.
  if (absl::Status s =
          session_.Run(absl::StrJoin(sql, "; "),
                       absl::StrCat("creating table ", name,
                                    " (a type or function it uses must exist in the target)"));
      !s.ok()) {
    return s;
  }
  LogInfo(
      "sink %s (postgres): created table %s in the target from the source's definition; %d "
      "indexes and constraints are built %s",
      sink_name_, name,
      std::count_if(def->deferred.begin(), def->deferred.end(),
                    [](const DeferredStatement& d) { return !d.attaches; }),
      load_finished_ ? "now" : "once the snapshot is loaded");
  if (options_->CopiesRoles()) {
    if (absl::Status s = GiveSourceOwner(schema.schema, schema.name); !s.ok()) return s;
  }
  if (load_finished_) return BuildPending();
  return absl::OkStatus();
}

absl::Status TargetTables::BringSchemaObjects() {
  // The roles first: the schema objects and the tables name them.
  if (options_->CopiesRoles()) {
    if (absl::Status s = CopyRoles(RolesPass::kRoles); !s.ok()) return s;
  }
  // The types, domains and functions tables may use.
  absl::StatusOr<size_t> failed = CopySchemaObjects(source_url_, options_->url, sink_name_);
  if (!failed.ok()) {
    LogWarning(
        "sink %s (postgres): the source's schema objects (types, domains, functions) were not "
        "copied: %s; a table that uses one will fail to be created",
        sink_name_, failed.status().message());
  }
  schema_objects_owed_ = failed.ok() && *failed > 0;
  if (!options_->CopiesRoles()) return absl::OkStatus();
  return CopyRoles(RolesPass::kOwnersAndGrants);
}

absl::Status TargetTables::CopyRoles(RolesPass pass) {
  const std::string prefix = absl::StrCat("sink ", sink_name_, " (postgres): ");
  // Nothing here stops the pipeline but a lost connection: the rows come first.
  auto lost = [&](const absl::Status& s) {
    if (absl::IsUnavailable(s)) return s;
    LogWarning("%sthe source's roles, owners and grants were not copied: %s", prefix, s.message());
    return absl::OkStatus();
  };
  absl::StatusOr<PGconn*> source = SourceConnection();
  if (!source.ok()) return lost(source.status());
  absl::StatusOr<PgConnPtr> target = Connect(options_->url, ConnectionKind::kRegular);
  if (!target.ok()) return lost(target.status());
  PGconn* conn = target->get();
  if (!role_map_.has_value()) {
    absl::StatusOr<RoleMap> map = ReadRoleMap(*source, conn);
    if (!map.ok()) return lost(map.status());
    role_map_ = *std::move(map);
  }
  const std::string& role = role_map_->target_user;
  OwnershipCopier copier(*source, conn, *role_map_, {origin_tables_, options_->schema, role},
                         [conn](const std::string& sql, std::string* refused) {
                           return RunRefusable(conn, sql, refused);
                         });
  if (pass != RolesPass::kRoles) {
    absl::Status s =
        pass == RolesPass::kLateObjects ? absl::OkStatus() : copier.CopyDatabase(needed_roles_);
    if (s.ok()) s = copier.CopySchemaObjects();
    if (!s.ok()) return lost(s);
    LogOwnership(prefix, nullptr, copier, session_.TargetName());
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<NeededRole>> roles =
      ReadNeededRoles(*source, origin_tables_, *role_map_);
  if (!roles.ok()) return lost(roles.status());
  needed_roles_ = *std::move(roles);
  absl::StatusOr<RolesOutcome> outcome =
      pgflow::CopyRoles(*source, conn, needed_roles_, *role_map_, role);
  if (!outcome.ok()) return lost(outcome.status());
  LogOwnership(prefix, &*outcome, copier, session_.TargetName());
  return absl::OkStatus();
}

absl::Status TargetTables::GiveSourceOwner(const std::string& schema, const std::string& name) {
  if (!source_is_postgres_) return absl::OkStatus();
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  absl::StatusOr<PGconn*> source = SourceConnection();
  if (!source.ok()) return source.status();
  if (!role_map_.has_value()) {
    absl::StatusOr<RoleMap> map = ReadRoleMap(*source, session_.conn());
    if (!map.ok()) return map.status();
    role_map_ = *std::move(map);
  }
  // Inside the open transaction, under a savepoint: a refusal takes nothing else with it.
  auto run = [this](const std::string& sql, std::string* refused) -> absl::Status {
    const bool nested = session_.in_transaction();
    absl::Status s = session_.Run(
        nested ? absl::StrCat("SAVEPOINT pgflow_owner; ", sql, "; RELEASE SAVEPOINT pgflow_owner")
               : sql,
        "giving a table the source's owner and grants");
    if (s.ok() || absl::IsUnavailable(s)) return s;
    *refused = std::string(s.message());
    if (!nested) return absl::OkStatus();
    return session_.Run("ROLLBACK TO SAVEPOINT pgflow_owner; RELEASE SAVEPOINT pgflow_owner",
                        "rolling back a refused owner or grant");
  };
  OwnershipCopier copier(*source, session_.conn(), *role_map_,
                         {origin_tables_, options_->schema, role_map_->target_user}, run);
  absl::Status s = copier.CopyTable(schema, name);
  if (!s.ok()) {
    if (absl::IsUnavailable(s)) return s;
    LogWarning("sink %s (postgres): %s.%s was not given the source's owner and grants: %s",
               sink_name_, schema, name, s.message());
    return absl::OkStatus();
  }
  LogOwnership(absl::StrCat("sink ", sink_name_, " (postgres): "), nullptr, copier,
               session_.TargetName());
  return absl::OkStatus();
}

absl::Status TargetTables::CreateFromShape(const TableSchema& schema,
                                           const std::string& target_schema,
                                           const std::string& quoted) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  CreateTableSpec create;
  create.table = quoted;
  const bool keyed = schema.replica_identity == 'd' || schema.replica_identity == 'i';
  for (const Column& c : schema.columns) {
    std::string type;
    if (c.type_oid < kFirstNonBuiltinOid) {
      absl::StatusOr<PgResultPtr> res =
          Exec(session_.conn(), "SELECT format_type($1::oid, $2::int)",
               {std::to_string(c.type_oid), std::to_string(c.type_modifier)});
      if (!res.ok()) return res.status();
      if (PQgetisnull(res->get(), 0, 0)) {
        return absl::FailedPreconditionError(
            absl::StrCat("postgres target ", session_.TargetName(), ": cannot create ", schema.name,
                         ": type OID ", c.type_oid, " of column ", c.name, " is unknown"));
      }
      type = PQgetvalue(res->get(), 0, 0);
    } else {
      size_t dot = c.type_name.find('.');
      if (c.type_name.empty() || dot == std::string::npos) {
        return absl::FailedPreconditionError(
            absl::StrCat("postgres target ", session_.TargetName(), ": cannot create ", schema.name,
                         ": the type of column ", c.name, " (OID ", c.type_oid, ") is unknown"));
      }
      std::string type_schema = c.type_name.substr(0, dot);
      std::string type_name = c.type_name.substr(dot + 1);
      bool array = absl::StartsWith(type_name, "_");
      if (array) type_name = type_name.substr(1);
      type = absl::StrCat(QuoteIdent(type_schema), ".", QuoteIdent(type_name), array ? "[]" : "");
    }
    ColumnDefinitionSpec column;
    column.name = c.name;
    column.type = std::move(type);
    create.columns.push_back(std::move(column));
    if (keyed && c.is_key) create.primary_key.push_back(c.name);
  }
  // Under REPLICA IDENTITY FULL every column is marked: the real key travels beside them.
  if (schema.replica_identity == 'f') create.primary_key = schema.primary_key;
  // Several deliveries of one Kafka group may meet the same missing table at once: creations
  // take turns under a lock held to the end of their transaction, and the later ones find the
  // table there (two concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type).
  create.if_not_exists = true;
  std::string sql = absl::StrCat("SELECT pg_advisory_xact_lock(hashtext('pgflow: creating tables')); "
                                 "CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(target_schema), "; ",
                                 RenderCreateTable(create));
  if (absl::Status s =
          session_.Run(sql, absl::StrCat("creating table ", target_schema, ".", schema.name,
                                         " (a type it uses must exist in the target)"));
      !s.ok()) {
    return s;
  }
  LogInfo("sink %s (postgres): created table %s.%s in the target", sink_name_, target_schema,
          schema.name);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<TargetTableState>> TargetCatalogLookup::Table(
    const std::string& schema, const std::string& name) {
  absl::StatusOr<PgResultPtr> res = Exec(conn_, R"sql(
      SELECT (SELECT json_agg(attname ORDER BY attnum) FROM pg_attribute
              WHERE attrelid = r.oid AND attnum > 0 AND NOT attisdropped)::text,
             (SELECT conname FROM pg_constraint WHERE conrelid = r.oid AND contype = 'p'),
             (SELECT json_agg(a.attname ORDER BY k.ord)
              FROM pg_constraint c
              CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
              WHERE c.conrelid = r.oid AND c.contype = 'p')::text,
             (SELECT json_agg(conname) FROM pg_constraint
              WHERE conrelid = r.oid AND contype <> 'p')::text
      FROM (SELECT to_regclass($1) AS oid) r WHERE r.oid IS NOT NULL)sql",
                                         {absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name))});
  if (!res.ok()) return res.status();
  if (PQntuples(res->get()) == 0) return std::optional<TargetTableState>();
  TargetTableState state;
  auto names = [&](int column) {
    std::vector<std::string> out;
    if (PQgetisnull(res->get(), 0, column)) return out;
    nlohmann::json list = nlohmann::json::parse(PQgetvalue(res->get(), 0, column), nullptr, false);
    if (!list.is_array()) return out;
    for (const nlohmann::json& n : list) {
      if (n.is_string()) out.push_back(n.get<std::string>());
    }
    return out;
  };
  state.columns = names(0);
  state.primary_key_constraint = PQgetvalue(res->get(), 0, 1);
  state.primary_key = names(2);
  state.constraints = names(3);
  return std::optional<TargetTableState>(std::move(state));
}

}  // namespace pgflow
