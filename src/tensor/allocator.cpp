#include "chainrule/tensor/allocator.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace chainrule::memory {

namespace {

constexpr std::size_t kAlign = 64;

// Rounds up to a size class: multiples of a quarter of the leading power of two.
std::size_t size_class(std::size_t n) {
  if (n <= kAlign) return kAlign;
  std::size_t p = std::size_t{1} << (63 - __builtin_clzll(n - 1));  // largest power of two < n
  std::size_t step = std::max<std::size_t>(kAlign, p / 4);
  return (n + step - 1) / step * step;
}

std::size_t cache_limit() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;  // under AddressSanitizer every block goes back at once, so use-after-free is caught
#endif
  if (const char* s = std::getenv("CHAINRULE_CACHE_BYTES")) return static_cast<std::size_t>(std::strtoull(s, nullptr, 10));
  return std::size_t{4} << 30;
}

struct Cache {
  std::mutex mu;
  std::unordered_map<std::size_t, std::vector<void*>> free;
  Stats st;
  std::size_t limit = cache_limit();

  void release_all() {
    for (auto& [size, blocks] : free)
      for (void* p : blocks) ::operator delete(p, std::align_val_t(kAlign));
    free.clear();
    st.bytes_cached = 0;
  }
  ~Cache() { release_all(); }
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: tensors in static objects may outlive it
  return *c;
}

}  // namespace

void* allocate(std::size_t nbytes) {
  const std::size_t n = size_class(nbytes);
  Cache& c = cache();
  {
    std::lock_guard lock(c.mu);
    ++c.st.requests;
    c.st.bytes_in_use += n;
    c.st.peak_bytes = std::max(c.st.peak_bytes, c.st.bytes_in_use);
    auto it = c.free.find(n);
    if (it != c.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.st.bytes_cached -= n;
      return p;
    }
    ++c.st.system_allocations;
  }
  return ::operator new(n, std::align_val_t(kAlign));
}

void deallocate(void* p, std::size_t nbytes) {
  const std::size_t n = size_class(nbytes);
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  c.st.bytes_in_use -= n;
  if (c.st.bytes_cached + n > c.limit) {
    ::operator delete(p, std::align_val_t(kAlign));
    return;
  }
  c.free[n].push_back(p);
  c.st.bytes_cached += n;
}

Stats stats() {
  std::lock_guard lock(cache().mu);
  return cache().st;
}
void reset_peak() {
  std::lock_guard lock(cache().mu);
  cache().st.peak_bytes = cache().st.bytes_in_use;
}
void empty_cache() {
  std::lock_guard lock(cache().mu);
  cache().release_all();
}

}  // namespace chainrule::memory
