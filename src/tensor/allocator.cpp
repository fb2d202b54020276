#include "chainrule/tensor/allocator.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

// Under a sanitizer, blocks go back at once so that use-after-free is caught (GCC defines
// __SANITIZE_*__, clang answers __has_feature).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHAINRULE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CHAINRULE_SANITIZED 1
#endif
#endif

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
#if defined(CHAINRULE_SANITIZED)
  return 0;
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

// ---- small objects ---------------------------------------------------------------------------

namespace {

constexpr std::size_t kObjectGrain = 32, kObjectClasses = 32;  // 32, 64, ..., 1024 bytes
constexpr std::size_t kThreadListMax = 4096;                     // per class, then half goes global

struct FreeBlock {
  FreeBlock* next;
};

// Blocks that threads gave back (at exit, or when their lists grew long). Never destroyed, so
// objects freed during static destruction still have somewhere to go.
struct GlobalObjects {
  std::mutex mu;
  FreeBlock* head[kObjectClasses] = {};
};
GlobalObjects& global_objects() {
  static GlobalObjects* g = new GlobalObjects;
  return *g;
}

struct ThreadObjects {
  FreeBlock* head[kObjectClasses] = {};
  std::size_t count[kObjectClasses] = {};
  ~ThreadObjects();
};
// Trivially destructible, so still readable while (and after) the thread's cache is destroyed.
thread_local bool t_objects_gone = false;
ThreadObjects::~ThreadObjects() {
  t_objects_gone = true;
  GlobalObjects& g = global_objects();
  std::lock_guard lock(g.mu);
  for (std::size_t c = 0; c < kObjectClasses; ++c)
    while (FreeBlock* b = head[c]) head[c] = b->next, b->next = g.head[c], g.head[c] = b;
}
thread_local ThreadObjects t_objects;

#if defined(CHAINRULE_SANITIZED)
constexpr bool kPoolObjects = false;
#else
constexpr bool kPoolObjects = true;
#endif

}  // namespace

void* allocate_object(std::size_t nbytes) {
  const std::size_t c = (nbytes + kObjectGrain - 1) / kObjectGrain - 1;
  if (!kPoolObjects || c >= kObjectClasses) return ::operator new(nbytes);
  if (!t_objects_gone) {
    ThreadObjects& t = t_objects;
    if (FreeBlock* b = t.head[c]) {
      t.head[c] = b->next, --t.count[c];
      return b;
    }
  }
  GlobalObjects& g = global_objects();
  {
    std::lock_guard lock(g.mu);
    if (FreeBlock* b = g.head[c]) {
      g.head[c] = b->next;
      return b;
    }
  }
  return ::operator new((c + 1) * kObjectGrain);
}

void deallocate_object(void* p, std::size_t nbytes) {
  const std::size_t c = (nbytes + kObjectGrain - 1) / kObjectGrain - 1;
  if (!kPoolObjects || c >= kObjectClasses) return ::operator delete(p);
  auto* b = static_cast<FreeBlock*>(p);
  if (!t_objects_gone) {
    ThreadObjects& t = t_objects;
    b->next = t.head[c], t.head[c] = b;
    if (++t.count[c] <= kThreadListMax) return;
    // A thread that frees what others allocated: hand half its list to the global one.
    GlobalObjects& g = global_objects();
    std::lock_guard lock(g.mu);
    for (std::size_t i = 0; i < kThreadListMax / 2; ++i) {
      FreeBlock* x = t.head[c];
      t.head[c] = x->next, x->next = g.head[c], g.head[c] = x;
    }
    t.count[c] -= kThreadListMax / 2;
    return;
  }
  GlobalObjects& g = global_objects();
  std::lock_guard lock(g.mu);
  b->next = g.head[c], g.head[c] = b;
}

}  // namespace chainrule::memory
