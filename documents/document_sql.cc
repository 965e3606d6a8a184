#include "documents/document_sql.h"

#include <algorithm>
#include <set>

#include "common/postgres/pg_connection.h"
#include "engine/str_cat.h"

namespace pgflow::documents {
namespace {

// jsonb_build_object takes at most 100 arguments: larger objects are joined with ||.
constexpr size_t kPairsPerCall = 50;

std::string Column(const std::string& alias, const std::string& column) {
  return alias + "." + QuoteIdent(column);
}

std::string TableSql(const TableRef& table) {
  return QuoteIdent(table.schema) + "." + QuoteIdent(table.table);
}

// jsonb_build_object over (name, SQL expression) pairs.
std::string BuildObject(const std::vector<std::pair<std::string, std::string>>& pairs) {
  if (pairs.empty()) return "'{}'::jsonb";
  std::string out;
  for (size_t i = 0; i < pairs.size(); i += kPairsPerCall) {
    if (i > 0) out += " || ";
    out += "jsonb_build_object(";
    for (size_t j = i; j < std::min(pairs.size(), i + kPairsPerCall); ++j) {
      if (j > i) out += ", ";
      out += QuoteLiteral(pairs[j].first) + ", " + pairs[j].second;
    }
    out += ")";
  }
  return out;
}

// The key's columns as an object ({"id": t0."id"}).
std::string KeyObject(const std::string& alias, const std::vector<std::string>& key) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const std::string& column : key) pairs.emplace_back(column, Column(alias, column));
  return BuildObject(pairs);
}

// `jsonb_to_recordset($1::jsonb) AS v("a" int, ...)`: $1's objects as rows of `columns`, typed
// as `types` has them.
std::string Recordset(const std::vector<std::string>& columns, const TableColumns& types) {
  std::string definition;
  for (const std::string& column : columns) {
    definition += Cat(definition.empty() ? "" : ", ", QuoteIdent(column), " ",
                      types.types.at(column));
  }
  return Cat("jsonb_to_recordset($1::jsonb) AS v(", definition, ")");
}

// `alias`'s `columns` equal to the recordset's (Recordset) of the same names.
std::string MatchesRecordset(const std::string& alias, const std::vector<std::string>& columns) {
  std::string condition;
  for (const std::string& column : columns) {
    condition += Cat(condition.empty() ? "" : " AND ", Column(alias, column), " = ",
                     Column("v", column));
  }
  return condition;
}

class Builder {
 public:
  Builder(const Catalog& catalog, const std::set<std::string>& whole)
      : catalog_(catalog), whole_(whole) {}

  // Checks `node` (and its children) against the catalog; every problem noted.
  void Check(const DocumentNode& node, const DocumentNode* parent) {
    const TableColumns* table = Find(node.table);
    if (table == nullptr) {
      problems_.push_back(Cat(node.path, ": table ", node.table.ToString(),
                              " does not exist in the source (or cannot be read)"));
      return;
    }
    for (const std::string& field : node.fields) {
      if (!table->types.contains(field)) {
        problems_.push_back(
            Cat(node.path, ".fields: ", node.table.ToString(), " has no column '", field, "'"));
      }
    }
    if (parent == nullptr && table->key.empty()) {
      problems_.push_back(Cat(node.path, ": ", node.table.ToString(),
                              " has no primary key: a document's id is its root row's key"));
    }
    if (parent != nullptr && !node.one && table->key.empty()) {
      problems_.push_back(Cat(node.path, ": ", node.table.ToString(),
                              " has no primary key to order its rows by (or make it one: true)"));
    }
    if (parent != nullptr) {
      const TableColumns* parent_table = Find(parent->table);
      for (const auto& [mine, theirs] : node.on) {
        if (!table->types.contains(mine)) {
          problems_.push_back(
              Cat(node.path, ".on: ", node.table.ToString(), " has no column '", mine, "'"));
        }
        if (parent_table != nullptr && !parent_table->types.contains(theirs)) {
          problems_.push_back(Cat(node.path, ".on: ", parent->table.ToString(),
                                  " (its parent) has no column '", theirs, "'"));
        }
      }
    }
    for (const DocumentNode& child : node.children) Check(child, &node);
  }

  const std::vector<std::string>& problems() const { return problems_; }

  // The document object of `node`'s row under `alias`.
  std::string Object(const DocumentNode& node, const std::string& alias) {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (const std::string& field : node.fields) pairs.emplace_back(field, Column(alias, field));
    for (const DocumentNode& child : node.children) {
      pairs.emplace_back(child.name, Child(child, alias));
    }
    if (whole_.contains(node.table.ToString())) {
      return Cat("jsonb_build_array(", BuildObject(pairs), ", to_jsonb(", alias, "))");
    }
    return BuildObject(pairs);
  }

  std::string NextAlias() { return Cat("t", next_alias_++); }

  const TableColumns* Find(const TableRef& table) const {
    auto it = catalog_.find(table.ToString());
    return it == catalog_.end() ? nullptr : &it->second;
  }

 private:
  // A child's object or array, joined to its parent's row under `parent_alias`.
  std::string Child(const DocumentNode& child, const std::string& parent_alias) {
    const std::string alias = NextAlias();
    std::string condition;
    for (const auto& [mine, theirs] : child.on) {
      if (!condition.empty()) condition += " AND ";
      condition += Column(alias, mine) + " = " + Column(parent_alias, theirs);
    }
    std::string order;
    for (const std::string& column : Find(child.table)->key) {
      order += Cat(order.empty() ? " ORDER BY " : ", ", Column(alias, column));
    }
    const std::string from = Cat(" FROM ", TableSql(child.table), " ", alias, " WHERE ", condition);
    if (child.one) return Cat("(SELECT ", Object(child, alias), from, order, " LIMIT 1)");
    return Cat("COALESCE((SELECT jsonb_agg(", Object(child, alias), order, ")", from,
               "), '[]'::jsonb)");
  }

