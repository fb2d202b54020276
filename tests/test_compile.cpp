// compile(f): replays give the same bytes as the uncompiled function, on fresh inputs of the
// traced signature; a new signature traces again; transforms see through a compiled function.
#include <gtest/gtest.h>

#include <cstring>

#include "chainrule/autodiff/compile.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/layers.h"
#include "chainrule/nn/spec.h"
#include "chainrule/nn/train.h"
#include "chainrule/optim/optimizer.h"

using namespace chainrule;

namespace {

// The same dtype, shape and bytes.
::testing::AssertionResult same_bytes(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  if (a.dtype() != b.dtype() || a.shape() != b.shape())
    return ::testing::AssertionFailure() << a.shape().str() << " vs " << b.shape().str();
  Tensor ca = a.detach().contiguous_clone(), cb = b.detach().contiguous_clone();
  const std::size_t n = static_cast<std::size_t>(a.numel()) * itemsize(a.dtype());
  if (std::memcmp(ca.impl()->storage->data, cb.impl()->storage->data, n) != 0)
    return ::testing::AssertionFailure() << "bytes differ: " << a.str() << " vs " << b.str();
  return ::testing::AssertionSuccess();
}
template <class T>
void expect_same_tree(const T& a, const T& b) {
  auto la = tree_leaves(a), lb = tree_leaves(b);
  ASSERT_EQ(la.size(), lb.size());
  for (std::size_t i = 0; i < la.size(); ++i) EXPECT_TRUE(same_bytes(la[i], lb[i])) << "leaf " << i;
}

struct Mlp {
  Tensor w1, b1, w2, b2;
};
CHAINRULE_TREE(Mlp, w1, b1, w2, b2)

Mlp make_mlp(Generator& gen, std::int64_t in, std::int64_t hidden, std::int64_t out) {
  return {randn({hidden, in}, gen) * 0.3, randn({hidden}, gen) * 0.1, randn({out, hidden}, gen) * 0.3, randn({out}, gen) * 0.1};
}
Tensor mlp_loss(const Mlp& p, const Tensor& x, const Tensor& y) {
  Tensor h = relu(linear(x, p.w1, p.b1));
  return cross_entropy(linear(h, p.w2, p.b2), y);
}

// f and compile(f) on `calls` fresh inputs from make(), compared byte for byte.
template <class F, class Make>
void check_replays(F f, Make make, int calls = 4) {
  auto g = compile(f);
  for (int i = 0; i < calls; ++i) {
    auto args = make();
    auto want = std::apply(f, args);
    auto got = std::apply(g, args);
    expect_same_tree(want, got);
  }
  EXPECT_EQ(g.traces(), 1);
  EXPECT_EQ(g.stats().uncompiled_signatures, 0) << g.stats().reason;
  EXPECT_GT(g.stats().steps, 0u);
}

}  // namespace

TEST(Compile, MlpLossGradAndValueAndGrad) {
  Generator gen(1);
  auto make = [&] { return std::make_tuple(make_mlp(gen, 6, 16, 3), randn({8, 6}, gen), randint({8}, 3, gen)); };
  check_replays(mlp_loss, make);
  check_replays(grad(mlp_loss), make);
  check_replays(value_and_grad(mlp_loss), make);
}

TEST(Compile, PerExampleGradients) {
  Generator gen(2);
  auto per_example = vmap(grad(mlp_loss), {not_mapped, 0, 0});
  check_replays(per_example, [&] { return std::make_tuple(make_mlp(gen, 5, 8, 3), randn({6, 5}, gen), randint({6}, 3, gen)); });
}

