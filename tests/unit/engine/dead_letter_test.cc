#include "engine/dead_letter.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "schemas/table_schema.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

class DeadLetterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgflow-dlq-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/rejected.jsonl";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // An insert of (id, note) into public.items, in the transaction committed at `lsn`.
  static Change Insert(int id, const std::string& note, uint64_t lsn) {
    auto table = std::make_shared<TableSchema>();
    table->schema = "public";
    table->name = "items";
    table->columns = {Column{"id", oid::kInt4, -1, true, ""},
                      Column{"note", oid::kText, -1, false, ""}};
    Change change;
    change.op = Op::kInsert;
    change.table = table;
    change.after = {Value::Text(oid::kInt4, std::to_string(id)), Value::Text(oid::kText, note)};
    change.txn.commit_lsn = Lsn(lsn);
    change.sequence = 2;
    return change;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(DeadLetterTest, ARecordKeepsTheEventItsTableAndTheReason) {
  DeadLetter l = MakeDeadLetter("shop", "search", Insert(7, "a \"quoted\"\nnote", 0x16B3748), "7",
                                "document 7 refused (HTTP 400): mapper_parsing_exception", "400");
  EXPECT_EQ(l.event_id, "0/16B3748:2");
  EXPECT_EQ(l.lsn, "0/16B3748");
  EXPECT_EQ(l.table, "public.items");
  EXPECT_EQ(l.operation, "insert");
  EXPECT_THAT(l.change, HasSubstr(R"("after":{"id":7,"note":"a \"quoted\"\nnote"})"));
  l.change += " ";  // kept byte for byte, numbers and spacing included
  EXPECT_THAT(l.schema, HasSubstr(R"("columns":[["id",23,-1,1],["note",25,-1,0]])"));
  l.id = 3;
  l.recorded_at = "2026-11-24T10:00:00.000Z";
  const std::string line = DeadLetterJson(l);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  absl::StatusOr<DeadLetter> back = ParseDeadLetterJson(line);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, 3u);
  EXPECT_EQ(back->reason, l.reason);
  EXPECT_EQ(back->key, "7");
  EXPECT_EQ(back->recorded_at, l.recorded_at);
  EXPECT_EQ(back->change, l.change);
  EXPECT_EQ(back->schema, l.schema);
  EXPECT_EQ(DeadLetterJson(*back), line);
  EXPECT_FALSE(ParseDeadLetterJson("{\"sink\":\"x\"}").ok());
  EXPECT_FALSE(ParseDeadLetterJson("not json").ok());
}

TEST_F(DeadLetterTest, TheFileStoreNumbersDeduplicatesListsAndRemoves) {
  std::unique_ptr<DeadLetterStore> store = NewFileDeadLetterStore(path_);
  EXPECT_EQ(store->Describe(), "file " + path_);
  absl::StatusOr<std::vector<DeadLetter>> none = store->List("shop", "");
  ASSERT_TRUE(none.ok());  // no file yet: no records
  EXPECT_TRUE(none->empty());

  DeadLetter a = MakeDeadLetter("shop", "search", Insert(1, "x", 100), "1", "refused", "400");
  DeadLetter b = MakeDeadLetter("shop", "hooks", Insert(2, "y", 200), "2", "gone", "410");
  DeadLetter c = MakeDeadLetter("other", "search", Insert(3, "z", 300), "3", "refused", "400");
  ASSERT_TRUE(store->Record(a).ok());
  ASSERT_TRUE(store->Record(b).ok());
  ASSERT_TRUE(store->Record(c).ok());
  EXPECT_EQ(a.id, 1u);
  EXPECT_EQ(b.id, 2u);
  EXPECT_EQ(c.id, 3u);
  // The same event again (a restart replays it): the record there keeps its place.
  DeadLetter again = MakeDeadLetter("shop", "search", Insert(1, "x", 100), "1", "refused", "400");
  ASSERT_TRUE(store->Record(again).ok());
  EXPECT_EQ(again.id, 1u);

  // Another store on the same file (another sink, or `pgflow dlq` beside a running pipeline).
  std::unique_ptr<DeadLetterStore> other = NewFileDeadLetterStore(path_);
  DeadLetter d = MakeDeadLetter("shop", "search", Insert(4, "w", 400), "4", "refused", "400");
  ASSERT_TRUE(other->Record(d).ok());
  EXPECT_EQ(d.id, 4u);
  absl::StatusOr<std::vector<DeadLetter>> shop = store->List("shop", "");
  ASSERT_TRUE(shop.ok()) << shop.status();
  ASSERT_EQ(shop->size(), 3u);
  EXPECT_EQ((*shop)[2].key, "4");
  absl::StatusOr<std::vector<DeadLetter>> search = store->List("shop", "search");
  ASSERT_TRUE(search.ok());
  EXPECT_EQ(search->size(), 2u);

  // Removing rewrites the file; the first store sees it and goes on numbering after it.
  absl::StatusOr<size_t> removed = other->Remove("shop", {1, 3 /* another pipeline's */});
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1u);
  DeadLetter e = MakeDeadLetter("shop", "search", Insert(5, "v", 500), "5", "refused", "400");
  ASSERT_TRUE(store->Record(e).ok());
  EXPECT_EQ(e.id, 5u);
  shop = store->List("shop", "");
  ASSERT_TRUE(shop.ok());
  std::vector<uint64_t> ids;
  for (const DeadLetter& l : *shop) ids.push_back(l.id);
  EXPECT_EQ(ids, (std::vector<uint64_t>{2, 4, 5}));
  absl::StatusOr<std::vector<DeadLetter>> others = store->List("other", "");
  ASSERT_TRUE(others.ok());
  EXPECT_EQ(others->size(), 1u);
}

