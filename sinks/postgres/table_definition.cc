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

// Reads one table's definition from the source catalog, step by step (ReadTableDefinition).
class DefinitionReader {
 public:
  DefinitionReader(PGconn* source, const std::string& schema, const std::string& name,
                   const std::string& mapped_schema)
      : source_(source),
        schema_(schema),
        name_(name),
        mapped_schema_(mapped_schema),
        context_(absl::StrCat("reading the definition of ", schema, ".", name, " from the source ",
                              Describe(source))),
        target_schema_(MapSchema(mapped_schema, schema)),
        table_(absl::StrCat(QuoteIdent(target_schema_), ".", QuoteIdent(name))),
        schemas_({target_schema_}) {}

  absl::StatusOr<TableDefinition> Read() {
    if (absl::Status s = ReadRelation(); !s.ok()) return s;
    if (absl::Status s = ReadSequences(); !s.ok()) return s;
    if (absl::Status s = ReadColumns(); !s.ok()) return s;
    if (absl::Status s = ReadConstraints(); !s.ok()) return s;
    if (absl::Status s = ReadIndexes(); !s.ok()) return s;
    return Finish();
  }

 private:
  // The table's OID, its name as the source prints it, and its replica identity as the
  // application set it. NotFound when the source has no such table.
  absl::Status ReadRelation();
  // The sequences: owned by a column of the table, or called in one of its defaults.
  absl::Status ReadSequences();
  absl::Status ReadColumns();
  absl::Status ReadConstraints();
  // Constraint `i` of `r` (ReadConstraints' query): into CREATE TABLE, right after it, or
  // deferred until after the load.
  void AddConstraint(PGresult* r, int i);
  // Indexes that no constraint owns.
  absl::Status ReadIndexes();
  TableDefinition Finish();

  std::string TargetName(const std::string& source_schema, const std::string& object) const {
    return absl::StrCat(QuoteIdent(MapSchema(mapped_schema_, source_schema)), ".",
                        QuoteIdent(object));
  }

  PGconn* const source_;
  const std::string& schema_;
  const std::string& name_;
  const std::string& mapped_schema_;
  const std::string context_;
  const std::string target_schema_;
  const std::string table_;  // the target table, qualified and quoted
  std::string oid_;
  char replica_identity_ = 'd';
  std::string source_qualified_;

  TableDefinition def_;
  std::set<std::string> schemas_;
  std::vector<SourceSequence> sequences_;
  std::map<std::string, const SourceSequence*> identity_of_;  // column -> its identity sequence
  // Replacements that move the sequences' names in default expressions to the target schema.
  std::vector<std::pair<std::string, std::string>> renames_;
  CreateTableSpec create_;
  std::vector<std::string> after_create_;  // run right after CREATE TABLE
};

absl::Status DefinitionReader::ReadRelation() {
  absl::StatusOr<PgResultPtr> rel =
      Exec(source_,
           "SELECT c.oid, c.relreplident, quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
           "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
           {schema_, name_});
  if (!rel.ok()) return Annotate(rel.status(), context_);
  if (PQntuples(rel->get()) != 1) {
    return absl::NotFoundError(absl::StrCat("the source has no table ", schema_, ".", name_));
  }
  oid_ = Get(rel->get(), 0, 0);
  // REPLICA IDENTITY FULL that pgflow set on a keyless table is not the application's.
  absl::StatusOr<PgResultPtr> set_by_pgflow =
      Exec(source_,
           "SELECT CASE WHEN $1::text <> 'f' OR NOT coalesce(has_table_privilege(to_regclass("
           "'pgflow.replica_identities'), 'SELECT'), false) THEN $1::text END",
           {Get(rel->get(), 0, 1)});
  if (set_by_pgflow.ok() && PQgetisnull(set_by_pgflow->get(), 0, 0)) {
    set_by_pgflow = Exec(source_,
                         "SELECT coalesce((SELECT CASE previous WHEN 'n' THEN 'n' ELSE 'd' END "
                         "FROM pgflow.replica_identities WHERE relid = $1::oid), 'f')",
                         {oid_});
  }
  if (!set_by_pgflow.ok()) return Annotate(set_by_pgflow.status(), context_);
  replica_identity_ = Get(set_by_pgflow->get(), 0, 0)[0];
  source_qualified_ = Get(rel->get(), 0, 2);
  return absl::OkStatus();
}