TEST(Compile, ConvNetGradient) {
  Generator gen(3);
  nn::Sequential net({std::make_shared<nn::Conv2d>(2, 4, std::array<std::int64_t, 2>{3, 3}),
                      std::make_shared<nn::BatchNorm2d>(4), std::make_shared<nn::ReLU>(),
                      std::make_shared<nn::MaxPool2d>(std::array<std::int64_t, 2>{2, 2}), std::make_shared<nn::Flatten>(),
                      std::make_shared<nn::Linear>(4 * 3 * 3, 5)});
  std::map<std::string, Tensor> params;
  for (const auto& [name, t] : net.named_parameters()) params.emplace(name, t.detach());
  auto loss = [&](const std::map<std::string, Tensor>& p, const Tensor& x, const Tensor& y) {
    return cross_entropy(nn::functional_call(net, p, x), y);
  };
  // Training-mode BatchNorm updates its running statistics in place: the compiled function must
  // repeat that on every call, so compiled and uncompiled runs each get a copy of the network's
  // buffers and are compared after every call.
  auto g = compile(grad(loss));
  auto f = grad(loss);
  auto buffers = [&] {
    std::vector<Tensor> out;
    for (const auto& [name, t] : net.named_buffers()) out.push_back(t);
    return out;
  };
  auto snapshot = [&] {
    std::vector<Tensor> out;
    for (const auto& t : buffers()) out.push_back(t.contiguous_clone());
    return out;
  };
  auto restore = [&](const std::vector<Tensor>& s) {
    auto b = buffers();
    for (std::size_t i = 0; i < b.size(); ++i) b[i].copy_(s[i]);
  };
  for (int i = 0; i < 4; ++i) {
    Tensor x = randn({3, 2, 8, 8}, gen), y = randint({3}, 5, gen);
    auto before = snapshot();
    auto want = f(params, x, y);
    auto after_want = snapshot();
    restore(before);
    auto got = g(params, x, y);
    auto after_got = snapshot();
    expect_same_tree(want, got);
    ASSERT_EQ(after_want.size(), after_got.size());
    for (std::size_t k = 0; k < after_want.size(); ++k) EXPECT_TRUE(same_bytes(after_want[k], after_got[k])) << "buffer " << k;
  }
  EXPECT_EQ(g.traces(), 1);
  EXPECT_EQ(g.stats().uncompiled_signatures, 0) << g.stats().reason;
}

TEST(Compile, Hessian) {
  Generator gen(4);
  auto f = [](const Tensor& x) { return sum(tanh(x) * sin(x) * x); };
  check_replays(hessian(f), [&] { return std::make_tuple(randn({5}, gen, DType::f64)); });
  check_replays(jacrev([](const Tensor& x) { return exp(x) * x; }), [&] { return std::make_tuple(randn({4}, gen)); });
}

TEST(Compile, NewShapeOrDtypeTracesAgain) {
  Generator gen(5);
  auto g = compile([](const Tensor& x) { return sum(exp(x)); });
  g(randn({3}, gen));
  g(randn({3}, gen));
  EXPECT_EQ(g.traces(), 1);
  g(randn({4}, gen));
  EXPECT_EQ(g.traces(), 2);
  g(randn({4}, gen, DType::f64));
  EXPECT_EQ(g.traces(), 3);
  g(randn({3}, gen));
  EXPECT_EQ(g.traces(), 3);  // still cached
  {
    NoGradGuard ng;  // grad mode is part of the signature
    g(randn({3}, gen));
  }
  EXPECT_EQ(g.traces(), 4);
}

TEST(Compile, ReplayReadsTheNewInputs) {
  // A replay that reused the first call's values would give its output again.
  auto g = compile([](const Tensor& x, const Tensor& y) { return x * y + exp(x); });
  Tensor first = g(tensor({1, 2}, {2}), tensor({3, 4}, {2}));
  Tensor second = g(tensor({5, 6}, {2}), tensor({7, 8}, {2}));
  EXPECT_EQ(g.traces(), 1);
  EXPECT_FALSE(same_bytes(first, second));
  EXPECT_TRUE(same_bytes(second, tensor({5, 6}, {2}) * tensor({7, 8}, {2}) + exp(tensor({5, 6}, {2}))));
  EXPECT_TRUE(same_bytes(first, tensor({1, 2}, {2}) * tensor({3, 4}, {2}) + exp(tensor({1, 2}, {2}))));
}

TEST(Compile, CapturedTensorsAreReadByReference) {
  // A parameter updated in place between calls (as an optimiser does) is seen by the replay.
  Tensor w = tensor({1, 2, 3}, {3});
  auto g = compile([&](const Tensor& x) { return sum(w * x); });
  Tensor x = tensor({1, 1, 1}, {3});
  EXPECT_DOUBLE_EQ(g(x).item(), 6.0);
  w.mutable_data<float>()[0] = 10;
  EXPECT_DOUBLE_EQ(g(x).item(), 15.0);
  EXPECT_EQ(g.traces(), 1);
}

