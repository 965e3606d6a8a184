#include "pooler/slab.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

namespace pgflow::pooler {
namespace {

TEST(SlabTest, HandsOutDistinctAlignedBlocksAndReusesThoseGivenBack) {
  Slab slab(100, 8);
  EXPECT_EQ(slab.block_size(), 104u);
  std::set<void*> blocks;
  for (int i = 0; i < 1000; ++i) {
    void* block = slab.Allocate();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % 8, 0u);
    std::memset(block, 0xab, slab.block_size());  // (the whole block is the caller's)
    EXPECT_TRUE(blocks.insert(block).second);
  }
  EXPECT_EQ(slab.blocks_in_use(), 1000u);
  // Blocks never overlap.
  for (auto it = blocks.begin(); std::next(it) != blocks.end(); ++it) {
    EXPECT_GE(static_cast<char*>(*std::next(it)) - static_cast<char*>(*it), 104);
  }
  void* given_back = *blocks.begin();
  slab.Free(given_back);
  EXPECT_EQ(slab.blocks_in_use(), 999u);
  EXPECT_EQ(slab.Allocate(), given_back);
  for (void* block : blocks) slab.Free(block);
  EXPECT_EQ(slab.blocks_in_use(), 0u);
}

TEST(SlabTest, RoundsBlocksToTheirAlignment) {
  Slab slab(536, 64);
  EXPECT_EQ(slab.block_size(), 576u);
  void* a = slab.Allocate();
  void* b = slab.Allocate();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  slab.Free(a);
  slab.Free(b);
}

TEST(SlabTest, GivesRegionsBackAsTheyEmptyKeepingOneSpare) {
  Slab slab(512, 8);
  const size_t per_region = (Slab::kRegionSize - 64) / 512;
  std::vector<void*> blocks;
  for (size_t i = 0; i < 3 * per_region + 1; ++i) blocks.push_back(slab.Allocate());
  EXPECT_EQ(slab.regions(), 4u);
  for (void* block : blocks) slab.Free(block);
  EXPECT_EQ(slab.blocks_in_use(), 0u);
  EXPECT_EQ(slab.regions(), 1u);  // the spare
  // The spare serves the next block: nothing is mapped.
  void* again = slab.Allocate();
  EXPECT_EQ(slab.regions(), 1u);
  slab.Free(again);
}

TEST(SlabTest, FillsRegionsInUseBeforeTheSpare) {
  Slab slab(512, 8);
  const size_t per_region = (Slab::kRegionSize - 64) / 512;
  std::vector<void*> first, second;
  for (size_t i = 0; i < per_region; ++i) first.push_back(slab.Allocate());
  for (size_t i = 0; i < per_region; ++i) second.push_back(slab.Allocate());
  EXPECT_EQ(slab.regions(), 2u);
  for (void* block : first) slab.Free(block);  // the first region becomes the spare
  slab.Free(second.back());                     // a block free in the second, in use
  second.pop_back();
  void* block = slab.Allocate();
  // From the second region (the one freed just before), not the spare.
  const auto region = [](void* p) {
    return reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{Slab::kRegionSize} - 1);
  };
  EXPECT_EQ(region(block), region(second.front()));
  slab.Free(block);
  for (void* b : second) slab.Free(b);
  EXPECT_EQ(slab.regions(), 1u);
}

struct Counted {
  explicit Counted(int v) : value(v) {}
  int value;
  char payload[200] = {};
};

TEST(SlabTest, AllocateSharedPutsTheObjectAndItsCountsInOneBlock) {
  std::shared_ptr<Counted> shared = std::allocate_shared<Counted>(SlabAllocator<Counted>(), 7);
  EXPECT_EQ(shared->value, 7);
  // Made by that allocation, for the block of the object and its two counts.
  Slab& slab = SlabOf<Counted>(0, 0);
  EXPECT_EQ(slab.blocks_in_use(), 1u);
  EXPECT_GE(slab.block_size(), sizeof(Counted) + 2 * sizeof(int));
  EXPECT_LT(slab.block_size(), sizeof(Counted) + 32);
  // The object gone, the counts stay in the block while a weak_ptr refers to them.
  std::weak_ptr<Counted> weak = shared;
  shared.reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(slab.blocks_in_use(), 1u);
  weak.reset();
  EXPECT_EQ(slab.blocks_in_use(), 0u);
}

TEST(SlabTest, BlocksTakenAndGivenBackFromManyThreads) {
  Slab slab(264, 8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&slab, t] {
      std::vector<void*> held;
      for (int round = 0; round < 200; ++round) {
        for (int i = 0; i < 50; ++i) {
          void* block = slab.Allocate();
          *static_cast<int*>(block) = t;
          held.push_back(block);
        }
        for (void* block : held) ASSERT_EQ(*static_cast<int*>(block), t);
        for (size_t i = 0; i < held.size(); i += 2) slab.Free(held[i]);
        std::vector<void*> kept;
        for (size_t i = 1; i < held.size(); i += 2) kept.push_back(held[i]);
        held = std::move(kept);
      }
      for (void* block : held) slab.Free(block);
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(slab.blocks_in_use(), 0u);
  EXPECT_EQ(slab.regions(), 1u);
}

}  // namespace
}  // namespace pgflow::pooler
