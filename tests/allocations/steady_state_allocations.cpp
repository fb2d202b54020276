// A training step in steady state makes no heap allocation of its own: tensor storage comes from
// the caching allocator, tensor headers and graph nodes from the object pools, and the backward
// pass reuses its buffers. This binary replaces the global operator new to count every C++
// allocation during steps 3 to 10 of several models (each with the trainer's step,
// nn::train_step), and reads the caching allocator's count of system allocations.
//
// oneDNN's sgemm allocates its packing buffers inside each call (with malloc, and for some shapes
// with operator new); those are counted apart, by the library the allocation came from, and
// reported, not asserted. It is a separate binary because it replaces operator new, which the
// sanitizer builds must not (they also bypass the pools).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "chainrule/chainrule.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/spec.h"
#include "chainrule/nn/train.h"
#include "chainrule/tensor/allocator.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_ours{0}, g_dnnl{0};

bool from_dnnl(void* caller) {
  Dl_info info;
  return dladdr(caller, &info) && info.dli_fname && std::strstr(info.dli_fname, "libdnnl");
}
void* counted(std::size_t n, void* caller) {
  if (g_counting.load(std::memory_order_relaxed)) (from_dnnl(caller) ? g_dnnl : g_ours)++;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, __builtin_return_address(0)); }
void* operator new[](std::size_t n) { return counted(n, __builtin_return_address(0)); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting.load(std::memory_order_relaxed)) (from_dnnl(__builtin_return_address(0)) ? g_dnnl : g_ours)++;
  const std::size_t align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace chainrule;

class SteadyState : public ::testing::TestWithParam<const char*> {};

// Steps 3 to 10 of nn::train_step, or 4 to 11 of nn::CompiledTrainStep: its step 1 is the trace
// and step 2 the first replay, after which the caching allocator's free lists, sized by the
// trace's lifetimes, may still grow once (memory::deallocate's push_back, seen in step 3 of
// resmlp:16-32x2-4:pre+ln).
void check_steady_state(const char* model_spec, bool compiled) {
  const nn::ModelSpec spec = nn::ModelSpec::parse(model_spec);
  auto model = nn::build_model(spec);
  Generator gen(0);
  nn::init_model(*model, gen);
  Tensor x = randn({32, spec.input_dim()}, gen), y = randint({32}, spec.output_dim(), gen);
  optim::SGD sgd(model->named_parameters(), {.lr = 1e-3, .momentum = 0.9});
  optim::AdamWOptions adamw_options;
  adamw_options.lr = 1e-3;
  optim::AdamW adamw(model->named_parameters(), adamw_options);
  const nn::LossFn loss = [](const Tensor& out, const Tensor& target) { return cross_entropy(out, target); };
  for (optim::Optimizer* opt : {static_cast<optim::Optimizer*>(&sgd), static_cast<optim::Optimizer*>(&adamw)}) {
    nn::CompiledTrainStep compiled_step(*model, loss);
    auto train_step = [&](nn::Module&, optim::Optimizer& o, const Tensor& xs, const Tensor& ys, const nn::LossFn& l) {
      if (compiled) compiled_step(o, xs, ys);
      else nn::train_step(*model, o, xs, ys, l);
    };
    const int warmup = compiled ? 3 : 2;
    for (int step = 1; step <= warmup; ++step) train_step(*model, *opt, x, y, loss);
    const auto system_before = memory::stats().system_allocations;
    g_ours = 0, g_dnnl = 0;
    g_counting = true;
    for (int step = warmup + 1; step <= warmup + 8; ++step) train_step(*model, *opt, x, y, loss);
    g_counting = false;
    EXPECT_EQ(g_ours.load(), 0) << model_spec << (compiled ? " compiled" : "") << " with " << opt->name() << ": C++ allocations by chainrule in the 8 steps after warm-up";
    EXPECT_EQ(memory::stats().system_allocations - system_before, 0u) << model_spec << (compiled ? " compiled" : "") << " with " << opt->name()
                                                                        << ": tensor storage from the system";
    std::printf("%s%s, %s: 8 steps after warm-up made %ld chainrule allocations; oneDNN made %ld with operator new\n", model_spec,
                compiled ? " (compiled)" : "", opt->name().c_str(), g_ours.load(), g_dnnl.load());
  }
}

TEST_P(SteadyState, TrainingStepsThreeToTenAllocateNothing) { check_steady_state(GetParam(), false); }
TEST_P(SteadyState, CompiledTrainingStepsAfterWarmUpAllocateNothing) { check_steady_state(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Models, SteadyState,
                         ::testing::Values("mlp:2-64-64-2", "mlp:64-256-256-10", "resmlp:16-32x3-4", "resmlp:16-32x2-4:pre+ln"));
