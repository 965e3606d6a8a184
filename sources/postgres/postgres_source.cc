#include "sources/postgres/postgres_source.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/log.h"
#include "sources/postgres/backfill.h"
#include "sources/postgres/ddl_capture.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/slot_holder.h"
#include "sources/postgres/slot_monitor.h"
#include "sources/postgres/snapshot.h"
#include "sources/postgres/stream_state.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> QuotedNames(const std::vector<TableRef>& tables) {
  std::vector<std::string> names;
  for (const TableRef& t : tables) names.push_back(t.Quoted());
  return names;
}

// "a, b, c" for a log line, the first ten of a long list and how many more.
std::string NameSome(const std::vector<std::string>& names) {
  constexpr size_t kShown = 10;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kShown));
  std::string text = absl::StrJoin(shown, ", ");
  if (names.size() > kShown) absl::StrAppend(&text, " and ", names.size() - kShown, " more");
  return text;
}

std::string QualifiedIdent(const std::string& schema, const std::string& table) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(table));
}

}  // namespace

PostgresSource::PostgresSource(std::string pipeline, std::string file,
                               std::shared_ptr<const PostgresSourceOptions> options)
    : pipeline_(std::move(pipeline)),
      file_(std::move(file)),
      options_(std::move(options)),
      source_(*options_) {}

PostgresSource::~PostgresSource() = default;

absl::Status PostgresSource::CheckServer(PGconn* conn) { return CheckSourceServer(conn); }

absl::Status CheckSourceServer(PGconn* conn) {
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT current_setting('wal_level'), current_setting('server_version_num')::int");
  if (!res.ok()) return res.status();
  std::string wal_level = PQgetvalue(res->get(), 0, 0);
  int version = std::atoi(PQgetvalue(res->get(), 0, 1));
  if (version < 140000) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostgreSQL at ", Describe(conn), " is version ", version / 10000,
                     ": pgflow needs PostgreSQL 14 or later (pgoutput's `messages` option)"));
  }
  if (wal_level != "logical") {
    return absl::FailedPreconditionError(absl::StrCat(
        "wal_level is '", wal_level, "' on ", Describe(conn),
        ": logical replication needs wal_level = logical (set it in postgresql.conf, or "
        "ALTER SYSTEM SET wal_level = logical, and restart PostgreSQL)"));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::CheckTables(PGconn* conn) {
  constexpr const char* kTableQuery =
      "SELECT n.nspname, c.relname, c.relkind, c.relispartition FROM pg_class c JOIN "
      "pg_namespace n ON n.oid = c.relnamespace "
      "WHERE n.nspname = $1 AND ($2 = '*' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
      "OR c.relname = $2) ORDER BY 2";
  for (const TableRef& ref : source_.tables) {
    if (ref.table == "*") {
      auto ns = Exec(conn, "SELECT 1 FROM pg_namespace WHERE nspname = $1", {ref.schema});
      if (!ns.ok()) return ns.status();
      if (PQntuples(ns->get()) == 0) {
        return absl::NotFoundError(absl::StrCat("schema ", ref.schema,
                                                " (in source.postgres.tables) "
                                                "does not exist in ",
                                                Describe(conn)));
      }
    }
    absl::StatusOr<PgResultPtr> res = Exec(conn, kTableQuery, {ref.schema, ref.table});
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    if (ref.table != "*" && PQntuples(r) == 0) {
      return absl::NotFoundError(absl::StrCat("table ", ref.ToString(),
                                              " (in source.postgres.tables) does not exist in ",
                                              Describe(conn)));
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      std::string name = absl::StrCat(PQgetvalue(r, i, 0), ".", PQgetvalue(r, i, 1));
      char kind = PQgetvalue(r, i, 2)[0];
      if (kind != 'r' && kind != 'p') {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " (in source.postgres.tables) is not a table (relkind '", std::string(1, kind),
            "'): only tables and partitioned tables can be replicated"));
      }
      if (SkipsKeyless() && ref.table != "*" && PQgetvalue(r, i, 3)[0] == 't') {
        // Published table by table, a partition would go through its root, which is not here.
        return absl::InvalidArgumentError(
            absl::StrCat(name,
                         " (in source.postgres.tables) is a partition: with keyless_tables: skip, "
                         "list its partitioned table instead"));
      }
    }
  }
  if (source_.snapshot.mode == SnapshotMode::kOnly ||
      options_->keyless_tables != KeylessPolicy::kFail) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  if (!keyless->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source.postgres.keyless_tables is 'fail' and ", keyless->size(),
        " followed table(s) have no primary key: ", NameSome(QuotedNames(*keyless)),
        ". Add a primary key to each, set keyless_tables: full (pgflow then sets REPLICA "
        "IDENTITY FULL on them), or keyless_tables: skip (pgflow leaves them out)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TableRef>> PostgresSource::FollowedTables(PGconn* conn, bool keyless) {
  // The listed tables, every table of a listed schema, and their partitions and inheritance
  // children, all of which a publication of the tables or schemas covers.
  const std::string query = absl::StrCat(
      "WITH RECURSIVE followed(relid) AS ("
      "  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
      "  JOIN unnest($1::text[], $2::text[]) AS r(nsp, rel)"
      "    ON n.nspname = r.nsp AND (r.rel = '*' OR c.relname = r.rel)"
      "  WHERE c.relkind IN ('r', 'p')"
      "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN followed f ON i.inhparent = f.relid) "
      "SELECT n.nspname, c.relname FROM followed f"
      " JOIN pg_class c ON c.oid = f.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE ",
      keyless ? std::string(kKeylessCondition)
              : absl::StrCat("c.relpersistence = 'p' AND NOT c.relispartition AND NOT (",
                             kKeylessCondition, ")"),
      " ORDER BY 1, 2");
  auto [schemas, names] = TableRefArrays(source_.tables);
  absl::StatusOr<PgResultPtr> res = Exec(conn, query, {schemas, names});
  if (!res.ok()) return res.status();
  std::vector<TableRef> tables;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    tables.push_back(TableRef{PQgetvalue(res->get(), i, 0), PQgetvalue(res->get(), i, 1)});
  }
  return tables;
}

