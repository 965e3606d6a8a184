#include "engine/delivery_tracker.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(DeliveryTrackerTest, APositionIsDurableOnlyOnceEveryEarlierMessageIs) {
  DeliveryTracker t;
  uint64_t a = t.Produced();
  uint64_t b = t.Produced();
  t.MarkPosition(Lsn(100));  // commit of a transaction of two messages
  uint64_t c = t.Produced();
  t.MarkPosition(Lsn(200));
  EXPECT_FALSE(t.DurablePosition().IsValid());
  // Partitions complete out of order: the later transaction first.
  t.Delivered(c);
  EXPECT_FALSE(t.DurablePosition().IsValid());
  t.Delivered(b);
  EXPECT_FALSE(t.DurablePosition().IsValid());
  t.Delivered(a);
  EXPECT_EQ(t.DurablePosition(), Lsn(200));
  EXPECT_TRUE(t.AllDelivered());
  EXPECT_EQ(t.Outstanding(), 0u);
}

TEST(DeliveryTrackerTest, PositionsWithNothingProducedAreDurableAtOnce) {
  DeliveryTracker t;
  t.MarkPosition(Lsn(10));
  EXPECT_EQ(t.DurablePosition(), Lsn(10));
  uint64_t a = t.Produced();
  t.MarkPosition(Lsn(20));
  t.MarkPosition(Lsn(30));  // a keepalive while `a` is in flight
  EXPECT_EQ(t.DurablePosition(), Lsn(10));
  t.Delivered(a);
  EXPECT_EQ(t.DurablePosition(), Lsn(30));
}

TEST(DeliveryTrackerTest, ChunksFollowTheirRows) {
  DeliveryTracker t;
  uint64_t r1 = t.Produced();
  t.MarkChunk(1);
  uint64_t r2 = t.Produced();
  t.MarkChunk(2);
  t.Delivered(r2);
  EXPECT_EQ(t.DurableChunk(), 0u);
  t.Delivered(r1);
  EXPECT_EQ(t.DurableChunk(), 2u);
  EXPECT_FALSE(t.DurablePosition().IsValid());
}

TEST(DeliveryTrackerTest, DuplicateAndUnknownReportsAreIgnored) {
  DeliveryTracker t;
  uint64_t a = t.Produced();
  uint64_t b = t.Produced();
  t.MarkPosition(Lsn(5));
  t.Delivered(b);
  t.Delivered(b);
  t.Delivered(999);
  EXPECT_EQ(t.Outstanding(), 1u);
  EXPECT_FALSE(t.DurablePosition().IsValid());
  t.Delivered(a);
  EXPECT_EQ(t.DurablePosition(), Lsn(5));
}

TEST(DeliveryTrackerTest, RandomReportOrderNeverGetsAheadOfAnUndeliveredMessage) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 50; ++round) {
    DeliveryTracker t;
    std::vector<uint64_t> ids;
    std::vector<std::pair<uint64_t, Lsn>> marks;  // (messages before, position)
    for (int txn = 1; txn <= 40; ++txn) {
      int n = static_cast<int>(rng() % 4);
      for (int i = 0; i < n; ++i) ids.push_back(t.Produced());
      marks.emplace_back(ids.size(), Lsn(txn * 100));
      t.MarkPosition(Lsn(txn * 100));
    }
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<bool> delivered(ids.size(), false);
    for (uint64_t id : ids) {
      t.Delivered(id);
      delivered[id] = true;
      // The expected durable position: the last mark whose messages are all delivered.
      size_t prefix = 0;
      while (prefix < delivered.size() && delivered[prefix]) ++prefix;
      Lsn expected;
      for (const auto& [before, position] : marks) {
        if (before <= prefix) expected = position;
      }
      ASSERT_EQ(t.DurablePosition(), expected);
    }
    EXPECT_EQ(t.DurablePosition(), Lsn(4000));
  }
}

}  // namespace
}  // namespace pgflow
