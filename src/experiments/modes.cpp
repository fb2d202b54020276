// `modes`: the Jacobian of f: Rⁿ → Rᵐ by forward mode (jacfwd: n JVPs), reverse mode (jacrev: m
// VJPs) and jacobian's automatic choice; then the cheapest bracketing of the Jacobian chain of a
// network by dynamic programming (matrix-chain order) against all-forward and all-reverse.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"
#include "experiments/common.h"

// NOTE: GCC 12 reports a false -Wmaybe-uninitialized on a std::string temporary inlined into
// run_modes (the same family as the -Wrestrict false positive silenced in CMakeLists.txt).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace chainrule::experiments {

namespace {

// f(x) = W3 relu(W2 relu(W1 x + b1) + b2) + b3, He-initialised, biases N(0, 0.1²).
struct Mlp3 {
  Tensor w1, b1, w2, b2, w3, b3;
  Mlp3(std::int64_t n, std::int64_t width, std::int64_t m, Generator& gen) {
    auto he = [&](std::int64_t out, std::int64_t in) { return randn({out, in}, gen) * std::sqrt(2.0 / static_cast<double>(in)); };
    w1 = he(width, n), b1 = randn({width}, gen) * 0.1;
    w2 = he(width, width), b2 = randn({width}, gen) * 0.1;
    w3 = he(m, width), b3 = randn({m}, gen) * 0.1;
  }
  Tensor operator()(const Tensor& x) const {
    Tensor h = relu(matmul(w1, x) + b1);
    h = relu(matmul(w2, h) + b2);
    return matmul(w3, h) + b3;
  }
};

struct SweepPoint {
  std::int64_t n = 0, m = 0;
  std::uint64_t forward = 0, fwd = 0, rev = 0, autom = 0;
  std::string auto_mode;
  double t_forward = 0, t_fwd = 0, t_rev = 0, t_auto = 0;  // medians of the timed runs
  double iqr_forward = 0, iqr_fwd = 0, iqr_rev = 0, iqr_auto = 0;
  double max_diff = 0, max_abs = 0;
};

SweepPoint measure(std::int64_t n, std::int64_t m, std::int64_t width, Generator& gen, const Timing& tm) {
  SweepPoint p;
  p.n = n, p.m = m;
  Mlp3 f(n, width, m, gen);
  Tensor x = randn({n}, gen);
  NoGradGuard ng;
  Tensor jf, jr, ja;
  JacobianMode used = JacobianMode::Auto;
  p.forward = count_madds([&] { f(x); });
  p.fwd = count_madds([&] { jf = jacfwd(f)(x); });
  p.rev = count_madds([&] { jr = jacrev(f)(x); });
  p.autom = count_madds([&] {
    auto r = jacobian(f, x);
    ja = r.jacobian, used = r.used;
  });
  p.auto_mode = used == JacobianMode::Forward ? "forward" : "reverse";
  p.max_diff = std::max(max_abs_diff(jf, jr), max_abs_diff(ja, jr));
  p.max_abs = max(abs(jr)).item();
  auto timed = [&](double& median, double& iqr, auto&& fn) {
    const MedianIqr t = median_time(fn, tm);
    median = t.median, iqr = t.iqr;
  };
  timed(p.t_forward, p.iqr_forward, [&] { f(x); });
  timed(p.t_fwd, p.iqr_fwd, [&] { jacfwd(f)(x); });
  timed(p.t_rev, p.iqr_rev, [&] { jacrev(f)(x); });
  timed(p.t_auto, p.iqr_auto, [&] { jacobian(f, x); });
  return p;
}

struct ChainCase {
  std::string name;
  std::vector<std::int64_t> dims;
};

struct ChainPoint {
  std::string name, dims, bracketing;
  std::uint64_t dp = 0, brute = 0, forward = 0, reverse = 0, counted_dp = 0, counted_fwd = 0, counted_rev = 0;
  std::uint64_t jacfwd_madds = 0, jacrev_madds = 0, strategy_madds = 0;
  double t_dp = 0, t_fwd = 0, t_rev = 0, t_jacfwd = 0, t_jacrev = 0, t_strategy = 0;
  double diff = 0, scale = 0;  // max |J_dp - jacrev| (explicit factors and the core strategy), max |jacrev|
};

ChainPoint run_chain(const ChainCase& c, Generator& gen, const Timing& tm) {
  ChainPoint p;
  p.name = c.name;
  for (std::size_t i = 0; i < c.dims.size(); ++i) p.dims += (i ? "-" : "") + std::to_string(c.dims[i]);
  const std::size_t K = c.dims.size() - 1;
  std::vector<Tensor> ws, bs;
  for (std::size_t k = 1; k <= K; ++k) {
    ws.push_back(randn({c.dims[k], c.dims[k - 1]}, gen) * std::sqrt(2.0 / static_cast<double>(c.dims[k - 1])));
    bs.push_back(randn({c.dims[k]}, gen) * 0.1);
  }
  auto net = [&](const Tensor& x) {
    Tensor h = x;
    for (std::size_t k = 0; k < K; ++k) {
      h = matmul(ws[k], h) + bs[k];
      if (k + 1 < K) h = relu(h);
    }
    return h;
  };
  // The same network as a chain of stages, for the core's jacobian(stages, x) in the DP's order.
  std::vector<Stage> stages;
  for (std::size_t k = 0; k < K; ++k)
    stages.push_back([&, k](const Tensor& h) {
      Tensor f = matmul(ws[k], h) + bs[k];
      return k + 1 < K ? relu(f) : f;
    });
  Tensor x = randn({c.dims[0]}, gen);
  NoGradGuard ng;
  // The factors of the text: ∂f_k/∂h_k = W_k, and ∂h_{k+1}/∂f_k = diag(1[f_k > 0]), folded into the
  // rows of W_k as W_k ⊙ 1[f_k > 0] (the last layer has no activation).
  std::vector<Tensor> factors;
  Tensor h = x;
  for (std::size_t k = 0; k < K; ++k) {
    Tensor f = matmul(ws[k], h) + bs[k];
    if (k + 1 < K) {
      Tensor mask = cast(f > 0.0, f.dtype());
      factors.push_back(ws[k] * unsqueeze(mask, -1));
      h = relu(f);
    } else {
      factors.push_back(ws[k]);
    }
  }
  ChainOrder dp = matrix_chain_order(c.dims), fw = chain_order_forward(c.dims), rv = chain_order_reverse(c.dims);
  p.bracketing = dp.bracketing;
  p.dp = dp.cost, p.forward = fw.cost, p.reverse = rv.cost;
  p.brute = K <= 10 ? matrix_chain_brute_force(c.dims) : 0;
  Tensor jdp, jrev;
  p.counted_dp = count_madds([&] { jdp = multiply_chain(factors, dp); });
  p.counted_fwd = count_madds([&] { multiply_chain(factors, fw); });
  p.counted_rev = count_madds([&] { multiply_chain(factors, rv); });
  p.jacfwd_madds = count_madds([&] { jacfwd(net)(x); });
  p.jacrev_madds = count_madds([&] { jrev = jacrev(net)(x); });
  Tensor jstrat;
  p.strategy_madds = count_madds([&] { jstrat = jacobian(stages, x, ChainStrategy::Optimal).jacobian; });
  p.diff = std::max(max_abs_diff(jdp, jrev), max_abs_diff(jstrat, jrev));
  p.scale = max(abs(jrev)).item();
  p.t_dp = median_time([&] { multiply_chain(factors, dp); }, tm).median;
  p.t_fwd = median_time([&] { multiply_chain(factors, fw); }, tm).median;
  p.t_rev = median_time([&] { multiply_chain(factors, rv); }, tm).median;
  p.t_jacfwd = median_time([&] { jacfwd(net)(x); }, tm).median;
  p.t_jacrev = median_time([&] { jacrev(net)(x); }, tm).median;
  p.t_strategy = median_time([&] { jacobian(stages, x, ChainStrategy::Optimal); }, tm).median;
  return p;
}

}  // namespace

