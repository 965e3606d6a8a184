#include "pooler/slab.h"

#include <sys/mman.h>

#include <cstdlib>
#include <utility>

namespace pgflow::pooler {

namespace {

constexpr size_t kHeaderSize = 64;  // a region's header, before its first block

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

// At the start of each region, which is aligned to kRegionSize.
struct Slab::Region {
  Region* prev = nullptr;  // in roomy_, while it has a free block
  Region* next = nullptr;
  void* free = nullptr;    // its blocks given back, a list through their first word
  uint32_t in_use = 0;
  uint32_t carved = 0;     // blocks handed out at least once: the rest were never touched
  bool roomy = false;

  char* block(uint32_t i, size_t size) {
    return reinterpret_cast<char*>(this) + kHeaderSize + i * size;
  }
};
Slab::Slab(size_t block_size, size_t alignment)
    : block_size_(RoundUp(block_size < sizeof(void*) ? sizeof(void*) : block_size, alignment)),
      alignment_(alignment),
      blocks_per_region_(static_cast<uint32_t>((kRegionSize - kHeaderSize) / block_size_)) {
  static_assert(sizeof(Region) <= kHeaderSize);
  if (alignment < 8 || alignment > kHeaderSize || (alignment & (alignment - 1)) != 0 ||
      blocks_per_region_ == 0) {
    std::abort();  // (a programming error: the sizes are the code's own)
  }
}

Slab::~Slab() {
  absl::MutexLock lock(&mu_);
  while (roomy_ != nullptr) {
    Region* region = roomy_;
    UnlinkRoomy(region);
    munmap(region, kRegionSize);
  }
  if (spare_ != nullptr) munmap(spare_, kRegionSize);
}

Slab::Region* Slab::MapRegion() {
  // Twice the size, then what lies outside the aligned region is given back.
  void* mapped = mmap(nullptr, 2 * kRegionSize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = RoundUp(start, kRegionSize);
  if (aligned > start) munmap(mapped, aligned - start);
  const uintptr_t end = start + 2 * kRegionSize;
  if (end > aligned + kRegionSize) {
    munmap(reinterpret_cast<void*>(aligned + kRegionSize), end - aligned - kRegionSize);
  }
  ++regions_;
  return new (reinterpret_cast<void*>(aligned)) Region();
}

void Slab::LinkRoomy(Region* region) {
  region->roomy = true;
  region->prev = nullptr;
  region->next = roomy_;
  if (roomy_ != nullptr) roomy_->prev = region;
  roomy_ = region;
}

void Slab::UnlinkRoomy(Region* region) {
  region->roomy = false;
  if (region->prev != nullptr) {
    region->prev->next = region->next;
  } else {
    roomy_ = region->next;
  }
  if (region->next != nullptr) region->next->prev = region->prev;
  region->prev = region->next = nullptr;
}

void* Slab::Allocate() {
  absl::MutexLock lock(&mu_);
  Region* region = roomy_;
  if (region == nullptr) {
    region = std::exchange(spare_, nullptr);
    if (region == nullptr) region = MapRegion();
    if (region == nullptr) throw std::bad_alloc();
    LinkRoomy(region);
  }
  void* block;
  if (region->free != nullptr) {
    block = region->free;
    region->free = *static_cast<void**>(block);
  } else {
    block = region->block(region->carved++, block_size_);
  }
  ++region->in_use;
  if (region->free == nullptr && region->carved == blocks_per_region_) UnlinkRoomy(region);
  ++in_use_;
  return block;
}

void Slab::Free(void* block) {
  if (block == nullptr) return;
  Region* region =
      reinterpret_cast<Region*>(reinterpret_cast<uintptr_t>(block) & ~(kRegionSize - 1));
  absl::MutexLock lock(&mu_);
  *static_cast<void**>(block) = region->free;
  region->free = block;
  --in_use_;
  if (!region->roomy) LinkRoomy(region);
  if (--region->in_use > 0) return;
  // Empty: kept aside as the spare (taken only once no region in use has room), or unmapped
  // when there is one already.
  UnlinkRoomy(region);
  if (spare_ == nullptr) {
    spare_ = region;
    return;
  }
  --regions_;
  munmap(region, kRegionSize);
}

size_t Slab::blocks_in_use() const {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

size_t Slab::regions() const {
  absl::MutexLock lock(&mu_);
  return regions_;
}

}  // namespace pgflow::pooler
