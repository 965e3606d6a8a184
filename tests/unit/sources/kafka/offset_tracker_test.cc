#include "sources/kafka/offset_tracker.h"

#include <algorithm>
#include <map>
#include <random>

#include <gtest/gtest.h>

namespace pgflow {
namespace {

const TopicPartition kA{"shop.public.items", 0};
const TopicPartition kB{"shop.public.items", 1};
const TopicPartition kC{"shop.schema_changes", 0};

std::vector<PartitionOffset> Sorted(std::vector<PartitionOffset> offsets) {
  std::sort(offsets.begin(), offsets.end(), [](const PartitionOffset& x, const PartitionOffset& y) {
    return std::tie(x.partition.topic, x.partition.partition) <
           std::tie(y.partition.topic, y.partition.partition);
  });
  return offsets;
}

TEST(OffsetTrackerTest, CommitsOnlyWhatTheConfirmedPositionCovers) {
  OffsetTracker t;
  t.Add(Lsn(10), kA, 5);
  t.Add(Lsn(10), kB, 0);
  t.Add(Lsn(10), kA, 6);
  t.Add(Lsn(11), kB, 1);
  t.Add(Lsn(12), kA, 7);
  EXPECT_TRUE(t.Commits().empty());
  t.Confirm(Lsn(9));
  EXPECT_TRUE(t.Commits().empty());
  t.Confirm(Lsn(10));
  // The next offset to read: one past the last message every sink holds.
  EXPECT_EQ(Sorted(t.Commits()), (std::vector<PartitionOffset>{{kA, 7}, {kB, 1}}));
  t.MarkCommitted(t.Commits());
  EXPECT_TRUE(t.Commits().empty());
  t.Confirm(Lsn(11));
  EXPECT_EQ(t.Commits(), (std::vector<PartitionOffset>{{kB, 2}}));
  // AllDone does not depend on what was committed.
  EXPECT_EQ(Sorted(t.AllDone()), (std::vector<PartitionOffset>{{kA, 7}, {kB, 2}}));
  EXPECT_EQ(t.pending(), 1u);
  EXPECT_EQ(t.PendingThrough(kA), Lsn(12));
  EXPECT_EQ(t.PendingThrough(kB), std::nullopt);
  // A confirmation that goes back changes nothing.
  t.Confirm(Lsn(3));
  EXPECT_EQ(Sorted(t.AllDone()), (std::vector<PartitionOffset>{{kA, 7}, {kB, 2}}));
}

TEST(OffsetTrackerTest, AForgottenPartitionIsNeverCommittedByThisConsumerAgain) {
  OffsetTracker t;
  t.Add(Lsn(1), kA, 0);
  t.Add(Lsn(1), kC, 40);
  t.Add(Lsn(2), kA, 1);
  t.Add(Lsn(3), kC, 41);
  t.Confirm(Lsn(1));
  // Taken away in a rebalance: its done offset comes back once, its pending records go.
  EXPECT_EQ(t.Forget(kC), (PartitionOffset{kC, 41}));
  EXPECT_EQ(t.Forget(kC), std::nullopt);
  t.Confirm(Lsn(3));
  EXPECT_EQ(Sorted(t.AllDone()), (std::vector<PartitionOffset>{{kA, 2}}));
  // Assigned again later: it starts afresh from what the group committed.
  t.Add(Lsn(4), kC, 41);
  t.Confirm(Lsn(4));
  EXPECT_EQ(Sorted(t.Commits()), (std::vector<PartitionOffset>{{kA, 2}, {kC, 42}}));
}

TEST(OffsetTrackerTest, RebalancesDoNotGrowIt) {
  OffsetTracker t;
  for (int round = 0; round < 100; ++round) {
    t.Add(Lsn(round + 1), kA, round);
    t.Add(Lsn(round + 1), kB, round);
    t.Forget(kA);
    t.Forget(kB);
  }
  EXPECT_LE(t.slots(), 2u);
  EXPECT_EQ(t.pending(), 0u);
}

TEST(OffsetTrackerTest, AFailedCommitIsOfferedAgain) {
  OffsetTracker t;
  t.Add(Lsn(1), kA, 0);
  t.Confirm(Lsn(1));
  // Committed only once the brokers said so: until then, every Commits() has it.
  EXPECT_EQ(t.Commits(), (std::vector<PartitionOffset>{{kA, 1}}));
  EXPECT_EQ(t.Commits(), (std::vector<PartitionOffset>{{kA, 1}}));
  t.MarkCommitted({{kA, 1}});
  EXPECT_TRUE(t.Commits().empty());
  // An answer about a partition given up since changes nothing.
  t.MarkCommitted({{kC, 9}});
  EXPECT_TRUE(t.Commits().empty());
}

TEST(OffsetTrackerTest, RandomInterleavingsCommitExactlyTheConfirmedPrefixOfEachPartition) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; ++round) {
    OffsetTracker t;
    std::map<int, int64_t> next_offset;
    std::vector<std::pair<uint64_t, std::pair<int, int64_t>>> added;  // position, (p, offset)
    uint64_t position = 100;
    for (int i = 0; i < 300; ++i) {
      if (rng() % 4 == 0) ++position;
      int p = static_cast<int>(rng() % 4);
      int64_t offset = next_offset[p]++;
      t.Add(Lsn(position), TopicPartition{"t", p}, offset);
      added.push_back({position, {p, offset}});
    }
    uint64_t confirmed = 100 + rng() % (position - 99);
    t.Confirm(Lsn(confirmed));
    std::map<int, int64_t> expected;
    for (const auto& [pos, po] : added) {
      if (pos <= confirmed) expected[po.first] = std::max(expected[po.first], po.second + 1);
    }
    std::map<int, int64_t> got;
    for (const PartitionOffset& o : t.AllDone()) got[o.partition.partition] = o.offset;
    EXPECT_EQ(got, expected) << "confirmed " << confirmed;
  }
}

}  // namespace
}  // namespace pgflow
