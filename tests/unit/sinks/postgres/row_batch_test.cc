#include "sinks/postgres/row_batch.h"

#include <string>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

Value V(const std::string& s) { return Value::Text(oid::kText, s); }

TEST(PostgresRowBatchTest, TakeMovesEverythingOutAndLeavesItCleared) {
  TargetTable table;
  TableSchema schema;
  RowBatch batch(RowBatch::Kind::kUpdate);
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(batch.table(), nullptr);
  batch.Use(&table, &schema);
  batch.set_columns({1, 2});
  batch.AddUpdate(PendingUpdate{{}, {V("1"), V("a"), V("b")}});
  batch.AddKey("1");
  EXPECT_EQ(batch.size(), 1u);
  EXPECT_TRUE(batch.HasKey("1"));

  RowBatch taken = batch.Take();
  EXPECT_EQ(taken.kind(), RowBatch::Kind::kUpdate);
  EXPECT_EQ(taken.table(), &table);
  EXPECT_EQ(taken.schema(), &schema);
  EXPECT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken.columns(), (std::vector<size_t>{1, 2}));
  EXPECT_TRUE(taken.HasKey("1"));

  EXPECT_EQ(batch.kind(), RowBatch::Kind::kUpdate);
  EXPECT_EQ(batch.table(), nullptr);
  EXPECT_EQ(batch.schema(), nullptr);
  EXPECT_TRUE(batch.empty());
  EXPECT_TRUE(batch.columns().empty());
  EXPECT_FALSE(batch.HasKey("1"));
}

TEST(PostgresRowBatchTest, ClearForgetsRowsKeysAndTable) {
  TargetTable table;
  RowBatch batch(RowBatch::Kind::kUpsert);
  batch.Use(&table, nullptr);
  batch.AddRow({V("1")});
  batch.AddRow({V("2")});
  batch.AddKey("1");
  EXPECT_EQ(batch.size(), 2u);
  batch.Clear();
  EXPECT_EQ(batch.kind(), RowBatch::Kind::kUpsert);
  EXPECT_TRUE(batch.empty());
  EXPECT_TRUE(batch.rows().empty());
  EXPECT_EQ(batch.table(), nullptr);
  EXPECT_FALSE(batch.HasKey("1"));
}

TEST(PostgresRowBatchTest, ReadRowsAsBinaryCopyTuples) {
  RowBatch batch(RowBatch::Kind::kRead);
  batch.AddTuple({V("ab"), Value::Null(oid::kText)});
  batch.AddTuple({V("")});
  EXPECT_EQ(batch.size(), 2u);
  // Field count (int16), then per field its length (int32, -1 for NULL) and bytes.
  const std::string expected = std::string("\0\2", 2) + std::string("\0\0\0\2ab", 6) +
                               std::string("\377\377\377\377", 4) + std::string("\0\1", 2) +
                               std::string("\0\0\0\0", 4);
  EXPECT_EQ(batch.tuples(), expected);
  batch.Clear();
  EXPECT_TRUE(batch.tuples().empty());
  EXPECT_EQ(batch.size(), 0u);
}

}  // namespace
}  // namespace pgflow
