// `chainrule bench`: how fast a training step, the forward pass, the gradient and a JVP run on the
// dense networks of the speed issue, against the GEMM peak measured in the same process.
// bench/compare_pytorch.py runs the same configurations in PyTorch; docs/performance.md keeps both.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/profiler.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/errors.h"
#include "chainrule/nn/autocast.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/loss.h"
#include "chainrule/nn/module.h"
#include "chainrule/nn/spec.h"
#include "chainrule/nn/train.h"
#include "chainrule/tensor/allocator.h"
#include "chainrule/tensor/random.h"
#include "cli/commands.h"
#include "kernels/conv.h"
#include "kernels/gemm_half.h"
#include "kernels/vecmath.h"

namespace chainrule::kernels {
std::uint64_t& gemm_madds();  // kernels/kernels.h (not includable here: it needs OpenMP's flags)
}

namespace chainrule::cli {

namespace {

struct BenchConfig {
  std::string name, model;
  std::int64_t batch;
};
const std::vector<BenchConfig>& bench_configs() {
  static const std::vector<BenchConfig> list = {
      {"tiny", "mlp:2-64-64-2", 32},
      {"small", "mlp:64-256-256-256-10", 64},
      {"fmnist", "mlp:784-1024-1024-1024-10", 256},
      {"wide", "mlp:1024-4096-4096-10", 512},
      {"resmlp", "resmlp:784-256x15-10", 128},
      // The convolutional recipe's network (`chainrule train --model resnet`) and ResNet-20.
      {"resnet8", "resnet:1x28x28-16x1-32x1-64x1-10", 128},
      {"resnet20", "resnet:1x28x28-16x3-32x3-64x3-10", 128},
  };
  return list;
}

using Clock = std::chrono::steady_clock;

// `--precision`: "f32", or "bf16" (the steps under nn::AutocastGuard(bf16), as `train --precision bf16`).
std::optional<DType> autocast_of(const std::string& precision) {
  return precision == "bf16" ? std::optional<DType>(DType::bf16) : std::nullopt;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median seconds per call: `warmup` untimed calls, then timed calls until both `min_calls` calls
// and `min_seconds` have passed.
template <class F>
double median_seconds(F&& fn, int warmup, int min_calls, double min_seconds) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  const auto start = Clock::now();
  while (static_cast<int>(times.size()) < min_calls || std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(times);
}

// The best float32 GEMM rate at 2048³, in GFLOP/s (2 flops per multiply-add).
double gemm_peak_gflops() {
  Generator gen(1);
  const std::int64_t n = 2048;
  Tensor a = randn({n, n}, gen), b = randn({n, n}, gen);
  NoGradGuard ng;
  double best = 1e30;
  matmul(a, b);  // warm-up: page in the operands and oneDNN's kernels
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    matmul(a, b);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(n * n * n) / best / 1e9;
}

struct Measurement {
  std::string name, model, precision = "f32";
  std::int64_t batch = 0, weights = 0, parameters = 0;
  int threads = 0;
  double step_s = 0, forward_s = 0, grad_s = 0, jvp_s = 0;
  double uncompiled_step_s = 0;  // with compile on: the same step uncompiled, timed in the same run
  bool compiled = false;
  std::size_t peak_bytes = 0, needed_bytes = 0;
  std::uint64_t step_madds = 0;  // GEMM and convolution multiply-adds of one training step, counted
};

// A configuration's network, batch, optimiser and loss: what one training step needs.
struct StepSetup {
  nn::ModelSpec spec;
  std::shared_ptr<nn::Sequential> model;
  Generator gen{0};
  Tensor x, y;
  std::optional<optim::SGD> opt;
  nn::LossFn loss = [](const Tensor& out, const Tensor& target) { return cross_entropy(out, target); };

  std::optional<nn::CompiledTrainStep> compiled;  // the step traced once and replayed (autodiff/compile.h)

  StepSetup(const BenchConfig& c, bool compile) : spec(nn::ModelSpec::parse(c.model)), model(nn::build_model(spec)) {
    // Residual branches start at zero (as zero_residual training does): 15 unscaled He-initialised
    // blocks would otherwise grow the logits by 2^15 in variance and SGD on random labels diverges.
    nn::init_model(*model, gen, {.zero_residual = true});
    x = randn({c.batch, spec.input_dim()}, gen), y = randint({c.batch}, spec.output_dim(), gen);
    opt.emplace(model->named_parameters(), optim::SGDOptions{.lr = 1e-3, .momentum = 0.9});
    if (compile) compiled.emplace(*model, loss);
  }
  void step() {
    if (compiled) (*compiled)(*opt, x, y);
    else nn::train_step(*model, *opt, x, y, loss);
  }
};

Measurement measure(const BenchConfig& c, int threads, double min_seconds, bool compile, const std::string& precision) {
  set_threads(threads);
  nn::AutocastGuard autocast(autocast_of(precision));
  Measurement r{c.name, c.model, precision, c.batch};
  r.threads = threads;
  r.compiled = compile;
  StepSetup setup(c, compile);
  const nn::ModelSpec& spec = setup.spec;
  auto& model = setup.model;
  Generator& gen = setup.gen;
  const std::int64_t outputs = spec.output_dim();
  const Tensor &x = setup.x, &y = setup.y;
  optim::SGD& opt = *setup.opt;
  const nn::LossFn& loss = setup.loss;

  // Bytes a step cannot do without: parameters, gradients, momentum, the input of every Linear
  // (saved for its weight gradient; a ReLU's output is the next Linear's input) and the softmax.
  std::size_t saved = static_cast<std::size_t>(c.batch * outputs);
  for (auto& [name, m] : model->named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m)) {
      r.weights += lin->weight.numel();
      saved += static_cast<std::size_t>(c.batch * lin->in_features);
    }
  r.parameters = model->num_parameters();
  r.needed_bytes = sizeof(float) * (3 * static_cast<std::size_t>(r.parameters) + saved);

  r.step_s = median_seconds([&] { setup.step(); }, 3, 10, min_seconds);
  if (compile) r.uncompiled_step_s = median_seconds([&] { nn::train_step(*model, opt, x, y, loss); }, 3, 10, min_seconds);
  memory::reset_peak();
  const std::uint64_t madds_before = kernels::gemm_madds();
  setup.step();
  r.step_madds = kernels::gemm_madds() - madds_before;
  r.peak_bytes = memory::stats().peak_bytes;

  r.grad_s = median_seconds([&] {
    opt.zero_grad();
    loss(model->forward(x), y).backward();
  }, 2, 10, min_seconds);
  NoGradGuard ng;
  r.forward_s = median_seconds([&] { loss(model->forward(x), y); }, 2, 10, min_seconds);
  Tensor tangent = randn(x.shape(), gen);
  r.jvp_s = median_seconds([&] { jvp([&](const Tensor& xi) { return loss(model->forward(xi), y); }, x, tangent); }, 2, 10,
                           min_seconds);
  return r;
}

// `--profile`: the primitives' time in `steps` training steps after a few warm-up steps, as a
// table; `trace` (when not empty) receives the Chrome trace of those steps.
void profile_config(const BenchConfig& c, int threads, int steps, const std::string& trace, bool compile, const std::string& precision) {
  set_threads(threads);
  nn::AutocastGuard autocast(autocast_of(precision));
  StepSetup setup(c, compile);
  for (int i = 0; i < 3; ++i) setup.step();
  const auto t0 = Clock::now();  // the same steps unprofiled, for the profiler's own cost
  for (int i = 0; i < steps; ++i) setup.step();
  const double plain_ms = 1e3 * std::chrono::duration<double>(Clock::now() - t0).count() / steps;
  profiler::Profile prof;
  for (int i = 0; i < steps; ++i) setup.step();
  prof.stop();
  fmt::print("\nProfile of {} (batch {}, {} thread(s)), {} training steps:\n{}", c.name, c.batch, threads, steps, prof.table(steps));
  fmt::print("The same steps unprofiled: {:.4f} ms per step (mean)\n", plain_ms);
  if (!trace.empty()) {
    prof.export_chrome_trace(trace);
    fmt::print("Chrome trace ({} events): {}\n", prof.events().size(), trace);
  }
  std::fflush(stdout);
}

// The Jacobian of f: Rⁿ → Rᵐ, a 3-layer tanh MLP of width 512, by jacobian()'s automatic choice.
struct JacobianMeasurement {
  std::int64_t n = 0, m = 0;
  int threads = 0;
  double seconds = 0;
  std::string mode;
};
JacobianMeasurement measure_jacobian(std::int64_t n, std::int64_t m, int threads, double min_seconds) {
  set_threads(threads);
  Generator gen(0);
  const std::int64_t w = 512;
  auto scaled = [&](std::int64_t rows, std::int64_t cols) { return randn({rows, cols}, gen) * (1.0 / std::sqrt(static_cast<double>(cols))); };
  Tensor w1 = scaled(w, n), w2 = scaled(w, w), w3 = scaled(m, w);
  Tensor b1 = randn({w}, gen) * 0.1, b2 = randn({w}, gen) * 0.1, b3 = randn({m}, gen) * 0.1;
  auto f = [&](const Tensor& x) { return matmul(w3, tanh(matmul(w2, tanh(matmul(w1, x) + b1)) + b2)) + b3; };
  Tensor x = randn({n}, gen);
  JacobianMeasurement r{n, m, threads};
  r.mode = jacobian(f, x).used == JacobianMode::Forward ? "forward" : "reverse";
  r.seconds = median_seconds([&] { jacobian(f, x); }, 1, 3, min_seconds);
  return r;
}

// Per-example gradients of the fmnist MLP, as `vmap(grad(loss), {not_mapped, 0, 0})(params, x, y)`
// over a batch, against a loop of grad over the examples (bench/compare_pytorch.py runs
// functorch.vmap(functorch.grad) on the same network).
struct PerExampleMeasurement {
  std::string model;
  std::int64_t batch = 0;
  int threads = 0;
  double vmap_s = 0, loop_s = 0;
};
// A convolutional config runs in evaluation mode (BatchNorm as the fixed affine map of its running
// statistics: a per-example gradient has no batch to normalise over), each example as a batch of one.
PerExampleMeasurement measure_per_example(const std::string& config, std::int64_t batch, int threads, double min_seconds) {
  set_threads(threads);
  const auto it = std::find_if(bench_configs().begin(), bench_configs().end(), [&](const BenchConfig& c) { return c.name == config; });
  if (it == bench_configs().end()) throw ValueError(fmt::format("bench: unknown --per-example-config '{}'", config));
  const BenchConfig& fm = *it;
  const nn::ModelSpec spec = nn::ModelSpec::parse(fm.model);
  auto model = nn::build_model(spec);
  Generator gen(0);
  nn::init_model(*model, gen, {});
  const bool conv = spec.kind == nn::ModelSpec::Kind::ResNet;
  if (conv) model->eval();
  Tensor x = randn(conv ? Shape{batch, 1, spec.input_dim()} : Shape{batch, spec.input_dim()}, gen);
  Tensor y = randint(conv ? Shape{batch, 1} : Shape{batch}, spec.output_dim(), gen);
  std::map<std::string, Tensor> params;  // the parameters only: buffers stay the module's
  for (const auto& [name, t] : model->named_parameters()) params.emplace(name, t);
  auto loss = [&](const std::map<std::string, Tensor>& p, const Tensor& xi, const Tensor& yi) {
    return cross_entropy(nn::functional_call(*model, p, xi), yi);
  };
  PerExampleMeasurement r{fm.model, batch, threads};
  auto per_example = vmap(grad(loss), {not_mapped, 0, 0});
  r.vmap_s = median_seconds([&] { per_example(params, x, y); }, 1, 3, min_seconds);
  r.loop_s = median_seconds([&] {
    for (std::int64_t i = 0; i < batch; ++i) grad(loss)(params, squeeze(slice(x, 0, i, i + 1), 0), squeeze(slice(y, 0, i, i + 1), 0));
  }, 1, 3, min_seconds);
  return r;
}

// Elementwise functions of 1M float32 values (bench/compare_pytorch.py --elementwise times torch's
// on the same shapes): the primitives on SLEEF's vector kernels, the scalar <cmath> loop they
// replaced (one thread; the primitives only), and the composite activations (softplus, silu).
struct ElementwiseFn {
  const char* name;
  Tensor (*op)(const Tensor&);
  bool positive;                       // a positive input (log, log1p)
  std::optional<kernels::VecFn> kernel;  // the vector kernel behind it, when one primitive
};
Tensor gelu_exact(const Tensor& x) { return gelu(x, false); }
Tensor gelu_tanh(const Tensor& x) { return gelu(x, true); }
const std::vector<ElementwiseFn>& elementwise_fns() {
  using kernels::VecFn;
  static const std::vector<ElementwiseFn> list = {
      {"exp", exp, false, VecFn::exp},         {"log", log, true, VecFn::log},       {"tanh", tanh, false, VecFn::tanh},
      {"sigmoid", sigmoid, false, VecFn::sigmoid}, {"sin", sin, false, VecFn::sin},  {"cos", cos, false, VecFn::cos},
      {"erf", erf, false, VecFn::erf},         {"expm1", expm1, false, VecFn::expm1}, {"log1p", log1p, true, VecFn::log1p},
      {"softplus", softplus, false, {}},       {"gelu", gelu_exact, false, VecFn::gelu}, {"gelu_tanh", gelu_tanh, false, VecFn::gelu_tanh},
      {"silu", silu, false, {}},
  };
  return list;
}

nlohmann::json run_elementwise(const std::vector<int>& thread_counts, double min_seconds) {
  const std::int64_t n = 1 << 20;
  Generator gen(0);
  NoGradGuard ng;
  const Tensor x = randn({n}, gen), positive = abs(x) + 0.01;
  const double bytes = 2.0 * sizeof(float) * static_cast<double>(n);  // one read, one write
  fmt::print("Elementwise, {} float32 values (vector kernels: {}), median ms and GB/s (read + write):\n", n, kernels::vec_isa());
  fmt::print("{:<10}", "function");
  for (int t : thread_counts) fmt::print(" {:>9} {:>6}", fmt::format("{} thr ms", t), "GB/s");
  fmt::print(" {:>11}\n", "scalar ms");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& f : elementwise_fns()) {
    const Tensor& in = f.positive ? positive : x;
    fmt::print("{:<10}", f.name);
    nlohmann::json row{{"name", f.name}};
    for (int t : thread_counts) {
      set_threads(t);
      const double s = median_seconds([&] { f.op(in); }, 3, 20, min_seconds);
      fmt::print(" {:>9.3f} {:>6.1f}", 1e3 * s, bytes / s / 1e9);
      row["ms"][std::to_string(t)] = 1e3 * s;
    }
    if (f.kernel) {  // the <cmath> loop, one thread, into a preallocated output
      Tensor o = empty({n});
      const float* a = in.data<float>();
      float* d = o.mutable_data<float>();
      const double s = median_seconds([&] { kernels::vec_map_scalar(*f.kernel, a, d, n); }, 1, 5, min_seconds);
      fmt::print(" {:>11.3f}", 1e3 * s);
      row["scalar_ms"] = 1e3 * s;
    }
    fmt::print("\n");
    std::fflush(stdout);
    rows.push_back(row);
  }
  return {{"n", n}, {"isa", kernels::vec_isa()}, {"functions", rows}};
}

// A 1024×1024×1024 matmul in each float dtype: bfloat16 on oneDNN's bf16 GEMM where the CPU has
// one (float32 accumulation), float16 through the float32 path (its up-cast and rounding included).
// The convolutions of one training step of a conv configuration, timed as the step makes them
// (reorders between NCHW and oneDNN's blocked layouts included) and as oneDNN's primitive alone in
// its own layouts: what oneDNN reaches on these shapes, the peak the step is measured against.
// Returns null for a configuration without convolutions.
nlohmann::json conv_share(const BenchConfig& c, int threads, double step_s, std::uint64_t step_madds, double min_seconds,
                          bool compile, const std::string& precision) {
  set_threads(threads);
  nn::AutocastGuard autocast(autocast_of(precision));
  StepSetup setup(c, compile);
  setup.step();  // plans every shape once
  kernels::clear_conv_plans();
  setup.step();  // one step's calls per shape
  const auto plans = kernels::time_conv_plans(std::min(min_seconds, 0.2));
  if (plans.empty()) return nullptr;
  double call_s = 0, primitive_s = 0, madds = 0;
  fmt::print("  {} ({}) convolutions per step ({} thread(s)): as called (with reorders) and oneDNN's primitive alone\n", c.name, precision, threads);
  fmt::print("  {:<17} {:>22} {:>6} {:>5} {:>10} {:>10} {:>9}\n", "kind", "N C HxW -> O k s", "calls", "reord", "GFLOP/s", "alone", "share");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& p : plans) {
    const auto& s = p.shape;
    const double n = static_cast<double>(p.calls), flop = 2.0 * static_cast<double>(p.madds);
    call_s += n * p.call_s, primitive_s += n * p.primitive_s, madds += n * static_cast<double>(p.madds);
    fmt::print("  {:<17} {:>22} {:>6} {:>5} {:>10.1f} {:>10.1f} {:>8.0f}%\n", p.kind,
               fmt::format("{} {} {}x{} -> {} {} {}", s.n, s.c, s.h, s.w, s.o, s.kh, s.stride[0]), p.calls, p.reordered ? "yes" : "no",
               flop / p.call_s / 1e9, flop / p.primitive_s / 1e9, 100 * p.primitive_s / p.call_s);
    rows.push_back({{"kind", p.kind}, {"n", s.n}, {"c", s.c}, {"h", s.h}, {"w", s.w}, {"o", s.o}, {"k", s.kh}, {"stride", s.stride[0]},
                    {"calls", p.calls}, {"call_us", p.call_s * 1e6}, {"primitive_us", p.primitive_s * 1e6}, {"reordered", p.reordered}});
  }
  const double alone_gflops = 2 * madds / primitive_s / 1e9;
  const double step_gflops = 2.0 * static_cast<double>(step_madds) / step_s / 1e9;
  fmt::print("  per step: convolutions {:.0f} µs as called, {:.0f} µs in oneDNN alone ({:.1f} GFLOP/s); the whole step {:.0f} µs at "
             "{:.1f} GFLOP/s = {:.0f}% of oneDNN's convolution rate on these shapes\n",
             call_s * 1e6, primitive_s * 1e6, alone_gflops, step_s * 1e6, step_gflops, 100 * step_gflops / alone_gflops);
  return {{"threads", threads}, {"conv_call_us", call_s * 1e6}, {"conv_primitive_us", primitive_s * 1e6},
          {"conv_alone_gflops", alone_gflops}, {"step_share_of_conv_alone", step_gflops / alone_gflops}, {"plans", rows}};
}