TEST(Compile, OutputsThatAliasInputsOrConstants) {
  Tensor c = tensor({4, 5}, {2});
  auto g = compile([&](const Tensor& x, const Tensor& y) { return std::make_tuple(x, reshape(y, {2}), c, x.detach(), zeros({2})); });
  for (int i = 0; i < 3; ++i) {
    Tensor x = tensor({1.0 + i, 2.0}, {2}), y = tensor({3.0, 4.0 + i}, {1, 2});
    auto [a, b, k, d, z] = g(x, y);
    EXPECT_TRUE(same_bytes(a, x));
    EXPECT_TRUE(same_bytes(b, reshape(y, {2})));
    EXPECT_EQ(k.impl(), c.impl());  // a tensor that existed before: itself, as uncompiled
    EXPECT_TRUE(same_bytes(d, x));
    EXPECT_TRUE(same_bytes(z, zeros({2})));
    z.fill_(7);  // a tensor made inside f is a fresh one on every call
  }
  EXPECT_EQ(g.traces(), 1);
}

TEST(Compile, RandomDrawsAreDrawnAgain) {
  // A draw inside f is a step of the program: each replay draws anew from the same generator, so
  // compiled and uncompiled calls consume it alike and give the same numbers.
  Generator g1(7), g2(7);
  auto f1 = [&](const Tensor& x) { return x + randn(x.shape(), g1); };
  auto f2 = compile([&](const Tensor& x) { return x + randn(x.shape(), g2); });
  Tensor x = zeros({4});
  Tensor prev;
  for (int i = 0; i < 3; ++i) {
    Tensor want = f1(x), got = f2(x);
    EXPECT_TRUE(same_bytes(want, got));
    if (prev.defined()) {
      EXPECT_FALSE(same_bytes(prev, got));
    }
    prev = got;
  }
  EXPECT_EQ(g1.counter(), g2.counter());
  EXPECT_EQ(f2.traces(), 1);
  // Dropout in training mode, through its own generator.
  nn::Dropout d1(0.5, 3), d2(0.5, 3);
  auto c2 = compile([&](const Tensor& x) { return d2.forward(x); });
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_bytes(d1.forward(ones({16})), c2(ones({16}))));
}

TEST(Compile, InsideTransformsIsTheFunctionItself) {
  auto f = [](const Tensor& x) { return sum(sin(x) * x); };
  auto g = compile(f);
  Generator gen(8);
  Tensor x = randn({5}, gen, DType::f64);
  g(x);  // traced at level 0
  EXPECT_TRUE(same_bytes(grad(g)(x), grad(f)(x)));
  EXPECT_TRUE(same_bytes(grad(grad([&](const Tensor& z) { return g(z * z); }))(tensor({0.7}, {}, DType::f64)),
                         grad(grad([&](const Tensor& z) { return f(z * z); }))(tensor({0.7}, {}, DType::f64))));
  Tensor xs = randn({3, 5}, gen, DType::f64);
  EXPECT_TRUE(same_bytes(vmap(g)(xs), vmap(f)(xs)));
  EXPECT_TRUE(same_bytes(vmap(grad(g))(xs), vmap(grad(f))(xs)));
  EXPECT_EQ(g.traces(), 1);
  // compile of a function that calls a compiled function: the outer program holds its kernels.
  auto outer = compile([&](const Tensor& z) { return g(z) * 2.0; });
  for (int i = 0; i < 3; ++i) {
    Tensor z = randn({5}, gen, DType::f64);
    EXPECT_TRUE(same_bytes(outer(z), f(z) * 2.0));
  }
}

TEST(Compile, EagerGraphOutputsRunUncompiled) {
  Tensor w = tensor({1, 2}, {2});
  w.requires_grad_();
  auto g = compile([&](const Tensor& x) { return sum(w * x); });
  for (int i = 0; i < 2; ++i) {
    w.zero_grad();
    Tensor l = g(tensor({3, 4}, {2}));
    l.backward();  // the output carries a graph: the signature runs uncompiled
    EXPECT_TRUE(same_bytes(w.grad(), tensor({3, 4}, {2})));
  }
  EXPECT_EQ(g.stats().uncompiled_signatures, 1);
}

