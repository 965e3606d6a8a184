#include "sources/kafka/shape_gate.h"

#include "absl/strings/str_cat.h"
#include "schemas/ddl.h"

namespace pgflow {
namespace {

// Drops and renames kept per table name: older ones only matter for rows that old.
constexpr size_t kMaxMovesPerTable = 16;
// Rewritten versions kept per shape or move; past it the cache starts again.
constexpr size_t kMaxRewrites = 64;

}  // namespace

void ShapeGate::Remember(const TableSchema& table, Order order, Shape* shape) {
  shape->columns.clear();
  for (const Column& c : table.columns) shape->columns.emplace_back(c.name, c.type_oid);
  shape->order = order;
  shape->from_ddl = false;
  shape->accept_next = false;
  shape->narrowed.clear();
}

void ShapeGate::Apply(const Rewrite& rewrite, Change* change) {
  const bool narrowed = rewrite.kept.size() != rewrite.from->columns.size();
  change->table = rewrite.to;
  if (!narrowed) return;
  auto narrow = [&](Row* row) {
    if (row->empty()) return;
    Row kept;
    kept.reserve(rewrite.kept.size());
    for (size_t i : rewrite.kept) {
      if (i < row->size()) kept.push_back(std::move((*row)[i]));
    }
    *row = std::move(kept);
  };
  narrow(&change->after);
  narrow(&change->before);
}

ShapeGate::Verdict ShapeGate::Check(Change* change, std::string* note) {
  note->clear();
  const Order order = OrderOf(*change);

  // Drops and renames of the table after the row was written: the first after it decides,
  // then the first of the new name's after that rename, and so on.
  Order at = order;
  for (auto it = moves_.find(change->table->QualifiedName()); it != moves_.end();
       it = moves_.find(change->table->QualifiedName())) {
    Move* move = nullptr;
    for (Move& m : it->second) {
      if (at < m.order) {
        move = &m;
        break;
      }
    }
    if (move == nullptr) break;
    const std::string name = change->table->QualifiedName();
    if (move->dropped) {
      if (!move->noted) {
        move->noted = true;
        absl::StrAppend(note, note->empty() ? "" : "; ", "rows of ", name,
                        " written before the table was dropped come after its DROP TABLE: "
                        "they are not applied (the table is gone)");
      }
      return Verdict::kDrop;
    }
    if (move->renamed.size() >= kMaxRewrites) move->renamed.clear();
    auto [entry, added] = move->renamed.try_emplace(change->table.get());
    Rewrite& rewrite = entry->second;
    if (added) {
      auto renamed = std::make_shared<TableSchema>(*change->table);
      renamed->schema = move->to_schema;
      renamed->name = move->to_name;
      rewrite.from = change->table;
      rewrite.to = std::move(renamed);
      for (size_t i = 0; i < rewrite.from->columns.size(); ++i) rewrite.kept.push_back(i);
    }
    if (!move->noted) {
      move->noted = true;
      absl::StrAppend(note, note->empty() ? "" : "; ", "rows of ", name,
                      " written before it was renamed ", rewrite.to->QualifiedName(),
                      " come after the rename: they go to the new name");
    }
    Apply(rewrite, change);
    at = move->order;
  }

  const TableSchema& table = *change->table;
  const std::string name = table.QualifiedName();
  auto found = shapes_.find(name);
  if (found == shapes_.end()) {
    Remember(table, order, &shapes_[name]);
    return Verdict::kHandOn;
  }
  Shape& known = found->second;
  auto knows = [&](const Column& c) {
    for (const auto& [known_name, known_oid] : known.columns) {
      if (known_name == c.name && (known_oid == 0 || known_oid == c.type_oid)) return true;
    }
    return false;
  };
  bool all_known = true;
  for (const Column& c : table.columns) all_known = all_known && knows(c);
  if (all_known) return Verdict::kHandOn;
  if (known.from_ddl && order < known.order) {
    // Written before the DDL that set the last shape: without the columns it dropped.
    if (known.narrowed.size() >= kMaxRewrites) known.narrowed.clear();
    auto [entry, added] = known.narrowed.try_emplace(change->table.get());
    Rewrite& rewrite = entry->second;
    if (added) {
      auto narrowed = std::make_shared<TableSchema>(table);
      narrowed->columns.clear();
      for (size_t i = 0; i < table.columns.size(); ++i) {
        bool kept = false;
        for (const auto& [known_name, known_oid] : known.columns) {
          kept = kept || known_name == table.columns[i].name;
        }
        if (!kept) continue;
        narrowed->columns.push_back(table.columns[i]);
        rewrite.kept.push_back(i);
      }
      rewrite.from = change->table;
      rewrite.to = std::move(narrowed);
    }
    Apply(rewrite, change);
    return Verdict::kHandOn;
  }
  if (!known.accept_next && ddl_wait_.count() > 0) return Verdict::kHold;
  if (ddl_wait_.count() > 0) {
    absl::StrAppend(note, note->empty() ? "" : "; ", "a row of ", name,
                    " has a column its last shape lacks, and no DDL event describing the "
                    "change came within ddl_wait (",
                    ddl_wait_.count(), "ms): it goes on as it is");
  }
  Remember(table, order, &known);
  return Verdict::kHandOn;
}

std::vector<std::string> ShapeGate::NoteDdl(const Change& change) {
  std::vector<std::string> touched;
  if (change.ddl == nullptr || !change.ddl->IsTable()) return touched;
  const DdlCommand& cmd = *change.ddl;
  const Order order = OrderOf(change);
  auto add_move = [&](const std::string& from, Move move) {
    std::vector<Move>& list = moves_[from];
    if (list.size() >= kMaxMovesPerTable) list.erase(list.begin());
    move.order = order;
    list.push_back(std::move(move));
    touched.push_back(from);
  };
  if (cmd.dropped) {
    Move drop;
    drop.dropped = true;
    add_move(absl::StrCat(cmd.schema, ".", cmd.name), std::move(drop));
    return touched;
  }
  if (!cmd.table.has_value()) return touched;
  const DdlTableShape& now = *cmd.table;
  if (cmd.old_table.has_value() &&
      (cmd.old_table->schema != now.schema || cmd.old_table->name != now.name)) {
    Move rename;
    rename.to_schema = now.schema;
    rename.to_name = now.name;
    add_move(absl::StrCat(cmd.old_table->schema, ".", cmd.old_table->name), std::move(rename));
  }
  const std::string name = absl::StrCat(now.schema, ".", now.name);
  Shape& known = shapes_[name];
  known.columns.clear();
  // The DDL's types are format_type text, the rows' OIDs: a column a DDL names is known
  // whatever the type the rows give it.
  for (const DdlColumn& c : now.columns) known.columns.emplace_back(c.name, 0);
  known.order = order;
  known.from_ddl = true;
  known.accept_next = false;
  known.narrowed.clear();
  touched.push_back(name);
  return touched;
}

void ShapeGate::AcceptNextShape(const std::string& table) { shapes_[table].accept_next = true; }

}  // namespace pgflow