absl::Status PostgresSource::SetKeylessIdentityFull(PGconn* conn) {
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  // What each had before, for `pgflow teardown` to give back (a role that may not record it is
  // told so).
  auto recordable = Exec(conn,
                         "SELECT coalesce(has_table_privilege(to_regclass("
                         "'pgflow.replica_identities'), 'INSERT'), false)");
  if (!recordable.ok()) return recordable.status();
  const bool record = PQgetvalue(recordable->get(), 0, 0)[0] == 't';
  if (!record && !keyless->empty()) {
    LogWarning(
        "REPLICA IDENTITY FULL is set on %s without a record in pgflow.replica_identities (a "
        "superuser's `pgflow init` installs it): `pgflow teardown` will not give those tables "
        "their identity back",
        NameSome(QuotedNames(*keyless)));
  }
  for (const TableRef& ref : *keyless) {
    const std::string table = ref.Quoted();
    if (record) {
      auto noted = Exec(conn,
                        "INSERT INTO pgflow.replica_identities (relid, previous) SELECT oid, "
                        "relreplident FROM pg_class WHERE oid = $1::regclass "
                        "ON CONFLICT (relid) DO NOTHING",
                        {table});
      if (!noted.ok()) return noted.status();
    }
    auto res = Exec(conn, absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY FULL"));
    if (!res.ok()) {
      return absl::Status(
          res.status().code(),
          absl::StrCat("table ", table,
                       " has no primary key, and setting REPLICA IDENTITY FULL on it (so that "
                       "its UPDATEs and DELETEs still work once published) failed: ",
                       res.status().message(),
                       ". Run that ALTER TABLE as its owner, add a primary key, or set "
                       "source.postgres.keyless_tables: skip or fail"));
    }
  }
  if (!keyless->empty()) {
    LogInfo(
        "set REPLICA IDENTITY FULL on %d followed table(s) without a primary key, so that their "
        "UPDATEs and DELETEs keep working and stream whole rows (keyless_tables: full): %s",
        keyless->size(), NameSome(QuotedNames(*keyless)));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::NoteSkippedKeylessTables(PGconn* conn) {
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  skipped_at_start_ = *std::move(keyless);
  if (!skipped_at_start_.empty()) {
    LogInfo(
        "keyless_tables: skip: %d followed table(s) without a primary key are left out of the "
        "publication, the copy and the stream (each joins when it gains a key): %s",
        skipped_at_start_.size(), NameSome(QuotedNames(skipped_at_start_)));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::EnsurePublication(PGconn* conn) {
  const std::string pub = QuoteIdent(source_.publication);
  auto existing = Exec(conn, "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                       {source_.publication});
  if (!existing.ok()) return existing.status();
  const bool exists = PQntuples(existing->get()) == 1;
  if (exists && PQgetvalue(existing->get(), 0, 0)[0] == 't') {
    if (SkipsKeyless()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "publication ", source_.publication,
          " publishes all tables, keyless ones included, but source.postgres.keyless_tables is "
          "'skip': drop it (pgflow creates its own), or name another one (source.postgres."
          "publication)"));
    }
    LogInfo("publication %s exists and publishes all tables; using it as it is",
            source_.publication);
    return absl::OkStatus();
  }

  // What it lists now: tables (with whether each is keyless) and schemas.
  std::set<std::string> have_tables;
  std::set<std::string> have_schemas;
  std::vector<TableRef> have_keyed;
  if (exists) {
    auto tables = Exec(conn,
                       absl::StrCat("SELECT n.nspname, c.relname, ", kKeylessCondition,
                                    " FROM pg_publication_rel pr "
                                    "JOIN pg_publication p ON p.oid = pr.prpubid "
                                    "JOIN pg_class c ON c.oid = pr.prrelid "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE p.pubname = $1"),
                       {source_.publication});
    if (!tables.ok()) return tables.status();
    auto schemas = Exec(conn,
                        "SELECT n.nspname FROM pg_publication_namespace pn "
                        "JOIN pg_publication p ON p.oid = pn.pnpubid "
                        "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = $1",
                        {source_.publication});
    if (!schemas.ok()) return schemas.status();
    for (int i = 0; i < PQntuples(tables->get()); ++i) {
      TableRef ref{PQgetvalue(tables->get(), i, 0), PQgetvalue(tables->get(), i, 1)};
      have_tables.insert(QualifiedIdent(ref.schema, ref.table));
      if (PQgetvalue(tables->get(), i, 2)[0] != 't') have_keyed.push_back(std::move(ref));
    }
    for (int i = 0; i < PQntuples(schemas->get()); ++i) {
      have_schemas.insert(QuoteIdent(PQgetvalue(schemas->get(), i, 0)));
    }
  }

  // What it should list.
  std::set<std::string> want_tables;
  std::set<std::string> want_schemas;
  if (SkipsKeyless()) {
    // Table by table (the capture adds those created or keyed later): a schema's publication
    // would take in its keyless tables too.
    absl::StatusOr<std::vector<TableRef>> keyed = FollowedTables(conn, /*keyless=*/false);
    if (!keyed.ok()) return keyed.status();
    for (const TableRef& ref : *keyed) want_tables.insert(QualifiedIdent(ref.schema, ref.table));
    // A keyed table the publication already lists stays, whatever its name: the capture keeps
    // a followed table renamed or moved away in it, as the pipeline follows it by OID.
    for (const TableRef& ref : have_keyed) {
      if (want_tables.insert(QualifiedIdent(ref.schema, ref.table)).second) {
        LogInfo(
            "table %s stays in publication %s although source.postgres.tables does not name "
            "it (renamed or moved since it joined?): remove it with ALTER PUBLICATION ... DROP "
            "TABLE if it should go",
            ref.Quoted(), source_.publication);
      }
    }
  } else {
    for (const TableRef& ref : source_.tables) {
      if (ref.table == "*") {
        want_schemas.insert(QuoteIdent(ref.schema));
      } else {
        want_tables.insert(QualifiedIdent(ref.schema, ref.table));
      }
    }
  }
  if (exists && have_tables == want_tables && have_schemas == want_schemas) {
    return absl::OkStatus();
  }

  std::vector<std::string> objects;
  if (!want_tables.empty()) {
    // ONLY when skipping: an inheritance child joins on its own, if it has a key.
    const char* only = SkipsKeyless() ? "ONLY " : "";
    std::vector<std::string> listed;
    for (const std::string& t : want_tables) listed.push_back(absl::StrCat(only, t));
    objects.push_back(absl::StrCat("TABLE ", absl::StrJoin(listed, ", ")));
  }
  if (!want_schemas.empty()) {
    objects.push_back(absl::StrCat("TABLES IN SCHEMA ", absl::StrJoin(want_schemas, ", ")));
  }
  const std::string objects_sql = absl::StrJoin(objects, ", ");
  const std::string described = objects.empty() ? "no table yet" : objects_sql;
  if (!exists) {
    auto created =
        Exec(conn, absl::StrCat("CREATE PUBLICATION ", pub, objects.empty() ? "" : " FOR ",
                                objects_sql, " WITH (publish_via_partition_root = true)"));
    if (!created.ok()) return created.status();
    LogInfo("created publication %s for %s", source_.publication, described);
    return absl::OkStatus();
  }
  std::string alter = absl::StrCat("ALTER PUBLICATION ", pub, " SET ", objects_sql);
  if (objects.empty()) {  // SET takes no empty list
    std::vector<std::string> dropped;
    if (!have_tables.empty()) {
      dropped.push_back(absl::StrCat("TABLE ", absl::StrJoin(have_tables, ", ")));
    }
    if (!have_schemas.empty()) {
      dropped.push_back(absl::StrCat("TABLES IN SCHEMA ", absl::StrJoin(have_schemas, ", ")));
    }
    alter = absl::StrCat("ALTER PUBLICATION ", pub, " DROP ", absl::StrJoin(dropped, ", "));
  }
  auto altered = Exec(conn, alter);
  if (!altered.ok()) return altered.status();
  LogInfo("updated publication %s to %s", source_.publication, described);
  return absl::OkStatus();
}

absl::StatusOr<bool> PostgresSource::CheckMissingSlot(PGconn* conn) {
  // The slot's consistent point, recorded once it was made (RecordSlotMade): none when it was
  // never made, or `pgflow teardown` dropped it with the pipeline's rows (a first run, then).
  // (Both tables are made together, with the first slot; a relation that does not exist
  // cannot be named in a query, whatever its WHERE says.)
  auto tables = Exec(conn,
                     "SELECT to_regclass('pgflow.snapshots') IS NOT NULL AND "
                     "to_regclass('pgflow.backfills') IS NOT NULL");
  if (!tables.ok()) return tables.status();
  if (PQgetvalue(tables->get(), 0, 0)[0] != 't') return false;
  // (A snapshot not finished yet: the next run copies every table again under a new slot,
  // as it would after an interruption, and the stream had not begun.)
  auto made = Exec(conn,
                   "SELECT 1 FROM pgflow.snapshots WHERE pipeline = $1 AND consistent_point IS "
                   "NOT NULL AND finished_at IS NOT NULL",
                   {pipeline_});
  if (!made.ok()) return made.status();
  if (PQntuples(made->get()) == 0) return false;
  auto copy = Exec(conn,
                   "SELECT min(id) FROM pgflow.backfills WHERE pipeline = $1 AND tables = '{}' "
                   "AND started_at IS NULL AND finished_at IS NULL AND error IS NULL",
                   {pipeline_});
  if (!copy.ok()) return copy.status();
  if (!PQgetisnull(copy->get(), 0, 0)) {
    LogWarning("replication slot %s of pipeline %s is missing on %s (made before: a failover or "
               "a restore lost it): a new slot, and the copy of every table asked for "
               "(backfill %s) brings the sinks up to date",
               source_.slot, pipeline_, Describe(conn), PQgetvalue(copy->get(), 0, 0));
    return true;
  }
  return MissingSlotError(conn, Lsn());
}

absl::Status PostgresSource::MissingSlotError(PGconn* conn, Lsn held) {
  std::string now = "now";
  if (auto position = Exec(conn,
                           "SELECT pg_current_wal_lsn()::text || ' on timeline ' || "
                           "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                           "::bit(32)::int");
      position.ok()) {
    now = PQgetvalue(position->get(), 0, 0);
  }
  const std::string from = held.IsValid() ? held.ToString() : "the last one the sinks hold";
  return absl::DataLossError(absl::StrCat(
      "replication slot ", source_.slot, " of pipeline ", pipeline_, " is missing on ",
      Describe(conn), ", though the pipeline made it there before: this server took over from "
      "another (a failover: PostgreSQL 15 keeps no logical slot on standbys) or was restored, "
      "or the slot was dropped. The changes after ", from, ", up to ", now,
      ", were not read, and a new slot would start after them: a gap. Way out: `pgflow "
      "snapshot ", file_, "` (asks for a copy of every table), then `pgflow run ", file_,
      "` (a new slot; the copy brings every row up to date), then `pgflow verify ", file_,
      "` (rows deleted meanwhile, which the targets still hold)."));
}

absl::Status PostgresSource::RecordSlotMade(PGconn* conn, Lsn lsn) {
  if (absl::Status s = EnsureSnapshotState(conn); !s.ok()) return s;
  // (A row with finished_at set: no snapshot is owed, should the mode become initial.)
  return Exec(conn,
              "INSERT INTO pgflow.snapshots (pipeline, consistent_point, finished_at) "
              "VALUES ($1, $2, now()) ON CONFLICT (pipeline) DO UPDATE SET consistent_point = "
              "excluded.consistent_point",
              {pipeline_, lsn.ToString()})
      .status();
}

absl::StatusOr<Lsn> PostgresSource::EnsureSlot(PGconn* conn) {
  const bool initial = source_.snapshot.mode == SnapshotMode::kInitial;
  const std::string query =
      "SELECT plugin, database, confirmed_flush_lsn, active_pid, current_database() "
      "FROM pg_replication_slots WHERE slot_name = $1";
  if (absl::Status free = WaitForSlotFree(conn, pipeline_, source_.slot); !free.ok()) return free;
  auto res = Exec(conn, query, {source_.slot});
  if (!res.ok()) return res.status();
  PGresult* r = res->get();
  if (PQntuples(r) == 1) {
    std::string plugin = PQgetvalue(r, 0, 0);
    std::string database = PQgetvalue(r, 0, 1);
    if (plugin != "pgoutput" || database != PQgetvalue(r, 0, 4)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", source_.slot, " exists but belongs to database '", database,
          "' with plugin '", plugin, "': choose another slot name (source.postgres.slot)"));
    }
    if (!PQgetisnull(r, 0, 3)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", source_.slot, " is in use by ",
          DescribeSlotHolder(conn, PQgetvalue(r, 0, 3)), ": is another pgflow running pipeline ",
          pipeline_, "?"));
    }
    absl::StatusOr<SlotState> slot = ReadSlotState(conn, source_.slot);
    if (!slot.ok()) return slot.status();
    if (slot->lost()) {
      return absl::DataLossError(LostSlotMessage(conn, pipeline_, file_, *slot));
    }
    std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(r, 0, 2));
    if (!lsn) return absl::DataLossError("replication slot has no confirmed_flush_lsn");
    if (initial) {
      auto state =
          Exec(conn, "SELECT finished_at IS NULL FROM pgflow.snapshots WHERE pipeline = $1",
               {pipeline_});
      if (!state.ok()) return state.status();
      snapshot_owed_ = PQntuples(state->get()) == 1 && PQgetvalue(state->get(), 0, 0)[0] == 't';
    }
    LogInfo("resuming replication slot %s from %s%s", source_.slot, lsn->ToString(),
            snapshot_owed_ ? ", once the tables are copied (the snapshot is not finished)" : "");
    return *lsn;
  }
  // A slot lost (a failover): what it missed comes from a copy of every table asked for, not
  // from the initial snapshot again.
  absl::StatusOr<bool> lost = CheckMissingSlot(conn);
  if (!lost.ok()) return lost.status();
  const bool export_snapshot = initial && !*lost;
  if (export_snapshot) {
    // Recorded before the slot exists, so a crash in between is recognised as a snapshot owed.
    for (const char* sql : {"DELETE FROM pgflow.snapshot_chunks WHERE pipeline = $1",
                            "DELETE FROM pgflow.snapshots WHERE pipeline = $1",
                            "INSERT INTO pgflow.snapshots (pipeline) VALUES ($1)"}) {
      auto res = Exec(conn, sql, {pipeline_});
      if (!res.ok()) return res.status();
    }
  }
  PgResultPtr created(
      PQexec(replication_.get(),
             absl::StrCat("CREATE_REPLICATION_SLOT ", QuoteIdent(source_.slot),
                          " LOGICAL pgoutput ",
                          export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT")
                 .c_str()));
  if (PQresultStatus(created.get()) != PGRES_TUPLES_OK) {
    return ResultError(replication_.get(), created.get(),
                       absl::StrCat("creating replication slot ", source_.slot));
  }
  std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(created.get(), 0, 1));
  if (!lsn) return absl::DataLossError("CREATE_REPLICATION_SLOT returned no consistent point");
  LogInfo("created replication slot %s at %s", source_.slot, lsn->ToString());
  created_slot_ = true;
  if (!initial) {
    // (Initial: its snapshot row gets the consistent point below.)
    if (absl::Status s = RecordSlotMade(conn, *lsn); !s.ok()) {
      LogWarning("replication slot %s: %s (without it, a slot lost in a failover is not told "
                 "from a first run)",
                 source_.slot, s.message());
    }
  }
  if (export_snapshot) {
    snapshot_owed_ = true;
    snapshot_name_ = PQgetvalue(created.get(), 0, 2);
    auto noted = Exec(conn, "UPDATE pgflow.snapshots SET consistent_point = $2 WHERE pipeline = $1",
                      {pipeline_, lsn->ToString()});
    if (!noted.ok()) return noted.status();
  }
  return *lsn;
}

absl::StatusOr<Lsn> PostgresSource::Prepare() {
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = CheckServer(conn->get()); !s.ok()) return s;
  if (absl::Status s = CheckTables(conn->get()); !s.ok()) return s;
  if (source_.snapshot.mode == SnapshotMode::kOnly) {
    // A one-off copy: no slot, no publication, nothing left behind.
    snapshot_owed_ = true;
    return Lsn();
  }
  absl::StatusOr<std::vector<std::string>> installed = InstallDdlCapture(conn->get());
  if (installed.ok()) {
    for (const std::string& what : *installed) LogInfo("installed %s", what);
    auto [table_schemas, table_names] = TableRefArrays(source_.tables);
    PipelineRegistration registration{
        pipeline_,     source_.slot, source_.publication, KeylessPolicyName(source_.keyless_tables),
        table_schemas, table_names};
    absl::Status s = RegisterPipeline(conn->get(), registration);
    if (!s.ok()) return s;
  } else if (absl::IsFailedPrecondition(installed.status())) {
    LogWarning("%s; until then schema changes are not streamed", installed.status().message());
  } else {
    return installed.status();
  }
  // One transaction: no moment where a keyless table is published without REPLICA IDENTITY
  // FULL, and none of it done if any of it fails. Its own statements are not schema changes
  // the pipeline streams.
  auto began = Exec(conn->get(), "BEGIN; SET LOCAL pgflow.capture_ddl = off");
  if (!began.ok()) return began.status();
  absl::Status published =
      SkipsKeyless() ? NoteSkippedKeylessTables(conn->get()) : SetKeylessIdentityFull(conn->get());
  if (published.ok()) published = EnsurePublication(conn->get());
  if (published.ok()) published = Exec(conn->get(), "COMMIT").status();
  if (!published.ok()) {
    Exec(conn->get(), "ROLLBACK").IgnoreError();
    return published;
  }
  if (source_.snapshot.mode == SnapshotMode::kInitial) {
    if (absl::Status s = EnsureSnapshotState(conn->get()); !s.ok()) return s;
  }
  absl::StatusOr<PgConnPtr> replication = Connect(source_.url, ConnectionKind::kReplication);
  if (!replication.ok()) return replication.status();
  replication_ = *std::move(replication);
  absl::StatusOr<Lsn> start = EnsureSlot(conn->get());
  if (!start.ok()) return start.status();
  start_ = *start;
  return start_;
}

