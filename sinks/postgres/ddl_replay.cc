#include "sinks/postgres/ddl_replay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/postgres/pg_connection.h"
#include "sinks/postgres/create_table.h"

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

// A column of a table's shape as CREATE TABLE and ADD COLUMN define it: an identity column's
// NOT NULL goes without saying.
ColumnDefinitionSpec Spec(const DdlColumn& column) {
  ColumnDefinitionSpec spec;
  spec.name = column.name;
  spec.type = column.type;
  spec.collation = column.collation;
  spec.generated = column.generated;
  spec.identity = column.identity;
  spec.default_expr = column.default_expr;
  spec.not_null = column.not_null && column.identity == 0;
  return spec;
}

std::string Qualified(const std::string& schema, const std::string& name) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name));
}

class Planner {
 public:
  Planner(const DdlCommand& cmd, const DdlReplayOptions& options, TargetLookup& target)
      : cmd_(cmd), options_(options), target_(target) {}

  absl::StatusOr<DdlPlan> Plan() {
    absl::Status s;
    if (cmd_.IsTable()) {
      s = cmd_.dropped ? DropTable() : Table();
    } else if (cmd_.object_type == "index") {
      s = Index();
    } else if (cmd_.object_type == "sequence") {
      s = Sequence();
    } else if (cmd_.object_type == "table constraint" && cmd_.dropped) {
      // UNIQUE, CHECK and EXCLUDE constraints still reject rows on the target: a constraint
      // the source dropped goes there too (a primary key's too; replay skips what is gone).
      Add(absl::StrCat("ALTER TABLE IF EXISTS ",
                       Qualified(MapSchema(cmd_.on_schema), cmd_.on_table),
                       " DROP CONSTRAINT IF EXISTS ", QuoteIdent(cmd_.name)));
    } else if (std::find(std::begin(kPassedOver), std::end(kPassedOver), cmd_.object_type) !=
               std::end(kPassedOver)) {
      plan_.passed_over = absl::StrCat(cmd_.object_type, "s are not replayed");
    } else {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot replay ", cmd_.tag, " of ", cmd_.object_type, " ", cmd_.identity,
          " (statement: ", Excerpt(cmd_.statement),
          "): pgflow replays tables, columns, primary keys, indexes and sequences only. To go "
          "on, make the change on the target yourself and add '",
          cmd_.object_type, "' to ", options_.config_path, ".exclude, or set ",
          options_.config_path, ".mode to events"));
    }
    if (!s.ok()) return s;
    return std::move(plan_);
  }

 private:
  std::string MapSchema(const std::string& schema) const {
    return options_.target_schema.empty() ? schema : options_.target_schema;
  }
  static std::string Excerpt(const std::string& statement) {
    return statement.size() <= 200 ? statement : statement.substr(0, 200) + "...";
  }
  void Add(std::string sql) { plan_.statements.push_back(std::move(sql)); }
  void Changed(const std::string& schema, const std::string& name) {
    plan_.changed_tables.push_back(absl::StrCat(schema, ".", name));
  }
  // A column's definition for the target: sequences its default names move with the
  // pipeline's schema mapping.
  std::string Definition(DdlColumn column) const { return ColumnDefinition(MapDefault(column)); }
  DdlColumn MapDefault(DdlColumn column) const {
    if (options_.target_schema.empty() || column.default_expr.empty()) return column;
    const std::string schema = cmd_.table ? cmd_.table->schema : cmd_.schema;
    if (schema == options_.target_schema) return column;
    // nextval('schema.seq'::regclass): the schema as the catalog quotes it in a literal.
    for (const std::string& from : {schema, QuoteIdent(schema)}) {
      const std::string needle = absl::StrCat("nextval('", from, ".");
      size_t at = column.default_expr.find(needle);
      if (at != std::string::npos) {
        column.default_expr.replace(
            at, needle.size(), absl::StrCat("nextval('", QuoteIdent(options_.target_schema), "."));
        break;
      }
    }
    return column;
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
      CreateTableSpec create;
      create.table = quoted;
      create.if_not_exists = true;
      for (const DdlColumn& c : now.columns) create.columns.push_back(Spec(MapDefault(c)));
      create.primary_key = now.primary_key;
      Add(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(schema)));
      Add(RenderCreateTable(create));
      AddConstraints(quoted, now, nullptr, {});
      return absl::OkStatus();
    }
    TargetTableState& state = **current;
    const DdlTableShape* old = cmd_.old_table ? &*cmd_.old_table : nullptr;
    auto alter = [&](const std::string& action) {
      Add(absl::StrCat("ALTER TABLE ", quoted, " ", action));
    };

    // The primary key goes first when the source changed it: its columns may be dropped or
    // retyped. (Without the shape before, a key is only added to a table that has none.)
    const bool key_changes = old != nullptr ? old->primary_key != now.primary_key
                                            : state.primary_key.empty() && !now.primary_key.empty();
    if (key_changes && old != nullptr && !state.primary_key_constraint.empty()) {
      alter(absl::StrCat("DROP CONSTRAINT ", QuoteIdent(state.primary_key_constraint)));
    }
    std::vector<std::string> set_defaults;  // after the type changes they may depend on
    if (old != nullptr) {
      for (const DdlColumn& was : old->columns) {
        const DdlColumn* is = now.FindAttnum(was.attnum);
        if (is == nullptr) {
          // Dropped on the source (perhaps re-added under the same name as a new column, with
          // a new attnum: the add below makes it anew).
          if (state.HasColumn(was.name)) {
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
        if (is->generated != was.generated || is->identity != was.identity) {
          return absl::FailedPreconditionError(absl::StrCat(
              "cannot replay ", cmd_.tag, " on table ", cmd_.identity, ": column ", is->name,
              " changed its generation or identity (statement: ", Excerpt(cmd_.statement),
              "); make the change on the target yourself and add 'table' to ", options_.config_path,
              ".exclude while it is replayed, or set ", options_.config_path, ".mode to events"));
        }
        const bool default_changes = is->default_expr != was.default_expr;
        const bool type_changes = is->type != was.type || is->collation != was.collation;
        const bool plain = is->generated.empty() && is->identity == 0;
        // A default that may not cast to the new type is dropped before the type changes and
        // set again after every type change of the command.
        if (plain && !was.default_expr.empty() && (default_changes || type_changes)) {
          alter(absl::StrCat("ALTER COLUMN ", column, " DROP DEFAULT"));
        }
        if (type_changes) {
          alter(absl::StrCat("ALTER COLUMN ", column, " TYPE ", is->type,
                             is->collation.empty() ? "" : absl::StrCat(" COLLATE ", is->collation),
                             " USING ", column, "::", is->type));
        }
        if (plain && !is->default_expr.empty() && (default_changes || type_changes)) {
          set_defaults.push_back(
              absl::StrCat("ALTER COLUMN ", column, " SET DEFAULT ", MapDefault(*is).default_expr));
        }
        if (is->not_null != was.not_null && is->identity == 0) {
          alter(
              absl::StrCat("ALTER COLUMN ", column, is->not_null ? " SET" : " DROP", " NOT NULL"));
        }
      }
    }
    for (const std::string& action : set_defaults) alter(action);
    for (const DdlColumn& c : now.columns) {
      if (!state.HasColumn(c.name)) alter(absl::StrCat("ADD COLUMN ", Definition(c)));
    }
    if (key_changes && !now.primary_key.empty()) {
      alter(absl::StrCat("ADD ", RenderPrimaryKey(now.primary_key)));
    }
    AddConstraints(quoted, now, old, state.constraints);
    return absl::OkStatus();
  }

  // The constraints `now` has that `old` had not (all of them without `old`) and the target
  // table lacks: foreign keys and checks added NOT VALID, then validated (the rows already
  // there are checked once, without holding off writes for longer than the scan), unique and
  // exclusion constraints as they are.
  void AddConstraints(const std::string& table, const DdlTableShape& now, const DdlTableShape* old,
                      const std::vector<std::string>& on_target) {
    if (!options_.constraints) return;
    for (const DdlConstraint& c : now.constraints) {
      const bool had =
          old != nullptr && std::any_of(old->constraints.begin(), old->constraints.end(),
                                        [&](const DdlConstraint& o) { return o.name == c.name; });
      if (had || std::find(on_target.begin(), on_target.end(), c.name) != on_target.end()) {
        continue;
      }
      const std::string add = absl::StrCat("ALTER TABLE ", table, " ADD CONSTRAINT ",
                                           QuoteIdent(c.name), " ", c.definition);
      if (c.type == 'f' && !options_.target_schema.empty()) {
        plan_.constraints_passed_over.push_back(
            absl::StrCat("foreign key ", c.name, " on ", table,
                         " (its referenced table keeps its source "
                         "schema name, and the sink maps schemas to ",
                         options_.target_schema,
                         "): add it "
                         "yourself, adapted: ",
                         add));
        continue;
      }
      ConstraintReplay replay{table, c.name, {}};
      const bool checkable = c.type == 'f' || c.type == 'c';
      if (checkable && !c.definition.ends_with("NOT VALID")) {
        replay.statements.push_back(absl::StrCat(add, " NOT VALID"));
        replay.statements.push_back(
            absl::StrCat("ALTER TABLE ", table, " VALIDATE CONSTRAINT ", QuoteIdent(c.name)));
      } else {
        replay.statements.push_back(add);
      }
      plan_.constraints.push_back(std::move(replay));
    }
  }

  absl::Status Index() {
    const std::string schema = MapSchema(cmd_.schema);
    if (cmd_.dropped) {
      Add(absl::StrCat("DROP INDEX IF EXISTS ", Qualified(schema, cmd_.name)));
      return absl::OkStatus();
    }
    if (cmd_.old_table.has_value() && cmd_.old_table->name != cmd_.name) {
      // ALTER INDEX ... RENAME (also of a constraint's index, which renames the constraint).
      Add(absl::StrCat("ALTER INDEX IF EXISTS ",
                       Qualified(MapSchema(cmd_.old_table->schema), cmd_.old_table->name),
                       " RENAME TO ", QuoteIdent(cmd_.name)));
      return absl::OkStatus();
    }
    if (cmd_.index_backs_constraint) {
      plan_.passed_over = "the index of a constraint follows its constraint";
      return absl::OkStatus();
    }
    if (cmd_.tag != "CREATE INDEX") {
      // Other ALTER INDEX forms: storage parameters, tablespaces; none changes rows.
      plan_.passed_over = absl::StrCat(cmd_.tag, " is not replayed");
      return absl::OkStatus();
    }
    if (cmd_.index_using.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot replay CREATE INDEX ", cmd_.identity, ": its definition (",
          Excerpt(cmd_.index_definition),
          ") has an unexpected form; create the index on the target yourself and add 'index' "
          "to ",
          options_.config_path, ".exclude"));
    }
    Add(absl::StrCat("CREATE ", cmd_.index_unique ? "UNIQUE " : "", "INDEX IF NOT EXISTS ",
                     QuoteIdent(cmd_.name), " ON ",
                     Qualified(MapSchema(cmd_.on_schema), cmd_.on_table), " USING ",
                     cmd_.index_using));
    return absl::OkStatus();
  }

  absl::Status Sequence() {
    const std::string schema = MapSchema(cmd_.schema);
    const std::string quoted = Qualified(schema, cmd_.name);
    if (cmd_.dropped) {
      Add(absl::StrCat("DROP SEQUENCE IF EXISTS ", quoted));
      return absl::OkStatus();
    }
    if (cmd_.sequence_of_identity) {
      plan_.passed_over = "an identity column's sequence follows its column";
      return absl::OkStatus();
    }
    if (cmd_.old_table.has_value()) {
      // Renamed or moved: the target's sequence follows (the defaults using it follow too).
      const std::string old_schema = MapSchema(cmd_.old_table->schema);
      if (cmd_.old_table->name != cmd_.name) {
        Add(absl::StrCat("ALTER SEQUENCE IF EXISTS ", Qualified(old_schema, cmd_.old_table->name),
                         " RENAME TO ", QuoteIdent(cmd_.name)));
      }
      if (old_schema != schema) {
        Add(absl::StrCat("ALTER SEQUENCE IF EXISTS ", Qualified(old_schema, cmd_.name),
                         " SET SCHEMA ", QuoteIdent(schema)));
      }
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
    Add(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(schema)));
    Add(absl::StrCat("CREATE SEQUENCE IF NOT EXISTS ", quoted, options));
    Add(absl::StrCat("ALTER SEQUENCE ", quoted, options, owner));
    return absl::OkStatus();
  }

  const DdlCommand& cmd_;
  const DdlReplayOptions& options_;
  TargetLookup& target_;
  DdlPlan plan_;
};

}  // namespace

bool TargetTableState::HasColumn(std::string_view name) const {
  return std::find(columns.begin(), columns.end(), name) != columns.end();
}

std::string ColumnDefinition(const DdlColumn& column) {
  return RenderColumnDefinition(Spec(column));
}

absl::StatusOr<DdlPlan> PlanDdl(const DdlCommand& cmd, const DdlReplayOptions& options,
                                TargetLookup& target) {
  return Planner(cmd, options, target).Plan();
}

}  // namespace pgflow
