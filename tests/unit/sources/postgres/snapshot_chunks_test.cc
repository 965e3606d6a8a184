#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {
namespace {

constexpr uint32_t kBlock = 8192;

SnapshotChunk Relation() {
  SnapshotChunk r;
  r.table_schema = r.leaf_schema = "public";
  r.table_name = r.leaf_name = "items";
  return r;
}

// Pages of each chunk (the last, open-ended one counted up to `pages`).
std::vector<uint32_t> Sizes(const std::vector<SnapshotChunk>& chunks, uint32_t pages) {
  std::vector<uint32_t> sizes;
  for (const SnapshotChunk& c : chunks) {
    sizes.push_back((c.end_page ? *c.end_page : pages) - c.first_page);
  }
  return sizes;
}

// The chunks tile the relation: contiguous from page 0, the last one open-ended, bytes right.
void ExpectTiled(const std::vector<SnapshotChunk>& chunks, uint32_t pages) {
  ASSERT_FALSE(chunks.empty());
  uint32_t next = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SnapshotChunk& c = chunks[i];
    EXPECT_EQ(c.first_page, next) << "chunk " << i;
    EXPECT_EQ(c.end_page.has_value(), i + 1 < chunks.size()) << "chunk " << i;
    const uint32_t end = c.end_page ? *c.end_page : pages;
    EXPECT_EQ(c.bytes, uint64_t{end - c.first_page} * kBlock) << "chunk " << i;
    EXPECT_EQ(c.leaf_name, "items");
    next = end;
  }
  EXPECT_EQ(next, pages);
}

TEST(CutIntoChunksTest, ATableShrinksItsChunksTowardItsEnd) {
  // 422 MB of heap, chunks of at most 64 MiB and at least 4 MiB, two workers.
  const uint32_t pages = 54000;
  std::vector<SnapshotChunk> chunks = CutIntoChunks(Relation(), pages, 8192, 512, 2, kBlock);
  ExpectTiled(chunks, pages);
  std::vector<uint32_t> sizes = Sizes(chunks, pages);
  EXPECT_EQ(sizes.front(), 8192u);  // a quarter of the table is more than the largest chunk
  for (size_t i = 1; i < sizes.size(); ++i) {
    EXPECT_LE(sizes[i], sizes[i - 1]) << "chunk " << i;
  }
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    EXPECT_GE(sizes[i], 512u) << "chunk " << i;
    // Never more than a quarter (two workers) of what was left to cut.
    uint32_t left = pages - chunks[i].first_page;
    EXPECT_LE(sizes[i], std::max(left / 4, 512u)) << "chunk " << i;
  }
  EXPECT_LE(sizes.back(), 512u);  // the workers end within one small chunk of each other
  EXPECT_LT(chunks.size(), 30u);
}

TEST(CutIntoChunksTest, MoreWorkersCutFinerShares) {
  const uint32_t pages = 54000;
  std::vector<SnapshotChunk> two = CutIntoChunks(Relation(), pages, 8192, 512, 2, kBlock);
  std::vector<SnapshotChunk> eight = CutIntoChunks(Relation(), pages, 8192, 512, 8, kBlock);
  ExpectTiled(eight, pages);
  EXPECT_EQ(Sizes(eight, pages).front(), pages / 16);
  EXPECT_GT(eight.size(), two.size());
}

TEST(CutIntoChunksTest, AHugeTableKeepsTheLargestChunkUntilItsEnd) {
  // 100 GB: all but the last few chunks are of the largest size.
  const uint32_t pages = 13107200;
  std::vector<SnapshotChunk> chunks = CutIntoChunks(Relation(), pages, 8192, 512, 4, kBlock);
  ExpectTiled(chunks, pages);
  std::vector<uint32_t> sizes = Sizes(chunks, pages);
  size_t largest = 0;
  for (uint32_t s : sizes) largest += s == 8192;
  EXPECT_GT(largest, sizes.size() - 40);
  EXPECT_LE(sizes.back(), 512u);
}

TEST(CutIntoChunksTest, SmallAndEmptyTablesAreOneChunk) {
  std::vector<SnapshotChunk> empty = CutIntoChunks(Relation(), 0, 8192, 512, 2, kBlock);
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].first_page, 0u);
  EXPECT_FALSE(empty[0].end_page.has_value());
  EXPECT_EQ(empty[0].bytes, 0u);

  std::vector<SnapshotChunk> small = CutIntoChunks(Relation(), 300, 8192, 512, 2, kBlock);
  ExpectTiled(small, 300);
  EXPECT_EQ(small.size(), 1u);
}

TEST(CutIntoChunksTest, AChunkSizeBelowTheSmallestChunkIsKept) {
  // chunk_size 1MiB (128 pages): every chunk is 128 pages, the last what is left.
  std::vector<SnapshotChunk> chunks = CutIntoChunks(Relation(), 1000, 128, 512, 2, kBlock);
  ExpectTiled(chunks, 1000);
  std::vector<uint32_t> sizes = Sizes(chunks, 1000);
  ASSERT_EQ(sizes.size(), 8u);
  for (size_t i = 0; i + 1 < sizes.size(); ++i) EXPECT_EQ(sizes[i], 128u);
  EXPECT_EQ(sizes.back(), 1000u - 7 * 128);
}

}  // namespace
}  // namespace pgflow
