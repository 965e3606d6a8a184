#include "sources/postgres/table_reader.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "schemas/json_encoding.h"

namespace pgflow {
namespace {

// pgoutput describes types below this OID as built in and sends Type messages for the rest.
constexpr uint32_t kFirstNonBuiltinOid = 10000;

}  // namespace

absl::StatusOr<TableReader> DescribeTable(PGconn* conn, const std::string& schema,
                                          const std::string& name) {
  auto rel = Exec(conn,
                  "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = "
                  "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                  {schema, name});
  if (!rel.ok()) return rel.status();
  if (PQntuples(rel->get()) != 1) {
    return absl::NotFoundError(absl::StrCat("table ", schema, ".", name, " does not exist"));
  }
  std::string oid = PQgetvalue(rel->get(), 0, 0);
  char identity = PQgetvalue(rel->get(), 0, 1)[0];
  auto cols =
      Exec(conn,
           "SELECT a.attname, a.atttypid, a.atttypmod, "
           // Key columns only: an index's INCLUDE columns follow them in indkey.
           "  coalesce(a.attnum = ANY((SELECT (i.indkey::int2[])[0:i.indnkeyatts - 1] "
           "    FROM pg_index i WHERE i.indrelid = a.attrelid AND CASE WHEN $2 = 'i' "
           "    THEN i.indisreplident ELSE i.indisprimary END LIMIT 1)::int2[]), false), "
           "  tn.nspname || '.' || t.typname, format_type(a.atttypid, a.atttypmod), "
           "  array_position((SELECT (i.indkey::int2[])[0:i.indnkeyatts - 1] FROM pg_index i "
           "    WHERE i.indrelid = a.attrelid AND i.indisprimary), a.attnum), "
           // Whether binary COPY can write it (aclitem, say, has no send function; nor have
           // arrays of it, nor domains over it).
           "  t.typsend <> 0 AND coalesce((SELECT e.typsend <> 0 FROM pg_type e "
           "    WHERE e.oid = t.typelem AND t.typelem <> 0), true) "
           "  AND coalesce((SELECT b.typsend <> 0 FROM pg_type b "
           "    WHERE b.oid = t.typbasetype AND t.typbasetype <> 0), true) "
           "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
           "JOIN pg_namespace tn ON tn.oid = t.typnamespace "
           "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
           "  AND a.attgenerated = '' ORDER BY a.attnum",
           {oid, std::string(1, identity)});
  if (!cols.ok()) return cols.status();
  auto table = std::make_shared<TableSchema>();
  TableReader reader;
  table->relation_id = static_cast<uint32_t>(std::stoul(oid));
  table->schema = schema;
  table->name = name;
  table->replica_identity = identity;
  std::vector<std::string> select;
  PGresult* r = cols->get();
  std::vector<std::pair<int, int>> key_order;  // (position in the primary key, column)
  for (int i = 0; i < PQntuples(r); ++i) {
    reader.types.push_back(PQgetvalue(r, i, 5));
    if (!PQgetisnull(r, i, 6)) key_order.push_back({std::stoi(PQgetvalue(r, i, 6)), i});
    Column column;
    column.name = PQgetvalue(r, i, 0);
    column.type_oid = static_cast<uint32_t>(std::stoul(PQgetvalue(r, i, 1)));
    column.type_modifier = std::stoi(PQgetvalue(r, i, 2));
    column.is_key = identity == 'f' || (identity != 'n' && PQgetvalue(r, i, 3)[0] == 't');
    if (column.type_oid >= kFirstNonBuiltinOid) column.type_name = PQgetvalue(r, i, 4);
    reader.raw_capable = reader.raw_capable && PQgetvalue(r, i, 7)[0] == 't';
    if (CanDecodeBinary(column.type_oid)) {
      select.push_back(QuoteIdent(column.name));
      reader.kinds.push_back(ValueKind::kBinary);
    } else {
      // Read as text, exactly as the stream shows it: the type's output function under the
      // same session settings. (A cast to text is not always that: inet's shows the mask.)
      const std::string c = QuoteIdent(column.name);
      select.push_back(
          absl::StrCat("CASE WHEN ", c, " IS NULL THEN NULL ELSE format('%s', ", c, ") END"));
      reader.kinds.push_back(ValueKind::kText);
    }
    table->columns.push_back(std::move(column));
  }
  std::sort(key_order.begin(), key_order.end());
  for (const auto& [position, column] : key_order) {
    reader.primary_key.push_back(column);
    // Under FULL every column is marked: the real key travels beside them.
    if (identity == 'f') table->primary_key.push_back(table->columns[column].name);
  }
  reader.select_list = absl::StrJoin(select, ", ");
  std::vector<std::string> plain;
  for (const Column& column : table->columns) plain.push_back(QuoteIdent(column.name));
  reader.raw_select_list = absl::StrJoin(plain, ", ");
  reader.schema = std::move(table);
  return reader;
}

}  // namespace pgflow