nlohmann::json run_matmul(const std::vector<int>& thread_counts, double min_seconds) {
  const std::int64_t n = 1024;
  Generator gen(0);
  NoGradGuard ng;
  const Tensor a = randn({n, n}, gen), b = randn({n, n}, gen);
  const std::string kernel = kernels::bf16_gemm_kernel();
  fmt::print("matmul {0}x{0}x{0}, median ms and GFLOP/s (bf16 kernel: {1}):\n", n, kernel.empty() ? "none, float32 path" : kernel);
  nlohmann::json rows = nlohmann::json::array();
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    const Tensor x = cast(a, t), y = cast(b, t);
    fmt::print("{:<9}", dtype_name(t));
    nlohmann::json row{{"dtype", dtype_name(t)}};
    for (int th : thread_counts) {
      set_threads(th);
      const double s = median_seconds([&] { matmul(x, y); }, 2, 10, min_seconds);
      const double gflops = 2.0 * static_cast<double>(n * n * n) / s / 1e9;
      fmt::print(" {} thr {:>8.2f} ms {:>7.1f} GFLOP/s", th, 1e3 * s, gflops);
      row["ms"][std::to_string(th)] = 1e3 * s;
      row["gflops"][std::to_string(th)] = gflops;
    }
    fmt::print("\n");
    std::fflush(stdout);
    rows.push_back(row);
  }
  return {{"n", n}, {"bf16_kernel", kernel}, {"dtypes", rows}};
}

