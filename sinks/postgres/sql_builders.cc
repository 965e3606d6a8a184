#include "sinks/postgres/sql_builders.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"
#include "schemas/json_encoding.h"
#include "schemas/pg_array_literal.h"

namespace pgflow {
namespace {

// Types with no `=` operator: rows of a keyless table are matched on their text form.
bool LacksEquality(uint32_t oid) {
  switch (oid) {
    case 114:   // json
    case 199:   // json[]
    case 142:   // xml
    case 143:   // xml[]
    case 600:   // point
    case 1017:  // point[]
    case 601:   // lseg
    case 1018:  // lseg[]
    case 602:   // path
    case 1019:  // path[]
    case 603:   // box (= compares areas)
    case 1020:  // box[]
    case 604:   // polygon
    case 1027:  // polygon[]
    case 628:   // line
    case 629:   // line[]
    case 718:   // circle (= compares areas)
    case 719:   // circle[]
      return true;
    default:
      return false;
  }
}

// "c1" = $n AND ... over the key columns of `row`, or over every known column of a keyless
// row; appends the parameters.
absl::Status KeyCondition(const TargetTable& table, const Row& row, std::string* sql,
                          StatementParams* params, int* next_param) {
  std::vector<std::string> terms;
  if (!table.key.empty()) {
    for (size_t i : table.key) {
      const Value& v = row[i];
      if (v.is_null() || v.is_unchanged_toast()) {
        return absl::DataLossError(absl::StrCat("a change of ", table.schema->QualifiedName(),
                                                " has no value for key column ",
                                                table.schema->columns[i].name));
      }
      terms.push_back(
          absl::StrCat(QuoteIdent(table.schema->columns[i].name), " = $", (*next_param)++));
      params->Add(v);
    }
    absl::StrAppend(sql, absl::StrJoin(terms, " AND "));
    return absl::OkStatus();
  }
  // No key (REPLICA IDENTITY FULL): one row equal to the old row in every known column.
  for (size_t i = 0; i < row.size(); ++i) {
    const Value& v = row[i];
    const Column& c = table.schema->columns[i];
    if (v.is_unchanged_toast()) continue;
    if (v.is_null()) {
      terms.push_back(absl::StrCat(QuoteIdent(c.name), " IS NULL"));
    } else if (LacksEquality(c.type_oid)) {
      terms.push_back(absl::StrCat(QuoteIdent(c.name), "::text = $", (*next_param)++));
      params->Add(v);
    } else {
      terms.push_back(absl::StrCat(QuoteIdent(c.name), " = $", (*next_param)++));
      params->Add(v);
    }
  }
  if (terms.empty()) {
    return absl::DataLossError(absl::StrCat("a change of ", table.schema->QualifiedName(),
                                            " carries no old values to find its row by"));
  }
  absl::StrAppend(sql, "ctid = (SELECT ctid FROM ", table.quoted, " WHERE ",
                  absl::StrJoin(terms, " AND "), " LIMIT 1)");
  return absl::OkStatus();
}

std::vector<std::string> QuotedKey(const TargetTable& table) {
  std::vector<std::string> key;
  for (size_t i : table.key) key.push_back(QuoteIdent(table.schema->columns[i].name));
  return key;
}

}  // namespace

void AppendArrayElement(std::string* array, const Value& v) {
  if (array->size() > 1) array->push_back(',');
  if (v.is_null()) {
    array->append("NULL");
    return;
  }
  AppendArrayLiteralElement(v.data, array);
}

std::string UnnestSelect(const TargetTable& table, const std::vector<size_t>& columns,
                         const std::vector<std::string>& names) {
  std::vector<std::string> select;
  std::vector<std::string> arrays;
  for (size_t j = 0; j < columns.size(); ++j) {
    select.push_back(
        absl::StrCat("pgflow_u.", names[j], "::", table.types[columns[j]], " AS ", names[j]));
    arrays.push_back(absl::StrCat("$", j + 1, "::text[]"));
  }
  return absl::StrCat("SELECT ", absl::StrJoin(select, ", "), " FROM unnest(",
                      absl::StrJoin(arrays, ", "), ") AS pgflow_u (", absl::StrJoin(names, ", "),
                      ")");
}

std::string ConflictClause(const TargetTable& table) {
  if (table.key.empty() || table.plain_inserts) return "";
  std::vector<std::string> set;
  for (size_t i = 0; i < table.schema->columns.size(); ++i) {
    if (std::find(table.key.begin(), table.key.end(), i) != table.key.end()) continue;
    if (!table.Settable(i)) continue;
    const std::string c = QuoteIdent(table.schema->columns[i].name);
    set.push_back(absl::StrCat(c, " = EXCLUDED.", c));
  }
  return absl::StrCat(
      " ON CONFLICT (", absl::StrJoin(QuotedKey(table), ", "), ") DO ",
      set.empty() ? "NOTHING" : absl::StrCat("UPDATE SET ", absl::StrJoin(set, ", ")));
}

std::string InsertSql(const TargetTable& table, size_t rows) {
  const size_t n = table.schema->columns.size();
  std::string sql = absl::StrCat("INSERT INTO ", table.quoted, " (", table.column_list,
                                 ") OVERRIDING SYSTEM VALUE VALUES ");
  int param = 1;
  for (size_t r = 0; r < rows; ++r) {
    sql += r == 0 ? "(" : ", (";
    for (size_t c = 0; c < n; ++c) absl::StrAppend(&sql, c == 0 ? "$" : ", $", param++);
    sql += ")";
  }
  return sql + ConflictClause(table);
}

std::string UnnestInsertSql(const TargetTable& table) {
  std::vector<size_t> columns;
  std::vector<std::string> names;
  for (size_t c = 0; c < table.schema->columns.size(); ++c) {
    columns.push_back(c);
    names.push_back(absl::StrCat("pgflow_c", c));
  }
  return absl::StrCat("INSERT INTO ", table.quoted, " (", table.column_list,
                      ") OVERRIDING SYSTEM VALUE ", UnnestSelect(table, columns, names),
                      ConflictClause(table));
}

std::string UpdateBatchSql(const TargetTable& table, const std::vector<size_t>& columns,
                           size_t rows, bool text_arrays) {
  const TableSchema& schema = *table.schema;
  std::vector<std::string> names;
  std::vector<std::string> set;
  std::vector<std::string> match;
  for (size_t k = 0; k < table.key.size(); ++k) {
    names.push_back(absl::StrCat("pgflow_k", k));
    match.push_back(absl::StrCat("pgflow_t.", QuoteIdent(schema.columns[table.key[k]].name),
                                 " = pgflow_v.pgflow_k", k));
  }
  for (size_t c = 0; c < columns.size(); ++c) {
    names.push_back(absl::StrCat("pgflow_c", c));
    set.push_back(
        absl::StrCat(QuoteIdent(schema.columns[columns[c]].name), " = pgflow_v.pgflow_c", c));
  }
  // Source columns in the order of `names`.
  std::vector<size_t> order(table.key.begin(), table.key.end());
  order.insert(order.end(), columns.begin(), columns.end());
  std::string values;
  if (text_arrays) {
    values = absl::StrCat("(", UnnestSelect(table, order, names), ")");
  } else {
    int param = 1;
    for (size_t r = 0; r < rows; ++r) {
      values += r == 0 ? "(VALUES (" : ", (";
      for (size_t j = 0; j < order.size(); ++j) {
        absl::StrAppend(&values, j == 0 ? "$" : ", $", param++, "::", table.types[order[j]]);
      }
      values += ")";
    }
    values += ")";
  }
  return absl::StrCat("UPDATE ", table.quoted, " AS pgflow_t SET ", absl::StrJoin(set, ", "),
                      " FROM ", values, " AS pgflow_v (", absl::StrJoin(names, ", "), ") WHERE ",
                      absl::StrJoin(match, " AND "));
}

absl::StatusOr<std::string> UpdateRowSql(const TargetTable& table, const Row& old_row,
                                         const Row& after, StatementParams* params) {
  const TableSchema& schema = *table.schema;
  std::vector<std::string> set;
  int param = 1;
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    if (after[i].is_unchanged_toast() || !table.Settable(i)) continue;
    set.push_back(absl::StrCat(QuoteIdent(schema.columns[i].name), " = $", param++));
    params->Add(after[i]);
  }
  if (set.empty()) return std::string();
  std::string sql =
      absl::StrCat("UPDATE ", table.quoted, " SET ", absl::StrJoin(set, ", "), " WHERE ");
  if (absl::Status s = KeyCondition(table, old_row, &sql, params, &param); !s.ok()) return s;
  return sql;
}

