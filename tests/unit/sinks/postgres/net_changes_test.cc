#include "sinks/postgres/net_changes.h"

#include <map>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

using Kind = NetChanges::Kind;

// Rows of (id, name, doc): `doc` stands for a TOASTed column, unknown in updates that left it.
Value V(const std::string& s) { return Value::Text(oid::kText, s); }
Value Unknown() { return Value::UnchangedToast(oid::kText); }
Row R(const std::string& id, Value name, Value doc) {
  return Row{V(id), std::move(name), std::move(doc)};
}

Change Insert(Row after) {
  Change c;
  c.op = Op::kInsert;
  c.after = std::move(after);
  return c;
}
// An update under REPLICA IDENTITY DEFAULT: `before` holds the old key only when it changed.
Change Update(Row after, std::optional<std::string> old_key = std::nullopt) {
  Change c;
  c.op = Op::kUpdate;
  c.after = std::move(after);
  if (old_key) {
    c.before_kind = BeforeKind::kKey;
    c.before = Row{V(*old_key), Value::Null(oid::kText), Value::Null(oid::kText)};
  }
  return c;
}
Change Delete(const std::string& id) {
  Change c;
  c.op = Op::kDelete;
  c.before_kind = BeforeKind::kKey;
  c.before = Row{V(id), Value::Null(oid::kText), Value::Null(oid::kText)};
  return c;
}

TEST(NetChangesTest, InsertThenUpdatesIsOneUpsertWithTheLastValues) {
  NetChanges net({0});
  ASSERT_TRUE(net.Fold(Insert(R("7", V("a"), V("big")))));
  ASSERT_TRUE(net.Fold(Update(R("7", V("b"), Unknown()))));
  ASSERT_TRUE(net.Fold(Update(R("7", V("c"), Unknown()))));
  ASSERT_EQ(net.size(), 1u);
  EXPECT_EQ(net.entries()[0].kind, Kind::kUpsert);
  EXPECT_EQ(net.entries()[0].row, R("7", V("c"), V("big")));
}

TEST(NetChangesTest, InsertThenDeleteIsADelete) {
  NetChanges net({0});
  ASSERT_TRUE(net.Fold(Insert(R("8", V("a"), V("x")))));
  ASSERT_TRUE(net.Fold(Delete("8")));
  ASSERT_EQ(net.size(), 1u);
  EXPECT_EQ(net.entries()[0].kind, Kind::kDelete);
  EXPECT_EQ(net.entries()[0].row[0], V("8"));
}

TEST(NetChangesTest, ARowDeletedThenInsertedReplacesTheTargetsRow) {
  NetChanges net({0});
  ASSERT_TRUE(net.Fold(Insert(R("3", V("a"), V("x")))));
  EXPECT_FALSE(net.entries()[0].replaces);
  ASSERT_TRUE(net.Fold(Delete("3")));
  ASSERT_TRUE(net.Fold(Insert(R("3", V("b"), V("y")))));
  ASSERT_TRUE(net.Fold(Update(R("3", V("c"), Unknown()))));
  ASSERT_EQ(net.size(), 1u);
  EXPECT_EQ(net.entries()[0].kind, Kind::kUpsert);
  EXPECT_TRUE(net.entries()[0].replaces);
  // Carried over when a later transaction's net changes are absorbed.
  NetChanges group({0});
  ASSERT_TRUE(group.Fold(Update(R("3", V("z"), V("z")))));
  group.Absorb(net);
  EXPECT_TRUE(group.entries()[0].replaces);
  EXPECT_EQ(group.entries()[0].row, R("3", V("c"), V("y")));
}

TEST(NetChangesTest, UpdatesWithUnknownValuesStayAnUpdateOfTheColumnsEitherSet) {
  NetChanges net({0});
  ASSERT_TRUE(net.Fold(Update(R("9", V("a"), Unknown()))));
  ASSERT_TRUE(net.Fold(Update(R("9", V("b"), Unknown()))));
  ASSERT_EQ(net.size(), 1u);
  EXPECT_EQ(net.entries()[0].kind, Kind::kUpdate);
  EXPECT_EQ(net.entries()[0].row, R("9", V("b"), Unknown()));
  // Once every value is known, the row is known whole.
  ASSERT_TRUE(net.Fold(Update(R("9", V("c"), V("doc")))));
  EXPECT_EQ(net.entries()[0].kind, Kind::kUpsert);
}

TEST(NetChangesTest, AKeyMoveWithUnknownValuesIsRefusedUnlessTheOldRowIsHeld) {
  NetChanges net({0});
  EXPECT_FALSE(net.Fold(Update(R("2", V("a"), Unknown()), "1")));
  EXPECT_TRUE(net.empty());
  ASSERT_TRUE(net.Fold(Insert(R("1", V("a"), V("doc")))));
  ASSERT_TRUE(net.Fold(Update(R("2", V("b"), Unknown()), "1")));
  ASSERT_EQ(net.size(), 2u);
  EXPECT_EQ(net.entries()[0].kind, Kind::kDelete);
  EXPECT_EQ(net.entries()[1].kind, Kind::kUpsert);
  EXPECT_EQ(net.entries()[1].row, R("2", V("b"), V("doc")));
}

