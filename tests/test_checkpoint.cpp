// checkpoint (rematerialisation): the same derivatives with and without it under every transform
// and nesting, random draws replayed, errors for captured tensors, and the activation memory it
// saves on a 64-block residual MLP.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "chainrule/chainrule.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/layers.h"
#include "chainrule/nn/spec.h"
#include "chainrule/tensor/allocator.h"

using namespace chainrule;

namespace {

constexpr std::uint64_t kSeed = 7;

// Largest difference relative to the largest magnitude (at least 1): summation order differs
// between the two graphs, so agreement is to rounding, not bit for bit.
double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  return max(abs(sub(a, b))).item() / std::max(1.0, max(abs(b)).item());
}

// A block of (x, W) with a random factor, so the recomputation must replay the draw.
struct Block {
  Generator* gen;
  Tensor operator()(const std::vector<Tensor>& in) const {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    Tensor noise = rand(x.shape(), *gen, DType::f64);
    return tanh(matmul(w, x)) * exp(neg(x)) * (noise + 0.5) + x;
  }
};

struct Fixture {
  Generator gen{kSeed};
  Tensor x, w, v;
  Fixture() {
    Generator g(1);
    x = randn({4}, g, DType::f64);
    w = randn({4, 4}, g, DType::f64);
    v = randn({4}, g, DType::f64);
  }
  // Both variants start from the same generator state.
  Tensor block(const Tensor& xi, bool remat) {
    Block b{&gen};
    return remat ? checkpoint(b, {xi, w}) : b({xi, w});
  }
  std::function<Tensor(const Tensor&)> f(bool remat) {
    return [this, remat](const Tensor& xi) {
      gen.set_state(kSeed, 0);
      return block(block(xi, remat), remat);
    };
  }
  std::function<Tensor(const Tensor&)> loss(bool remat) {
    return [this, remat](const Tensor& xi) {
      Tensor y = f(remat)(xi);
      return sum(square(y)) + sum(y * xi);
    };
  }
};

TEST(Remat, EagerBackwardKeepsOnlyInputsAndMatches) {
  Fixture fx;
  std::map<bool, std::vector<Tensor>> grads;
  for (bool remat : {false, true}) {
    Tensor x = fx.x.detach().requires_grad_();
    Tensor w = fx.w.detach().requires_grad_();
    fx.gen.set_state(kSeed, 0);
    Block b{&fx.gen};
    Tensor y = remat ? checkpoint(b, {x, w}) : b({x, w});
    if (remat) {
      const auto& node = y.impl()->node;
      ASSERT_TRUE(node && node->prim);
      EXPECT_EQ(node->prim->name, "checkpoint");
      EXPECT_EQ(node->saved.size(), 2u);  // x and W, not the activations inside
    }
    Tensor loss = sum(square(y));
    std::uint64_t counter_after_forward = fx.gen.counter();
    loss.backward();
    EXPECT_EQ(fx.gen.counter(), counter_after_forward) << "the recomputation replays draws, it does not make new ones";
    grads[remat] = {x.grad(), w.grad()};
  }
  EXPECT_LE(max_diff(grads[true][0], grads[false][0]), 1e-12);
  EXPECT_LE(max_diff(grads[true][1], grads[false][1]), 1e-12);
}

TEST(Remat, AutogradGradWithCreateGraph) {
  Fixture fx;
  std::map<bool, std::pair<Tensor, Tensor>> r;
  for (bool remat : {false, true}) {
    Tensor x = fx.x.detach().requires_grad_();
    Tensor loss = fx.loss(remat)(x);
    Tensor g = autograd_grad({loss}, {x}, {}, false, /*create_graph=*/true)[0];
    Tensor hv = autograd_grad({sum(g * fx.v)}, {x})[0];  // second order through the recomputation
    r[remat] = {g.detach(), hv};
  }
  EXPECT_LE(max_diff(r[true].first, r[false].first), 1e-12);
  EXPECT_LE(max_diff(r[true].second, r[false].second), 1e-12);
}