TEST_F(DeadLetterTest, OneEventRefusedByTwoEndpointsIsRecordedForEach) {
  std::unique_ptr<DeadLetterStore> store = NewFileDeadLetterStore(path_);
  DeadLetter a = MakeDeadLetter("shop", "hooks", Insert(1, "x", 100), "1", "refused", "400");
  a.destination = "http://a.example/hook";
  DeadLetter b = a;
  b.destination = "http://b.example/hook";
  ASSERT_TRUE(store->Record(a).ok());
  ASSERT_TRUE(store->Record(b).ok());
  EXPECT_EQ(a.id, 1u);
  EXPECT_EQ(b.id, 2u);  // replayed, each goes to its own endpoint
  DeadLetter again = b;
  ASSERT_TRUE(store->Record(again).ok());
  EXPECT_EQ(again.id, 2u);
}

TEST_F(DeadLetterTest, ATornLastLineIsCutOffAndDamageElsewhereIsNamed) {
  std::unique_ptr<DeadLetterStore> store = NewFileDeadLetterStore(path_);
  DeadLetter a = MakeDeadLetter("shop", "search", Insert(1, "x", 100), "1", "refused", "400");
  ASSERT_TRUE(store->Record(a).ok());
  { std::ofstream(path_, std::ios::app) << "{\"id\":2,\"pipel"; }  // a crash mid-append
  std::unique_ptr<DeadLetterStore> reopened = NewFileDeadLetterStore(path_);
  absl::StatusOr<std::vector<DeadLetter>> all = reopened->List("shop", "");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 1u);
  // The next record goes where the torn line was: the file stays readable.
  DeadLetter b = MakeDeadLetter("shop", "search", Insert(2, "y", 200), "2", "refused", "400");
  ASSERT_TRUE(reopened->Record(b).ok());
  EXPECT_EQ(b.id, 2u);
  all = store->List("shop", "");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 2u);
  { std::ofstream(path_, std::ios::app) << "garbage\n" << DeadLetterJson(a) << "\n"; }
  all = reopened->List("shop", "");
  ASSERT_FALSE(all.ok());
  EXPECT_THAT(all.status().message(), HasSubstr(path_ + ":3: not a dead-letter record"));
}

TEST_F(DeadLetterTest, IdsAreNeverGivenTwiceAfterAPurge) {
  std::unique_ptr<DeadLetterStore> store = NewFileDeadLetterStore(path_);
  DeadLetter a = MakeDeadLetter("shop", "search", Insert(1, "x", 100), "1", "refused", "400");
  DeadLetter b = MakeDeadLetter("shop", "search", Insert(2, "y", 200), "2", "refused", "400");
  ASSERT_TRUE(store->Record(a).ok());
  ASSERT_TRUE(store->Record(b).ok());
  absl::StatusOr<size_t> removed = NewFileDeadLetterStore(path_)->Remove("shop", {1, 2});
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2u);
  DeadLetter c = MakeDeadLetter("shop", "search", Insert(3, "z", 300), "3", "refused", "400");
  ASSERT_TRUE(NewFileDeadLetterStore(path_)->Record(c).ok());
  EXPECT_EQ(c.id, 3u);
  ASSERT_TRUE(store->Record(a).ok());  // recorded again after its removal: a new record
  EXPECT_EQ(a.id, 4u);
}

TEST_F(DeadLetterTest, ATableNeedsADatabase) {
  absl::StatusOr<std::unique_ptr<DeadLetterStore>> store =
      OpenDeadLetterStore(DeadLetterConfig{"", "pgflow.dead_letters", ""}, "", "sinks.s.dead_letter");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(),
              HasSubstr("sinks.s.dead_letter.table: the source is not a PostgreSQL database"));
}

}  // namespace
}  // namespace pgflow
