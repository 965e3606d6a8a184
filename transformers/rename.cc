#include "transformers/rename.h"

#include <algorithm>

#include "absl/strings/str_replace.h"
#include "engine/str_cat.h"
#include "transformers/reshape.h"
#include "transformers/table_patterns.h"

namespace pgflow {
namespace {

absl::Status ReadColumns(const ConfigNode& node,
                         std::vector<std::pair<std::string, std::string>>* columns) {
  if (!node.IsMap() || node.Entries().empty()) {
    return node.Error("expected a mapping of source column: new name");
  }
  for (auto& [from, value] : node.Entries()) {
    absl::StatusOr<std::string> to = value.AsString();
    if (!to.ok()) return to.status();
    if (to->empty()) return value.Error("expected a column name");
    columns->emplace_back(from, *to);
  }
  return absl::OkStatus();
}

class RenameTransform : public ReshapingTransform {
 public:
  RenameTransform(TransformContext context, std::shared_ptr<const RenameOptions> options)
      : ReshapingTransform(std::move(context), options->tables), options_(std::move(options)) {}

 protected:
  std::pair<std::string, std::string> OutputName(const std::string& schema,
                                                 const std::string& name) const override {
    if (options_->to.empty()) return {schema, name};
    const std::string to =
        absl::StrReplaceAll(options_->to, {{"{schema}", schema}, {"{table}", name}});
    const size_t dot = to.find('.');
    if (dot == std::string::npos) return {schema, to};
    return {to.substr(0, dot), to.substr(dot + 1)};
  }

  absl::StatusOr<ShapeMap> Plan(const std::string& schema, const std::string& name,
                                const std::vector<ShapeColumn>& columns,
                                bool from_ddl) const override {
    auto [out_schema, out_name] = OutputName(schema, name);
    ShapeMap map{out_schema, out_name, {}};
    if (!from_ddl && NamesExactly(schema, name)) {
      for (const auto& [from, to] : options_->columns) {
        if (std::none_of(columns.begin(), columns.end(),
                         [&](const ShapeColumn& c) { return c.name == from; })) {
          return NoSuchColumn("rename", schema, name, from);
        }
      }
    }
    for (size_t i = 0; i < columns.size(); ++i) {
      std::string out = columns[i].name;
      for (const auto& [from, to] : options_->columns) {
        if (from == columns[i].name) out = to;
      }
      for (const ShapeMap::Out& earlier : map.columns) {
        if (earlier.name == out) {
          return absl::FailedPreconditionError(
              Cat(context().where, " (rename): two columns of ", schema, ".", name,
                  " would be named '", out, "'"));
        }
      }
      map.columns.push_back(ShapeMap::Out{std::move(out), static_cast<int>(i), std::nullopt});
    }
    return map;
  }

 private:
  const std::shared_ptr<const RenameOptions> options_;
};

class RenameFactory : public TransformFactoryOf<RenameOptions> {
 public:
  std::string_view type() const override { return "rename"; }
  std::string_view help() const override {
    return "Renames tables and columns as the sinks see them: "
           "{table: public.users, to: crm.customers, columns: {email: email_address}}.";
  }

 protected:
  const OptionTable<RenameOptions>& table() const override {
    static const auto* table = new OptionTable<RenameOptions>({
        ListOption("table", &RenameOptions::table)
            .Required()
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        StringOption("to", &RenameOptions::to)
            .DefaultText("the same name")
            .Help("The new name: schema.table, or a table in the same schema; {schema} and "
                  "{table} stand for the source's names."),
        CustomOption("columns", OptionType::kMap, ReadColumns, &RenameOptions::columns)
            .Help("source column: new name."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, RenameOptions* options) const override {
    if (options->to.empty() && options->columns.empty()) {
      return node.Error("rename needs `to` (a new table name) or `columns` (new column names)");
    }
    if (absl::Status s = ParseTablePatterns(node, "table", options->table, &options->tables);
        !s.ok()) {
      return s;
    }
    const bool schema_wide = std::any_of(options->tables.begin(), options->tables.end(),
                                         [](const TableRef& t) { return t.is_schema(); });
    if ((schema_wide || options->tables.size() > 1) && !options->to.empty() &&
        options->to.find("{table}") == std::string::npos) {
      return node.Get("to")->Error(
          "several tables would get one name: write {table} in `to` (\"staging.{table}\")");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const RenameOptions> options) const override {
    return std::make_unique<RenameTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterRenameTransform() { RegisterTransformFactory(std::make_unique<RenameFactory>()); }

}  // namespace pgflow
