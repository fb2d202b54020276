#pragma once
// A caching allocator for tensor storage. Training steps free and allocate buffers of the same
// sizes again and again; handing them back to the operating system each time costs page faults
// and zeroing. Freed blocks are kept in size classes (at most 25% larger than asked for) and
// reused. The cache is shared by all threads.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace chainrule::memory {

void* allocate(std::size_t nbytes);                 // 64-byte aligned; never null
void deallocate(void* p, std::size_t nbytes);       // nbytes as passed to allocate

struct Stats {
  std::size_t bytes_in_use = 0;     // held by live tensors (rounded to size classes)
  std::size_t peak_bytes = 0;       // high-water mark of bytes_in_use since reset_peak()
  std::size_t bytes_cached = 0;     // freed blocks kept for reuse
  std::uint64_t requests = 0;       // allocate() calls
  std::uint64_t system_allocations = 0;  // of which went to the system allocator
};
Stats stats();
void reset_peak();
void empty_cache();  // return every cached block to the system

// Small objects made and dropped by every operation (tensor headers, storage records, graph
// nodes) come from per-thread free lists of fixed size classes, so that a training step in steady
// state makes no call to the system allocator. Under AddressSanitizer they go straight to
// operator new, so use-after-free is still caught.
void* allocate_object(std::size_t nbytes);
void deallocate_object(void* p, std::size_t nbytes);

template <class T>
struct ObjectAllocator {
  using value_type = T;
  ObjectAllocator() = default;
  template <class U> ObjectAllocator(const ObjectAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(allocate_object(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { deallocate_object(p, n * sizeof(T)); }
  template <class U> bool operator==(const ObjectAllocator<U>&) const noexcept { return true; }
};

// std::make_shared with the object pool.
template <class T, class... Args>
std::shared_ptr<T> make_pooled(Args&&... args) {
  return std::allocate_shared<T>(ObjectAllocator<T>{}, std::forward<Args>(args)...);
}

}  // namespace chainrule::memory