absl::Status DefinitionReader::ReadSequences() {
  absl::StatusOr<PgResultPtr> seqs = Exec(
      source_,
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
      {oid_});
  if (!seqs.ok()) return Annotate(seqs.status(), context_);
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
    sequences_.push_back(std::move(s));
  }
  for (const SourceSequence& s : sequences_) {
    if (s.identity) {
      identity_of_[s.owner_column] = &s;
      continue;
    }
    schemas_.insert(MapSchema(mapped_schema_, s.schema));
    const std::string target = TargetName(s.schema, s.name);
    def_.create.push_back(absl::StrCat("CREATE SEQUENCE IF NOT EXISTS ", target, " AS ", s.type,
                                       " ", SequenceOptions(s)));
    if (MapSchema(mapped_schema_, s.schema) != s.schema) {
      renames_.push_back({absl::StrCat(s.regclass_literal, "::regclass"),
                          absl::StrCat(QuoteLiteral(target), "::regclass")});
    }
  }
  return absl::OkStatus();
}

absl::Status DefinitionReader::ReadColumns() {
  absl::StatusOr<PgResultPtr> cols =
      Exec(source_,
           "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
           "  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, "
           "  CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN "
           "    quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END "
           "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
           "LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum "
           "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
           "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace "
           "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
           {oid_});
  if (!cols.ok()) return Annotate(cols.status(), context_);
  create_.table = table_;
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
      auto it = identity_of_.find(c.name);
      if (it != identity_of_.end()) {
        const SourceSequence& s = *it->second;
        c.identity_options =
            absl::StrCat("SEQUENCE NAME ", TargetName(s.schema, s.name), " ", SequenceOptions(s));
      }
    } else if (!IsNull(r, i, 3)) {
      c.default_expr = absl::StrReplaceAll(Get(r, i, 3), renames_);
    }
    c.not_null = Get(r, i, 2) == "t";
    create_.columns.push_back(std::move(c));
  }
  return absl::OkStatus();
}

absl::Status DefinitionReader::ReadConstraints() {
  // A UNIQUE constraint whose index is the replica identity goes into CREATE TABLE (the sink
  // upserts on it), and so does the primary key unless it is the sink's key (REPLICA
  // IDENTITY DEFAULT); the others wait for the load. A foreign key to a partitioned table
  // stands in pg_constraint beside one child constraint per referenced partition, on the
  // same table: PostgreSQL makes those itself with the key, so they are not read.
  absl::StatusOr<PgResultPtr> cons =
      Exec(source_,
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
           "  AND NOT EXISTS (SELECT 1 FROM pg_constraint up WHERE up.oid = k.conparentid "
           "                  AND up.conrelid = k.conrelid) "
           "ORDER BY k.contype = 'f', k.conname",
           {oid_});
  if (!cons.ok()) return Annotate(cons.status(), context_);
  for (int i = 0; i < PQntuples(cons->get()); ++i) AddConstraint(cons->get(), i);
  return absl::OkStatus();
}

