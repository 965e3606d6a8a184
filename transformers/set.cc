#include "transformers/set.h"

#include <algorithm>

#include "engine/str_cat.h"
#include "transformers/cast.h"
#include "transformers/table_patterns.h"

namespace pgflow {
namespace {

absl::Status ReadColumns(const ConfigNode& node, std::vector<SetColumn>* columns) {
  if (!node.IsMap() || node.Entries().empty()) {
    return node.Error("expected a mapping of column: value, or column: {value, type}");
  }
  for (auto& [column, value] : node.Entries()) {
    SetColumn set{column, "", std::nullopt, std::nullopt};
    const ConfigNode* text_node = &value;
    if (value.IsMap()) {
      text_node = nullptr;
      for (auto& [key, v] : value.Entries()) {
        if (key == "value") {
          text_node = &v;
        } else if (key == "type") {
          absl::StatusOr<std::string> type = v.AsString();
          if (!type.ok()) return type.status();
          set.type = ParseOutputType(*type);
          if (!set.type) return v.Error(Cat("unknown type '", *type, "'"));
        } else {
          return v.Error(Cat("unknown key '", key, "' (expected value, type)"));
        }
      }
      if (text_node == nullptr) return value.Error("expected `value`");
    }
    absl::StatusOr<std::string> text = text_node->AsString();
    if (!text.ok()) return text.status();
    set.value = *text;
    absl::StatusOr<Template> parsed = Template::Parse(*text);
    if (!parsed.ok()) return text_node->Error(Cat("invalid template: ", parsed.status().message()));
    set.parsed = *std::move(parsed);
    if (set.type && text->find('{') == std::string::npos) {
      // A constant is checked now rather than at the first row.
      absl::StatusOr<std::string> ok = ConvertText(*text, set.type->oid);
      if (!ok.ok()) return text_node->Error(std::string(ok.status().message()));
    }
    columns->push_back(std::move(set));
  }
  return absl::OkStatus();
}

class SetTransform : public ReshapingTransform {
 public:
  SetTransform(TransformContext context, std::shared_ptr<const SetOptions> options)
      : ReshapingTransform(std::move(context), options->tables), options_(std::move(options)) {}

  bool Changes(const TableSchema& table, std::string_view column) const override {
    if (!Touches(table)) return false;
    for (const SetColumn& set : options_->columns) {
      if (set.column == column) return true;
    }
    return false;
  }

 protected:
  absl::StatusOr<ShapeMap> Plan(const std::string& schema, const std::string& name,
                                const std::vector<ShapeColumn>& columns,
                                bool from_ddl) const override {
    (void)from_ddl;
    ShapeMap map = Unchanged(schema, name, columns);
    for (const SetColumn& set : options_->columns) {
      auto it = std::find_if(columns.begin(), columns.end(),
                             [&](const ShapeColumn& c) { return c.name == set.column; });
      if (it == columns.end()) {
        map.columns.push_back(ShapeMap::Out{set.column, -1,
                                            set.type.value_or(OutputType{oid::kText, "text"})});
        continue;
      }
      if (it->is_key) {
        return absl::FailedPreconditionError(Cat(context().where, " (set): ", schema, ".", name,
                                                 ".", set.column,
                                                 " is part of the key, which set may not change"));
      }
      if (set.type) map.columns[static_cast<size_t>(it - columns.begin())].type = set.type;
    }
    return map;
  }

  absl::Status Fill(const Version& version, Change* change) override {
    if (change->op == Op::kTruncate) return absl::OkStatus();
    const TableSchema& table = *version.output;
    for (Row* row : {&change->after, &change->before}) {
      if (row->size() != table.columns.size()) continue;
      if (row == &change->before && change->before_kind != BeforeKind::kFull) continue;
      // Every value first, from the row as it came, then every column set.
      values_.clear();
      for (const SetColumn& set : options_->columns) {
        absl::StatusOr<std::optional<std::string>> text = set.parsed->Expand(*change, *row);
        if (!text.ok()) {
          return absl::FailedPreconditionError(
              Cat(context().where, " (set): ", set.column, ": ", text.status().message()));
        }
        values_.push_back(*std::move(text));
      }
      for (size_t s = 0; s < options_->columns.size(); ++s) {
        const SetColumn& set = options_->columns[s];
        size_t i = 0;
        while (i < table.columns.size() && table.columns[i].name != set.column) ++i;
        if (i == table.columns.size()) continue;
        const uint32_t type = table.columns[i].type_oid;
        if (!values_[s]) {
          (*row)[i] = Value::UnchangedToast(type);
          continue;
        }
        absl::StatusOr<std::string> converted = ConvertText(*values_[s], type);
        if (!converted.ok()) {
          return absl::FailedPreconditionError(Cat(context().where, " (set): ",
                                                   table.QualifiedName(), ".", set.column, ": ",
                                                   converted.status().message()));
        }
        (*row)[i] = Value::Text(type, *std::move(converted));
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<const SetOptions> options_;
  std::vector<std::optional<std::string>> values_;  // reused from row to row
};

class SetFactory : public TransformFactoryOf<SetOptions> {
 public:
  std::string_view type() const override { return "set"; }
  std::string_view help() const override {
    return "Adds or overwrites columns with a constant or a template: "
           "{table: public.orders, columns: {region: eu, label: \"{name} ({id})\"}}.";
  }

 protected:
  const OptionTable<SetOptions>& table() const override {
    static const auto* table = new OptionTable<SetOptions>({
        ListOption("table", &SetOptions::table)
            .Required()
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        CustomOption("columns", OptionType::kMap, ReadColumns, &SetOptions::columns)
            .Required()
            .Help("column: value, or column: {value, type} for a new column of another type "
                  "than text. A value may read columns ({name}) and the event's {schema}, "
                  "{table}, {op}, {lsn}, {commit_ts} and {xid}; {{ is a brace."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, SetOptions* options) const override {
    return ParseTablePatterns(node, "table", options->table, &options->tables);
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const SetOptions> options) const override {
    return std::make_unique<SetTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterSetTransform() { RegisterTransformFactory(std::make_unique<SetFactory>()); }

}  // namespace pgflow
