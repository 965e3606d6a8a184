#pragma once

// Blocks of one size for objects that live long and come by the thousand (a session per
// client), carved from regions mapped apart from malloc's heap, as PgBouncer's slab does.
//
// Through malloc, each session sat among what its login had allocated and freed (the startup
// packet's buffer, the SCRAM exchange, coroutine frames), and the holes those left stayed
// resident: an idle client cost its session, malloc's header, and its share of the holes.
// Here a block carries no header, and blocks sit side by side in their regions whatever the
// heap does around them. A region is 256 KiB, aligned to its size so that a block finds its
// region's header by masking its address; its blocks are carved as they are first needed, so
// pages no block has used are never touched. Blocks are taken from regions in use first; a
// region whose last block is given back is kept aside as the spare, or unmapped when there is
// one already (so that a client that comes and goes does not map and unmap a region each
// time, and memory goes back as clients leave).
//
// Thread-safe (one mutex: a block is taken at a client's accept and given back at its end,
// never on a hot path).

#include <cstddef>
#include <cstdint>
#include <new>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace pgflow::pooler {

class Slab {
 public:
  static constexpr size_t kRegionSize = size_t{256} << 10;

  // Blocks of `block_size` bytes, each aligned to `alignment` (a power of two, at least 8 and at
  // most 64: the size is rounded up to it).
  Slab(size_t block_size, size_t alignment);
  // Unmaps every region: no block may be in use.
  ~Slab();
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // A block: std::bad_alloc when no region can be mapped.
  void* Allocate();
  // Gives `block` (from Allocate) back.
  void Free(void* block);

  size_t block_size() const { return block_size_; }
  size_t alignment() const { return alignment_; }
  size_t blocks_in_use() const;
  size_t regions() const;

 private:
  struct Region;
  Region* MapRegion() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LinkRoomy(Region* region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkRoomy(Region* region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t block_size_;
  const size_t alignment_;
  const uint32_t blocks_per_region_;
  mutable absl::Mutex mu_;
  // Regions with a block in use and one free, a list; and one region with none in use.
  Region* roomy_ ABSL_GUARDED_BY(mu_) = nullptr;
  Region* spare_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  size_t regions_ ABSL_GUARDED_BY(mu_) = 0;
};

// The process-wide Slab of the objects `Of` (made at the first call, for blocks of `size`
// bytes aligned to `alignment`; later calls get it as it was made). Never destroyed: blocks may
// be given back by threads that outlive static destruction.
template <typename Of>
Slab& SlabOf(size_t size, size_t alignment) {
  static Slab* const slab = new Slab(size, alignment < 8 ? 8 : alignment);
  return *slab;
}

// An allocator of one object at a time from SlabOf<Of>, for std::allocate_shared, which
// rebinds it to the block holding the object and its counts together: the slab's blocks are
// that block's size. Stateless, so the control block holds nothing more for it. What does not
// fit the slab's blocks (an array, another type rebound to) comes from operator new.
template <typename T, typename Of = T>
class SlabAllocator {
 public:
  using value_type = T;
  template <typename U>
  struct rebind {
    using other = SlabAllocator<U, Of>;
  };
  SlabAllocator() = default;
  template <typename U>
  SlabAllocator(const SlabAllocator<U, Of>&) {}  // NOLINT: rebinding, as allocators do

  T* allocate(size_t n) {
    if (Slab* slab = Fits(n)) return static_cast<T*>(slab->Allocate());
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{alignof(T)}));
  }
  void deallocate(T* p, size_t n) {
    if (Slab* slab = Fits(n)) {
      slab->Free(p);
      return;
    }
    ::operator delete(p, std::align_val_t{alignof(T)});
  }

  template <typename U>
  bool operator==(const SlabAllocator<U, Of>&) const {
    return true;
  }

 private:
  static Slab* Fits(size_t n) {
    static_assert(alignof(T) <= 64);
#if defined(__SANITIZE_ADDRESS__)
    return nullptr;  // (AddressSanitizer sees a use after free of operator new's blocks only)
#else
    if (n != 1) return nullptr;
    Slab& slab = SlabOf<Of>(sizeof(T), alignof(T));
    return slab.block_size() >= sizeof(T) && slab.alignment() >= alignof(T) ? &slab : nullptr;
#endif
  }
};

}  // namespace pgflow::pooler
