// The matrix-chain order of a Jacobian chain, and Jacobians of compositions evaluated in it.
#include "chainrule/autodiff/chain.h"

#include <fmt/format.h>

#include <limits>

#include "chainrule/errors.h"

namespace chainrule {

namespace {
std::string bracketing(const std::vector<std::vector<int>>& split, int i, int j) {
  if (i == j) return fmt::format("J{}", i);
  int s = split[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  return "(" + bracketing(split, s + 1, j) + " " + bracketing(split, i, s) + ")";
}
void check_dims(const char* fn, const std::vector<std::int64_t>& dims) {
  if (dims.size() < 2) throw ValueError(fmt::format("{}: need at least two widths (one factor), got {}", fn, dims.size()));
  for (auto d : dims)
    if (d <= 0) throw ValueError(fmt::format("{}: widths must be positive, got {}", fn, d));
}
using u64 = std::uint64_t;
u64 U(std::int64_t v) { return static_cast<u64>(v); }
}  // namespace

ChainOrder matrix_chain_order(const std::vector<std::int64_t>& dims) {
  check_dims("matrix_chain_order", dims);
  const int K = static_cast<int>(dims.size()) - 1;
  auto d = [&](int k) { return U(dims[static_cast<std::size_t>(k)]); };
  std::vector<std::vector<u64>> cost(static_cast<std::size_t>(K + 1), std::vector<u64>(static_cast<std::size_t>(K + 1), 0));
  ChainOrder r;
  r.split.assign(static_cast<std::size_t>(K + 1), std::vector<int>(static_cast<std::size_t>(K + 1), 0));
  for (int len = 2; len <= K; ++len) {
    for (int i = 1; i + len - 1 <= K; ++i) {
      const int j = i + len - 1;
      u64 best = std::numeric_limits<u64>::max();
      for (int s = i; s < j; ++s) {
        // (J_j..J_{s+1}) is d_j × d_s, (J_s..J_i) is d_s × d_{i-1}.
        u64 c = cost[static_cast<std::size_t>(i)][static_cast<std::size_t>(s)] +
                cost[static_cast<std::size_t>(s + 1)][static_cast<std::size_t>(j)] + d(j) * d(s) * d(i - 1);
        if (c < best) best = c, r.split[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] = s;
      }
      cost[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] = best;
    }
  }
  r.cost = cost[1][static_cast<std::size_t>(K)];
  r.bracketing = bracketing(r.split, 1, K);
  return r;
}

std::uint64_t chain_cost_forward(const std::vector<std::int64_t>& dims) {
  check_dims("chain_cost_forward", dims);
  u64 c = 0;
  for (std::size_t k = 2; k < dims.size(); ++k) c += U(dims[k]) * U(dims[k - 1]) * U(dims[0]);
  return c;
}

std::uint64_t chain_cost_reverse(const std::vector<std::int64_t>& dims) {
  check_dims("chain_cost_reverse", dims);
  u64 c = 0;
  const std::size_t K = dims.size() - 1;
  for (std::size_t k = 1; k < K; ++k) c += U(dims[K]) * U(dims[k]) * U(dims[k - 1]);
  return c;
}

ChainOrder chain_order_forward(const std::vector<std::int64_t>& dims) {
  check_dims("chain_order_forward", dims);
  const int K = static_cast<int>(dims.size()) - 1;
  ChainOrder r;
  r.split.assign(static_cast<std::size_t>(K + 1), std::vector<int>(static_cast<std::size_t>(K + 1), 0));
  for (int j = 2; j <= K; ++j) r.split[1][static_cast<std::size_t>(j)] = j - 1;  // J_j (J_{j-1} .. J_1)
  r.cost = chain_cost_forward(dims);
  r.bracketing = bracketing(r.split, 1, K);
  return r;
}

ChainOrder chain_order_reverse(const std::vector<std::int64_t>& dims) {
  check_dims("chain_order_reverse", dims);
  const int K = static_cast<int>(dims.size()) - 1;
  ChainOrder r;
  r.split.assign(static_cast<std::size_t>(K + 1), std::vector<int>(static_cast<std::size_t>(K + 1), 0));
  for (int i = 1; i < K; ++i) r.split[static_cast<std::size_t>(i)][static_cast<std::size_t>(K)] = i;  // (J_K .. J_{i+1}) J_i
  r.cost = chain_cost_reverse(dims);
  r.bracketing = bracketing(r.split, 1, K);
  return r;
}

namespace {
Tensor multiply(const std::vector<Tensor>& f, const ChainOrder& o, int i, int j) {
  if (i == j) return f[static_cast<std::size_t>(i - 1)];
  int s = o.split[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  return matmul(multiply(f, o, s + 1, j), multiply(f, o, i, s));
}
}  // namespace

Tensor multiply_chain(const std::vector<Tensor>& factors, const ChainOrder& order) {
  if (factors.empty()) throw ValueError("multiply_chain: no factors");
  if (order.split.size() != factors.size() + 1)
    throw ValueError(fmt::format("multiply_chain: the order is for {} factors, got {}", order.split.size() - 1, factors.size()));
  return multiply(factors, order, 1, static_cast<int>(factors.size()));
}

}  // namespace chainrule

namespace chainrule {
namespace {
// Evaluates products of the chain of `stages` at the points xs (xs[k] is the input of stage k+1).
struct ChainEvaluator {
  const std::vector<Stage>& stages;
  const std::vector<Tensor>& xs;
  const ChainOrder& order;