struct BenchArgs {
  std::vector<std::string> configs;
  std::vector<int> threads;
  std::vector<std::string> precisions;
  double min_time = 1.0;
  bool json = false, jacobians = false, per_example = false, elementwise = false, matmul = false, profile = false;
  bool no_compile = false;
  int profile_steps = 20;
  std::string trace;
  std::int64_t per_example_batch = 128;
  std::string per_example_config = "fmnist";
};

// With several configurations, `--trace t.json` names one file per configuration: t.tiny.json, ...
std::string trace_path(const std::string& trace, const std::string& config) {
  if (trace.empty()) return trace;
  const auto dot = trace.rfind('.');
  const auto slash = trace.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return trace + "." + config;
  return trace.substr(0, dot) + "." + config + trace.substr(dot);
}

void run_bench(const BenchArgs& a) {
  std::vector<BenchConfig> chosen;
  for (const auto& name : a.configs) {
    auto it = std::find_if(bench_configs().begin(), bench_configs().end(), [&](const BenchConfig& c) { return c.name == name; });
    if (it == bench_configs().end()) {
      std::string known;
      for (const auto& c : bench_configs()) known += (known.empty() ? "" : ", ") + c.name;
      throw ValueError(fmt::format("bench: unknown --config '{}' (known: {})", name, known));
    }
    chosen.push_back(*it);
  }
  if (chosen.empty()) chosen = bench_configs();
  std::vector<int> thread_counts = a.threads.empty() ? std::vector<int>{1, 2} : a.threads;
  for (int t : thread_counts)
    if (t <= 0) throw ValueError(fmt::format("bench: --threads must be positive, got {}", t));
  if (a.profile_steps <= 0) throw ValueError(fmt::format("bench: --profile-steps must be positive, got {}", a.profile_steps));
  if (!a.trace.empty() && !a.profile) throw ValueError("bench: --trace needs --profile");
  if (!(a.min_time > 0)) throw ValueError(fmt::format("bench: --min-time must be positive, got {}", a.min_time));
  if (a.matmul) {  // on its own, as --elementwise
    nlohmann::json out{{"matmul", run_matmul(thread_counts, a.min_time)}};
    if (a.json) std::cout << out.dump() << "\n";
    return;
  }
  if (a.elementwise) {  // on its own: no networks, no GEMM peak
    nlohmann::json out{{"elementwise", run_elementwise(thread_counts, a.min_time)}};
    if (a.json) std::cout << out.dump() << "\n";
    return;
  }

  double peak = 0;
  for (int t : thread_counts) {
    set_threads(t);
    peak = std::max(peak, gemm_peak_gflops());
  }
  fmt::print("GEMM peak (float32 2048³, best of {} thread setting(s)): {:.1f} GFLOP/s\n", thread_counts.size(), peak);
  const bool compile = !a.no_compile;
  fmt::print("Training steps {} (--no-compile: {})\n", compile ? "compiled (traced once, replayed)" : "uncompiled",
             compile ? "uncompiled only" : "set");
  const std::vector<std::string> precisions = a.precisions.empty() ? std::vector<std::string>{"f32"} : a.precisions;
  fmt::print("{:<8} {:>5} {:>7} {:>4} {:>11} {:>13} {:>8} {:>6} {:>10} {:>9} {:>10} {:>11}\n", "config", "prec", "batch", "thr", "step",
             "uncompiled", "GFLOP/s", "peak", "grad/fwd", "jvp/fwd", "peak MB", "needed MB");
  nlohmann::json configs = nlohmann::json::array();
  for (const auto& c : chosen) {
    for (const auto& precision : precisions) {
      Measurement best;
      for (int t : thread_counts) {
        Measurement m = measure(c, t, a.min_time, compile, precision);
        if (best.threads == 0 || m.step_s < best.step_s) best = m;
      }
      const double gflops = 2.0 * static_cast<double>(best.step_madds) / best.step_s / 1e9;
      fmt::print("{:<8} {:>5} {:>7} {:>4} {:>8.1f} µs {:>10} {:>8.1f} {:>5.0f}% {:>10.2f} {:>9.2f} {:>10.1f} {:>11.1f}\n", best.name,
                 best.precision, best.batch, best.threads, best.step_s * 1e6,
                 compile ? fmt::format("{:.1f} µs", best.uncompiled_step_s * 1e6) : std::string("-"), gflops, 100 * gflops / peak, best.grad_s / best.forward_s,
                 best.jvp_s / best.forward_s, static_cast<double>(best.peak_bytes) / 1e6,
                 static_cast<double>(best.needed_bytes) / 1e6);
      std::fflush(stdout);
      if (a.profile)
        profile_config(c, best.threads, a.profile_steps,
                       chosen.size() * precisions.size() == 1 ? a.trace : trace_path(a.trace, c.name + (precisions.size() > 1 ? "-" + precision : "")),
                       compile, precision);
      nlohmann::json convs = conv_share(c, best.threads, best.step_s, best.step_madds, a.min_time, compile, precision);
      configs.push_back({{"convolutions", convs}, {"name", best.name}, {"model", best.model}, {"precision", best.precision}, {"batch", best.batch}, {"threads", best.threads},
                         {"step_us", best.step_s * 1e6}, {"compiled", best.compiled},
                         {"uncompiled_step_us", compile ? nlohmann::json(best.uncompiled_step_s * 1e6) : nlohmann::json()},
                         {"gflops", gflops}, {"peak_fraction", gflops / peak},
                         {"grad_over_forward", best.grad_s / best.forward_s}, {"jvp_over_forward", best.jvp_s / best.forward_s},
                         {"forward_us", best.forward_s * 1e6}, {"grad_us", best.grad_s * 1e6}, {"jvp_us", best.jvp_s * 1e6},
                         {"peak_bytes", best.peak_bytes}, {"needed_bytes", best.needed_bytes}});
    }
  }
  nlohmann::json out{{"gemm_peak_gflops", peak}, {"configs", configs}};
  if (a.jacobians) {
    fmt::print("\nJacobian of a 3-layer tanh MLP (width 512), jacobian() with the automatic mode:\n");
    out["jacobians"] = nlohmann::json::array();
    for (auto [n, m] : std::vector<std::pair<std::int64_t, std::int64_t>>{{16, 4096}, {4096, 16}, {1024, 1024}}) {
      JacobianMeasurement best;
      for (int t : thread_counts) {
        JacobianMeasurement j = measure_jacobian(n, m, t, a.min_time);
        if (best.threads == 0 || j.seconds < best.seconds) best = j;
      }
      fmt::print("  n = {:>4}, m = {:>4}: {:8.2f} ms ({} mode, {} thread(s))\n", n, m, 1e3 * best.seconds, best.mode, best.threads);
      out["jacobians"].push_back({{"n", n}, {"m", m}, {"seconds", best.seconds}, {"mode", best.mode}, {"threads", best.threads}});
    }
  }
  if (a.per_example) {
    PerExampleMeasurement best;
    for (int t : thread_counts) {
      PerExampleMeasurement m = measure_per_example(a.per_example_config, a.per_example_batch, t, a.min_time);
      if (best.threads == 0 || m.vmap_s < best.vmap_s) best = m;
    }
    fmt::print("\nPer-example gradients of {} over a batch of {}: vmap(grad) {:.1f} ms, a loop of grad {:.1f} ms ({:.2f}x), "
               "{} thread(s)\n", best.model, best.batch, 1e3 * best.vmap_s, 1e3 * best.loop_s, best.loop_s / best.vmap_s, best.threads);
    out["per_example"] = {{"model", best.model}, {"batch", best.batch}, {"threads", best.threads}, {"vmap_s", best.vmap_s},
                          {"loop_s", best.loop_s}};
  }
  if (a.json) std::cout << out.dump() << "\n";
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Time training steps, forward, gradient and JVP on the benchmark networks");
  cmd->add_option("--config", args->configs, "Configurations (tiny, small, fmnist, wide, resmlp, resnet8, resnet20; default: all)")->delimiter(',');
  cmd->add_option("--threads", args->threads, "Thread counts to try; the fastest is reported (default: 1,2)")->delimiter(',');
  cmd->add_option("--precision", args->precisions,
                  "Precisions to time each configuration in, one row each: f32, bf16 (mixed: under bf16 autocast, as `train "
                  "--precision bf16`; default: f32)")
      ->delimiter(',')
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--min-time", args->min_time, "Seconds to repeat each measurement for (the median is reported)")
      ->capture_default_str();
  cmd->add_flag("--jacobian", args->jacobians, "Also time jacobian() of f: R^n -> R^m for (16, 4096), (4096, 16), (1024, 1024)");
  cmd->add_flag("--per-example", args->per_example,
                 "Also time per-example gradients of the fmnist MLP: vmap(grad(loss)) against a loop of grad");
  cmd->add_option("--per-example-batch", args->per_example_batch, "Batch of --per-example")->capture_default_str();
  cmd->add_option("--per-example-config", args->per_example_config,
                  "Network of --per-example (fmnist, or a resnet config in evaluation mode)")->capture_default_str();
  cmd->add_flag("--matmul", args->matmul, "Only time a 1024x1024x1024 matmul in float32, bfloat16 and float16");
  cmd->add_flag("--elementwise", args->elementwise,
                "Instead of the networks: time exp, log, tanh, sigmoid, sin, cos, erf, expm1, log1p and the composite "
                "activations at 1M float32 values, per thread count");
  cmd->add_flag("--profile", args->profile,
                "After each configuration's timing, profile --profile-steps training steps: time per primitive, forward "
                "and backward, calls and share of the step");
  cmd->add_option("--profile-steps", args->profile_steps, "Training steps that --profile records")->capture_default_str();
  cmd->add_option("--trace", args->trace,
                  "With --profile: write the Chrome trace (Perfetto, chrome://tracing) to this file (FILE.CONFIG.json with "
                  "several configurations)");
  cmd->add_flag("--no-compile", args->no_compile,
                "Time the training step uncompiled only (by default it is compiled: traced once and replayed, and the "
                "uncompiled step is timed beside it)");
  cmd->add_flag("--json", args->json, "Print one JSON object with every figure as the last line");
  cmd->callback([args, &exit_code] {
    run_bench(*args);
    exit_code = 0;
  });
}

}  // namespace chainrule::cli