TEST(Compile, BackwardInsideAssignsLeafGradients) {
  Generator gen(9);
  auto make_net = [] {
    auto net = std::make_shared<nn::Sequential>(std::vector<nn::ModulePtr>{
        std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 3)});
    return net;
  };
  auto a = make_net(), b = make_net();
  b->load_state_dict(a->state_dict());
  auto step = compile([&](const Tensor& x, const Tensor& y) {
    Tensor l = cross_entropy(b->forward(x), y);
    l.backward();
    return l.detach();
  });
  for (int i = 0; i < 3; ++i) {
    Tensor x = randn({5, 4}, gen), y = randint({5}, 3, gen);
    for (auto& p : a->parameters()) p.zero_grad();
    for (auto& p : b->parameters()) p.zero_grad();
    Tensor want = cross_entropy(a->forward(x), y);
    want.backward();
    Tensor got = step(x, y);
    EXPECT_TRUE(same_bytes(want, got));
    auto pa = a->parameters(), pb = b->parameters();
    for (std::size_t k = 0; k < pa.size(); ++k) EXPECT_TRUE(same_bytes(pa[k].grad(), pb[k].grad())) << "parameter " << k;
  }
  EXPECT_EQ(step.traces(), 1);
  EXPECT_EQ(step.stats().uncompiled_signatures, 0) << step.stats().reason;
}

// 20 optimiser steps, compiled (CompiledTrainStep) and not (train_step), from the same start:
// the same loss bytes at every step and the same weights and buffers at the end.
namespace {
void check_training(const std::string& spec, const Shape& input, std::int64_t classes) {
  SCOPED_TRACE(spec);
  Generator init(11);
  auto a = nn::build_model(spec), b = nn::build_model(spec);
  nn::init_model(*a, init, {});
  b->load_state_dict(a->state_dict());
  optim::SGD opt_a(a->named_parameters(), {.lr = 0.05, .momentum = 0.9});
  optim::SGD opt_b(b->named_parameters(), {.lr = 0.05, .momentum = 0.9});
  nn::LossFn loss = [](const Tensor& out, const Tensor& target) { return cross_entropy(out, target); };
  nn::CompiledTrainStep step(*b, loss);
  Generator data(12);
  for (int i = 0; i < 20; ++i) {
    Tensor x = randn(input, data), y = randint({input[0]}, classes, data);
    auto want = nn::train_step(*a, opt_a, x, y, loss);
    auto got = step(opt_b, x, y);
    EXPECT_TRUE(same_bytes(want.loss, got.loss)) << "step " << i;
    EXPECT_TRUE(same_bytes(want.out, got.out)) << "step " << i;
  }
  EXPECT_EQ(step.stats().traces, 1);
  EXPECT_EQ(step.stats().uncompiled_signatures, 0) << step.stats().reason;
  auto sa = a->state_dict(), sb = b->state_dict();
  for (const auto& [name, t] : sa) EXPECT_TRUE(same_bytes(t, sb.at(name))) << name;
}

}  // namespace

TEST(Compile, TrainingStepsMatchUncompiled) {
  check_training("mlp:6-32-32-4", {16, 6}, 4);
  check_training("resmlp:6-16x2-4:lrl+d0.1", {16, 6}, 4);           // dropout: draws replayed
  check_training("resnet:1x8x8-4x1-8x1-3", {8, 64}, 3);              // conv, BatchNorm's running statistics
}

TEST(Compile, DrawFromALocalGeneratorRunsUncompiled) {
  // The replay would draw from a generator that no longer exists: the signature runs f instead.
  auto g = compile([](const Tensor& x) {
    Generator local(5);
    return x + randn(x.shape(), local);
  });
  Tensor first = g(zeros({3})), second = g(zeros({3}));
  EXPECT_TRUE(same_bytes(first, second));  // a fresh Generator(5) each call, as uncompiled
  EXPECT_EQ(g.stats().uncompiled_signatures, 1);
  EXPECT_NE(g.stats().reason.find("local"), std::string::npos) << g.stats().reason;
}
