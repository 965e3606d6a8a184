#include "sinks/postgres/ddl_replay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/pg_connection.h"

namespace pgflow {
namespace {

// Object types whose DDL never changes the rows pgflow writes: passed over.
constexpr std::string_view kPassedOver[] = {"table column",
                                            "table constraint",
                                            "default value",
                                            "trigger",
                                            "policy",
                                            "rule",
                                            "statistics object",
                                            "comment",
                                            "publication",
                                            "publication relation",
                                            "publication namespace",
                                            "subscription",
                                            "event trigger",
                                            "role"};

std::string Qualified(const std::string& schema, const std::string& name) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name));
}

class Planner {
 public:
  Planner(const DdlCommand& cmd, const std::string& target_schema, TargetLookup& target)
      : cmd_(cmd), target_schema_(target_schema), target_(target) {}

  absl::StatusOr<DdlPlan> Plan() {
    if (cmd_.IsTable()) {
      absl::Status s = cmd_.dropped ? DropTable() : Table();
      if (!s.ok()) return s;
    } else if (cmd_.object_type == "index") {
      if (absl::Status s = Index(); !s.ok()) return s;
    } else if (cmd_.object_type == "sequence") {
      if (absl::Status s = Sequence(); !s.ok()) return s;
    } else if (std::find(std::begin(kPassedOver), std::end(kPassedOver), cmd_.object_type) !=
               std::end(kPassedOver)) {
      plan_.passed_over = absl::StrCat(cmd_.object_type, "s are not replayed");
    } else {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot replay ", cmd_.tag, " of ", cmd_.object_type, " ", cmd_.identity,
          " (statement: ", Excerpt(cmd_.statement),
          "): pgflow replays tables, columns, primary keys, indexes and sequences only. To go "
          "on, make the change on the target yourself and add '",
          cmd_.object_type, "' to this sink's ddl.exclude, or set its ddl.mode to events"));
    }
    return std::move(plan_);
  }

 private:
  std::string MapSchema(const std::string& schema) const {
    return target_schema_.empty() ? schema : target_schema_;
  }
  static std::string Excerpt(const std::string& statement) {
    return statement.size() <= 200 ? statement : statement.substr(0, 200) + "...";
  }
  void Add(std::string sql) { plan_.statements.push_back(std::move(sql)); }
  void Changed(const std::string& schema, const std::string& name) {
    plan_.changed_tables.push_back(absl::StrCat(schema, ".", name));
  }

  absl::Status DropTable() {
    Add(absl::StrCat("DROP TABLE IF EXISTS ", Qualified(MapSchema(cmd_.schema), cmd_.name)));
    Changed(cmd_.schema, cmd_.name);
    return absl::OkStatus();
  }

  absl::Status Table() {
    const DdlTableShape& now = *cmd_.table;
    const std::string schema = MapSchema(now.schema);
    const std::string quoted = Qualified(schema, now.name);
    Changed(now.schema, now.name);
    absl::StatusOr<std::optional<TargetTableState>> current = target_.Table(schema, now.name);
    if (!current.ok()) return current.status();

    // Renamed or moved: the target table follows, unless it already has the new name.
    if (!current->has_value() && cmd_.old_table.has_value()) {
      const DdlTableShape& old = *cmd_.old_table;
      const std::string old_schema = MapSchema(old.schema);
      Changed(old.schema, old.name);
      absl::StatusOr<std::optional<TargetTableState>> before = target_.Table(old_schema, old.name);
      if (!before.ok()) return before.status();
      if (before->has_value()) {
        if (old.name != now.name) {
          Add(absl::StrCat("ALTER TABLE ", Qualified(old_schema, old.name), " RENAME TO ",
                           QuoteIdent(now.name)));
        }
        if (old_schema != schema) {
          Add(absl::StrCat("ALTER TABLE ", Qualified(old_schema, now.name), " SET SCHEMA ",
                           QuoteIdent(schema)));
        }
        *current = std::move(*before);
      }
    }
    if (!current->has_value()) {
      std::vector<std::string> defs;
      for (const DdlColumn& c : now.columns) defs.push_back(ColumnDefinition(c));
      if (!now.primary_key.empty()) defs.push_back(PrimaryKey(now.primary_key));
      Add(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(schema)));
      Add(absl::StrCat("CREATE TABLE IF NOT EXISTS ", quoted, " (", absl::StrJoin(defs, ", "),
                       ")"));
      return absl::OkStatus();
    }
    TargetTableState& state = **current;
    const DdlTableShape* old = cmd_.old_table ? &*cmd_.old_table : nullptr;
    auto alter = [&](const std::string& action) {
      Add(absl::StrCat("ALTER TABLE ", quoted, " ", action));
    };

    // The primary key goes first when it changes: its columns may be dropped or retyped.
    const bool key_changes = state.primary_key != now.primary_key;
    if (key_changes && !state.primary_key_constraint.empty()) {
      alter(absl::StrCat("DROP CONSTRAINT ", QuoteIdent(state.primary_key_constraint)));
    }
    if (old != nullptr) {
      for (const DdlColumn& was : old->columns) {
        const DdlColumn* is = now.FindAttnum(was.attnum);
        if (is == nullptr) {
          // Dropped on the source.
          if (state.HasColumn(was.name) && now.FindName(was.name) == nullptr) {
            alter(absl::StrCat("DROP COLUMN ", QuoteIdent(was.name)));
            std::erase(state.columns, was.name);
          }
          continue;
        }
        if (is->name != was.name && state.HasColumn(was.name) && !state.HasColumn(is->name)) {
          alter(absl::StrCat("RENAME COLUMN ", QuoteIdent(was.name), " TO ", QuoteIdent(is->name)));
          std::replace(state.columns.begin(), state.columns.end(), was.name, is->name);
        }
        if (!state.HasColumn(is->name)) continue;  // added below
        const std::string column = QuoteIdent(is->name);
        if (is->type != was.type) {
          alter(absl::StrCat("ALTER COLUMN ", column, " TYPE ", is->type, " USING ", column,
                             "::", is->type));
        }
        if (is->generated != was.generated || is->identity != was.identity) {
          return absl::FailedPreconditionError(absl::StrCat(
              "cannot replay ", cmd_.tag, " on table ", cmd_.identity, ": column ", is->name,
              " changed its generation or identity (statement: ", Excerpt(cmd_.statement),
              "); make the change on the target yourself and add 'table' to this sink's "
              "ddl.exclude for the time it takes, or set its ddl.mode to events"));
        }
        if (is->default_expr != was.default_expr && is->generated.empty() && is->identity == 0) {
          alter(is->default_expr.empty()
                    ? absl::StrCat("ALTER COLUMN ", column, " DROP DEFAULT")
                    : absl::StrCat("ALTER COLUMN ", column, " SET DEFAULT ", is->default_expr));
        }
        if (is->not_null != was.not_null && is->identity == 0) {
          alter(
              absl::StrCat("ALTER COLUMN ", column, is->not_null ? " SET" : " DROP", " NOT NULL"));
        }
      }
    }
    for (const DdlColumn& c : now.columns) {
      if (!state.HasColumn(c.name)) alter(absl::StrCat("ADD COLUMN ", ColumnDefinition(c)));
    }
    if (key_changes && !now.primary_key.empty())
      alter(absl::StrCat("ADD ", PrimaryKey(now.primary_key)));
    return absl::OkStatus();
  }

  static std::string PrimaryKey(const std::vector<std::string>& columns) {
    std::vector<std::string> quoted;
    for (const std::string& c : columns) quoted.push_back(QuoteIdent(c));
    return absl::StrCat("PRIMARY KEY (", absl::StrJoin(quoted, ", "), ")");
  }

  absl::Status Index() {
    const std::string schema = MapSchema(cmd_.schema);
    if (cmd_.dropped) {
      Add(absl::StrCat("DROP INDEX IF EXISTS ", Qualified(schema, cmd_.name)));
      return absl::OkStatus();
    }
    if (cmd_.index_backs_constraint) {
      plan_.passed_over = "the index of a constraint follows its constraint";
      return absl::OkStatus();
    }
    if (cmd_.tag != "CREATE INDEX") {
      // ALTER INDEX: renames, storage parameters, tablespaces; none changes rows.
      plan_.passed_over = absl::StrCat(cmd_.tag, " is not replayed");
      return absl::OkStatus();
    }
    if (cmd_.index_using.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot replay CREATE INDEX ", cmd_.identity, ": its definition (",
          Excerpt(cmd_.index_definition),
          ") has an unexpected form; create the index on the target yourself and add 'index' "
          "to this sink's ddl.exclude"));
    }
    Add(absl::StrCat("CREATE ", cmd_.index_unique ? "UNIQUE " : "", "INDEX IF NOT EXISTS ",
                     QuoteIdent(cmd_.name), " ON ",
                     Qualified(MapSchema(cmd_.index_table_schema), cmd_.index_table_name),
                     " USING ", cmd_.index_using));
    return absl::OkStatus();
  }

  absl::Status Sequence() {
    const std::string quoted = Qualified(MapSchema(cmd_.schema), cmd_.name);
    if (cmd_.dropped) {
      Add(absl::StrCat("DROP SEQUENCE IF EXISTS ", quoted));
      return absl::OkStatus();
    }
    if (cmd_.sequence_of_identity) {
      plan_.passed_over = "an identity column's sequence follows its column";
      return absl::OkStatus();
    }
    // OWNED BY once the owning table exists on the target (a serial column's sequence is
    // described before its table, and again after it).
    std::string owner = " OWNED BY NONE";
    if (!cmd_.sequence_owner_table.empty()) {
      const std::string owner_schema = MapSchema(cmd_.sequence_owner_schema);
      absl::StatusOr<std::optional<TargetTableState>> table =
          target_.Table(owner_schema, cmd_.sequence_owner_table);
      if (!table.ok()) return table.status();
      owner = table->has_value() && (*table)->HasColumn(cmd_.sequence_owner_column)
                  ? absl::StrCat(" OWNED BY ", Qualified(owner_schema, cmd_.sequence_owner_table),
                                 ".", QuoteIdent(cmd_.sequence_owner_column))
                  : "";
    }
    std::string options =
        absl::StrCat(cmd_.sequence_type.empty() ? "" : absl::StrCat(" AS ", cmd_.sequence_type),
                     " INCREMENT BY ", cmd_.sequence_increment, " MINVALUE ", cmd_.sequence_min,
                     " MAXVALUE ", cmd_.sequence_max, " START WITH ", cmd_.sequence_start,
                     cmd_.sequence_cycle ? " CYCLE" : " NO CYCLE");
    Add(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(MapSchema(cmd_.schema))));
    Add(absl::StrCat("CREATE SEQUENCE IF NOT EXISTS ", quoted, options));
    Add(absl::StrCat("ALTER SEQUENCE ", quoted, options, owner));
    return absl::OkStatus();
  }

  const DdlCommand& cmd_;
  const std::string& target_schema_;
  TargetLookup& target_;
  DdlPlan plan_;
};

}  // namespace

bool TargetTableState::HasColumn(std::string_view name) const {
  return std::find(columns.begin(), columns.end(), name) != columns.end();
}

std::string ColumnDefinition(const DdlColumn& column) {
  std::string def = absl::StrCat(QuoteIdent(column.name), " ", column.type);
  if (!column.generated.empty()) {
    absl::StrAppend(&def, " GENERATED ALWAYS AS (", column.generated, ") STORED");
  } else if (column.identity != 0) {
    absl::StrAppend(&def, column.identity == 'a' ? " GENERATED ALWAYS" : " GENERATED BY DEFAULT",
                    " AS IDENTITY");
  } else if (!column.default_expr.empty()) {
    absl::StrAppend(&def, " DEFAULT ", column.default_expr);
  }
  if (column.not_null && column.identity == 0) absl::StrAppend(&def, " NOT NULL");
  return def;
}

absl::StatusOr<DdlPlan> PlanDdl(const DdlCommand& cmd, const std::string& target_schema,
                                TargetLookup& target) {
  return Planner(cmd, target_schema, target).Plan();
}

}  // namespace pgflow
