// Independent graphs built and differentiated on separate threads at once: each thread builds
// its own residual MLP, runs eager backward, the grad / jvp / hessian transforms and anomaly
// mode, and must get exactly what the same work gives on one thread. CI also runs this file
// under ThreadSanitizer (build-tsan, OMP_NUM_THREADS=1), which reports any data race in the
// shared state it touches: the caching allocator, the graph epoch counter, the transforms'
// frame stack, name scopes and grad mode.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <latch>
#include <thread>
#include <vector>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"
#include "chainrule/tensor/allocator.h"

using namespace chainrule;
using namespace chainrule::nn;

namespace {

// Everything one thread computes, flattened to numbers so results compare exactly.
std::vector<double> work(std::uint64_t seed) {
  std::vector<double> out;
  auto append = [&](const Tensor& t) {
    for (double v : t.to_vector<double>()) out.push_back(v);
  };
  Generator gen(seed);
  auto model = build_model("resmlp:6-8x2-3", DType::f64);
  init_model(*model, gen);
  const Tensor x = randn({5, 6}, gen, DType::f64);
  const Tensor labels = from_vector(std::vector<std::int64_t>{0, 1, 2, 1, 0}, {5});

  // Eager reverse mode through the module, in anomaly mode (thread-local scopes and checks).
  {
    DetectAnomalyGuard anomaly;
    Tensor loss = cross_entropy(model->forward(x), labels);
    loss.backward();
    append(loss);
    for (auto& [name, p] : model->named_parameters()) append(p.grad());
  }
  model->zero_grad();

  // The same gradient by the grad transform over functional_call, with grad mode off around it.
  std::vector<std::string> names;
  std::vector<Tensor> values;
  for (auto& [name, p] : model->named_parameters()) names.push_back(name), values.push_back(p.detach());
  auto loss_of = [&](const std::vector<Tensor>& ps) {
    std::map<std::string, Tensor> m;
    for (std::size_t i = 0; i < names.size(); ++i) m.emplace(names[i], ps[i]);
    return cross_entropy(functional_call(*model, m, x), labels);
  };
  for (const Tensor& g : grad(loss_of)(values)) append(g);

  // Forward mode and a nested transform on a small function of the input.
  auto f = [](const Tensor& v) { return sum(tanh(v) * v); };
  const Tensor v = randn({4}, gen, DType::f64), t = randn({4}, gen, DType::f64);
  auto [y, y_t] = jvp(f, v, t);
  append(y);
  append(y_t);
  append(hessian(f)(v));
  // Read the shared allocator's statistics while other threads allocate (TSan checks the lock).
  if (memory::stats().requests == 0) out.push_back(-1);
  return out;
}

}  // namespace

TEST(Threads, IndependentGraphsOnSeparateThreadsMatchOneThread) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 20;  // each thread repeats its work, so allocations get reused across threads
  std::vector<std::vector<double>> expected(kThreads);
  for (int i = 0; i < kThreads; ++i) expected[static_cast<std::size_t>(i)] = work(100 + static_cast<std::uint64_t>(i));

  std::vector<std::vector<std::vector<double>>> got(kThreads);
  std::vector<std::thread> threads;
  std::latch start(kThreads);  // all threads begin together, so their work overlaps
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      for (int r = 0; r < kRounds; ++r) got[static_cast<std::size_t>(i)].push_back(work(100 + static_cast<std::uint64_t>(i)));
    });
  }
  for (auto& th : threads) th.join();

  for (int i = 0; i < kThreads; ++i) {
    const auto& want = expected[static_cast<std::size_t>(i)];
    ASSERT_GT(want.size(), 100u);
    for (int r = 0; r < kRounds; ++r) {
      SCOPED_TRACE(testing::Message() << "thread " << i << " round " << r << " seed " << 100 + i);
      const auto& have = got[static_cast<std::size_t>(i)][static_cast<std::size_t>(r)];
      ASSERT_EQ(have.size(), want.size());
      // Float64 throughout; OpenMP teams may differ in size between threads, so summation order
      // (and only that) may change the last bits.
      for (std::size_t k = 0; k < want.size(); ++k) {
        ASSERT_NEAR(have[k], want[k], 1e-12 * std::max(1.0, std::abs(want[k]))) << "value " << k;
      }
    }
  }
}

TEST(Threads, GradModeAndAnomalyModeAreThreadLocal) {
  // Turning them on in one thread must not leak into another.
  bool other_anomaly = true, other_grad = false;
  {
    DetectAnomalyGuard anomaly;
    NoGradGuard no_grad;
    std::thread th([&] {
      other_anomaly = AnomalyMode::is_enabled();
      other_grad = GradMode::is_enabled();
    });
    th.join();
  }
  EXPECT_FALSE(other_anomaly);
  EXPECT_TRUE(other_grad);
}
