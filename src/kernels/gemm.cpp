// Row-major GEMM. float32 runs on oneDNN's matmul primitive, created once per problem shape and
// then only executed; float64 on OpenBLAS.
//
// Why a cached primitive rather than dnnl_sgemm: dnnl_sgemm plans, allocates and packs on every
// call. Measured here (docs/performance.md): 256×1024×1024 products take 3.7 ms through sgemm and
// 2.6 ms through the primitive at two threads, and a 32×64×64 product 4.5 against 3.0 µs.
// Products with almost no work (under kTinyWork multiply-adds, e.g. a 2-wide layer) skip oneDNN:
// its fixed cost of about 0.4–1.5 µs per call would be most of the time.
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

#include <array>
#include <cstring>
#include <string>
#include <unordered_map>

#include "kernels/gemm_half.h"
#include "kernels/kernels.h"

namespace chainrule::kernels {

namespace {

constexpr std::int64_t kTinyWork = 8192;  // multiply-adds

// Tiny products (a 2-wide layer, a batch of 32 rows) in plain loops that vectorise: each row of C
// is built from contiguous rows of op(B), along the longer side of C, so that the innermost loop
// is long. Operands that are not contiguous that way are first copied into a small per-thread
// buffer (at most kTinyWork floats, so no allocation).
float* tiny_scratch(int which) {
  static thread_local float buffers[2][kTinyWork];
  return buffers[which];
}

CHAINRULE_VECTOR_CLONES
void tiny_rows(bool ta, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda, const float* b,
               std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  // 64 columns at a time in four 16-float vectors (GCC vector extensions: one AVX-512 register
  // each, or narrower operations in the other clones), held in registers across the k loop.
  // Unaligned, aliasing 16-float vectors: loads and stores straight from the float arrays.
  using v16 = float __attribute__((vector_size(64), aligned(4), may_alias));
  constexpr std::int64_t kBlock = 64;
  for (std::int64_t i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    std::int64_t j0 = 0;
    for (; j0 + kBlock <= n; j0 += kBlock) {
      v16 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
      if (bias) {
        const auto* bv = reinterpret_cast<const v16*>(bias + j0);
        acc0 = bv[0], acc1 = bv[1], acc2 = bv[2], acc3 = bv[3];
      }
      for (std::int64_t p = 0; p < k; ++p) {
        const float aip = ta ? a[p * lda + i] : a[i * lda + p];
        const auto* bp = reinterpret_cast<const v16*>(b + p * ldb + j0);
        acc0 += aip * bp[0], acc1 += aip * bp[1], acc2 += aip * bp[2], acc3 += aip * bp[3];
      }
      auto* cv = reinterpret_cast<v16*>(ci + j0);
      cv[0] = acc0, cv[1] = acc1, cv[2] = acc2, cv[3] = acc3;
    }
    for (std::int64_t j = j0; j < n; ++j) ci[j] = bias ? bias[j] : 0.0f;
    for (std::int64_t p = 0; p < k && j0 < n; ++p) {
      const float aip = ta ? a[p * lda + i] : a[i * lda + p];
      const float* bp = b + p * ldb;
      for (std::int64_t j = j0; j < n; ++j) ci[j] += aip * bp[j];
    }
  }
}

// C = A Bᵀ with k long: dot products of contiguous rows.
CHAINRULE_VECTOR_CLONES
void tiny_dots(std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda, const float* b,
               std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const float* ai = a + i * lda;
      const float* bj = b + j * ldb;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (std::int64_t p = 0; p < k; ++p) s += ai[p] * bj[p];
      c[i * ldc + j] = bias ? s + bias[j] : s;
    }
}

// C (m×n, leading dimension ldc) = op(A) op(B), vectorised along n.
void tiny_along_rows(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda,
                     const float* b, std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  if (tb) {  // op(B) row p is column p of B: gather it
    float* packed = tiny_scratch(0);
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) packed[p * n + j] = b[j * ldb + p];
    b = packed, ldb = n;
  }
  tiny_rows(ta, m, n, k, a, lda, b, ldb, bias, c, ldc);
}

void tiny_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda,
               const float* b, std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  if (!ta && tb && k >= 16) return tiny_dots(m, n, k, a, lda, b, ldb, bias, c, ldc);
  if (n >= m) return tiny_along_rows(ta, tb, m, n, k, a, lda, b, ldb, bias, c, ldc);
  // Cᵀ = op(B)ᵀ op(A)ᵀ is the wider product: build it, then transpose it into C.
  float* ct = tiny_scratch(1);
  tiny_along_rows(!tb, !ta, n, m, k, b, ldb, a, lda, nullptr, ct, m);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? ct[j * m + i] + bias[j] : ct[j * m + i];
}

struct MatmulKey {
  std::int64_t m, n, k, lda, ldb, ldc;
  bool ta, tb, bias;
  int threads;
  bool bf16 = false;  // bfloat16 A and B (float32 C, accumulation in float32)
  bool operator==(const MatmulKey&) const = default;
};
struct MatmulKeyHash {
  std::size_t operator()(const MatmulKey& key) const {
    std::size_t h = 0;
    for (std::int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc, std::int64_t{key.ta}, std::int64_t{key.tb},
                           std::int64_t{key.bias}, std::int64_t{key.threads}, std::int64_t{key.bf16}})
      h = h * 1000003u ^ static_cast<std::size_t>(v);
    return h;
  }
};

