#include "sources/kafka/read_order.h"

#include <gtest/gtest.h>

namespace pgflow {
namespace {

const TopicPartition kP{"shop.public.orders", 1};
const TopicPartition kQ{"shop.public.orders", 2};

TEST(ReadOrderTest, MessagesInOrderGoOnFromTheStartOffset) {
  ReadOrder order;
  order.Start(kP, 10);
  EXPECT_EQ(order.Check(kP, 10), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 11), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.expected(kP), 12);
}

TEST(ReadOrderTest, ALogicalStartTakesTheFirstMessageAsItComes) {
  ReadOrder order;
  order.Start(kP, std::nullopt);
  EXPECT_EQ(order.Check(kP, 1234), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 1236), ReadOrder::Verdict::kGap);
}

TEST(ReadOrderTest, AMessageFetchedAgainIsARepeatAndDoesNotMoveThePartition) {
  ReadOrder order;
  order.Start(kP, 0);
  for (int64_t o = 0; o < 5; ++o) ASSERT_EQ(order.Check(kP, o), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 2), ReadOrder::Verdict::kRepeat);
  EXPECT_EQ(order.Check(kP, 4), ReadOrder::Verdict::kRepeat);
  EXPECT_EQ(order.expected(kP), 5);
  EXPECT_EQ(order.Check(kP, 5), ReadOrder::Verdict::kNext);
}

TEST(ReadOrderTest, AGapIsReadAgainAndMessagesFoundThenGoOn) {
  ReadOrder order;
  order.Start(kP, 7);
  EXPECT_EQ(order.Check(kP, 9), ReadOrder::Verdict::kGap);
  EXPECT_EQ(order.expected(kP), 7);
  // Stale messages fetched before the seek are gaps too, not accepted.
  EXPECT_EQ(order.Check(kP, 10), ReadOrder::Verdict::kGap);
  // Read again: the missing message comes.
  EXPECT_EQ(order.Check(kP, 7), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 8), ReadOrder::Verdict::kNext);
}

TEST(ReadOrderTest, TheSameGapAfterReadingAgainIsTheTopicsOwn) {
  ReadOrder order;
  order.Start(kP, 7);
  EXPECT_EQ(order.Check(kP, 9), ReadOrder::Verdict::kGap);
  EXPECT_EQ(order.Check(kP, 9), ReadOrder::Verdict::kOwnGap);
  EXPECT_EQ(order.Check(kP, 10), ReadOrder::Verdict::kNext);
  // The partition has gaps of its own (compaction): later ones are taken as they come, but
  // repeats are still dropped.
  EXPECT_EQ(order.Check(kP, 12), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 12), ReadOrder::Verdict::kRepeat);
  EXPECT_EQ(order.Check(kQ, 0), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kQ, 2), ReadOrder::Verdict::kGap);  // another partition: checked
  // A new assignment checks afresh.
  order.Start(kP, 20);
  EXPECT_EQ(order.Check(kP, 22), ReadOrder::Verdict::kGap);
}

TEST(ReadOrderTest, PartitionsAreApartAndAReassignmentStartsAfresh) {
  ReadOrder order;
  order.Start(kP, 0);
  order.Start(kQ, 100);
  EXPECT_EQ(order.Check(kQ, 100), ReadOrder::Verdict::kNext);
  EXPECT_EQ(order.Check(kP, 0), ReadOrder::Verdict::kNext);
  order.Forget(kP);
  order.Start(kP, 50);
  EXPECT_EQ(order.Check(kP, 1), ReadOrder::Verdict::kRepeat);
  EXPECT_EQ(order.Check(kP, 50), ReadOrder::Verdict::kNext);
}

}  // namespace
}  // namespace pgflow
