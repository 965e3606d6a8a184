#include "sinks/postgres/table_definition.h"

#include <libpq-fe.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "engine/log.h"
#include "sinks/postgres/create_table.h"

namespace pgflow {
namespace {

std::string Get(PGresult* res, int row, int column) {
  return PQgetisnull(res, row, column) ? std::string() : std::string(PQgetvalue(res, row, column));
}
bool IsNull(PGresult* res, int row, int column) { return PQgetisnull(res, row, column) != 0; }

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// One sequence the table uses, as the source defines it.
struct SourceSequence {
  std::string schema;
  std::string name;
  std::string regclass_literal;  // how pg_get_expr prints it: 'public.t_id_seq' (quoted)
  std::string type;              // format_type of seqtypid
  std::string start, increment, min, max, cache;
  bool cycle = false;
  std::string owner_column;  // column of this table owning it ('a'), if any
  bool identity = false;     // the sequence of an identity column ('i')
};

// pg_get_indexdef(oid) always reads "CREATE [UNIQUE ]INDEX <name> ON [ONLY ]<schema>.<table>
// USING ...": the same statement on `table`, or nullopt when `indexdef` does not read so.
std::optional<std::string> IndexOn(absl::string_view indexdef, absl::string_view index, bool unique,
                                   absl::string_view source_qualified, absl::string_view table) {
  const std::string head =
      absl::StrCat("CREATE ", unique ? "UNIQUE " : "", "INDEX ", index, " ON ");
  absl::string_view rest = indexdef;
  if (!absl::ConsumePrefix(&rest, head)) return std::nullopt;
  absl::ConsumePrefix(&rest, "ONLY ");
  if (!absl::ConsumePrefix(&rest, source_qualified) || !absl::StartsWith(rest, " USING ")) {
    return std::nullopt;
  }
  return absl::StrCat(head, table, rest);
}

// "INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1 NO CYCLE".
std::string SequenceOptions(const SourceSequence& s) {
  return absl::StrCat("INCREMENT BY ", s.increment, " MINVALUE ", s.min, " MAXVALUE ", s.max,
                      " START WITH ", s.start, " CACHE ", s.cache,
                      s.cycle ? " CYCLE" : " NO CYCLE");
}

}  // namespace

absl::StatusOr<PgConnPtr> ConnectToSourceCatalog(const std::string& url) {
  absl::StatusOr<PgConnPtr> conn = Connect(url, ConnectionKind::kRegular);
  if (!conn.ok()) return Annotate(conn.status(), "source");
  absl::StatusOr<PgResultPtr> res = Exec(conn->get(), "SET search_path = pg_catalog");
  if (!res.ok()) return Annotate(res.status(), "source");
  return conn;
}

absl::StatusOr<TableDefinition> ReadTableDefinition(PGconn* source, const std::string& schema,
                                                    const std::string& name,
                                                    const std::string& mapped_schema) {
  const std::string context = absl::StrCat("reading the definition of ", schema, ".", name,
                                           " from the source ", Describe(source));
  absl::StatusOr<PgResultPtr> rel =
      Exec(source,
           "SELECT c.oid, c.relreplident, quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
           "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
           {schema, name});
  if (!rel.ok()) return Annotate(rel.status(), context);
  if (PQntuples(rel->get()) != 1) {
    return absl::NotFoundError(absl::StrCat("the source has no table ", schema, ".", name));
  }
  const std::string oid = Get(rel->get(), 0, 0);
  // REPLICA IDENTITY FULL that pgflow set on a keyless table is not the application's.
  absl::StatusOr<PgResultPtr> set_by_pgflow =
      Exec(source,
           "SELECT CASE WHEN $1::text <> 'f' OR NOT coalesce(has_table_privilege(to_regclass("
           "'pgflow.replica_identities'), 'SELECT'), false) THEN $1::text END",
           {Get(rel->get(), 0, 1)});
  if (set_by_pgflow.ok() && PQgetisnull(set_by_pgflow->get(), 0, 0)) {
    set_by_pgflow = Exec(source,
                         "SELECT coalesce((SELECT CASE previous WHEN 'n' THEN 'n' ELSE 'd' END "
                         "FROM pgflow.replica_identities WHERE relid = $1::oid), 'f')",
                         {oid});
  }
  if (!set_by_pgflow.ok()) return Annotate(set_by_pgflow.status(), context);
  const char replica_identity = Get(set_by_pgflow->get(), 0, 0)[0];
  const std::string source_qualified = Get(rel->get(), 0, 2);
  const std::string target_schema = MapSchema(mapped_schema, schema);
  const std::string table = absl::StrCat(QuoteIdent(target_schema), ".", QuoteIdent(name));
  auto target_name = [&](const std::string& source_schema, const std::string& object) {
    return absl::StrCat(QuoteIdent(MapSchema(mapped_schema, source_schema)), ".",
                        QuoteIdent(object));
  };

  TableDefinition def;
  std::set<std::string> schemas = {target_schema};

  // The sequences: owned by a column of the table, or called in one of its defaults.
  absl::StatusOr<PgResultPtr> seqs = Exec(
      source,
      "SELECT n.nspname, c.relname, "
      "  quote_literal(quote_ident(n.nspname) || '.' || quote_ident(c.relname)), "
      "  format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, "
      "  s.seqcache, s.seqcycle, o.attname, coalesce(o.deptype = 'i', false) "
      "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
      "JOIN pg_namespace n ON n.oid = c.relnamespace "
      "LEFT JOIN LATERAL (SELECT a.attname, d.deptype FROM pg_depend d JOIN pg_attribute a ON "
      "  a.attrelid = d.refobjid AND a.attnum = d.refobjsubid WHERE d.classid = "
      "  'pg_class'::regclass AND d.objid = s.seqrelid AND d.refclassid = 'pg_class'::regclass "
      "  AND d.refobjid = $1::oid AND d.deptype IN ('a', 'i') LIMIT 1) o ON true "
      "WHERE s.seqrelid IN ("
      "  SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND "
      "    d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::oid AND d.deptype IN "
      "    ('a', 'i') "
      "  UNION SELECT d.refobjid FROM pg_depend d JOIN pg_attrdef ad ON d.classid = "
      "    'pg_attrdef'::regclass AND d.objid = ad.oid WHERE ad.adrelid = $1::oid AND "
      "    d.refclassid = 'pg_class'::regclass) "
      "ORDER BY n.nspname, c.relname",
      {oid});
  if (!seqs.ok()) return Annotate(seqs.status(), context);
  std::vector<SourceSequence> sequences;
  std::map<std::string, const SourceSequence*> identity_of;  // column -> its identity sequence
  for (int i = 0; i < PQntuples(seqs->get()); ++i) {
    PGresult* r = seqs->get();
    SourceSequence s;
    s.schema = Get(r, i, 0);
    s.name = Get(r, i, 1);
    s.regclass_literal = Get(r, i, 2);
    s.type = Get(r, i, 3);
    s.start = Get(r, i, 4);
    s.increment = Get(r, i, 5);
    s.min = Get(r, i, 6);
    s.max = Get(r, i, 7);
    s.cache = Get(r, i, 8);
    s.cycle = Get(r, i, 9) == "t";
    s.owner_column = Get(r, i, 10);
    s.identity = Get(r, i, 11) == "t";
    sequences.push_back(std::move(s));
  }
  // Replacements that move the sequences' names in default expressions to the target schema.
  std::vector<std::pair<std::string, std::string>> renames;
  for (const SourceSequence& s : sequences) {
    if (s.identity) {
      identity_of[s.owner_column] = &s;
      continue;
    }
    schemas.insert(MapSchema(mapped_schema, s.schema));
    const std::string target = target_name(s.schema, s.name);
    def.create.push_back(absl::StrCat("CREATE SEQUENCE IF NOT EXISTS ", target, " AS ", s.type, " ",
                                      SequenceOptions(s)));
    if (MapSchema(mapped_schema, s.schema) != s.schema) {
      renames.push_back({absl::StrCat(s.regclass_literal, "::regclass"),
                         absl::StrCat(QuoteLiteral(target), "::regclass")});
    }
  }

  absl::StatusOr<PgResultPtr> cols =
      Exec(source,
           "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
           "  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, "
           "  CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN "
           "    quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END "
           "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
           "LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum "
           "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
           "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace "
           "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
           {oid});
  if (!cols.ok()) return Annotate(cols.status(), context);
  CreateTableSpec create;
  create.table = table;
  for (int i = 0; i < PQntuples(cols->get()); ++i) {
    PGresult* r = cols->get();
    ColumnDefinitionSpec c;
    c.name = Get(r, i, 0);
    c.type = Get(r, i, 1);
    c.collation = Get(r, i, 6);
    const std::string identity = Get(r, i, 4);
    const std::string generated = Get(r, i, 5);
    if (!generated.empty()) {
      // pgoutput never sends a generated column: the target computes it.
      c.generated = Get(r, i, 3);
    } else if (!identity.empty()) {
      c.identity = identity[0];
      auto it = identity_of.find(c.name);
      if (it != identity_of.end()) {
        const SourceSequence& s = *it->second;
        c.identity_options =
            absl::StrCat("SEQUENCE NAME ", target_name(s.schema, s.name), " ", SequenceOptions(s));
      }
    } else if (!IsNull(r, i, 3)) {
      c.default_expr = absl::StrReplaceAll(Get(r, i, 3), renames);
    }
    c.not_null = Get(r, i, 2) == "t";
    create.columns.push_back(std::move(c));
  }

  // Constraints: a UNIQUE constraint whose index is the replica identity goes into CREATE TABLE
  // (the sink upserts on it), and so does the primary key unless it is the sink's key (REPLICA
  // IDENTITY DEFAULT); the others wait for the load.
  absl::StatusOr<PgResultPtr> cons =
      Exec(source,
           "SELECT quote_ident(k.conname), k.contype, pg_get_constraintdef(k.oid), "
           "  coalesce(i.indisreplident, false), quote_ident(rn.nspname) || '.' || "
           "  quote_ident(r.relname), rn.nspname, r.relname, quote_ident(ic.relname), "
           "  pg_get_indexdef(i.indexrelid), k.condeferrable "
           "FROM pg_constraint k "
           "LEFT JOIN pg_index i ON i.indexrelid = k.conindid AND k.contype IN ('p', 'u', 'x') "
           "LEFT JOIN pg_class ic ON ic.oid = i.indexrelid "
           "LEFT JOIN pg_class r ON r.oid = k.confrelid AND k.contype = 'f' "
           "LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace "
           "WHERE k.conrelid = $1::oid AND k.contype IN ('p', 'u', 'c', 'f', 'x') "
           "ORDER BY k.contype = 'f', k.conname",
           {oid});
  if (!cons.ok()) return Annotate(cons.status(), context);
  std::vector<std::string> after_create;
  for (int i = 0; i < PQntuples(cons->get()); ++i) {
    PGresult* r = cons->get();
    const std::string constraint = Get(r, i, 0);
    const char type = Get(r, i, 1)[0];
    std::string body = Get(r, i, 2);
    if (type == 'p' && replica_identity != 'd') {
      // The sink's key is not the primary key (REPLICA IDENTITY FULL, NOTHING or USING INDEX):
      // nothing would stop a chunk copied twice after a crash from leaving duplicates.
      create.constraints.push_back(absl::StrCat("CONSTRAINT ", constraint, " ", body));
      if (Get(r, i, 3) == "t") {
        after_create.push_back(
            absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY USING INDEX ", Get(r, i, 7)));
      }
      continue;
    }
    // A key's index is built on its own, beside the table's other indexes, then attached.
    const bool replica_identity_index = Get(r, i, 3) == "t";
    std::optional<std::string> key_index;
    if ((type == 'p' || (type == 'u' && !replica_identity_index)) && Get(r, i, 9) == "f") {
      key_index = IndexOn(Get(r, i, 8), Get(r, i, 7), true, source_qualified, table);
    }
    if (type == 'p') {
      std::vector<DeferredStatement> key;
      std::string statement = absl::StrCat("ALTER TABLE ", table, " ADD CONSTRAINT ", constraint);
      if (key_index.has_value()) {
        key.push_back({-1, std::move(*key_index)});
        absl::StrAppend(&statement, " PRIMARY KEY USING INDEX ", Get(r, i, 7));
      } else {
        absl::StrAppend(&statement, " ", body);
      }
      if (replica_identity_index) {
        absl::StrAppend(&statement, "; ALTER TABLE ", table, " REPLICA IDENTITY USING INDEX ",
                        Get(r, i, 7));
      }
      key.push_back({-1, std::move(statement), key_index.has_value()});
      def.deferred.insert(def.deferred.begin(), key.begin(), key.end());
      continue;
    }
    if (key_index.has_value()) {
      def.deferred.push_back({0, std::move(*key_index)});
      def.deferred.push_back({0,
                              absl::StrCat("ALTER TABLE ", table, " ADD CONSTRAINT ", constraint,
                                           " UNIQUE USING INDEX ", Get(r, i, 7)),
                              true});
      continue;
    }
    if (type == 'f') {
      // The referenced table moves with the schema mapping.
      const std::string from = absl::StrCat(" REFERENCES ", Get(r, i, 4), "(");
      const std::string to =
          absl::StrCat(" REFERENCES ", target_name(Get(r, i, 5), Get(r, i, 6)), "(");
      if (size_t at = body.find(from); at != std::string::npos) body.replace(at, from.size(), to);
    }
    std::string statement =
        absl::StrCat("ALTER TABLE ", table, " ADD CONSTRAINT ", constraint, " ", body);
    if (replica_identity_index) {
      after_create.push_back(std::move(statement));
      after_create.push_back(
          absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY USING INDEX ", Get(r, i, 7)));
      continue;
    }
    def.deferred.push_back({type == 'f' ? 1 : 0, std::move(statement)});
  }

  // Indexes that no constraint owns.
  absl::StatusOr<PgResultPtr> idx = Exec(
      source,
      "SELECT quote_ident(c.relname), pg_get_indexdef(i.indexrelid), i.indisunique, "
      "  i.indisreplident "
      "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
      "WHERE i.indrelid = $1::oid AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE "
      "  k.conrelid = i.indrelid AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')) "
      "ORDER BY c.relname",
      {oid});
  if (!idx.ok()) return Annotate(idx.status(), context);
  for (int i = 0; i < PQntuples(idx->get()); ++i) {
    PGresult* r = idx->get();
    const std::string index = Get(r, i, 0);
    const std::string indexdef = Get(r, i, 1);
    std::optional<std::string> statement =
        IndexOn(indexdef, index, Get(r, i, 2) == "t", source_qualified, table);
    if (!statement.has_value()) {
      LogWarning("the definition of index %s of %s.%s is not understood, it is not recreated: %s",
                 index, schema, name, indexdef);
      continue;
    }
    if (Get(r, i, 3) == "t") {
      after_create.push_back(std::move(*statement));
      after_create.push_back(
          absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY USING INDEX ", index));
      continue;
    }
    def.deferred.push_back({0, std::move(*statement)});
  }
  if (replica_identity == 'f') {
    after_create.push_back(absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY FULL"));
  } else if (replica_identity == 'n') {
    after_create.push_back(absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY NOTHING"));
  }

  def.create.push_back(RenderCreateTable(create));
  for (const SourceSequence& s : sequences) {
    if (s.identity || s.owner_column.empty()) continue;
    def.create.push_back(absl::StrCat("ALTER SEQUENCE ", target_name(s.schema, s.name),
                                      " OWNED BY ", table, ".", QuoteIdent(s.owner_column)));
  }
  for (std::string& s : after_create) def.create.push_back(std::move(s));
  def.schemas.assign(schemas.begin(), schemas.end());
  return def;
}

bool BuildsIndex(absl::string_view statement) {
  return absl::StartsWith(statement, "CREATE INDEX ") ||
         absl::StartsWith(statement, "CREATE UNIQUE INDEX ");
}

}  // namespace pgflow
