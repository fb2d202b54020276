// `checkpointing`: Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost". A network of
// n blocks split into k segments keeps only the k segment inputs in the forward pass and
// recomputes one segment at a time in the backward pass: activation memory ∝ n/k + k, least at
// k = √n, for the price of one more forward pass. Measured on residual MLPs of n blocks
// (Sequential::set_checkpoint_segments, PyTorch's checkpoint_sequential): the allocator's peak
// during one training step, the GEMM multiply-adds, and the step time.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "chainrule/nn/init.h"
#include "chainrule/nn/loss.h"
#include "chainrule/nn/spec.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/allocator.h"
#include "chainrule/tensor/random.h"
#include "experiments/common.h"

namespace chainrule::experiments {

namespace {

struct Point {
  std::int64_t n = 0, k = 0;  // blocks; segments (0: no checkpointing)
  double peak_mb = 0;         // allocator high-water mark above what was held before the step
  std::uint64_t madds = 0;    // GEMM multiply-adds of the step
  double median_ms = 0, iqr_ms = 0;
  double max_grad_diff = 0;   // against the step without checkpointing
};

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

// Least squares of peak = c + a (n/k) + b k over the checkpointed points of one n; returns
// {c, a, b, R²}.
std::array<double, 4> fit_sublinear(const std::vector<Point>& pts) {
  // Normal equations of a 3-parameter linear model, solved by Cramer's rule.
  double s[3][3] = {}, t[3] = {}, mean = 0;
  for (const auto& p : pts) {
    const double f[3] = {1.0, static_cast<double>(p.n) / static_cast<double>(p.k), static_cast<double>(p.k)};
    for (int i = 0; i < 3; ++i) {
      t[i] += f[i] * p.peak_mb;
      for (int j = 0; j < 3; ++j) s[i][j] += f[i] * f[j];
    }
    mean += p.peak_mb / static_cast<double>(pts.size());
  }
  auto det3 = [](double m[3][3]) {
    return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
           m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  };
  const double d = det3(s);
  std::array<double, 4> out{};
  for (int c = 0; c < 3; ++c) {
    double m[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) m[i][j] = j == c ? t[i] : s[i][j];
    out[static_cast<std::size_t>(c)] = det3(m) / d;
  }
  double ss_res = 0, ss_tot = 0;
  for (const auto& p : pts) {
    const double pred = out[0] + out[1] * static_cast<double>(p.n) / static_cast<double>(p.k) + out[2] * static_cast<double>(p.k);
    ss_res += (p.peak_mb - pred) * (p.peak_mb - pred);
    ss_tot += (p.peak_mb - mean) * (p.peak_mb - mean);
  }
  out[3] = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
  return out;
}

}  // namespace

Result run_checkpointing(const Options& opts) {
  Result r;
  r.name = "checkpointing";
  r.title = "gradient checkpointing: memory against recomputation";
  const std::vector<std::int64_t> ns = opts.quick ? std::vector<std::int64_t>{16} : std::vector<std::int64_t>{16, 64, 256};
  // Activations must dominate the memory, as in the paper's networks: a batch much larger than the
  // width (the weight gradients, 2 width² per block, are the same for every k).
  const std::int64_t width = opts.quick ? 32 : 128, batch = 1024;
  // Timed steps per point for the median and IQR: at least 10 (the quick version times them too,
  // but its checks, the CTest, count bytes and multiply-adds only).
  const int runs = 11;

  std::vector<Point> pts;
  for (std::int64_t n : ns) {
    auto model = nn::build_model(fmt::format("resmlp:{}-{}x{}-10", width, width, n));
    Generator g(opts.seed + 17);
    nn::init_model(*model, g, {.scheme = nn::InitScheme::He});
    Generator dg(opts.seed + 29);
    const Tensor x = randn({batch, width}, dg, DType::f32);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(batch));
    for (std::int64_t i = 0; i < batch; ++i) labels[static_cast<std::size_t>(i)] = (i * 7 + static_cast<std::int64_t>(opts.seed % 10)) % 10;
    const Tensor y = from_vector(labels, {batch});
    auto step = [&] {
      model->zero_grad();
      Tensor loss = nn::cross_entropy(model->forward(x), y);
      loss.backward();
    };
    auto grads = [&] {
      std::vector<Tensor> gs;
      for (auto& p : model->parameters()) gs.push_back(p.grad().contiguous_clone());
      return gs;
    };
    // k = 0 first (the reference gradients), then every divisor of n.
    std::vector<std::int64_t> ks{0};
    for (std::int64_t k = 1; k <= n; ++k)
      if (n % k == 0) ks.push_back(k);
    std::vector<Tensor> reference;
    for (std::int64_t k : ks) {
      model->set_checkpoint_segments(static_cast<int>(k));
      step();  // warm: the allocator's cache and oneDNN's kernels
      model->zero_grad();
      Point p{n, k};
      const std::size_t before = memory::stats().bytes_in_use;
      memory::reset_peak();
      p.madds = count_madds(step);
      p.peak_mb = static_cast<double>(memory::stats().peak_bytes - before) / 1e6;
      auto gs = grads();
      if (k == 0) {
        reference = gs;
      } else {
        for (std::size_t i = 0; i < gs.size(); ++i)
          p.max_grad_diff = std::max(p.max_grad_diff, max(abs(sub(gs[i], reference[i]))).item<float>() * 1.0);
      }
      pts.push_back(p);
    }
    // Timed steps in rounds over every k, so that a burst of load on the shared machine falls on
    // all the k alike rather than on one of them.
    std::vector<std::vector<double>> ms(ks.size());
    for (int i = 0; i < runs; ++i)
      for (std::size_t j = 0; j < ks.size(); ++j) {
        model->set_checkpoint_segments(static_cast<int>(ks[j]));
        auto t0 = std::chrono::steady_clock::now();
        step();
        ms[j].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    for (std::size_t j = 0; j < ks.size(); ++j) {
      Point& p = pts[pts.size() - ks.size() + j];
      p.median_ms = quantile(ms[j], 0.5), p.iqr_ms = quantile(ms[j], 0.75) - quantile(ms[j], 0.25);
    }
    model->set_checkpoint_segments(0);
  }

  // Per n: the point without checkpointing, the best k (least peak) and the fit.
  struct Summary {
    std::int64_t n;
    const Point *none, *best;
    std::array<double, 4> fit;
    std::int64_t model_k;  // the divisor of n where the fitted c + a n/k + b k is least
  };
  std::vector<Summary> sums;
  for (std::int64_t n : ns) {
    std::vector<Point> ck;
    const Point *none = nullptr, *best = nullptr;
    for (const auto& p : pts) {
      if (p.n != n) continue;
      if (p.k == 0) none = &p;
      else {
        ck.push_back(p);
        if (!best || p.peak_mb < best->peak_mb) best = &p;
      }
    }
    const auto fit = fit_sublinear(ck);
    std::int64_t model_k = 0;
    double least = 0;
    for (const auto& p : ck) {
      const double v = fit[1] * static_cast<double>(n) / static_cast<double>(p.k) + fit[2] * static_cast<double>(p.k);
      if (model_k == 0 || v < least) model_k = p.k, least = v;
    }
    sums.push_back({n, none, best, fit, model_k});
  }

  // Checks, fixed from the paper's analysis before the runs. Software: recomputation gives the
  // same gradients. Reproduction, for every n: the least measured peak at k within 2× of √n
  // (Chen et al. §4.1: memory ∝ n/k + k for layers of equal cost, least at k = √n), and an
  // overhead of at most one extra forward pass, ≤ 1.4× (a step is about 3 forward passes, so one
  // more is 4/3): in GEMM multiply-adds always, in median step time in the full version (the quick
  // one is a CTest, and a test never judges time).
  double worst_diff = 0;
  for (const auto& p : pts) worst_diff = std::max(worst_diff, p.max_grad_diff);
  r.checks.push_back(software("checkpointing leaves every gradient unchanged", worst_diff, Compare::LessEq, 0.0,
                                fmt::format("largest |difference| over every n and k: {:g}", worst_diff)));
  for (const auto& s : sums) {
    const double root = std::sqrt(static_cast<double>(s.n)), k = static_cast<double>(s.best->k);
    // Within 2x either side: |log2(k / sqrt(n))| <= 1.
    r.checks.push_back(reproduction(fmt::format("n = {}: the least peak memory is at k within 2x of sqrt(n)", s.n),
                                    std::abs(std::log2(k / root)), Compare::LessEq, 1.0,
                                  fmt::format("best k = {} ({:.2f} MB) against sqrt(n) = {:.2f}; without checkpointing {:.2f} MB",
                                              s.best->k, s.best->peak_mb, root, s.none->peak_mb)));
    const double work = static_cast<double>(s.best->madds) / static_cast<double>(s.none->madds);
    r.checks.push_back(reproduction(fmt::format("n = {}: recomputation at the best k costs at most 1.4x the GEMM work", s.n),
                                    work, Compare::LessEq, 1.4, fmt::format("{:.3f}x the multiply-adds of the step without checkpointing (theory: 4/3)", work)));
    if (!opts.quick) {
      const double slow = s.best->median_ms / s.none->median_ms;
      r.checks.push_back(reproduction(fmt::format("n = {}: the step at the best k takes at most 1.4x the time", s.n), slow,
                                      Compare::LessEq, 1.4,
                                    fmt::format("median ± IQR {:.2f} ± {:.2f} ms against {:.2f} ± {:.2f} ms ({:.3f}x; {} runs each)",
                                                s.best->median_ms, s.best->iqr_ms, s.none->median_ms, s.none->iqr_ms, slow, runs)));
    }
  }
  if (sums.size() > 1) {
    const auto &lo = sums.front(), &hi = sums.back();
    const double grow = hi.best->peak_mb / lo.best->peak_mb, linear = static_cast<double>(hi.n) / static_cast<double>(lo.n);
    r.checks.push_back(reproduction("memory at the best k grows sublinearly in n (at most half the linear growth)",
                                    grow / linear, Compare::LessEq, 0.5,
                                  fmt::format("n {} -> {}: {:.2f}x the peak (linear: {:.0f}x, sqrt: {:.0f}x)", lo.n, hi.n, grow, linear,
                                              std::sqrt(linear))));
  }

  Table t{"checkpointing", {"n", "k", "peak_MB", "gemm_madds", "median_ms", "iqr_ms", "max_grad_diff"}, {}};
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : pts) {
    t.rows.push_back({num(p.n), p.k == 0 ? "none" : num(p.k), num(p.peak_mb), num(p.madds), num(p.median_ms), num(p.iqr_ms),
                      num(p.max_grad_diff)});
    j.push_back({{"n", p.n}, {"k", p.k}, {"peak_mb", p.peak_mb}, {"madds", p.madds}, {"median_ms", p.median_ms}, {"iqr_ms", p.iqr_ms},
                 {"max_grad_diff", p.max_grad_diff}});
  }
  r.tables = {t};

