#include "transformers/template.h"

#include "engine/str_cat.h"
#include "schemas/pg_datetime.h"
#include "transformers/value_text.h"

namespace pgflow {

absl::StatusOr<Template> Template::Parse(std::string_view text) {
  Template t;
  t.text_ = std::string(text);
  std::string literal;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      literal.push_back(c);
      ++i;
      continue;
    }
    if (c == '}') {
      return absl::InvalidArgumentError(
          Cat("at character ", i + 1, ": '}' without '{' (write }} for a brace)"));
    }
    if (c != '{') {
      literal.push_back(c);
      continue;
    }
    const size_t close = text.find('}', i + 1);
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          Cat("at character ", i + 1, ": '{' is never closed (write {{ for a brace)"));
    }
    const std::string name(text.substr(i + 1, close - i - 1));
    if (name.empty()) return absl::InvalidArgumentError(Cat("at character ", i + 1, ": {} names nothing"));
    if (!literal.empty()) t.parts_.push_back(Part{Field::kLiteral, std::move(literal)});
    literal.clear();
    Field field = Field::kColumn;
    if (name == "schema") field = Field::kSchema;
    if (name == "table") field = Field::kTable;
    if (name == "op") field = Field::kOp;
    if (name == "lsn") field = Field::kLsn;
    if (name == "commit_ts") field = Field::kCommitTs;
    if (name == "xid") field = Field::kXid;
    t.parts_.push_back(Part{field, name});
    i = close;
  }
  if (!literal.empty()) t.parts_.push_back(Part{Field::kLiteral, std::move(literal)});
  return t;
}

std::vector<std::string> Template::Columns() const {
  std::vector<std::string> columns;
  for (const Part& p : parts_) {
    if (p.field == Field::kColumn) columns.push_back(p.text);
  }
  return columns;
}

absl::StatusOr<std::optional<std::string>> Template::Expand(const Change& change,
                                                             const Row& row) const {
  std::string out;
  for (const Part& p : parts_) {
    switch (p.field) {
      case Field::kLiteral:
        out += p.text;
        break;
      case Field::kSchema:
        if (change.table != nullptr) out += change.table->schema;
        break;
      case Field::kTable:
        if (change.table != nullptr) out += change.table->name;
        break;
      case Field::kOp:
        out += OpName(change.op);
        break;
      case Field::kLsn:
        out += change.txn.commit_lsn.ToString();
        break;
      case Field::kCommitTs:
        AppendIsoTimestamp(change.txn.commit_time_us, &out);
        break;
      case Field::kXid:
        out += std::to_string(change.txn.xid);
        break;
      case Field::kColumn: {
        const TableSchema* table = change.table.get();
        size_t i = 0;
        while (table != nullptr && i < table->columns.size() && table->columns[i].name != p.text) {
          ++i;
        }
        if (table == nullptr || i == table->columns.size()) {
          return absl::FailedPreconditionError(
              Cat("table ", table != nullptr ? table->QualifiedName() : "(none)",
                  " has no column '", p.text, "' (in template \"", text_, "\")"));
        }
        if (i >= row.size()) return std::optional<std::string>();
        if (row[i].is_unchanged_toast()) return std::optional<std::string>();
        if (std::optional<std::string> v = ValueText(row[i], table->columns[i])) out += *v;
        break;
      }
    }
  }
  return std::optional<std::string>(std::move(out));
}

}  // namespace pgflow