  const Catalog& catalog_;
  const std::set<std::string>& whole_;
  std::vector<std::string> problems_;
  int next_alias_ = 0;
};

// Adds the places of `node` (path[0] the root ... path.back() == &node) and of its children.
void AddPlaces(const Builder& builder, std::vector<const DocumentNode*>& path,
               const std::vector<std::string>& root_key,
               std::map<std::string, std::vector<DocumentSql::Place>>* places) {
  const DocumentNode& node = *path.back();
  DocumentSql::Place place;
  place.path = node.path;
  if (path.size() == 1) {
    for (const std::string& column : root_key) place.match.emplace_back(column, column);
  } else {
    std::vector<std::string> parent_columns;
    for (const auto& [mine, theirs] : node.on) {
      place.match.emplace_back(mine, theirs);
      parent_columns.push_back(theirs);
    }
    std::vector<std::string> sorted_parent = parent_columns;
    std::vector<std::string> sorted_key = root_key;
    std::sort(sorted_parent.begin(), sorted_parent.end());
    std::sort(sorted_key.begin(), sorted_key.end());
    if (path.size() != 2 || sorted_parent != sorted_key) {
      // Up the path from the parent to the root, then the root's key.
      std::string joins;
      for (size_t i = 1; i + 1 < path.size(); ++i) {
        std::string condition;
        for (const auto& [mine, theirs] : path[i]->on) {
          if (!condition.empty()) condition += " AND ";
          condition += Column(Cat("t", i), mine) + " = " + Column(Cat("t", i - 1), theirs);
        }
        joins += Cat(" JOIN ", TableSql(path[i]->table), " t", i, " ON ", condition);
      }
      const std::string parent_alias = Cat("t", path.size() - 2);
      const TableColumns& parent = *builder.Find(path[path.size() - 2]->table);
      place.roots = Cat("SELECT DISTINCT ", KeyObject("t0", root_key), " AS key FROM ",
                        TableSql(path[0]->table), " t0", joins, " JOIN ",
                        Recordset(parent_columns, parent), " ON ",
                        MatchesRecordset(parent_alias, parent_columns));
    }
  }
  (*places)[node.table.ToString()].push_back(std::move(place));
  for (const DocumentNode& child : node.children) {
    path.push_back(&child);
    AddPlaces(builder, path, root_key, places);
    path.pop_back();
  }
}

}  // namespace

absl::StatusOr<DocumentSql> DocumentSql::Make(const DocumentSpec& spec, const Catalog& catalog,
                                              const std::set<std::string>& whole) {
  Builder builder(catalog, whole);
  builder.Check(spec.root, nullptr);
  if (!builder.problems().empty()) {
    std::string message = Cat("document ", spec.name, ":");
    for (const std::string& problem : builder.problems()) message += "\n  " + problem;
    return absl::InvalidArgumentError(message);
  }
  DocumentSql sql;
  const TableColumns& root = *builder.Find(spec.root.table);
  sql.root_key_ = root.key;
  for (const std::string& column : root.key) sql.root_key_types_.push_back(root.types.at(column));
  const std::string alias = builder.NextAlias();  // t0
  const std::string document = builder.Object(spec.root, alias);
  // Every root asked for has a row: its key as its columns' types read it (the one form of a
  // key however it was asked), and its document, null when the root is gone.
  // The id (one column: its JSON value's text, a string's without the quotes; several: a JSON
  // array of them), from PostgreSQL's own JSON of each value, so that no number is rounded.
  std::string id;
  if (root.key.size() == 1) {
    const std::string value = Cat("to_jsonb(", Column("v", root.key.front()), ")");
    id = Cat("CASE WHEN jsonb_typeof(", value, ") = 'string' THEN ", value, " #>> '{}' ELSE ",
             value, "::text END");
  } else {
    id = "'[' || concat_ws(','";
    for (const std::string& column : root.key) {
      id += Cat(", to_jsonb(", Column("v", column), ")::text");
    }
    id += ") || ']'";
  }
  // (A root asked without every key column, noted before the key's columns were renamed,
  // names no row: passed over.)
  std::string complete;
  for (const std::string& column : root.key) {
    complete += Cat(complete.empty() ? " WHERE " : " AND ", Column("v", column), " IS NOT NULL");
  }
  sql.render_ = Cat("SELECT ", KeyObject("v", root.key), " AS key, CASE WHEN ",
                    Column(alias, root.key.front()), " IS NULL THEN NULL ELSE ", document,
                    " END AS document, ", id, " AS id FROM ", Recordset(root.key, root),
                    " LEFT JOIN ", TableSql(spec.root.table), " ", alias, " ON ",
                    MatchesRecordset(alias, root.key), complete);
  std::string order;
  for (const std::string& column : root.key) {
    order += Cat(order.empty() ? "" : ", ", Column("t0", column));
  }
  sql.every_root_ = Cat("SELECT ", KeyObject("t0", root.key), " AS key FROM ",
                        TableSql(spec.root.table), " t0 ORDER BY ", order);
  std::vector<const DocumentNode*> path = {&spec.root};
  AddPlaces(builder, path, root.key, &sql.places_);
  return sql;
}

const std::vector<DocumentSql::Place>& DocumentSql::PlacesOf(const std::string& table) const {
  static const std::vector<Place> kNone;
  auto it = places_.find(table);
  return it == places_.end() ? kNone : it->second;
}

}  // namespace pgflow::documents