TEST(Remat, GradValueAndGradVjpAndJvp) {
  Fixture fx;
  EXPECT_LE(max_diff(grad(fx.loss(true))(fx.x), grad(fx.loss(false))(fx.x)), 1e-12);
  auto [v1, g1] = value_and_grad(fx.loss(true))(fx.x);
  auto [v0, g0] = value_and_grad(fx.loss(false))(fx.x);
  EXPECT_LE(max_diff(v1, v0), 1e-12);
  EXPECT_LE(max_diff(g1, g0), 1e-12);

  // Gradient with respect to several inputs, W included.
  auto by_inputs = [&](bool remat) {
    return grad([&, remat](const std::vector<Tensor>& p) {
      fx.gen.set_state(kSeed, 0);
      Block b{&fx.gen};
      Tensor y = remat ? checkpoint(b, p) : b(p);
      return sum(square(y));
    })(std::vector<Tensor>{fx.x, fx.w});
  };
  auto gr = by_inputs(true), gp = by_inputs(false);
  EXPECT_LE(max_diff(gr[0], gp[0]), 1e-12);
  EXPECT_LE(max_diff(gr[1], gp[1]), 1e-12);

  auto [y1, pull1] = vjp(fx.f(true), fx.x);
  auto [y0, pull0] = vjp(fx.f(false), fx.x);
  EXPECT_LE(max_diff(y1, y0), 1e-12);
  for (int k = 0; k < 2; ++k) EXPECT_LE(max_diff(pull1(fx.v), pull0(fx.v)), 1e-12);  // the pullback re-runs f each time

  auto [o1, t1] = jvp(fx.f(true), fx.x, fx.v);
  auto [o0, t0] = jvp(fx.f(false), fx.x, fx.v);
  EXPECT_LE(max_diff(o1, o0), 1e-12);
  EXPECT_LE(max_diff(t1, t0), 1e-12);
}

TEST(Remat, VmapJacobiansHessians) {
  Fixture fx;
  Generator g(3);
  Tensor xs = randn({3, 4}, g, DType::f64);
  // The block's dropout draws one mask for every example (Randomness::Same).
  EXPECT_LE(max_diff(vmap(fx.f(true), Randomness::Same)(xs), vmap(fx.f(false), Randomness::Same)(xs)), 1e-12);
  EXPECT_LE(max_diff(vmap(grad(fx.loss(true)), Randomness::Same)(xs), vmap(grad(fx.loss(false)), Randomness::Same)(xs)),
            1e-12);  // per-example
  EXPECT_LE(max_diff(jacfwd(fx.f(true))(fx.x), jacfwd(fx.f(false))(fx.x)), 1e-12);
  EXPECT_LE(max_diff(jacrev(fx.f(true))(fx.x), jacrev(fx.f(false))(fx.x)), 1e-12);  // batched pullback
  EXPECT_LE(max_diff(hessian(fx.loss(true))(fx.x), hessian(fx.loss(false))(fx.x)), 1e-12);  // forward over reverse
  EXPECT_LE(max_diff(jacrev(jacrev(fx.loss(true)))(fx.x), jacrev(jacrev(fx.loss(false)))(fx.x)), 1e-12);  // reverse over reverse
  EXPECT_LE(max_diff(hvp(fx.loss(true))(fx.x, fx.v), hvp(fx.loss(false))(fx.x, fx.v)), 1e-12);
  auto rr = [&](bool remat) {  // grad of a function of a grad
    return grad([&, remat](const Tensor& x) { return sum(grad(fx.loss(remat))(x) * fx.v); })(fx.x);
  };
  EXPECT_LE(max_diff(rr(true), rr(false)), 1e-12);
  // Third order, mixing all three.
  EXPECT_LE(max_diff(jacfwd(jacrev(jacfwd(fx.f(true))))(fx.x), jacfwd(jacrev(jacfwd(fx.f(false))))(fx.x)), 1e-12);
}

TEST(Remat, NestedCheckpoints) {
  Fixture fx;
  auto f = [&](bool remat) {
    return [&, remat](const Tensor& x) {
      fx.gen.set_state(kSeed, 0);
      auto inner = [&](const std::vector<Tensor>& in) { return fx.block(fx.block(in[0], remat), remat); };
      Tensor y = remat ? checkpoint(inner, {x, fx.w}) : inner({x, fx.w});
      return sum(square(y));
    };
  };
  EXPECT_LE(max_diff(grad(f(true))(fx.x), grad(f(false))(fx.x)), 1e-12);
  EXPECT_LE(max_diff(hessian(f(true))(fx.x), hessian(f(false))(fx.x)), 1e-12);
  Tensor x1 = fx.x.detach().requires_grad_(), x0 = fx.x.detach().requires_grad_();
  f(true)(x1).backward();
  f(false)(x0).backward();
  EXPECT_LE(max_diff(x1.grad(), x0.grad()), 1e-12);
}