  r.figure.rows = 1, r.figure.cols = 2, r.figure.width = 1200, r.figure.height = 500;
  Plot pm{"peak activation memory against segments", "segments k", "peak MB above the weights", true, true, {},
          "set key outside below maxrows 3\n"};
  Plot pt{"step time against segments (median; band: IQR, or over seeds the 95 % interval)", "segments k", "step ms", true, true, {},
          "set key outside below maxrows 3\n"};
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c"};
  for (std::size_t i = 0; i < sums.size(); ++i) {
    const auto& s = sums[i];
    const std::string colour = fmt::format("lc rgb '{}'", colours[i % 3]);
    const int marker = 5 + 2 * static_cast<int>(i);
    Series m{fmt::format("n = {}: measured", s.n), {}, {}, fmt::format("linespoints lw 2 pt {} {}", marker, colour)},
        f{fmt::format("n = {}: fit c + a n/k + b k", s.n), {}, {}, fmt::format("lines dt 2 lw 2 {}", colour)},
        ts{fmt::format("n = {}: checkpointed", s.n), {}, {}, fmt::format("linespoints lw 2 pt {} {}", marker, colour)},
        t0{fmt::format("n = {}: no checkpointing", s.n), {}, {}, fmt::format("lines dt 3 lw 2 {}", colour)};
    for (const auto& p : pts) {
      if (p.n != s.n || p.k == 0) continue;
      const double k = static_cast<double>(p.k);
      m.x.push_back(k), m.y.push_back(p.peak_mb);
      f.x.push_back(k), f.y.push_back(s.fit[0] + s.fit[1] * static_cast<double>(p.n) / k + s.fit[2] * k);
      ts.x.push_back(k), ts.y.push_back(p.median_ms);
      ts.lo.push_back(p.median_ms - p.iqr_ms / 2), ts.hi.push_back(p.median_ms + p.iqr_ms / 2);
      t0.x.push_back(k), t0.y.push_back(s.none->median_ms);
    }
    pm.series.push_back(m), pm.series.push_back(f), pt.series.push_back(ts), pt.series.push_back(t0);
  }
  r.figure.plots = {pm, pt};