absl::StatusOr<std::string> DeleteRowSql(const TargetTable& table, const Row& before,
                                         StatementParams* params) {
  int param = 1;
  std::string sql = absl::StrCat("DELETE FROM ", table.quoted, " WHERE ");
  if (absl::Status s = KeyCondition(table, before, &sql, params, &param); !s.ok()) return s;
  return sql;
}

bool DeletesByArray(const TargetTable& table) {
  return table.key.size() == 1 && !absl::EndsWith(table.types[table.key[0]], "]");
}

std::string DeleteAnySql(const TargetTable& table) {
  return absl::StrCat("DELETE FROM ", table.quoted, " WHERE ", QuotedKey(table)[0],
                      " = ANY ($1::", table.types[table.key[0]], "[])");
}

std::string DeleteInSql(const TargetTable& table, size_t rows) {
  const std::vector<std::string> key = QuotedKey(table);
  const bool single = key.size() == 1;
  std::string sql =
      absl::StrCat("DELETE FROM ", table.quoted, " WHERE ",
                   single ? key[0] : absl::StrCat("(", absl::StrJoin(key, ", "), ")"), " IN (");
  int param = 1;
  for (size_t r = 0; r < rows; ++r) {
    if (r > 0) sql += ", ";
    if (!single) sql += "(";
    for (size_t k = 0; k < key.size(); ++k) absl::StrAppend(&sql, k == 0 ? "$" : ", $", param++);
    if (!single) sql += ")";
  }
  sql += ")";
  return sql;
}