  std::int64_t width(int k) const { return xs[static_cast<std::size_t>(k)].numel(); }
  const Stage& stage(int k) const { return stages[static_cast<std::size_t>(k - 1)]; }
  const Tensor& point(int k) const { return xs[static_cast<std::size_t>(k)]; }  // input of stage k+1

  // J_k alone, explicitly, by whichever mode is cheaper for its shape.
  Tensor factor(int k) const {
    const Tensor& x = point(k - 1);
    Tensor j = width(k - 1) <= width(k) ? jacfwd(stage(k))(x) : jacrev(stage(k))(x);
    return reshape(j, {width(k), width(k - 1)});
  }
  // J_j · R for the single stage j: each column of R is pushed through stage j by a JVP.
  Tensor push(int j, const Tensor& r) const {
    const Tensor& x = point(j - 1);
    Tensor cols = reshape(transpose(r), Shape{r.shape()[1]} + x.shape());
    Tensor out = vmap([&](const Tensor& t) { return jvp(stage(j), x, t).second; })(cols);
    return transpose(reshape(out, {r.shape()[1], width(j)}));
  }
  // L · J_i for the single stage i: each row of L is pulled back through stage i by a VJP.
  Tensor pull(int i, const Tensor& l) const {
    auto [y, pullback] = vjp(stage(i), point(i - 1));
    Tensor rows = vmap(pullback)(reshape(l, Shape{l.shape()[0]} + y.shape()));
    return reshape(rows, {l.shape()[0], width(i - 1)});
  }
  // J_j ⋯ J_i as a (d_j × d_{i-1}) matrix.
  Tensor product(int i, int j) const {
    if (i == j) return factor(i);
    const int s = order.split[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
    const bool left_single = s + 1 == j, right_single = s == i;
    // Two single stages: push the columns when there are fewer columns than rows.
    if (left_single && (!right_single || width(i - 1) <= width(j))) return push(j, product(i, s));
    if (right_single) return pull(i, product(s + 1, j));
    return matmul(product(s + 1, j), product(i, s));
  }
};
}  // namespace

ChainJacobian jacobian(const std::vector<Stage>& stages, const Tensor& x, ChainStrategy strategy) {
  if (stages.empty()) throw ValueError("jacobian: the chain has no stages");
  std::vector<Tensor> xs{x};
  for (const auto& f : stages) xs.push_back(f(xs.back()));
  std::vector<std::int64_t> dims;
  for (const auto& p : xs) {
    if (p.numel() == 0)
      throw ShapeError(fmt::format("jacobian: stage {} has an empty {} of shape {}", dims.empty() ? 1 : dims.size(),
                                   dims.empty() ? "input" : "output", p.shape().str()));
    dims.push_back(p.numel());
  }
  ChainJacobian r;
  r.order = strategy == ChainStrategy::Forward   ? chain_order_forward(dims)
            : strategy == ChainStrategy::Reverse ? chain_order_reverse(dims)
                                                 : matrix_chain_order(dims);
  ChainEvaluator ev{stages, xs, r.order};
  r.jacobian = reshape(ev.product(1, static_cast<int>(stages.size())), xs.back().shape() + x.shape());
  return r;
}

}  // namespace chainrule
