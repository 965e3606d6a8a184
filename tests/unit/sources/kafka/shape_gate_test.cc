// The kafka source's schema-change gate: rows and DDL events read in either order come out as
// a target that replays the DDL can take them.

#include "sources/kafka/shape_gate.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "schemas/ddl.h"

namespace pgflow {
namespace {

using Verdict = ShapeGate::Verdict;
using std::chrono::milliseconds;

TableSchemaPtr Table(const std::string& name, const std::vector<std::string>& columns) {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = name;
  for (const std::string& c : columns)
    t->columns.push_back(Column{c, oid::kInt4, -1, c == "id", ""});
  return t;
}

// A row change of `table` at (lsn, seq), every column set to its name.
Change Row(TableSchemaPtr table, uint64_t lsn, uint64_t seq, Op op = Op::kUpdate) {
  Change c;
  c.op = op;
  c.txn.commit_lsn = Lsn(lsn);
  c.sequence = seq;
  for (const Column& col : table->columns) c.after.push_back(Value::Text(col.type_oid, col.name));
  if (op == Op::kUpdate || op == Op::kDelete) {
    c.before = c.after;
    c.before_kind = BeforeKind::kKey;
  }
  c.table = std::move(table);
  return c;
}

// The DDL event of a command on table `name` leaving `columns`, at (lsn, seq).
Change Ddl(const std::string& name, const std::vector<std::string>& columns, uint64_t lsn,
           uint64_t seq, const std::string& old_name = "", bool dropped = false) {
  DdlCommand cmd;
  cmd.tag = dropped ? "DROP TABLE" : "ALTER TABLE";
  cmd.object_type = "table";
  cmd.schema = "public";
  cmd.name = name;
  cmd.dropped = dropped;
  if (!dropped) {
    DdlTableShape shape;
    shape.schema = "public";
    shape.name = name;
    for (const std::string& c : columns) {
      DdlColumn column;
      column.name = c;
      column.type = "integer";
      shape.columns.push_back(column);
    }
    cmd.table = shape;
    if (!old_name.empty()) {
      shape.name = old_name;
      cmd.old_table = shape;
    }
  }
  Change c;
  c.op = Op::kDdl;
  c.txn.commit_lsn = Lsn(lsn);
  c.sequence = seq;
  c.ddl = std::make_shared<const DdlCommand>(std::move(cmd));
  return c;
}

std::vector<std::string> Columns(const Change& c) {
  std::vector<std::string> names;
  for (const Column& col : c.table->columns) names.push_back(col.name);
  EXPECT_EQ(c.after.size(), names.size());
  if (!c.before.empty()) {
    EXPECT_EQ(c.before.size(), names.size());
  }
  for (size_t i = 0; i < c.after.size() && i < names.size(); ++i) {
    EXPECT_EQ(c.after[i].data, names[i]);  // each value stayed with its column
  }
  return names;
}

TEST(ShapeGateTest, ARowOfTheDropsOwnTransactionReadAfterItLosesTheDroppedColumn) {
  // BEGIN; UPDATE t SET new = old; ALTER TABLE t DROP COLUMN old; COMMIT, the DDL event read
  // first: the UPDATE's row shares the DDL's commit LSN and comes before it by sequence.
  ShapeGate gate(milliseconds(30000));
  std::string note;
  Change first = Row(Table("t", {"id", "old", "new"}), 100, 0);
  EXPECT_EQ(gate.Check(&first, &note), Verdict::kHandOn);
  gate.NoteDdl(Ddl("t", {"id", "new"}, 200, 5));
  Change update = Row(Table("t", {"id", "old", "new"}), 200, 3);
  EXPECT_EQ(gate.Check(&update, &note), Verdict::kHandOn);
  EXPECT_EQ(Columns(update), (std::vector<std::string>{"id", "new"}));
  // After the DDL in that transaction, a row of the old shape would be new: it waits.
  Change later = Row(Table("t", {"id", "old", "new"}), 200, 7);
  EXPECT_EQ(gate.Check(&later, &note), Verdict::kHold);
}

TEST(ShapeGateTest, ANewColumnWaitsForItsDdlUnlessTheWaitRanOut) {
  ShapeGate gate(milliseconds(30000));
  std::string note;
  Change first = Row(Table("t", {"id"}), 100, 0);
  EXPECT_EQ(gate.Check(&first, &note), Verdict::kHandOn);
  Change wider = Row(Table("t", {"id", "extra"}), 300, 1);
  EXPECT_EQ(gate.Check(&wider, &note), Verdict::kHold);
  EXPECT_EQ(gate.NoteDdl(Ddl("t", {"id", "extra"}, 300, 0)), std::vector<std::string>{"public.t"});
  EXPECT_EQ(gate.Check(&wider, &note), Verdict::kHandOn);
  EXPECT_TRUE(note.empty());

  Change widest = Row(Table("t", {"id", "extra", "more"}), 400, 1);
  EXPECT_EQ(gate.Check(&widest, &note), Verdict::kHold);
  gate.AcceptNextShape("public.t");
  EXPECT_EQ(gate.Check(&widest, &note), Verdict::kHandOn);
  EXPECT_NE(note.find("no DDL event describing the change came within ddl_wait"),
            std::string::npos);

  ShapeGate no_wait(milliseconds(0));
  Change a = Row(Table("u", {"id"}), 1, 0);
  Change b = Row(Table("u", {"id", "extra"}), 2, 0);
  EXPECT_EQ(no_wait.Check(&a, &note), Verdict::kHandOn);
  EXPECT_EQ(no_wait.Check(&b, &note), Verdict::kHandOn);
}

TEST(ShapeGateTest, RowsOfOneVersionShareOneNarrowedTable) {
  ShapeGate gate(milliseconds(30000));
  std::string note;
  TableSchemaPtr old_shape = Table("t", {"id", "gone", "kept"});
  Change first = Row(old_shape, 100, 0);
  gate.Check(&first, &note);
  gate.NoteDdl(Ddl("t", {"id", "kept"}, 500, 0));
  Change a = Row(old_shape, 200, 0, Op::kDelete);
  Change b = Row(old_shape, 300, 0);
  EXPECT_EQ(gate.Check(&a, &note), Verdict::kHandOn);
  EXPECT_EQ(gate.Check(&b, &note), Verdict::kHandOn);
  EXPECT_EQ(Columns(a), (std::vector<std::string>{"id", "kept"}));
  EXPECT_EQ(a.table, b.table);  // one version, not one per row
  EXPECT_TRUE(a.table->columns[0].is_key);
}

TEST(ShapeGateTest, RowsWrittenBeforeTheirTablesDropAreDropped) {
  ShapeGate gate(milliseconds(30000));
  std::string note;
  TableSchemaPtr t = Table("t", {"id"});
  Change first = Row(t, 100, 0);
  EXPECT_EQ(gate.Check(&first, &note), Verdict::kHandOn);
  EXPECT_EQ(gate.NoteDdl(Ddl("t", {}, 300, 2, "", /*dropped=*/true)),
            std::vector<std::string>{"public.t"});
  Change before = Row(t, 300, 1, Op::kInsert);
  EXPECT_EQ(gate.Check(&before, &note), Verdict::kDrop);
  EXPECT_NE(note.find("written before the table was dropped"), std::string::npos);
  Change again = Row(t, 200, 0, Op::kInsert);
  EXPECT_EQ(gate.Check(&again, &note), Verdict::kDrop);
  EXPECT_TRUE(note.empty());  // said once
  // A table of that name created since is another table.
  Change after = Row(t, 400, 0, Op::kInsert);
  EXPECT_EQ(gate.Check(&after, &note), Verdict::kHandOn);
}

TEST(ShapeGateTest, RowsWrittenBeforeARenameGoToTheNewName) {
  ShapeGate gate(milliseconds(30000));
  std::string note;
  TableSchemaPtr a = Table("a", {"id", "x"});
  Change first = Row(a, 100, 0);
  gate.Check(&first, &note);
  // a renamed b, then b renamed c dropping x: an old row of a ends as a row of c without x.
  EXPECT_EQ(gate.NoteDdl(Ddl("b", {"id", "x"}, 200, 0, "a")),
            (std::vector<std::string>{"public.a", "public.b"}));
  gate.NoteDdl(Ddl("c", {"id"}, 300, 0, "b"));
  Change old_row = Row(a, 150, 0);
  EXPECT_EQ(gate.Check(&old_row, &note), Verdict::kHandOn);
  EXPECT_EQ(old_row.table->QualifiedName(), "public.c");
  EXPECT_EQ(Columns(old_row), (std::vector<std::string>{"id"}));
  EXPECT_NE(note.find("written before it was renamed public.b"), std::string::npos);
  // Written between the two renames, under the name b.
  Change mid = Row(Table("b", {"id", "x"}), 250, 0);
  EXPECT_EQ(gate.Check(&mid, &note), Verdict::kHandOn);
  EXPECT_EQ(mid.table->QualifiedName(), "public.c");
  // A new table a, after the rename: left alone.
  Change fresh = Row(Table("a", {"id", "x"}), 400, 0);
  EXPECT_EQ(gate.Check(&fresh, &note), Verdict::kHandOn);
  EXPECT_EQ(fresh.table->QualifiedName(), "public.a");
}

TEST(ShapeGateTest, RenamesBackAndForthEnd) {
  ShapeGate gate(milliseconds(30000));
  std::string note;
  gate.NoteDdl(Ddl("b", {"id"}, 200, 0, "a"));
  gate.NoteDdl(Ddl("a", {"id"}, 300, 0, "b"));
  Change row = Row(Table("a", {"id"}), 100, 0);
  EXPECT_EQ(gate.Check(&row, &note), Verdict::kHandOn);
  EXPECT_EQ(row.table->QualifiedName(), "public.a");  // a -> b -> a, and no further
}

}  // namespace
}  // namespace pgflow
