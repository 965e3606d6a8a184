#include "transformers/columns.h"

#include <algorithm>

#include "engine/str_cat.h"
#include "transformers/reshape.h"
#include "transformers/table_patterns.h"

namespace pgflow {
namespace {

class ColumnsTransform : public ReshapingTransform {
 public:
  ColumnsTransform(TransformContext context, std::shared_ptr<const ColumnsOptions> options,
                   bool keep)
      : ReshapingTransform(std::move(context), options->tables),
        options_(std::move(options)),
        keep_(keep) {}

 protected:
  absl::StatusOr<ShapeMap> Plan(const std::string& schema, const std::string& name,
                                const std::vector<ShapeColumn>& columns,
                                bool from_ddl) const override {
    const char* type = keep_ ? "select" : "drop_columns";
    if (!from_ddl && NamesExactly(schema, name)) {
      for (const std::string& listed : options_->columns) {
        if (std::none_of(columns.begin(), columns.end(),
                         [&](const ShapeColumn& c) { return c.name == listed; })) {
          return NoSuchColumn(type, schema, name, listed);
        }
      }
    }
    ShapeMap map{schema, name, {}};
    for (size_t i = 0; i < columns.size(); ++i) {
      const ShapeColumn& c = columns[i];
      const bool listed = std::find(options_->columns.begin(), options_->columns.end(), c.name) !=
                          options_->columns.end();
      if (!keep_ && listed && c.is_key) {
        return absl::FailedPreconditionError(
            Cat(context().where, " (drop_columns): ", schema, ".", name, ".", c.name,
                " is part of the key, which the sinks need to update and delete rows; mask it "
                "(hash) instead"));
      }
      if (keep_ ? (listed || c.is_key) : !listed) {
        map.columns.push_back(ShapeMap::Out{c.name, static_cast<int>(i), std::nullopt});
      }
    }
    return map;
  }

 private:
  const std::shared_ptr<const ColumnsOptions> options_;
  const bool keep_;  // select: keep the listed columns; drop_columns: drop them
};

class ColumnsFactory : public TransformFactoryOf<ColumnsOptions> {
 public:
  explicit ColumnsFactory(bool keep) : keep_(keep) {}
  std::string_view type() const override { return keep_ ? "select" : "drop_columns"; }
  std::string_view help() const override {
    return keep_ ? "Keeps only the listed columns (and the key's) of the tables it names: "
                   "{table: public.users, columns: [id, name]}."
                 : "Removes the listed columns of the tables it names: "
                   "{table: public.users, columns: [ssn, notes]}.";
  }

 protected:
  const OptionTable<ColumnsOptions>& table() const override {
    static const auto* select = MakeTable(true);
    static const auto* drop = MakeTable(false);
    return *(keep_ ? select : drop);
  }

  absl::Status Check(const ConfigNode& node, ColumnsOptions* options) const override {
    if (options->columns.empty()) return node.Get("columns")->Error("expected at least one column");
    return ParseTablePatterns(node, "table", options->table, &options->tables);
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const ColumnsOptions> options) const override {
    return std::make_unique<ColumnsTransform>(context, std::move(options), keep_);
  }

 private:
  static const OptionTable<ColumnsOptions>* MakeTable(bool keep) {
    return new OptionTable<ColumnsOptions>({
        ListOption("table", &ColumnsOptions::table)
            .Required()
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        ListOption("columns", &ColumnsOptions::columns)
            .Required()
            .Help(keep ? "The columns the sinks see; the key's are always kept."
                       : "The columns the sinks do not see; not a key column."),
    });
  }

  const bool keep_;
};

}  // namespace

void RegisterColumnsTransforms() {
  RegisterTransformFactory(std::make_unique<ColumnsFactory>(true));
  RegisterTransformFactory(std::make_unique<ColumnsFactory>(false));
}

}  // namespace pgflow