TEST(Remat, SeveralOutputs) {
  Fixture fx;
  auto two = [&](const std::vector<Tensor>& in) {
    Tensor y = fx.block(in[0], false);
    return std::vector<Tensor>{matmul(in[1], y), sum(y * y)};  // a vector and a scalar
  };
  auto loss = [&](bool remat) {
    return [&, remat](const Tensor& x) {
      fx.gen.set_state(kSeed, 0);
      auto outs = remat ? checkpoint(two)({x, fx.w}) : two({x, fx.w});
      return sum(square(outs[0])) + outs[1] * sum(x);
    };
  };
  auto outs = checkpoint(two, {fx.x, fx.w});
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].shape(), (Shape{4}));
  EXPECT_EQ(outs[1].shape(), (Shape{}));
  EXPECT_LE(max_diff(grad(loss(true))(fx.x), grad(loss(false))(fx.x)), 1e-12);
  EXPECT_LE(max_diff(hessian(loss(true))(fx.x), hessian(loss(false))(fx.x)), 1e-12);
  Generator g(3);
  Tensor xs = randn({3, 4}, g, DType::f64);
  EXPECT_LE(max_diff(vmap(grad(loss(true)), Randomness::Same)(xs), vmap(grad(loss(false)), Randomness::Same)(xs)), 1e-12);
  Tensor x1 = fx.x.detach().requires_grad_(), x0 = fx.x.detach().requires_grad_();
  loss(true)(x1).backward();
  loss(false)(x0).backward();
  EXPECT_LE(max_diff(x1.grad(), x0.grad()), 1e-12);
  EXPECT_THROW(checkpoint([](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0], cast(in[0], DType::f32)}; }, {fx.x}),
               DTypeError);
}

TEST(Remat, CapturedTensorsAndChangedDrawsAreErrors) {
  Fixture fx;
  Tensor x = fx.x.detach().requires_grad_();
  Tensor w = fx.w.detach().requires_grad_();
  auto uses_w = [&](const Tensor& xi) { return matmul(w, xi); };
  try {
    checkpoint(uses_w, x);
    FAIL() << "no error for a captured tensor that requires grad";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("not one of its inputs"), std::string::npos) << e.what();
  }
  try {
    grad([&](const Tensor& wt) { return sum(checkpoint([&](const Tensor& xi) { return matmul(wt, xi); }, fx.x * sum(wt))); })(fx.w);
    FAIL() << "no error for a captured tracer";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("tracer of an enclosing transform"), std::string::npos) << e.what();
  }
  // A function that draws a different amount of random numbers when run again.
  Generator gen(0);
  int calls = 0;
  Tensor y = checkpoint([&](const Tensor& xi) { return xi * sum(rand({++calls}, gen, DType::f64)); }, x);
  try {
    sum(y).backward();
    FAIL() << "no error for a recomputation that draws differently";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("draws random numbers differently"), std::string::npos) << e.what();
  }
  // Without an input that requires grad, f just runs (nothing to recompute).
  Tensor plain = checkpoint([&](const Tensor& xi) { return xi * 2.0; }, fx.x);
  EXPECT_FALSE(plain.impl()->node);
}

// ---- networks ------------------------------------------------------------------------------

std::shared_ptr<nn::Sequential> make_model(const std::string& spec, DType dtype) {
  auto m = nn::build_model(spec, dtype);
  Generator g(11);
  nn::init_model(*m, g);
  return m;
}

std::vector<Tensor> eager_grads(nn::Sequential& m, const Tensor& x, const Tensor& labels) {
  m.zero_grad();
  cross_entropy(m.forward(x), labels).backward();
  std::vector<Tensor> g;
  for (const auto& p : m.parameters()) g.push_back(p.grad());
  return g;
}

