// Checkpointing (rematerialisation): time of a full training step (zero grads, forward, softmax
// cross-entropy, backward, SGD with momentum 0.9) on a 64-block residual MLP, plain and with
// checkpoint_sequential every 8 layers, and the activation memory of each (the allocator's
// high-water mark above parameters, gradients and optimiser state).
// Run: OMP_NUM_THREADS=1 build/bench/chainrule_bench_remat --benchmark_repetitions=5
//        --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "chainrule/chainrule.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/spec.h"
#include "chainrule/optim/optimizer.h"
#include "chainrule/tensor/allocator.h"

using namespace chainrule;

// Arg: checkpoint segments (0: none).
static void BM_ResMLP64Step(benchmark::State& state) {
  auto model = nn::build_model("resmlp:256-256x64-10");
  Generator gen(0);
  nn::init_model(*model, gen);
  model->set_checkpoint_segments(static_cast<int>(state.range(0)));
  optim::SGD opt(model->named_parameters(), {.lr = 1e-3, .momentum = 0.9});
  Tensor x = randn({128, 256}, gen), labels = randint({128}, 10, gen);
  auto step = [&] {
    opt.zero_grad();
    cross_entropy(model->forward(x), labels).backward();
    opt.step();
  };
  step();  // allocates the momentum buffers
  // Activation memory: with the gradients of the previous step kept, backward adds into them in
  // place, so the high-water mark above what is in use is what the forward and backward passes need.
  cross_entropy(model->forward(x), labels).backward();
  memory::reset_peak();
  const std::size_t before = memory::stats().bytes_in_use;
  cross_entropy(model->forward(x), labels).backward();
  const double activation = static_cast<double>(memory::stats().peak_bytes - before);
  for (auto _ : state) step();
  state.counters["activation_MiB"] = activation / (1 << 20);
}
BENCHMARK(BM_ResMLP64Step)->Arg(0)->Arg(8)->Unit(benchmark::kMillisecond)->MinTime(2.0);

BENCHMARK_MAIN();