  r.claim = "Storing every activation for the backward pass costs memory linear in depth; recomputation trades "
            "computation for memory (the text's checkpointing remark).";
  r.literature =
      "Chen, Xu, Zhang and Guestrin, *Training Deep Nets with Sublinear Memory Cost* (arXiv:1604.06174, 2016), §4.1: "
      "with n layers in k segments the memory is O(n/k + k), least at k = √n, i.e. O(√n) memory for one extra "
      "forward pass per mini-batch; their abstract reports a 1,000-layer residual network on ImageNet going from 48 GB "
      "to 7 GB for 30 % more running time (the figure beside our time ratio).";
  std::string m = fmt::format(
      "Residual MLPs `resmlp:{0}-{0}xn-10` (linear-relu-linear blocks) for n = {1}, batch {2}, float32, one training step "
      "(forward, cross-entropy, backward) with k segments for every divisor k of n "
      "(`Sequential::set_checkpoint_segments`: the last segment is not recomputed, as in PyTorch). Peak: the allocator's "
      "high-water mark above the bytes held before the step (weights and input). Time: median and IQR of {3} steps, "
      "taken in rounds over every k (one step of each k per round).\n\n",
      width,
      [&] {
        std::string s;
        for (auto n : ns) s += (s.empty() ? "" : ", ") + std::to_string(n);
        return s;
      }(),
      batch, runs);
  Table shown{"", {"n", "none: MB", "best k", "best: MB", "fit R²", "fit's least k", "fitted k* = √(a n / b)", "GEMM work",
                   "none: ms", "best k: ms", "time"},
              {}};
  for (const auto& s : sums) {
    const double kstar = s.fit[1] > 0 && s.fit[2] > 0 ? std::sqrt(s.fit[1] * static_cast<double>(s.n) / s.fit[2]) : 0.0;
    shown.rows.push_back({num(s.n), fmt::format("{:.2f}", s.none->peak_mb), num(s.best->k), fmt::format("{:.2f}", s.best->peak_mb),
                          fmt::format("{:.3f}", s.fit[3]), num(s.model_k), fmt::format("{:.1f}", kstar),
                          fmt::format("{:.3f}x", static_cast<double>(s.best->madds) / static_cast<double>(s.none->madds)),
                          fmt::format("{:.2f} ± {:.2f}", s.none->median_ms, s.none->iqr_ms),
                          fmt::format("{:.2f} ± {:.2f}", s.best->median_ms, s.best->iqr_ms),
                          fmt::format("{:.2f}x", s.best->median_ms / s.none->median_ms)});
  }
  m += markdown_table(shown);
  // Sentences that follow the numbers.
  m += "\n";
  for (const auto& s : sums) {
    const double root = std::sqrt(static_cast<double>(s.n)), ratio = static_cast<double>(s.best->k) / root;
    const double slow = s.best->median_ms / s.none->median_ms;
    m += fmt::format(
        "n = {}: the least peak is at k = {} ({:.2f} √n, {} 2× of √n), {:.1f} % of the peak without checkpointing; the "
        "model c + a n/k + b k fits with R² = {:.3f}{} and is least at k = {}{}{}. ",
        s.n, s.best->k, ratio, std::abs(std::log2(ratio)) <= 1 ? "within" : "outside", 100 * s.best->peak_mb / s.none->peak_mb,
        s.fit[3], s.fit[3] >= 0.95 ? "" : " (a poor fit)", s.model_k,
        s.model_k == s.best->k ? ", as measured" : ", not where the measurement is least",
        [&] {
          for (const auto& p : pts)
            if (p.n == s.n && p.k == s.model_k && p.k != s.best->k)
              return fmt::format(" (the peak there, {:.2f} MB, is {:.0f} % above the least)", p.peak_mb,
                                 100 * (p.peak_mb / s.best->peak_mb - 1));
          return std::string();
        }());
    if (!opts.quick)
      m += fmt::format("Its step takes {:.2f}x the time without checkpointing ({}). ", slow,
                       slow <= 1.3   ? "within the paper's 30 %"
                       : slow <= 1.4 ? "above the paper's 30 %, within 1.4x"
                                     : "above 1.4x and the paper's 30 %");
    if (!opts.quick && std::max(s.best->iqr_ms / s.best->median_ms, s.none->iqr_ms / s.none->median_ms) > 0.2)
      m += fmt::format("The IQRs are {:.0f} % and {:.0f} % of the medians (the machine is shared), so this ratio is uncertain. ",
                       100 * s.best->iqr_ms / s.best->median_ms, 100 * s.none->iqr_ms / s.none->median_ms);
  }
  if (!sums.empty() && sums.front().fit[1] > 0 && sums.front().fit[2] > 0)
    m += fmt::format("The fitted a/b = {:.1f} at n = {} (a: bytes per block recomputed, b: per segment kept): the "
                     "least k of the model is √(a/b) √n, not √n, when a block holds more than one tensor of the "
                     "size of a segment's input.",
                     sums.front().fit[1] / sums.front().fit[2], sums.front().n);
  r.measured = m;
  r.json = nlohmann::json{{"points", j}, {"width", width}, {"batch", batch}, {"runs", runs}}.dump();
  return r;
}

}  // namespace chainrule::experiments