TEST(RematNN, SequentialSegmentsWithDropoutAndBatchNorm) {
  for (const char* spec : {"resmlp:6-5x6-3:lrl+d0.3", "resmlp:6-5x6-3:pre+bn"}) {
    SCOPED_TRACE(spec);
    auto plain = make_model(spec, DType::f64), remat = make_model(spec, DType::f64);
    remat->set_checkpoint_segments(3);
    Generator g(5);
    Tensor x = randn({8, 6}, g, DType::f64), labels = randint({8}, 3, g);
    for (int step = 0; step < 2; ++step) {  // the second step sees the generators and buffers the first left
      auto gp = eager_grads(*plain, x, labels), gr = eager_grads(*remat, x, labels);
      ASSERT_EQ(gp.size(), gr.size());
      for (std::size_t i = 0; i < gp.size(); ++i) EXPECT_LE(max_diff(gr[i], gp[i]), 1e-12) << "parameter " << i;
    }
    // Buffers (BatchNorm running statistics) were updated once per forward pass, not again by the recomputation.
    auto bp = plain->named_buffers(), br = remat->named_buffers();
    for (std::size_t i = 0; i < bp.size(); ++i) EXPECT_EQ(max_diff(cast(br[i].second, DType::f64), cast(bp[i].second, DType::f64)), 0.0) << bp[i].first;
  }
}

TEST(RematNN, TransformsOverParametersAndModuleCheckpoint) {
  auto model = make_model("resmlp:6-5x4-3", DType::f64);
  Generator g(5);
  Tensor x = randn({8, 6}, g, DType::f64), labels = randint({8}, 3, g);
  std::vector<std::string> names;
  std::vector<Tensor> values;
  for (auto& [n, t] : model->named_parameters()) names.push_back(n), values.push_back(t.detach());
  auto loss = [&](const std::vector<Tensor>& p) {
    std::map<std::string, Tensor> m;
    for (std::size_t i = 0; i < names.size(); ++i) m.emplace(names[i], p[i]);
    return cross_entropy(nn::functional_call(*model, m, x), labels);
  };
  model->set_checkpoint_segments(0);
  auto gp = grad(loss)(values);
  model->set_checkpoint_segments(2);
  auto gr = grad(loss)(values);
  for (std::size_t i = 0; i < gp.size(); ++i) EXPECT_LE(max_diff(gr[i], gp[i]), 1e-12) << names[i];
  model->set_checkpoint_segments(0);

  // A hessian through one checkpointed block, with respect to the block's input.
  auto& block = *(*model)[3];
  Tensor h0 = randn({5}, g, DType::f64);
  auto through = [&](bool remat) {
    return [&, remat](const Tensor& h) { return sum(tanh(remat ? nn::checkpoint(block, h) : block.forward(h))); };
  };
  EXPECT_LE(max_diff(hessian(through(true))(h0), hessian(through(false))(h0)), 1e-12);
  Tensor hs = randn({3, 5}, g, DType::f64);
  EXPECT_LE(max_diff(vmap(grad(through(true)))(hs), vmap(grad(through(false)))(hs)), 1e-12);
}

// Activation memory of one forward and backward pass: the allocator's high-water mark above what
// is in use before it (parameters and their gradients, allocated by a first step).
std::size_t activation_bytes(nn::Sequential& m, const Tensor& x, const Tensor& labels) {
  cross_entropy(m.forward(x), labels).backward();  // allocates .grad
  memory::reset_peak();
  const std::size_t before = memory::stats().bytes_in_use;
  cross_entropy(m.forward(x), labels).backward();  // accumulates into .grad in place
  return memory::stats().peak_bytes - before;
}

TEST(RematMemory, SixtyFourBlocksCheckpointedEveryEightUseFourTimesLess) {
  auto model = make_model("resmlp:256-256x64-10", DType::f32);
  Generator g(5);
  Tensor x = randn({128, 256}, g), labels = randint({128}, 10, g);
  std::size_t plain = activation_bytes(*model, x, labels);
  model->set_checkpoint_segments(8);  // 67 layers: 7 checkpointed runs of 8 or 9 layers and a last run of 9
  std::size_t remat = activation_bytes(*model, x, labels);
  std::size_t params = 0;
  for (const auto& p : model->parameters()) params += static_cast<std::size_t>(p.numel()) * 4;
  std::printf("parameters %zu bytes; activation memory: %zu bytes plain, %zu bytes checkpointed (%.2fx less)\n", params, plain,
              remat, static_cast<double>(plain) / static_cast<double>(remat));
  EXPECT_GE(static_cast<double>(plain), 4.0 * static_cast<double>(remat));
}

}  // namespace
