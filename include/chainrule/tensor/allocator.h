#pragma once
// A caching allocator for tensor storage. Training steps free and allocate buffers of the same
// sizes again and again; handing them back to the operating system each time costs page faults
// and zeroing. Freed blocks are kept in size classes (at most 25% larger than asked for) and
// reused. The cache is shared by all threads.
#include <cstddef>
#include <cstdint>

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

}  // namespace chainrule::memory
