// The replication loop's part that follows schema changes: which DDL commands the capture
// (ddl_capture.h) sent concern the pipeline, the names followed kept current, and their events.

#include "sources/postgres/stream_state.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/log.h"
#include "nlohmann/json.hpp"

namespace pgflow {

absl::Status PostgresSource::StreamState::OnDdlMessage(pgoutput::LogicalMessage& logical,
                                                       const pgoutput::XLogData& frame) {
  absl::StatusOr<std::optional<std::string>> body = AuthenticDdl(logical.content);
  if (!body.ok()) return body.status();
  if (!body->has_value()) {
    // Anyone may call pg_logical_emit_message: what the triggers did not sign is no DDL.
    LogWarning("ignoring a %s message at %s that pgflow's DDL capture did not write",
               kDdlMessagePrefix, frame.wal_start.ToString());
    return absl::OkStatus();
  }
  absl::StatusOr<DdlCommand> ddl = ParseDdlCommand(**body);
  if (!ddl.ok()) {
    return absl::DataLossError(
        absl::StrCat("the DDL description at ", frame.wal_start.ToString(), " cannot be read (",
                     ddl.status().message(),
                     "): the source's pgflow schema may be another version's; run `pgflow init` "
                     "with this one as a superuser"));
  }
  drop_before_.reset();
  if (!Follows(*ddl)) return absl::OkStatus();
  if (drop_before_.has_value()) AddRejoinDrop(*drop_before_, *ddl, frame.wal_start);
  if (ddl->identity_set_full && ddl->table.has_value()) {
    if (absl::Status s = CheckIdentitySetFull(*ddl, frame.wal_start); !s.ok()) return s;
  }
  uint32_t relid = ddl->IsTable() ? ddl->objid : 0;
  Event event = ChangeEvent(Op::kDdl, relid != 0 ? catalog_.Find(relid) : nullptr, frame.wal_start);
  UpdateCatalog(*ddl);
  if (InLaterCopy(*ddl)) return absl::OkStatus();
  LogDebug("DDL %s %s at %s", ddl->tag, ddl->identity, frame.wal_start.ToString());
  event.change.ddl = std::make_shared<const DdlCommand>(*std::move(ddl));
  event.change.prefix = std::move(logical.prefix);
  event.change.content = **std::move(body);
  Add(std::move(event));
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::CheckIdentitySetFull(const DdlCommand& ddl,
                                                               Lsn at) const {
  const std::string table = TableRef{ddl.table->schema, ddl.table->name}.Quoted();
  if (source_->options_->keyless_tables == KeylessPolicy::kFail) {
    return absl::FailedPreconditionError(absl::StrCat(
        "table ", table, " (", ddl.tag, " at ", at.ToString(),
        ") has no primary key and source.postgres.keyless_tables is 'fail'. pgflow's "
        "DDL capture set REPLICA IDENTITY FULL on it so that the application's writes "
        "go on; add a primary key to it, or set keyless_tables: full, and start again"));
  }
  LogInfo(
      "table %s has no primary key (%s): pgflow's DDL capture set REPLICA IDENTITY "
      "FULL on it, so that its UPDATEs and DELETEs work and stream whole rows",
      table, ddl.tag);
  return absl::OkStatus();
}

void PostgresSource::StreamState::UpdateCatalog(const DdlCommand& ddl) {
  if (!ddl.IsTable()) return;
  const uint32_t relid = ddl.objid;
  if (ddl.dropped) {
    catalog_.Forget(relid);
    primary_keys_.erase(relid);
  } else if (ddl.table.has_value()) {
    primary_keys_[relid] = ddl.table->primary_key;
    // A key added or dropped under FULL changes no column: pgoutput need not describe
    // the table again, so its current version takes the new key now.
    TableSchemaPtr current = catalog_.Find(relid);
    if (current != nullptr && current->replica_identity == 'f' &&
        current->primary_key != ddl.table->primary_key) {
      TableSchema changed = *current;
      changed.primary_key = ddl.table->primary_key;
      catalog_.UpdateRelation(std::move(changed));
    }
  }
}

bool PostgresSource::StreamState::InLaterCopy(const DdlCommand& ddl) const {
  // A table copied as of a later position has this command's effect in its copy, shape
  // and indexes included: replayed, a DROP and CREATE of it would empty the copy, a DROP
  // and ADD COLUMN lose the column's values, whose changes before the copy are skipped.
  const std::string on_table = ddl.IsTable() ? absl::StrCat(ddl.schema, ".", ddl.name)
                               : !ddl.on_table.empty()
                                   ? absl::StrCat(ddl.on_schema, ".", ddl.on_table)
                                   : std::string();
  if (on_table.empty() || !source_->CopiedAfter(on_table, txn_.commit_lsn)) return false;
  LogInfo("%s %s at %s is in the copy of %s, taken after it: not replayed", ddl.tag, ddl.identity,
          txn_.commit_lsn.ToString(), on_table);
  return true;
}

bool PostgresSource::StreamState::FollowsSomethingIn(const std::string& schema) const {
  if (followed_schemas_.contains(schema)) return true;
  auto it = followed_tables_.lower_bound(schema + ".");
  return it != followed_tables_.end() && absl::StartsWith(*it, schema + ".");
}

bool PostgresSource::StreamState::Follows(const DdlCommand& cmd) {
  if (cmd.IsTable()) {
    const std::string schema = cmd.table ? cmd.table->schema : cmd.schema;
    const std::string name = cmd.table ? cmd.table->name : cmd.name;
    const bool known = followed_relids_.contains(cmd.objid);
    const bool skip = source_->SkipsKeyless();
    const bool before = cmd.old_table && FollowsTable(cmd.old_table->schema, cmd.old_table->name) &&
                        !(skip && cmd.old_table->Keyless());
    // A table followed under its previous name stays followed (by OID, as the publication
    // follows it).
    const bool now = known || before || FollowsTable(schema, name);
    if (skip && cmd.old_table)
      skipped_tables_.erase(TableRef{cmd.old_table->schema, cmd.old_table->name}.ToString());
    if (cmd.dropped) skipped_tables_.erase(TableRef{schema, name}.ToString());
    if (cmd.dropped || !now) return now;
    if (skip && cmd.table && cmd.table->Keyless()) {
      // Left out of the publication by the capture, in the transaction of this command.
      skipped_tables_.insert(TableRef{schema, name}.ToString());
      if (known || before) {
        LogWarning(
            "table %s lost its primary key (%s): with keyless_tables: skip it has left the "
            "publication; the sinks keep the rows they hold and receive no more of its changes",
            TableRef{schema, name}.Quoted(), cmd.tag);
        followed_relids_.erase(cmd.objid);
        left_tables_.try_emplace(cmd.objid, cmd.old_table ? cmd.old_table->schema : schema,
                                 cmd.old_table ? cmd.old_table->name : name);
      }
      return false;
    }
    if (!known) {
      followed_relids_.insert(cmd.objid);
      if (auto left = left_tables_.find(cmd.objid); left != left_tables_.end()) {
        drop_before_ = left->second;
        left_tables_.erase(left);
      }
      if (!before && cmd.old_table && !cmd.tag.starts_with("CREATE")) {
        // Moved into a followed schema with its rows, or (keyless_tables: skip) given a key:
        // rows the stream never carried.
        RequestTableCopy(schema, name,
                         skip && cmd.old_table->Keyless()
                             ? "gained a primary key and joined the pipeline with its rows"
                             : "joined the pipeline with its rows");
      }
    }
    if (known && !FollowsTable(schema, name)) {
      // A followed table renamed or moved: the publication follows it by OID, and so does the
      // pipeline until it restarts.
      LogWarning(
          "table %s.%s (OID %d) is followed under its new name: update "
          "source.postgres.tables before the next start",
          schema, name, cmd.objid);
    }
    if (source_->reload_new_columns_ && cmd.old_table && !cmd.rewritten &&
        rewrites_seen_.insert({txn_.commit_lsn, cmd.objid}).second) {
      // A column added with a default has that value in every existing row without a change
      // in the stream. The sinks holding rows without replaying DDL (the kv cache, OpenSearch)
      // read them again; the others see them as `read` changes.
      for (const DdlColumn& c : cmd.table->columns) {
        if (cmd.old_table->FindAttnum(c.attnum) == nullptr && !c.default_expr.empty()) {
          RequestTableCopy(schema, name, "gained a column with a default");
          break;
        }
      }
    }
    if (cmd.rewritten && rewrites_seen_.insert({txn_.commit_lsn, cmd.objid}).second) {
      // A rewrite's rows are not decoded. A type change by a plain cast or SET LOGGED leaves
      // values as the sinks will have them; a USING expression or a new column's volatile
      // default does not: the table is copied again.
      bool added = false;
      if (cmd.old_table) {
        for (const DdlColumn& c : cmd.table->columns) {
          added = added || cmd.old_table->FindAttnum(c.attnum) == nullptr;
        }
      }
      if (added || cmd.statement.size() >= 2000 ||
          absl::AsciiStrToLower(cmd.statement).find("using") != std::string::npos) {
        RequestTableCopy(schema, name, "was rewritten with values computed by the source");
      }
    }
    return true;
  }
  const bool skipped = skipped_tables_.contains(TableRef{cmd.on_schema, cmd.on_table}.ToString());
  if (cmd.object_type == "index") {
    if (cmd.dropped) return FollowsSomethingIn(cmd.schema);
    return FollowsTable(cmd.on_schema, cmd.on_table) && !skipped;
  }
  if (cmd.object_type == "table constraint") {
    return FollowsTable(cmd.on_schema, cmd.on_table) && !skipped;
  }
  if (cmd.object_type == "sequence") return FollowsSomethingIn(cmd.schema);
  // Other objects (functions, views, types...) only when their whole schema is followed.
  return followed_schemas_.contains(cmd.schema);
}

void PostgresSource::StreamState::AddRejoinDrop(const TableRef& held, const DdlCommand& cmd,
                                                Lsn lsn) {
  DdlCommand drop;
  drop.tag = "DROP TABLE";
  drop.object_type = "table";
  drop.schema = held.schema;
  drop.name = held.table;
  drop.identity = held.Quoted();
  drop.objid = cmd.objid;
  drop.dropped = true;
  drop.statement =
      "(pgflow: the table regained a key under keyless_tables: skip; its copy is "
      "made anew)";
  LogInfo(
      "table %s regained a primary key: the sinks' copy, stale since it lost its key, is "
      "dropped and made anew",
      held.Quoted());
  nlohmann::json body = {{"tag", drop.tag},           {"object_type", drop.object_type},
                         {"identity", drop.identity}, {"schema", drop.schema},
                         {"name", drop.name},         {"objid", drop.objid},
                         {"dropped", true},           {"statement", drop.statement}};
  Event event = ChangeEvent(Op::kDdl, nullptr, lsn);
  event.change.ddl = std::make_shared<const DdlCommand>(std::move(drop));
  event.change.prefix = std::string(kDdlMessagePrefix);
  event.change.content = body.dump();
  Add(std::move(event));
}

void PostgresSource::StreamState::RequestTableCopy(const std::string& schema,
                                                   const std::string& name, const char* why) {
  const TableRef ref{schema, name};
  const std::string table = ref.Quoted();
  absl::StatusOr<int64_t> id = RequestBackfill(source_->source_.url, source_->pipeline_, {ref});
  if (id.ok()) {
    LogInfo("table %s %s: backfill %d copies it", table, why, *id);
  } else {
    LogWarning(
        "table %s %s, but a backfill could not be queued (%s): run `pgflow snapshot "
        "--tables %s`",
        table, why, id.status().message(), table);
  }
}

absl::StatusOr<std::optional<std::string>> PostgresSource::StreamState::AuthenticDdl(
    std::string_view content) {
  size_t colon = content.find(':');
  if (colon != 64) return std::optional<std::string>();
  PGconn* conn = StateConnection();
  if (conn == nullptr) return absl::UnavailableError("cannot check a DDL message's signature");
  std::string body(content.substr(colon + 1));
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT pgflow.ddl_verify($1, $2)", {body, std::string(content.substr(0, colon))});
  if (!res.ok()) {
    if (PQstatus(conn) != CONNECTION_OK) return res.status();
    LogWarning(
        "cannot check DDL messages (%s): run `pgflow init` as a superuser to update "
        "pgflow's schema in the source",
        res.status().message());
    return std::optional<std::string>();
  }
  if (PQgetvalue(res->get(), 0, 0)[0] != 't') return std::optional<std::string>();
  return std::optional<std::string>(std::move(body));
}

}  // namespace pgflow