Result run_modes(const Options& opts) {
  Result r;
  r.name = "modes";
  r.title = "forward against reverse mode, and the cheapest bracketing of the Jacobian chain";
  Generator gen(opts.seed);
  const std::int64_t width = opts.quick ? 32 : 256;
  const std::int64_t fixed = opts.quick ? 64 : 256;
  const std::vector<std::int64_t> sizes =
      opts.quick ? std::vector<std::int64_t>{1, 4, 16, 64, 256} : std::vector<std::int64_t>{1, 4, 16, 64, 256, 1024, 4096};
  const int repeats = opts.quick ? 1 : 3;
  const Timing tm{repeats, opts.quick ? 0.01 : 0.2};

  std::vector<SweepPoint> sweep_n, sweep_m;
  for (auto n : sizes) sweep_n.push_back(measure(n, fixed, width, gen, tm));
  for (auto m : sizes) sweep_m.push_back(measure(fixed, m, width, gen, tm));

  Table t{"sweep", {"sweep", "n", "m", "forward_madds", "jacfwd_madds", "jacrev_madds", "auto_madds", "auto_mode",
                    "forward_s", "jacfwd_s", "jacrev_s", "auto_s", "forward_iqr_s", "jacfwd_iqr_s", "jacrev_iqr_s",
                    "auto_iqr_s", "max_abs_diff"}, {}};
  auto add_rows = [&](const char* which, const std::vector<SweepPoint>& ps) {
    for (const auto& p : ps)
      t.rows.push_back({which, num(p.n), num(p.m), num(p.forward), num(p.fwd), num(p.rev), num(p.autom), p.auto_mode,
                        num(p.t_forward), num(p.t_fwd), num(p.t_rev), num(p.t_auto), num(p.iqr_forward), num(p.iqr_fwd),
                        num(p.iqr_rev), num(p.iqr_auto), num(p.max_diff)});
  };
  add_rows("n", sweep_n);
  add_rows("m", sweep_m);
  r.tables.push_back(t);

  // Checks on the sweeps (counts only).
  auto D = [](auto v) { return static_cast<double>(v); };
  double worst_fwd = 0, worst_rev = 0, worst_diff = 0;
  bool auto_ok = true, crossover_ok = true;
  std::int64_t cross_madds = -1, cross_time = -1;
  for (const auto* ps : {&sweep_n, &sweep_m}) {
    for (const auto& p : *ps) {
      // jacfwd: one forward pass for the primal plus n tangent passes, each a forward pass less the
      // first layer (n × width), whose product with the identity seed is a copy; jacrev likewise
      // with m cotangent passes, less the last layer (width × m).
      const double fwd_pred = D(p.forward) + D(p.n) * D(p.forward - static_cast<std::uint64_t>(p.n * width));
      const double rev_pred = D(p.forward) + D(p.m) * D(p.forward - static_cast<std::uint64_t>(p.m * width));
      worst_fwd = std::max(worst_fwd, std::abs(D(p.fwd) / fwd_pred - 1));
      worst_rev = std::max(worst_rev, std::abs(D(p.rev) / rev_pred - 1));
      worst_diff = std::max(worst_diff, p.max_diff / std::max(p.max_abs, 1e-30));
      const bool want_fwd = p.n < p.m;
      if ((p.auto_mode == "forward") != want_fwd) auto_ok = false;
      // The automatic choice costs the mode it picked plus one probe evaluation of f.
      if (p.autom > std::min(p.fwd, p.rev) + p.forward) auto_ok = false;
    }
  }
  for (const auto& p : sweep_n) {
    if ((p.n < p.m && p.fwd >= p.rev) || (p.n > p.m && p.fwd <= p.rev)) crossover_ok = false;
    if (cross_madds < 0 && p.fwd > p.rev) cross_madds = p.n;
    if (cross_time < 0 && p.t_fwd > p.t_rev) cross_time = p.n;
  }
  r.checks.push_back(software("jacfwd multiply-adds grow as n", worst_fwd, Compare::LessEq, 0.01,
                                fmt::format("jacfwd = forward + n × (forward − first layer) within {:.2g} % over both sweeps", 100 * worst_fwd)));
  r.checks.push_back(software("jacrev multiply-adds grow as m", worst_rev, Compare::LessEq, 0.01,
                                fmt::format("jacrev = forward + m × (forward − last layer) within {:.2g} % over both sweeps", 100 * worst_rev)));
  r.checks.push_back(check_true("crossover at n = m", crossover_ok,
                                fmt::format("m = {}: jacfwd cheaper for every n < m, dearer for every n > m; first n "
                                            "with jacfwd > jacrev: {}",
                                            fixed, cross_madds)));
  r.checks.push_back(check_true("jacobian picks the cheaper mode", auto_ok,
                                "forward iff n < m, costing the cheaper mode plus one probe evaluation"));
  r.checks.push_back(software("jacfwd and jacrev agree", worst_diff, Compare::LessEq, 1e-5,
                                fmt::format("max |J_fwd - J_rev| / max |J| = {:.2g}", worst_diff)));

  // ---- the chain ----
  std::vector<ChainCase> cases =
      opts.quick ? std::vector<ChainCase>{{"text (2 hidden layers)", {98, 32, 32, 10}},
                                          {"funnel", {512, 128, 32, 8}},
                                          {"expander", {8, 32, 128, 512}},
                                          {"hourglass", {256, 16, 256, 16, 256}},
                                          {"mixed", {16, 512, 8, 512, 16}}}
                 : std::vector<ChainCase>{{"text (2 hidden layers)", {784, 256, 256, 10}},
                                          {"funnel", {4096, 1024, 256, 64, 16}},
                                          {"expander", {16, 64, 256, 1024, 4096}},
                                          {"hourglass", {1024, 64, 1024, 64, 1024}},
                                          {"mixed", {64, 2048, 16, 2048, 64}},
                                          {"8 factors", {512, 64, 1024, 32, 2048, 16, 512, 128, 256}}};
  std::vector<ChainPoint> chain;
  for (const auto& c : cases) chain.push_back(run_chain(c, gen, tm));
  Table tc{"chain", {"network", "widths", "dp_madds", "brute_force_madds", "all_forward_madds", "all_reverse_madds",
                     "counted_dp_madds", "counted_forward_madds", "counted_reverse_madds", "jacfwd_madds", "jacrev_madds",
                     "jacobian_optimal_madds", "dp_s", "all_forward_s", "all_reverse_s", "jacfwd_s", "jacrev_s",
                     "jacobian_optimal_s", "bracketing"}, {}};
  bool chain_counts = true, chain_best = true;
  double chain_diff = 0;
  for (const auto& p : chain) {
    tc.rows.push_back({p.name, p.dims, num(p.dp), num(p.brute), num(p.forward), num(p.reverse), num(p.counted_dp),
                       num(p.counted_fwd), num(p.counted_rev), num(p.jacfwd_madds), num(p.jacrev_madds), num(p.strategy_madds),
                       num(p.t_dp), num(p.t_fwd), num(p.t_rev), num(p.t_jacfwd), num(p.t_jacrev), num(p.t_strategy),
                       p.bracketing});
    chain_counts &= p.counted_dp == p.dp && p.counted_fwd == p.forward && p.counted_rev == p.reverse;
    chain_best &= p.dp <= std::min(p.forward, p.reverse) && p.dp == p.brute;
    chain_diff = std::max(chain_diff, p.diff / std::max(p.scale, 1e-30));
  }
  r.tables.push_back(tc);

  // DP against brute force on random chains of 1 to 8 factors.
  int trials = 0, agree = 0;
  Generator dgen(opts.seed + 1);
  for (int K = 1; K <= 8; ++K) {
    for (int t2 = 0; t2 < (opts.quick ? 40 : 200); ++t2) {
      std::vector<std::int64_t> dims;
      for (int k = 0; k <= K; ++k) dims.push_back(1 + static_cast<std::int64_t>(dgen.next_u64() % 64));
      ++trials;
      agree += matrix_chain_order(dims).cost == matrix_chain_brute_force(dims);
    }
  }
  r.checks.push_back(software("DP = brute force for up to 8 factors", trials - agree, Compare::LessEq, 0,
                                fmt::format("{} of {} random chains (widths 1..64, 1 to 8 factors) agree", agree, trials)));
  r.checks.push_back(check_true("DP order never dearer than all-forward or all-reverse", chain_best,
                                "on every network of the chain table, and equal to brute force there"));
  r.checks.push_back(check_true("counted multiply-adds = predicted", chain_counts,
                                "GEMM multiply-adds counted while multiplying the factors equal the DP, all-forward "
                                "and all-reverse costs exactly"));
  r.checks.push_back(software("optimal strategy's Jacobian = jacrev's", chain_diff, Compare::LessEq, 1e-5,
                                fmt::format("max |J - J_rev| / max |J_rev| = {:.2g} (float32) for the explicit factors multiplied "
                                            "in the DP's order and for jacobian(stages, x, ChainStrategy::Optimal)",
                                            chain_diff)));

  // ---- figure ----
  auto series = [](const std::string& label, const std::vector<SweepPoint>& ps, bool by_n, auto get) {
    Series s{label, {}, {}, "linespoints"};
    for (const auto& p : ps) s.x.push_back(static_cast<double>(by_n ? p.n : p.m)), s.y.push_back(get(p));
    return s;
  };
  r.figure.rows = 2, r.figure.cols = 2, r.figure.width = 1200, r.figure.height = 900;
  r.figure.plots.push_back({fmt::format("multiply-adds, m = {}, width {}", fixed, width), "n (inputs)", "GEMM multiply-adds",
                            true, true,
                            {series("jacfwd", sweep_n, true, [&](const SweepPoint& p) { return D(p.fwd); }),
                             series("jacrev", sweep_n, true, [&](const SweepPoint& p) { return D(p.rev); }),
                             series("jacobian (auto)", sweep_n, true, [&](const SweepPoint& p) { return D(p.autom); }),
                             series("forward pass", sweep_n, true, [&](const SweepPoint& p) { return D(p.forward); })},
                            fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dt 2\n", fixed)});
  r.figure.plots.push_back({fmt::format("multiply-adds, n = {}, width {}", fixed, width), "m (outputs)", "GEMM multiply-adds",
                            true, true,
                            {series("jacfwd", sweep_m, false, [&](const SweepPoint& p) { return D(p.fwd); }),
                             series("jacrev", sweep_m, false, [&](const SweepPoint& p) { return D(p.rev); }),
                             series("jacobian (auto)", sweep_m, false, [&](const SweepPoint& p) { return D(p.autom); }),
                             series("forward pass", sweep_m, false, [&](const SweepPoint& p) { return D(p.forward); })},
                            fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dt 2\n", fixed)});
  r.figure.plots.push_back({fmt::format("time, m = {}", fixed), "n (inputs)", "seconds (median of runs)", true, true,
                            {series("jacfwd", sweep_n, true, [](const SweepPoint& p) { return p.t_fwd; }),
                             series("jacrev", sweep_n, true, [](const SweepPoint& p) { return p.t_rev; }),
                             series("jacobian (auto)", sweep_n, true, [](const SweepPoint& p) { return p.t_auto; })},
                            fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dt 2\n", fixed)});
  r.figure.plots.push_back({fmt::format("time, n = {}", fixed), "m (outputs)", "seconds (median of runs)", true, true,
                            {series("jacfwd", sweep_m, false, [](const SweepPoint& p) { return p.t_fwd; }),
                             series("jacrev", sweep_m, false, [](const SweepPoint& p) { return p.t_rev; }),
                             series("jacobian (auto)", sweep_m, false, [](const SweepPoint& p) { return p.t_auto; })},
                            fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dt 2\n", fixed)});

  // ---- text ----
  r.claim =
      "The Jacobian of a network is a product of per-layer Jacobians; matrix multiplication is associative, so every "
      "bracketing gives the same matrix, but the cost depends on the order. Forward mode multiplies from the input "
      "side, one pass (a JVP) per input: it pays when m ≫ n. Reverse mode multiplies from the output side, one pass "
      "(a VJP) per output: with m = 1 (a loss) a single backward pass gives every derivative, which is why it is "
      "the default.";
  r.literature =
      "Griewank & Walther, *Evaluating Derivatives* (2nd ed., SIAM 2008), ch. 3–4: the cost of a Jacobian is about n "
      "forward evaluations in the forward (tangent) mode and about m evaluations in the reverse (adjoint) mode, each "
      "within a small constant factor of one evaluation of f. "
      "Baydin et al., *Automatic differentiation in machine learning: a survey* (JMLR 2018), §3: forward "
      "mode for f: Rⁿ → Rᵐ costs n evaluations, reverse m, so forward wins for n ≪ m and reverse for n ≫ m. "
      "Finding the cheapest order of the chain is the matrix-chain problem (Cormen et al., *Introduction to "
      "Algorithms*, §15.2, an O(K³) dynamic programme); Naumann (*Optimal Jacobian accumulation is NP-complete*, "
      "Math. Prog. 2008) shows the general graph version is hard, while a chain is solved exactly by the DP.";
  std::string m;
  m += fmt::format("A 3-layer MLP n → {0} → {0} → m (ReLU, He initialisation, float32). Multiply-adds are counted in "
                   "the GEMM kernel (`matmul_multiply_adds()`); element-wise work is not counted. Times are the median (IQR in the CSV) of at least {1} "
                   "runs, repeated for at least {2} s, on this machine.\n\n",
                   width, tm.repeats, tm.min_total);
  m += fmt::format("- jacfwd costs the primal plus one tangent pass per input, and jacrev the primal plus one "
                   "cotangent pass per output (to within {:.2g} % and {:.2g} %). Each pass costs a forward pass less "
                   "one layer: the first layer's product with the identity seed (or, in reverse, the last layer's) "
                   "is a copy, which matmul recognises.\n",
                   100 * worst_fwd, 100 * worst_rev);
  m += fmt::format("- With m = {}, jacfwd becomes dearer than jacrev from n = {} in multiply-adds (they are equal at "
                   "n = m) and from n = {} in time.\n",
                   fixed, cross_madds, cross_time);
  m += "- `jacobian` picks forward mode iff n < m, so its count follows the lower envelope (plus one probe "
       "evaluation of f to learn m in forward mode; at n = m it picks reverse mode, which reuses that evaluation and "
       "needs no transpose).\n\n";
  Table shown{"", {"sweep", "n", "m", "forward", "jacfwd", "jacrev", "auto (mode)", "jacfwd s", "jacrev s"}, {}};
  for (const auto* ps : {&sweep_n, &sweep_m})
    for (const auto& p : *ps)
      shown.rows.push_back({ps == &sweep_n ? "n" : "m", num(p.n), num(p.m), num(p.forward), num(p.fwd), num(p.rev),
                            fmt::format("{} ({})", p.autom, p.auto_mode), fmt::format("{:.3g}", p.t_fwd),
                            fmt::format("{:.3g}", p.t_rev)});
  m += markdown_table(shown);
  m += "\n**The chain.** For a network with widths d_0 … d_K the Jacobian is J_K ⋯ J_1 with J_k = W_k ⊙ 1[f_k > 0] "
       "(d_k × d_{k-1}), built explicitly at a random input. The table gives the multiply-adds of the DP's bracketing, "
       "of all-forward (J_K (… (J_2 J_1))) and all-reverse (((J_K J_{K-1}) …) J_1), the counts measured while "
       "multiplying in each order, and the time of each; jacfwd and jacrev of the whole network are shown for "
       "comparison: each counts its single-mode order's multiply-adds plus one forward pass, since its product with the "
       "identity seed is a copy. The DP's Jacobian equals jacrev's to "
       + fmt::format("{:.2g}", chain_diff) + " (relative, float32).\n\n";
  Table sc{"", {"network", "widths", "DP", "all-forward", "all-reverse", "DP / best single mode", "DP s", "fwd s", "rev s",
                "jacobian(stages) madds", "jacobian(stages) s", "jacfwd s", "jacrev s", "bracketing"}, {}};
  for (const auto& p : chain)
    sc.rows.push_back({p.name, p.dims, num(p.dp), num(p.forward), num(p.reverse),
                       fmt::format("{:.2f}", D(p.dp) / D(std::min(p.forward, p.reverse))), fmt::format("{:.3g}", p.t_dp),
                       fmt::format("{:.3g}", p.t_fwd), fmt::format("{:.3g}", p.t_rev), num(p.strategy_madds),
                       fmt::format("{:.3g}", p.t_strategy), fmt::format("{:.3g}", p.t_jacfwd),
                       fmt::format("{:.3g}", p.t_jacrev), "`" + p.bracketing + "`"});
  m += markdown_table(sc);
  m += "\nThe core offers the optimal order as a strategy: `jacobian(stages, x, ChainStrategy::Optimal)` "
       "(chainrule/autodiff/chain.h) evaluates the chain of a network's stages in the DP's bracketing, pushing "
       "columns through a single stage by batched JVPs and pulling rows back by batched VJPs, so its all-forward "
       "order is jacfwd and its all-reverse order is jacrev (columns *jacobian(stages)*). It forms a stage's "
       "Jacobian explicitly only where the bracketing multiplies two inner products, so its count also includes "
       "those factors.";
  r.measured = m;

  nlohmann::json j;
  auto jp = [](const std::vector<SweepPoint>& ps) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : ps)
      a.push_back({{"n", p.n}, {"m", p.m}, {"forward_madds", p.forward}, {"jacfwd_madds", p.fwd}, {"jacrev_madds", p.rev},
                   {"auto_madds", p.autom}, {"auto_mode", p.auto_mode}, {"forward_s", p.t_forward}, {"jacfwd_s", p.t_fwd},
                   {"jacrev_s", p.t_rev}, {"auto_s", p.t_auto}});
    return a;
  };
  j["width"] = width;
  j["fixed"] = fixed;
  j["sweep_n"] = jp(sweep_n);
  j["sweep_m"] = jp(sweep_m);
  j["crossover_n_madds"] = cross_madds;
  j["crossover_n_time"] = cross_time;
  j["chain"] = nlohmann::json::array();
  for (const auto& p : chain)
    j["chain"].push_back({{"network", p.name}, {"widths", p.dims}, {"dp_madds", p.dp}, {"brute_force_madds", p.brute},
                          {"all_forward_madds", p.forward}, {"all_reverse_madds", p.reverse}, {"counted_dp_madds", p.counted_dp},
                          {"dp_s", p.t_dp}, {"all_forward_s", p.t_fwd}, {"all_reverse_s", p.t_rev}, {"bracketing", p.bracketing},
                          {"jacobian_optimal_madds", p.strategy_madds}, {"jacobian_optimal_s", p.t_strategy},
                          {"rel_diff_vs_jacrev", p.diff / std::max(p.scale, 1e-30)}});
  j["dp_vs_brute_force"] = {{"trials", trials}, {"agree", agree}};
  r.json = j.dump();
  return r;
}

}  // namespace chainrule::experiments