// One primitive and its memory objects (A, B, C and the bias when it has one); the data
// pointers are set per call.
struct CachedMatmul {
  dnnl_primitive_t primitive = nullptr;
  std::array<dnnl_memory_t, 4> memories{};  // A, B, C, bias
  bool usable = false;                      // false: oneDNN offered only its reference kernel
  std::string impl;                         // oneDNN's name for the kernel it chose
  CachedMatmul() = default;
  CachedMatmul(const CachedMatmul&) = delete;
  CachedMatmul& operator=(const CachedMatmul&) = delete;
  ~CachedMatmul() {
    for (auto mem : memories)
      if (mem) dnnl_memory_destroy(mem);
    if (primitive) dnnl_primitive_destroy(primitive);
  }
};

void check(dnnl_status_t status, const char* what, const MatmulKey& key) {
  if (status != dnnl_success)
    throw Error(fmt::format("matmul: oneDNN {} failed with status {} for [{}, {}] @ [{}, {}]", what, static_cast<int>(status),
                            key.m, key.k, key.k, key.n));
}

dnnl_engine_t cpu_engine() {
  static dnnl_engine_t engine = [] {
    dnnl_engine_t e = nullptr;
    if (dnnl_engine_create(&e, dnnl_cpu, 0) != dnnl_success) throw Error("matmul: cannot create oneDNN's CPU engine");
    return e;
  }();
  return engine;
}

// Per thread, so that executing needs no lock (the memory objects hold per-call pointers).
struct ThreadMatmuls {
  dnnl_stream_t stream = nullptr;
  std::unordered_map<MatmulKey, std::unique_ptr<CachedMatmul>, MatmulKeyHash> cache;
  ThreadMatmuls() {
    if (dnnl_stream_create(&stream, cpu_engine(), dnnl_stream_default_flags) != dnnl_success)
      throw Error("matmul: cannot create a oneDNN stream");
  }
  ~ThreadMatmuls() {
    cache.clear();
    dnnl_stream_destroy(stream);
  }
};
ThreadMatmuls& thread_matmuls() {
  static thread_local ThreadMatmuls t;
  return t;
}

std::unique_ptr<CachedMatmul> create_matmul(const MatmulKey& key) {
  auto mm = std::make_unique<CachedMatmul>();
  dnnl_memory_desc_t ad, bd, cd;
  const dnnl_dims_t adims{key.m, key.k}, bdims{key.k, key.n}, cdims{key.m, key.n};
  const dnnl_dims_t astr{key.ta ? 1 : key.lda, key.ta ? key.lda : 1};
  const dnnl_dims_t bstr{key.tb ? 1 : key.ldb, key.tb ? key.ldb : 1};
  const dnnl_dims_t cstr{key.ldc, 1};
  const dnnl_data_type_t in_type = key.bf16 ? dnnl_bf16 : dnnl_f32;
  check(dnnl_memory_desc_init_by_strides(&ad, 2, adims, in_type, astr), "memory description", key);
  check(dnnl_memory_desc_init_by_strides(&bd, 2, bdims, in_type, bstr), "memory description", key);
  check(dnnl_memory_desc_init_by_strides(&cd, 2, cdims, dnnl_f32, cstr), "memory description", key);
  dnnl_memory_desc_t biasd;
  const dnnl_dims_t biasdims{1, key.n}, biasstr{key.n, 1};
  check(dnnl_memory_desc_init_by_strides(&biasd, 2, biasdims, dnnl_f32, biasstr), "memory description", key);
  dnnl_matmul_desc_t desc;
  check(dnnl_matmul_desc_init(&desc, &ad, &bd, key.bias ? &biasd : nullptr, &cd), "matmul description", key);
  dnnl_primitive_desc_t pd = nullptr;
  check(dnnl_primitive_desc_create(&pd, &desc, nullptr, cpu_engine(), nullptr), "primitive description", key);
  const char* impl = nullptr;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
  mm->usable = impl && std::string_view(impl).substr(0, 3) != "ref";
  mm->impl = impl ? impl : "";
  if (mm->usable) {
    const dnnl_status_t st = dnnl_primitive_create(&mm->primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    check(st, "primitive", key);
    const dnnl_memory_desc_t* descs[] = {&ad, &bd, &cd, &biasd};
    for (int i = 0; i < (key.bias ? 4 : 3); ++i) check(dnnl_memory_create(&mm->memories[i], descs[i], cpu_engine(), DNNL_MEMORY_NONE), "memory", key);
  } else {
    dnnl_primitive_desc_destroy(pd);
  }
  return mm;
}

CachedMatmul& cached_matmul(const MatmulKey& key) {
  ThreadMatmuls& t = thread_matmuls();
  auto it = t.cache.find(key);
  if (it == t.cache.end()) {
    if (t.cache.size() >= 512) t.cache.clear();  // many one-off shapes (experiments): start over
    it = t.cache.emplace(key, create_matmul(key)).first;
  }
  return *it->second;
}

}  // namespace