absl::Status PostgresSource::EnsureFullCopy() {
  if (source_.snapshot.mode == SnapshotMode::kOnly) return absl::OkStatus();
  if (snapshot_owed_) {
    if (source_.snapshot.mode != SnapshotMode::kInitial) return absl::OkStatus();
    // An interrupted snapshot would skip the chunks recorded done, which the empty sink lacks:
    // copy them all again (under the new snapshot, as any resumed chunk is).
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    auto res = Exec(conn->get(),
                    "UPDATE pgflow.snapshot_chunks SET done_at = NULL, rows = NULL "
                    "WHERE pipeline = $1 AND done_at IS NOT NULL",
                    {pipeline_});
    if (!res.ok()) return res.status();
    if (std::string n = PQcmdTuples(res->get()); n != "0") {
      LogInfo(
          "a sink starts empty: the interrupted snapshot copies its %s finished chunk(s) "
          "again",
          n);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> id = RequestBackfill(source_.url, pipeline_, {});
  if (!id.ok()) return id.status();
  full_copy_backfill_ = *id;
  LogInfo("a sink starts empty: copying every table again beside the stream (backfill %d)", *id);
  return absl::OkStatus();
}

absl::Status PostgresSource::RunSnapshot(Emitter& emitter, const ChunkTracker& chunks,
                                         const StopSignal& stop) {
  const bool only = source_.snapshot.mode == SnapshotMode::kOnly;
  SnapshotCopier::Options options;
  options.url = source_.url;
  options.pipeline = pipeline_;
  options.tables = source_.tables;
  options.workers = source_.snapshot.workers > 0
                        ? source_.snapshot.workers
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.chunk_bytes = source_.snapshot.chunk_bytes;
  options.position = start_;
  options.record_progress = !only;
  options.skip_keyless = SkipsKeyless();
  options.raw = [&emitter](const TableSchema& table) { return emitter.WantsRawCopy(table); };

  // Without a snapshot exported with the slot, take one now and hold it until the workers
  // have imported it: for a one-off copy any snapshot; for a pipeline, one exactly as of a
  // position the stream can tell changes before and after by (a temporary slot's).
  PgConnPtr holder;
  std::string name = snapshot_name_;
  if (name.empty() && only) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    holder = *std::move(conn);
    auto res = Exec(holder.get(), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (!res.ok()) return res.status();
    res = Exec(holder.get(), "SELECT pg_export_snapshot(), pg_current_wal_lsn()");
    if (!res.ok()) return res.status();
    name = PQgetvalue(res->get(), 0, 0);
    options.position = Lsn::Parse(PQgetvalue(res->get(), 0, 1)).value_or(Lsn());
  } else if (name.empty()) {
    absl::StatusOr<ExactSnapshot> exact = TakeExactSnapshot(source_.url, pipeline_);
    if (!exact.ok()) return exact.status();
    holder = std::move(exact->holder);
    name = exact->name;
    options.copied_as_of = exact->as_of;
  }
  copier_ = std::make_unique<SnapshotCopier>(std::move(options));
  absl::Status s = copier_->Run(
      name,
      [&] {
        if (holder != nullptr && only) Exec(holder.get(), "COMMIT").IgnoreError();
        holder.reset();  // (a temporary slot goes with its connection)
      },
      emitter, chunks, stop);
  if (!s.ok() || !copier_->finished() || only) return s;
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  auto done =
      Exec(conn->get(), "UPDATE pgflow.snapshots SET finished_at = now() WHERE pipeline = $1",
           {pipeline_});
  snapshot_owed_ = false;
  return done.status();
}

absl::Status PostgresSource::LoadCopiedAsOf(PGconn* conn) {
  copied_as_of_.clear();
  if (source_.snapshot.mode != SnapshotMode::kInitial) return absl::OkStatus();
  auto res = Exec(conn,
                  "SELECT table_schema || '.' || table_name, max(as_of) FROM "
                  "pgflow.snapshot_chunks WHERE pipeline = $1 AND as_of > $2::pg_lsn GROUP BY 1",
                  {pipeline_, start_.ToString()});
  if (!res.ok()) return res.status();
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    std::optional<Lsn> as_of = Lsn::Parse(PQgetvalue(res->get(), i, 1));
    if (as_of.has_value()) copied_as_of_[PQgetvalue(res->get(), i, 0)] = *as_of;
  }
  if (!copied_as_of_.empty()) {
    std::vector<std::string> listed;
    for (const auto& [table, as_of] : copied_as_of_) {
      listed.push_back(absl::StrCat(table, " (", as_of.ToString(), ")"));
    }
    std::sort(listed.begin(), listed.end());
    LogInfo(
        "replication stream: %d table(s) were copied as of a later position than %s; their "
        "changes before it are in the copy and are skipped: %s",
        listed.size(), start_.ToString(), NameSome(listed));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::StartReplication(Lsn from) {
  streaming_ = false;
  if (replication_ == nullptr) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kReplication);
    if (!conn.ok()) return conn.status();
    replication_ = *std::move(conn);
  }
  std::string command =
      absl::StrCat("START_REPLICATION SLOT ", QuoteIdent(source_.slot), " LOGICAL ",
                   from.ToString(), " (proto_version '1', publication_names ",
                   QuoteLiteral(QuoteIdent(source_.publication)), ", messages 'true')");
  PgResultPtr res(PQexec(replication_.get(), command.c_str()));
  if (PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
    absl::Status s = ResultError(replication_.get(), res.get(), "starting replication");
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    replication_.reset();
    if (state != nullptr && std::string_view(state) == "42704") {
      // The slot is gone since the stream began: the server it reconnected to took over from
      // another (a failover). Everything after `from` went unread.
      absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
      if (conn.ok()) return MissingSlotError(conn->get(), from);
    }
    return s;
  }
  streaming_ = true;
  streamed_ = true;
  return absl::OkStatus();
}

absl::Status PostgresSource::Stream(Emitter& emitter, Acknowledgements acks,
                                    const StopSignal& stop) {
  if (snapshot_owed_) {
    if (absl::Status s = RunSnapshot(emitter, acks.chunks, stop); !s.ok()) return s;
    if (stop.requested() || source_.snapshot.mode == SnapshotMode::kOnly) {
      return absl::OkStatus();
    }
  }
  // Every snapshot row is durable in every sink: the stream starts exactly where the snapshot
  // was taken, or, for a table copied under a later one, skips what its copy holds.
  {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    if (absl::Status s = LoadCopiedAsOf(conn->get()); !s.ok()) return s;
  }
  absl::Status started = StartReplication(start_);
  if (!started.ok() && !absl::IsUnavailable(started)) return started;
  if (started.ok()) LogInfo("replication stream: streaming from %s", start_.ToString());
  StreamState state(this, emitter, acks.wal, stop);
  return state.Run();
}

void PostgresSource::ReleaseUnacknowledged() {
  if (source_.snapshot.mode == SnapshotMode::kOnly) return;
  // The slot may go only if nothing written since its creation can be missed and no sink holds
  // anything of this run: the snapshot is still owed and sent the sinks nothing (a sink may
  // hold rows of a chunk not every sink acknowledged, which a fresh copy would not empty
  // first), so the next run copies every table under a new slot's snapshot. Once the stream
  // began, or the copy sent anything, the slot stays: it is the record of what was written.
  if (!created_slot_ || streamed_ || !snapshot_owed_ ||
      (copier_ != nullptr && copier_->emitted()) ||
      source_.snapshot.mode != SnapshotMode::kInitial) {
    LogWarning(
        "replication slot %s keeps WAL on the server until pipeline %s runs again, or `pgflow "
        "teardown %s` removes it",
        source_.slot, pipeline_, file_);
    return;
  }
  replication_.reset();  // (the slot's holder, if Finish left it)
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  absl::Status dropped = conn.status();
  if (conn.ok()) {
    dropped = WaitForSlotFree(conn->get(), pipeline_, source_.slot);
    if (dropped.ok()) {
      dropped = Exec(conn->get(), "SELECT pg_drop_replication_slot($1)", {source_.slot}).status();
    }
    if (dropped.ok()) dropped = ForgetSlotMade(conn->get(), pipeline_);
  }
  if (!dropped.ok()) {
    LogWarning(
        "replication slot %s, which this run created, could not be removed (%s): it keeps WAL "
        "on the server until pipeline %s runs again, or `pgflow teardown %s` removes it",
        source_.slot, dropped.message(), pipeline_, file_);
    return;
  }
  created_slot_ = false;
  LogInfo(
      "removed replication slot %s, which this run created: it stopped before it "
      "sent the sinks anything (the next run copies every table under a new one), and the slot "
      "would "
      "keep WAL on the server (pgflow's schema and publication %s stay, holding "
      "nothing; `pgflow teardown %s` removes them)",
      source_.slot, source_.publication, file_);
}

absl::Status PostgresSource::Finish(Acknowledgements acks) {
  if (copier_ != nullptr && !copier_->finished()) {
    // Stopped mid-snapshot: remember every chunk the sinks hold, so the next run skips them.
    if (absl::Status s = copier_->RecordDurable(acks.chunks); !s.ok()) {
      LogWarning("snapshot: could not record finished chunks: %s", s.message());
    }
  }
  const Lsn confirmed = acks.wal.Confirmed();
  if (replication_ == nullptr || !streaming_) return absl::OkStatus();
  PGconn* conn = replication_.get();
  std::string message =
      pgoutput::EncodeStandbyStatus(confirmed, absl::ToUnixMicros(absl::Now()), false);
  if (PQputCopyData(conn, message.data(), static_cast<int>(message.size())) != 1 ||
      PQputCopyEnd(conn, nullptr) != 1 || PQflush(conn) != 0) {
    replication_.reset();
    return absl::OkStatus();  // the slot keeps its last confirmed position; replays are safe
  }
  // Wait (briefly) for the server to end the stream: by then it has processed the update.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    char* buf = nullptr;
    int n = PQgetCopyData(conn, &buf, 1);
    if (n > 0) {
      PQfreemem(buf);
      continue;
    }
    if (n < 0) break;
    pollfd pfd = {PQsocket(conn), POLLIN, 0};
    ::poll(&pfd, 1, 100);
    if (PQconsumeInput(conn) == 0) break;
  }
  // The server answers our CopyDone with its own and a CommandComplete: only then do we know
  // it read the status update before it.
  bool ended = false;
  while (PGresult* res = PQgetResult(conn)) {
    ended = ended || PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
  }
  replication_.reset();
  if (ended) {
    LogInfo("acknowledged %s to replication slot %s", confirmed.ToString(), source_.slot);
  } else {
    LogWarning(
        "could not confirm the final acknowledgement (%s) with the server; the slot may "
        "resume a little earlier, which replays (never loses) changes",
        confirmed.ToString());
  }
  return absl::OkStatus();
}

}  // namespace pgflow
