// Op overhead and GEMM throughput. Run: build/bench/chainrule_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <dnnl.h>

#include <vector>

#include "chainrule/chainrule.h"

using namespace chainrule;

// One small op recorded on the tape: c = a + b on 8-element float32 tensors that require grad,
// forward plus its share of the backward pass. A chain of kChain adds is built, then one backward.
static void BM_RecordedAdd(benchmark::State& state) {
  constexpr int kChain = 100;
  Generator gen(0);
  Tensor a = randn({8}, gen).requires_grad_();
  Tensor b = randn({8}, gen).requires_grad_();
  Tensor seed = ones({8});
  for (auto _ : state) {
    Tensor c = a;
    for (int i = 0; i < kChain; ++i) c = c + b;
    c.backward(seed);
    a.zero_grad();
    b.zero_grad();
  }
  state.SetItemsProcessed(state.iterations() * kChain);
  state.counters["us_per_op"] = benchmark::Counter(static_cast<double>(state.iterations() * kChain),
                                                   benchmark::Counter::kIsRate | benchmark::Counter::kInvert,
                                                   benchmark::Counter::kIs1000);
}
BENCHMARK(BM_RecordedAdd)->Unit(benchmark::kMicrosecond);

// The same add with nothing recorded.
static void BM_PlainAdd(benchmark::State& state) {
  Generator gen(0);
  Tensor a = randn({8}, gen), b = randn({8}, gen);
  for (auto _ : state) benchmark::DoNotOptimize(a + b);
}
BENCHMARK(BM_PlainAdd);

static void BM_Matmul(benchmark::State& state) {
  const auto n = state.range(0);
  Generator gen(0);
  Tensor a = randn({n, n}, gen), b = randn({n, n}, gen);
  for (auto _ : state) benchmark::DoNotOptimize(matmul(a, b));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(n * n * n) * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul)->Arg(256)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond);

// Raw sgemm throughput of the two candidate libraries, side by side.
static void BM_Sgemm(benchmark::State& state) {
  const auto n = state.range(0);
  const bool onednn = state.range(1) == 1;
  std::vector<float> a(static_cast<std::size_t>(n * n), 1.0f), b(a), c(a);
  for (auto _ : state) {
    if (onednn)
      dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(n), static_cast<int>(n),
                  1.0f, a.data(), static_cast<int>(n), b.data(), static_cast<int>(n), 0.0f, c.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(c.data());
  }
  state.SetLabel(onednn ? "oneDNN" : "OpenBLAS");
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(n * n * n) * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Sgemm)->Args({2048, 0})->Args({2048, 1})->Args({512, 0})->Args({512, 1})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