void DefinitionReader::AddConstraint(PGresult* r, int i) {
  const std::string constraint = Get(r, i, 0);
  const char type = Get(r, i, 1)[0];
  std::string body = Get(r, i, 2);
  if (type == 'p' && replica_identity_ != 'd') {
    // The sink's key is not the primary key (REPLICA IDENTITY FULL, NOTHING or USING INDEX):
    // nothing would stop a chunk copied twice after a crash from leaving duplicates.
    create_.constraints.push_back(absl::StrCat("CONSTRAINT ", constraint, " ", body));
    if (Get(r, i, 3) == "t") {
      after_create_.push_back(
          absl::StrCat("ALTER TABLE ", table_, " REPLICA IDENTITY USING INDEX ", Get(r, i, 7)));
    }
    return;
  }
  // A key's index is built on its own, beside the table's other indexes, then attached.
  const bool replica_identity_index = Get(r, i, 3) == "t";
  std::optional<std::string> key_index;
  if ((type == 'p' || (type == 'u' && !replica_identity_index)) && Get(r, i, 9) == "f") {
    key_index = IndexOn(Get(r, i, 8), Get(r, i, 7), true, source_qualified_, table_);
  }
  if (type == 'p') {
    std::vector<DeferredStatement> key;
    std::string statement = absl::StrCat("ALTER TABLE ", table_, " ADD CONSTRAINT ", constraint);
    if (key_index.has_value()) {
      key.push_back({-1, std::move(*key_index)});
      absl::StrAppend(&statement, " PRIMARY KEY USING INDEX ", Get(r, i, 7));
    } else {
      absl::StrAppend(&statement, " ", body);
    }
    if (replica_identity_index) {
      absl::StrAppend(&statement, "; ALTER TABLE ", table_, " REPLICA IDENTITY USING INDEX ",
                      Get(r, i, 7));
    }
    key.push_back({-1, std::move(statement), key_index.has_value()});
    def_.deferred.insert(def_.deferred.begin(), key.begin(), key.end());
    return;
  }
  if (key_index.has_value()) {
    def_.deferred.push_back({0, std::move(*key_index)});
    def_.deferred.push_back({0,
                             absl::StrCat("ALTER TABLE ", table_, " ADD CONSTRAINT ", constraint,
                                          " UNIQUE USING INDEX ", Get(r, i, 7)),
                             true});
    return;
  }
  if (type == 'f') {
    // The referenced table moves with the schema mapping.
    const std::string from = absl::StrCat(" REFERENCES ", Get(r, i, 4), "(");
    const std::string to =
        absl::StrCat(" REFERENCES ", TargetName(Get(r, i, 5), Get(r, i, 6)), "(");
    if (size_t at = body.find(from); at != std::string::npos) body.replace(at, from.size(), to);
  }
  std::string statement =
      absl::StrCat("ALTER TABLE ", table_, " ADD CONSTRAINT ", constraint, " ", body);
  if (replica_identity_index) {
    after_create_.push_back(std::move(statement));
    after_create_.push_back(
        absl::StrCat("ALTER TABLE ", table_, " REPLICA IDENTITY USING INDEX ", Get(r, i, 7)));
    return;
  }
  def_.deferred.push_back({type == 'f' ? 1 : 0, std::move(statement)});
}

absl::Status DefinitionReader::ReadIndexes() {
  absl::StatusOr<PgResultPtr> idx = Exec(
      source_,
      "SELECT quote_ident(c.relname), pg_get_indexdef(i.indexrelid), i.indisunique, "
      "  i.indisreplident "
      "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
      "WHERE i.indrelid = $1::oid AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE "
      "  k.conrelid = i.indrelid AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')) "
      "ORDER BY c.relname",
      {oid_});
  if (!idx.ok()) return Annotate(idx.status(), context_);
  for (int i = 0; i < PQntuples(idx->get()); ++i) {
    PGresult* r = idx->get();
    const std::string index = Get(r, i, 0);
    const std::string indexdef = Get(r, i, 1);
    std::optional<std::string> statement =
        IndexOn(indexdef, index, Get(r, i, 2) == "t", source_qualified_, table_);
    if (!statement.has_value()) {
      LogWarning("the definition of index %s of %s.%s is not understood, it is not recreated: %s",
                 index, schema_, name_, indexdef);
      continue;
    }
    if (Get(r, i, 3) == "t") {
      after_create_.push_back(std::move(*statement));
      after_create_.push_back(
          absl::StrCat("ALTER TABLE ", table_, " REPLICA IDENTITY USING INDEX ", index));
      continue;
    }
    def_.deferred.push_back({0, std::move(*statement)});
  }
  return absl::OkStatus();
}

TableDefinition DefinitionReader::Finish() {
  if (replica_identity_ == 'f') {
    after_create_.push_back(absl::StrCat("ALTER TABLE ", table_, " REPLICA IDENTITY FULL"));
  } else if (replica_identity_ == 'n') {
    after_create_.push_back(absl::StrCat("ALTER TABLE ", table_, " REPLICA IDENTITY NOTHING"));
  }
  def_.create.push_back(RenderCreateTable(create_));
  for (const SourceSequence& s : sequences_) {
    if (s.identity || s.owner_column.empty()) continue;
    def_.create.push_back(absl::StrCat("ALTER SEQUENCE ", TargetName(s.schema, s.name),
                                       " OWNED BY ", table_, ".", QuoteIdent(s.owner_column)));
  }
  for (std::string& s : after_create_) def_.create.push_back(std::move(s));
  def_.schemas.assign(schemas_.begin(), schemas_.end());
  return std::move(def_);
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
  return DefinitionReader(source, schema, name, mapped_schema).Read();
}

bool BuildsIndex(absl::string_view statement) {
  return absl::StartsWith(statement, "CREATE INDEX ") ||
         absl::StartsWith(statement, "CREATE UNIQUE INDEX ");
}

}  // namespace pgflow