TEST(NetChangesTest, ChangesWithoutTheirKeyAreRefused) {
  NetChanges net({0});
  EXPECT_FALSE(net.Fold(Insert(Row{Value::Null(oid::kText), V("a"), V("b")})));
  Change keyless_delete;
  keyless_delete.op = Op::kDelete;
  EXPECT_FALSE(net.Fold(keyless_delete));
  EXPECT_TRUE(net.empty());
}

// The target's rows, applied one change at a time as the sink does without folding.
using State = std::map<std::string, Row>;

void ApplyInOrder(State& target, const Change& c) {
  auto known = [](const Row& r) {
    for (const Value& v : r) {
      if (v.is_unchanged_toast()) return false;
    }
    return true;
  };
  switch (c.op) {
    case Op::kInsert:
      target[c.after[0].data] = c.after;
      break;
    case Op::kDelete:
      target.erase(c.before[0].data);
      break;
    case Op::kUpdate: {
      const std::string old_key =
          c.before_kind == BeforeKind::kNone ? c.after[0].data : c.before[0].data;
      auto it = target.find(old_key);
      if (it == target.end()) {
        if (known(c.after)) target[c.after[0].data] = c.after;
        break;
      }
      Row row = it->second;
      for (size_t i = 0; i < row.size(); ++i) {
        if (!c.after[i].is_unchanged_toast()) row[i] = c.after[i];
      }
      target.erase(it);
      target[row[0].data] = row;
      break;
    }
    default:
      break;
  }
}

// What the sink sends for the net changes: deletes, then updates (of the rows present), then
// upserts.
void ApplyNet(State& target, const NetChanges& net) {
  for (const NetChanges::Entry& e : net.entries()) {
    if (e.kind == Kind::kDelete || e.replaces) target.erase(e.row[0].data);
  }
  for (const NetChanges::Entry& e : net.entries()) {
    if (e.kind != Kind::kUpdate) continue;
    auto it = target.find(e.row[0].data);
    if (it == target.end()) continue;
    for (size_t i = 0; i < e.row.size(); ++i) {
      if (!e.row[i].is_unchanged_toast()) it->second[i] = e.row[i];
    }
  }
  for (const NetChanges::Entry& e : net.entries()) {
    if (e.kind == Kind::kUpsert) target[e.row[0].data] = e.row;
  }
}

// Random source histories: the net changes of each transaction, absorbed into a group,
// applied to the target give the source's final state, as applying every change in order does.
TEST(NetChangesTest, FoldedTransactionsReachTheSameStateAsChangesInOrder) {
  std::mt19937 rng(20261123);
  for (int round = 0; round < 300; ++round) {
    State source;
    for (int k = 0; k < 6; ++k) {
      const std::string id = std::to_string(k);
      source[id] = R(id, V("n" + id), V("d" + id));
    }
    State in_order = source;
    State folded = source;
    NetChanges group({0});
    int next_value = 0;
    for (int txn = 0; txn < 4; ++txn) {
      NetChanges current({0});
      const int changes = 1 + static_cast<int>(rng() % 12);
      for (int i = 0; i < changes; ++i) {
        const std::string id = std::to_string(rng() % 10);
        const std::string fresh = std::to_string(++next_value);
        Change c;
        auto present = source.find(id);
        if (present == source.end()) {
          c = Insert(R(id, V("n" + fresh), V("d" + fresh)));
        } else if (rng() % 4 == 0) {
          c = Delete(id);
        } else {
          const std::string to = rng() % 4 == 0 ? std::to_string(rng() % 10) : id;
          if (to != id && source.contains(to)) continue;  // the key is taken
          Row after = present->second;
          after[0] = V(to);
          after[1] = V("n" + fresh);
          after[2] = rng() % 2 == 0 ? V("d" + fresh) : Unknown();
          c = Update(std::move(after), to != id ? std::optional<std::string>(id) : std::nullopt);
        }
        ApplyInOrder(source, c);  // keeps the unchanged value, which the source knows
        ApplyInOrder(in_order, c);
        if (!current.Fold(c)) {
          // What the sink does: send what it holds, then the change on its own.
          ApplyNet(folded, group);
          group.Clear();
          ApplyNet(folded, current);
          current.Clear();
          ApplyInOrder(folded, c);
        }
      }
      group.Absorb(current);
      EXPECT_TRUE(current.empty());
    }
    ApplyNet(folded, group);
    ASSERT_EQ(in_order, source) << "round " << round;
    ASSERT_EQ(folded, source) << "round " << round;
  }
}

}  // namespace
}  // namespace pgflow
