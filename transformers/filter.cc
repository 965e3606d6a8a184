#include "transformers/filter.h"

#include <algorithm>

#include "engine/str_cat.h"
#include "transformers/table_patterns.h"

namespace pgflow {
absl::Status ParseOps(const ConfigNode& node, std::string_view key,
                      const std::vector<std::string>& texts, std::vector<Op>* ops) {
  static constexpr std::pair<std::string_view, Op> kOps[] = {
      {"insert", Op::kInsert},  {"update", Op::kUpdate},     {"delete", Op::kDelete},
      {"read", Op::kRead},      {"truncate", Op::kTruncate}, {"ddl", Op::kDdl},
      {"message", Op::kMessage}};
  for (const std::string& text : texts) {
    auto it = std::find_if(std::begin(kOps), std::end(kOps),
                           [&text](const auto& entry) { return entry.first == text; });
    if (it == std::end(kOps)) {
      return node.Get(key)->Error(Cat("unknown operation '", text,
                                      "' (expected insert, update, delete, read, truncate, "
                                      "ddl or message)"));
    }
    ops->push_back(it->second);
  }
  return absl::OkStatus();
}

absl::Status EventSelection::Compile(const ConfigNode& node) {
  if (absl::Status s = ParseTablePatterns(node, "table", table, &tables); !s.ok()) return s;
  if (absl::Status s = ParseOps(node, "op", op, &ops); !s.ok()) return s;
  if (!where.empty()) {
    absl::StatusOr<std::shared_ptr<const FilterExpression>> parsed = FilterExpression::Parse(where);
    if (!parsed.ok()) {
      return node.Get("where")->Error(Cat("invalid predicate: ", parsed.status().message()));
    }
    expression = *std::move(parsed);
  }
  return absl::OkStatus();
}

bool EventSelection::TakesOp(Op op) const {
  return ops.empty() || std::find(ops.begin(), ops.end(), op) != ops.end();
}

bool EventSelection::TakesTable(const TableSchema& table) const {
  return tables.empty() || PatternsCover(tables, table);
}

namespace {

class FilterTransform : public Transform {
 public:
  FilterTransform(TransformContext context, std::shared_ptr<const FilterOptions> options)
      : context_(std::move(context)), options_(std::move(options)) {}

  bool Touches(const TableSchema& table) const override {
    return options_->selection.TakesTable(table);
  }
  // (It keeps or drops rows, and makes updates into inserts or deletes; no value changes.)
  bool Changes(const TableSchema&, std::string_view) const override { return false; }

  absl::StatusOr<bool> Apply(Change* change) override {
    if (absl::Status s = CheckStillCovered(options_->selection.tables, *change,
                                           Cat(context_.where, " (filter)"));
        !s.ok()) {
      return s;
    }
    if (change->table == nullptr) {  // a logical message: no table to name
      return options_->selection.tables.empty() ? options_->selection.TakesOp(change->op) : true;
    }
    if (!Touches(*change->table)) return true;
    if (!options_->selection.TakesOp(change->op)) return false;
    const FilterExpression* where = options_->selection.expression.get();
    if (where == nullptr) return true;
    const TableSchema* table = change->table.get();
    switch (change->op) {
      case Op::kRead:
      case Op::kInsert:
        return Matches({table, &change->after, nullptr, BeforeKind::kNone});
      case Op::kDelete:
        if (change->before_kind != BeforeKind::kFull) return true;  // not known: let it go
        return Matches({table, &change->before, nullptr, BeforeKind::kNone});
      case Op::kUpdate:
        return Update(change);
      default:
        return true;  // truncate, ddl
    }
  }

 private:
  absl::StatusOr<bool> Matches(const FilterExpression::Rows& rows) const {
    absl::StatusOr<bool> m = options_->selection.expression->Matches(rows);
    if (!m.ok()) {
      return absl::FailedPreconditionError(
          Cat(context_.where, " (filter): ", m.status().message()));
    }
    return m;
  }

  absl::StatusOr<bool> Update(Change* change) const {
    const TableSchema* table = change->table.get();
    absl::StatusOr<bool> now =
        Matches({table, &change->after, &change->before, change->before_kind});
    if (!now.ok()) return now;
    std::optional<bool> was;
    if (change->before_kind == BeforeKind::kFull) {
      absl::StatusOr<bool> m = Matches({table, &change->before, nullptr, BeforeKind::kNone});
      if (!m.ok()) return m;
      was = *m;
    }
    if (*now && was == false) {
      // Moved in: the sinks never had it.
      change->op = Op::kInsert;
      change->before.clear();
      change->before_kind = BeforeKind::kNone;
      return true;
    }
    if (!*now) {
      if (was == false) return false;  // neither before nor after: not ours
      // Moved out (or may have): delete it by its key.
      change->op = Op::kDelete;
      if (change->before_kind == BeforeKind::kNone) {
        change->before = change->after;  // the key did not change: the new row's key is it
        change->before_kind = BeforeKind::kKey;
      }
      change->after.clear();
    }
    return true;
  }

  const TransformContext context_;
  const std::shared_ptr<const FilterOptions> options_;
};

class FilterFactory : public TransformFactoryOf<FilterOptions> {
 public:
  std::string_view type() const override { return "filter"; }
  std::string_view help() const override {
    return "Keeps the events of the tables it names whose operation and row match: {table: "
           "public.orders, where: \"status = 'paid' and total > 10\"}; an update that leaves "
           "the filter becomes a delete, one that enters it an insert.";
  }

 protected:
  const OptionTable<FilterOptions>& table() const override {
    static const auto* table = new OptionTable<FilterOptions>({
        EventSelectionOptions(
            &FilterOptions::selection,
            "The tables it filters: schema.table or schema.*, one or a list; the others pass "
            "untouched.",
            "The operations kept: insert, update, delete, read (snapshot rows), truncate, ddl.",
            "A row predicate like a SQL WHERE clause: = <> < <= > >=, in (...), between, like, "
            "is [not] null, and, or, not, parentheses, changed(col), old.col, col->'a'->>'b' for "
            "json; values compare by the column's type."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, FilterOptions* options) const override {
    return options->selection.Compile(node);
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const FilterOptions> options) const override {
    return std::make_unique<FilterTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterFilterTransform() { RegisterTransformFactory(std::make_unique<FilterFactory>()); }

}  // namespace pgflow