namespace {

// Runs C = op(A) op(B) (+ bias) on oneDNN's cached primitive; false when sgemm suits the shape
// better or oneDNN has only its reference kernel for this layout (the caller then uses sgemm).
bool run_matmul_primitive(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda,
                          const float* b, std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  // Measured exceptions where sgemm is faster: matrix-vector products (its GEMV kernel, 5x) and
  // a few rows times an untransposed B (16×512×512: 75 against 100 µs).
  if (m == 1 || n == 1 || (m <= 16 && !tb)) return false;
  const MatmulKey key{m, n, k, lda, ldb, ldc, ta, tb, bias != nullptr, omp_get_max_threads()};
  ThreadMatmuls& t = thread_matmuls();
  CachedMatmul& mm = cached_matmul(key);
  if (!mm.usable) return false;
  check(dnnl_memory_set_data_handle(mm.memories[0], const_cast<float*>(a)), "set A", key);
  check(dnnl_memory_set_data_handle(mm.memories[1], const_cast<float*>(b)), "set B", key);
  check(dnnl_memory_set_data_handle(mm.memories[2], c), "set C", key);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, mm.memories[0]}, {DNNL_ARG_WEIGHTS, mm.memories[1]}, {DNNL_ARG_DST, mm.memories[2]},
                            {DNNL_ARG_BIAS, mm.memories[3]}};
  if (bias) check(dnnl_memory_set_data_handle(mm.memories[3], const_cast<float*>(bias)), "set bias", key);
  check(dnnl_primitive_execute(mm.primitive, t.stream, bias ? 4 : 3, args), "execute", key);
  return true;
}

void sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
           const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  auto st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success)
    throw Error(fmt::format("matmul: oneDNN sgemm failed with status {} for [{}, {}] @ [{}, {}]", static_cast<int>(st), m, k, k, n));
}

// C = beta C, for an empty inner dimension (beta 0 writes zeros, whatever C held).
template <class T>
void scale_rows(std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

template <class T>
void fill_rows(std::int64_t m, std::int64_t n, const T* bias, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? bias[j] : T(0);
}

}  // namespace

void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
          const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_rows(m, n, beta, c, ldc);
  if (alpha == 1.0f && beta == 0.0f) {
    if (m * n * k <= kTinyWork) return tiny_gemm(ta, tb, m, n, k, a, lda, b, ldb, nullptr, c, ldc);
    if (run_matmul_primitive(ta, tb, m, n, k, a, lda, b, ldb, nullptr, c, ldc)) return;
  }
  sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_bias(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda,
               const float* b, std::int64_t ldb, const float* bias, float* c, std::int64_t ldc) {
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  if (m == 0 || n == 0) return;
  if (k == 0) return fill_rows(m, n, bias, c, ldc);
  if (m * n * k <= kTinyWork) return tiny_gemm(ta, tb, m, n, k, a, lda, b, ldb, bias, c, ldc);
  if (run_matmul_primitive(ta, tb, m, n, k, a, lda, b, ldb, bias, c, ldc)) return;
  fill_rows(m, n, bias, c, ldc);
  sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
}

void gemm_bias(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda,
               const double* b, std::int64_t ldb, const double* bias, double* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  fill_rows(m, n, bias, c, ldc);
  gemm(ta, tb, m, n, k, 1.0, a, lda, b, ldb, 1.0, c, ldc);
}

void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_rows(m, n, beta, c, ldc);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

bool gemm_bf16(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const bfloat16* a, std::int64_t lda,
               const bfloat16* b, std::int64_t ldb, float* c, std::int64_t ldc) {
  if (m == 0 || n == 0 || k == 0) return false;
  const MatmulKey key{m, n, k, lda, ldb, ldc, ta, tb, false, omp_get_max_threads(), true};
  CachedMatmul& mm = cached_matmul(key);
  if (!mm.usable) return false;
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  ThreadMatmuls& t = thread_matmuls();
  check(dnnl_memory_set_data_handle(mm.memories[0], const_cast<bfloat16*>(a)), "set A", key);
  check(dnnl_memory_set_data_handle(mm.memories[1], const_cast<bfloat16*>(b)), "set B", key);
  check(dnnl_memory_set_data_handle(mm.memories[2], c), "set C", key);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, mm.memories[0]}, {DNNL_ARG_WEIGHTS, mm.memories[1]}, {DNNL_ARG_DST, mm.memories[2]}};
  check(dnnl_primitive_execute(mm.primitive, t.stream, 3, args), "execute", key);
  return true;
}

std::string bf16_gemm_kernel() {
  const MatmulKey key{64, 64, 64, 64, 64, 64, false, false, false, omp_get_max_threads(), true};
  const CachedMatmul& mm = cached_matmul(key);
  return mm.usable ? mm.impl : "";
}

}  // namespace chainrule::kernels
