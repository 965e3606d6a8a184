#include "transformers/route.h"

#include <algorithm>

#include "engine/str_cat.h"
#include "transformers/table_patterns.h"

namespace pgflow {
namespace {

class RouteTransform : public Transform {
 public:
  RouteTransform(TransformContext context, std::shared_ptr<const RouteOptions> options)
      : context_(std::move(context)), options_(std::move(options)) {}

  bool Touches(const TableSchema& table) const override {
    return options_->tables.empty() || PatternsCover(options_->tables, table);
  }

  absl::StatusOr<bool> Apply(Change* change) override {
    if (absl::Status s =
            CheckStillCovered(options_->tables, *change, Cat(context_.where, " (route)"));
        !s.ok()) {
      return s;
    }
    if (change->table == nullptr || change->op == Op::kDdl || !Touches(*change->table)) {
      return true;
    }
    const Template& to = *options_->parsed;
    if (change->op == Op::kTruncate) {
      if (to.RowIndependent()) {
        absl::StatusOr<std::optional<std::string>> d = to.Expand(*change, change->after);
        if (d.ok() && *d) change->destination = **d;
      }
      return true;
    }
    const Row& row = change->op == Op::kDelete ? change->before : change->after;
    if (change->op == Op::kDelete && change->before_kind != BeforeKind::kFull) {
      // Only the key is known of the old row: a template reading another column would route
      // the delete by a NULL.
      for (const std::string& column : to.Columns()) {
        const std::vector<size_t> key = change->table->RowKeyColumns();
        const bool in_key = std::any_of(key.begin(), key.end(), [&](size_t k) {
          return change->table->columns[k].name == column;
        });
        if (!in_key) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (route): \"", to.text(), "\" reads ", column, ", which a delete on ",
                  change->table->QualifiedName(), " does not carry (only the key, under REPLICA "
                  "IDENTITY DEFAULT): route by key columns, or ALTER TABLE ... REPLICA IDENTITY FULL"));
        }
      }
    }
    absl::StatusOr<std::optional<std::string>> d = to.Expand(*change, row);
    if (!d.ok()) {
      return absl::FailedPreconditionError(Cat(context_.where, " (route): ", d.status().message()));
    }
    if (!*d) {
      return absl::FailedPreconditionError(
          Cat(context_.where, " (route): \"", to.text(), "\" reads a value of ",
              change->table->QualifiedName(), " the stream did not send (an unchanged TOASTed "
              "value) in the ", OpName(change->op), " at ", change->txn.commit_lsn.ToString(),
              ": route by columns that are always sent, such as the key"));
    }
    if ((*d)->empty()) {
      return absl::FailedPreconditionError(
          Cat(context_.where, " (route): \"", to.text(), "\" gives an empty destination for the ",
              OpName(change->op), " on ", change->table->QualifiedName(), " at ",
              change->txn.commit_lsn.ToString()));
    }
    change->destination = **std::move(d);
    return true;
  }

 private:
  const TransformContext context_;
  const std::shared_ptr<const RouteOptions> options_;
};

class RouteFactory : public TransformFactoryOf<RouteOptions> {
 public:
  std::string_view type() const override { return "route"; }
  std::string_view help() const override {
    return "Chooses each change's destination (a Kafka topic, an index, a webhook route) from a "
           "template: {table: public.orders, to: \"orders.{region}\"}.";
  }

 protected:
  const OptionTable<RouteOptions>& table() const override {
    static const auto* table = new OptionTable<RouteOptions>({
        ListOption("table", &RouteOptions::table)
            .DefaultText("every table")
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        StringOption("to", &RouteOptions::to)
            .Required()
            .Help("The destination: a template over the row's columns ({region}) and the "
                  "event's {schema}, {table}, {op}, {lsn}, {commit_ts} and {xid}."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, RouteOptions* options) const override {
    absl::StatusOr<Template> parsed = Template::Parse(options->to);
    if (!parsed.ok()) {
      return node.Get("to")->Error(Cat("invalid template: ", parsed.status().message()));
    }
    options->parsed = *std::move(parsed);
    return ParseTablePatterns(node, "table", options->table, &options->tables);
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const RouteOptions> options) const override {
    return std::make_unique<RouteTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterRouteTransform() { RegisterTransformFactory(std::make_unique<RouteFactory>()); }

}  // namespace pgflow