std::string TruncateSql(const TargetTable& table, const Change& change) {
  return absl::StrCat("TRUNCATE ", table.quoted,
                      change.truncate_restart_identity ? " RESTART IDENTITY" : "",
                      change.truncate_cascade ? " CASCADE" : "");
}

std::string CreateStageSql(const TargetTable& table) {
  return absl::StrCat("CREATE TEMP TABLE IF NOT EXISTS ", table.stage, " AS SELECT ",
                      table.column_list, " FROM ", table.quoted, " WITH NO DATA");
}

std::string CopyInSql(const TargetTable& table, const std::string& into) {
  // A table whose columns were all dropped has none to list.
  const std::string columns =
      table.column_list.empty() ? "" : absl::StrCat(" (", table.column_list, ")");
  return absl::StrCat("COPY ", into, columns, " FROM STDIN (FORMAT binary)");
}

std::string UpsertFromStageSql(const TargetTable& table) {
  return absl::StrCat("INSERT INTO ", table.quoted, " (", table.column_list,
                      ") OVERRIDING SYSTEM VALUE SELECT ", table.column_list, " FROM ", table.stage,
                      ConflictClause(table), "; TRUNCATE ", table.stage);
}

std::string CreateReadStageSql(const TargetTable& table) {
  std::vector<std::string> columns;
  for (size_t i = 0; i < table.schema->columns.size(); ++i) {
    columns.push_back(
        absl::StrCat("c", i, " ", table.read_binary[i] ? table.types[i] : std::string("text")));
  }
  return absl::StrCat("CREATE TEMP TABLE IF NOT EXISTS ", table.read_stage, " (",
                      absl::StrJoin(columns, ", "), ")");
}

std::string CopyIntoReadStageSql(const TargetTable& table) {
  return absl::StrCat("COPY ", table.read_stage, " FROM STDIN (FORMAT binary)");
}

std::string UpsertFromReadStageSql(const TargetTable& table) {
  std::vector<std::string> select;
  for (size_t i = 0; i < table.schema->columns.size(); ++i) {
    const std::string c = absl::StrCat("c", i);
    select.push_back(table.read_binary[i] ? c : absl::StrCat(c, "::", table.types[i]));
  }
  return absl::StrCat("INSERT INTO ", table.quoted, " (", table.column_list,
                      ") OVERRIDING SYSTEM VALUE SELECT ", absl::StrJoin(select, ", "), " FROM ",
                      table.read_stage, ConflictClause(table), "; TRUNCATE ", table.read_stage);
}

std::string KeyColumnsArray(const TargetTable& table) {
  std::string array = "{";
  for (size_t i : table.key) {
    AppendArrayElement(&array, Value::Text(oid::kText, table.schema->columns[i].name));
  }
  array += '}';
  return array;
}

std::string DescribeKey(const TargetTable& table, const Row& row) {
  std::vector<std::string> names;
  std::vector<std::string> values;
  std::vector<size_t> columns = table.key;
  if (columns.empty()) {
    for (size_t i = 0; i < row.size(); ++i) columns.push_back(i);
  }
  for (size_t i : columns) {
    if (i >= row.size()) continue;
    names.push_back(table.schema->columns[i].name);
    std::string v;
    if (row[i].is_unchanged_toast()) {
      v = "<unchanged toast>";
    } else if (row[i].is_null()) {
      v = "null";
    } else if (row[i].kind == ValueKind::kText) {
      v = row[i].data;
    } else {
      AppendJsonValue(row[i], table.schema->columns[i].type_name, JsonOptions(), &v);
    }
    if (v.size() > 100) v = v.substr(0, 100) + "...";
    values.push_back(std::move(v));
  }
  return absl::StrCat("(", absl::StrJoin(names, ", "), ")=(", absl::StrJoin(values, ", "), ")");
}

}  // namespace pgflow
