// `init`: the variance of the pre-activations f_k and of the gradients ∂l/∂f_k through 50 ReLU
// layers under He (fan_in, fan_out, fan_avg), Xavier, LeCun and N(0, 0.01²) initialisation,
// averaged over random networks, against the text's derivation σ_y² = (d_in / 2) σ_w² σ_x².
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"
#include "experiments/common.h"

namespace chainrule::experiments {

namespace {

struct Scheme {
  std::string name;
  // σ_w² for a weight [out, in].
  double (*variance)(double in, double out);
};
const std::vector<Scheme>& schemes() {
  static const std::vector<Scheme> s = {
      {"he_fan_in", [](double in, double) { return 2.0 / in; }},
      {"he_fan_out", [](double, double out) { return 2.0 / out; }},
      {"he_fan_avg", [](double in, double out) { return 2.0 / ((in + out) / 2.0); }},
      {"xavier", [](double in, double out) { return 2.0 / (in + out); }},
      {"lecun", [](double in, double) { return 1.0 / in; }},
      {"normal_0.01", [](double, double) { return 1e-4; }},
  };
  return s;
}

struct Config {
  std::string name;
  std::vector<std::int64_t> widths;  // widths[0] is the input, widths[k+1] the width of f_k
};

double variance(const Tensor& t) {
  const double* p = t.data<double>();
  const std::int64_t n = t.numel();
  double s = 0, s2 = 0;
  for (std::int64_t i = 0; i < n; ++i) s += p[i], s2 += p[i] * p[i];
  const double mean = s / static_cast<double>(n);
  return s2 / static_cast<double>(n) - mean * mean;
}

struct Curves {
  std::vector<double> forward, backward;  // mean over networks of Var(f_k), Var(∂l/∂f_k)
  double predicted_forward_log2 = 0, predicted_backward_log2 = 0;  // log2 Var(f_{L-1})/Var(f_0), Var(g_0)/Var(g_{L-1})
};

// All schemes on the same random draws (common random numbers): network `net` uses one set of
// standard normal matrices Z_k, scaled by each scheme's σ_w, so the schemes differ only by σ_w.
std::vector<Curves> run_config(const Config& c, int nets, std::int64_t batch, Generator& gen) {
  const std::size_t L = c.widths.size() - 1;
  std::vector<Curves> out(schemes().size());
  for (std::size_t si = 0; si < schemes().size(); ++si) {
    Curves& cv = out[si];
    cv.forward.assign(L, 0), cv.backward.assign(L, 0);
    for (std::size_t k = 1; k < L; ++k) {
      const double in = static_cast<double>(c.widths[k]), o = static_cast<double>(c.widths[k + 1]);
      const double v = schemes()[si].variance(in, o);
      cv.predicted_forward_log2 += std::log2(in * v / 2);
      cv.predicted_backward_log2 += std::log2(o * v / 2);
    }
  }
  for (int net = 0; net < nets; ++net) {
    std::vector<Tensor> zs;  // Z_kᵀ [in, out], so f_k = h_k Z_kᵀ σ needs no transpose
    for (std::size_t k = 0; k < L; ++k) zs.push_back(randn({c.widths[k], c.widths[k + 1]}, gen, DType::f64));
    Tensor x = randn({batch, c.widths[0]}, gen, DType::f64);
    Tensor probe = randn({batch, c.widths[L]}, gen, DType::f64);  // l = Σ probe ⊙ f_{L-1}, so ∂l/∂f_{L-1} = probe
    for (std::size_t si = 0; si < schemes().size(); ++si) {
      std::vector<Tensor> ws;
      for (std::size_t k = 0; k < L; ++k) {
        const double in = static_cast<double>(c.widths[k]), o = static_cast<double>(c.widths[k + 1]);
        ws.push_back(zs[k] * std::sqrt(schemes()[si].variance(in, o)));
      }
      std::vector<Tensor> eps, fs;
      for (std::size_t k = 0; k < L; ++k) eps.push_back(zeros({batch, c.widths[k + 1]}, DType::f64));
      // f_k = W_k h_k + ε_k with ε = 0: the gradient with respect to ε_k is ∂l/∂f_k.
      auto loss = [&](const std::vector<Tensor>& e) {
        fs.clear();
        Tensor h = x;
        Tensor f;
        for (std::size_t k = 0; k < L; ++k) {
          f = matmul(h, ws[k]) + e[k];
          fs.push_back(f.detach());
          h = relu(f);
        }
        return sum(f * probe);
      };
      std::vector<Tensor> g = grad(loss)(eps);
      for (std::size_t k = 0; k < L; ++k) {
        out[si].forward[k] += variance(fs[k]) / nets;
        out[si].backward[k] += variance(g[k]) / nets;
      }
    }
  }
  return out;
}

}  // namespace

Result run_init(const Options& opts) {
  Result r;
  r.name = "init";
  r.title = "variance of pre-activations and gradients through 50 layers";
  Generator gen(opts.seed);
  const std::size_t L = 50;
  auto constant = [&](std::int64_t w) { return std::vector<std::int64_t>(L + 1, w); };
  std::vector<std::int64_t> alt{256};
  for (std::size_t k = 0; k < L; ++k) alt.push_back(k % 2 == 0 ? 1024 : 256);
  std::vector<Config> configs;
  if (opts.quick) {
    configs = {{"64", constant(64)}, {"256", constant(256)}};
  } else {
    configs = {{"64", constant(64)}, {"256", constant(256)}, {"1024", constant(1024)}, {"256/1024", alt}};
  }
  const int nets = opts.quick ? 12 : 30;
  auto batch_for = [&](const Config& c) {
    std::int64_t w = *std::max_element(c.widths.begin(), c.widths.end());
    return opts.quick ? std::int64_t{8} : std::max<std::int64_t>(16, 8192 / w);
  };

  std::vector<std::vector<Curves>> curves(configs.size());
  for (std::size_t ci = 0; ci < configs.size(); ++ci) curves[ci] = run_config(configs[ci], nets, batch_for(configs[ci]), gen);

  Table t{"variance", {"widths", "scheme", "layer", "var_forward", "var_backward"}, {}};
  Table summary{"summary", {"widths", "scheme", "log2_forward_measured", "log2_forward_predicted", "log2_backward_measured",
                            "log2_backward_predicted", "forward_max_dev_factor", "backward_max_dev_factor"}, {}};
  auto sid = [](const std::string& n) {
    for (std::size_t i = 0; i < schemes().size(); ++i)
      if (schemes()[i].name == n) return i;
    return std::size_t{0};
  };
  // Largest factor by which a curve strays from its first (forward) or last (backward) value.
  auto dev = [](const std::vector<double>& v, bool from_end) {
    const double ref = from_end ? v.back() : v.front();
    double worst = 1;
    for (double x : v) worst = std::max(worst, std::max(x / ref, ref / x));
    return worst;
  };
  nlohmann::json j = nlohmann::json::array();
  for (std::size_t ci = 0; ci < configs.size(); ++ci) {
    for (std::size_t si = 0; si < schemes().size(); ++si) {
      const auto& cv = curves[ci][si];
      for (std::size_t k = 0; k < L; ++k)
        t.rows.push_back({configs[ci].name, schemes()[si].name, num(static_cast<int>(k)), num(cv.forward[k]), num(cv.backward[k])});
      const double mf = std::log2(cv.forward.back() / cv.forward.front());
      const double mb = std::log2(cv.backward.front() / cv.backward.back());
      summary.rows.push_back({configs[ci].name, schemes()[si].name, num(mf), num(cv.predicted_forward_log2), num(mb),
                              num(cv.predicted_backward_log2), num(dev(cv.forward, false)), num(dev(cv.backward, true))});
      j.push_back({{"widths", configs[ci].name}, {"scheme", schemes()[si].name}, {"var_forward", cv.forward},
                   {"var_backward", cv.backward}, {"log2_forward_measured", mf}, {"log2_forward_predicted", cv.predicted_forward_log2},
                   {"log2_backward_measured", mb}, {"log2_backward_predicted", cv.predicted_backward_log2}});
    }
  }
  r.tables = {t, summary};

  // Checks on the means, widths >= 256.
  std::string d1, d2, d3, d4;
  // The worst value over the width configurations of each statement.
  double v1 = 0, v2 = 0, v3 = 0, v4 = -std::numeric_limits<double>::infinity();
  for (std::size_t ci = 0; ci < configs.size(); ++ci) {
    const bool wide = *std::min_element(configs[ci].widths.begin(), configs[ci].widths.end()) >= 256;
    const bool equal = configs[ci].widths.front() == configs[ci].widths.back() &&
                       *std::min_element(configs[ci].widths.begin(), configs[ci].widths.end()) ==
                           *std::max_element(configs[ci].widths.begin(), configs[ci].widths.end());
    const auto& fi = curves[ci][sid("he_fan_in")];
    const auto& fo = curves[ci][sid("he_fan_out")];
    const auto& xa = curves[ci][sid("xavier")];
    const auto& sm = curves[ci][sid("normal_0.01")];
    if (wide) {
      v1 = std::max(v1, dev(fi.forward, false));
      d1 += fmt::format("{}{}: ×{:.2f}", d1.empty() ? "" : ", ", configs[ci].name, dev(fi.forward, false));
      v2 = std::max(v2, dev(fo.backward, true));
      d2 += fmt::format("{}{}: ×{:.2f}", d2.empty() ? "" : ", ", configs[ci].name, dev(fo.backward, true));
      if (equal) {
        // About 2^-L: each layer halves the variance, forward and backward (slope within 15 %).
        const double sf = std::log2(xa.forward.back() / xa.forward.front()) / static_cast<double>(L - 1);
        const double sb = std::log2(xa.backward.front() / xa.backward.back()) / static_cast<double>(L - 1);
        v3 = std::max({v3, std::abs(sf + 1), std::abs(sb + 1)});
        d3 += fmt::format("{}{}: forward 2^{:.2f} per layer, backward 2^{:.2f}", d3.empty() ? "" : ", ", configs[ci].name, sf, sb);
      }
    }
    const double vf = sm.forward.back() / sm.forward.front(), vb = sm.backward.front() / sm.backward.back();
    v4 = std::max({v4, std::log10(vf), std::log10(vb)});
    d4 += fmt::format("{}{}: forward {:.1e}, backward {:.1e}", d4.empty() ? "" : ", ", configs[ci].name, vf, vb);
  }
  r.checks.push_back(reproduction("He fan_in keeps the forward variance within a factor 2", v1, Compare::LessEq, 2.0,
                                  "largest factor from Var(f_0) over 50 layers, mean of " + std::to_string(nets) + " nets: " + d1));
  r.checks.push_back(reproduction("He fan_out keeps the backward variance within a factor 2", v2, Compare::LessEq, 2.0,
                                  "largest factor from Var(∂l/∂f_49): " + d2));
  r.checks.push_back(reproduction("Xavier shrinks both by about 2^-L", v3, Compare::LessEq, 0.15,
                                  "largest |log2 change per layer + 1|: " + d3));
  // The value is log10 of the largest variance ratio; the theory's is about -93 at width 256.
  r.checks.push_back(reproduction("N(0, 0.01²) vanishes", v4, Compare::Less, -20.0, "Var ratio over 49 layers: " + d4));

  // Figure: forward (top row) and backward (bottom row), one column per width configuration.
  r.figure.rows = 2, r.figure.cols = static_cast<int>(configs.size());
  r.figure.width = 400 * r.figure.cols, r.figure.height = 800;
  for (int dir = 0; dir < 2; ++dir) {
    for (std::size_t ci = 0; ci < configs.size(); ++ci) {
      Plot p{fmt::format("{}, widths {}", dir == 0 ? "Var(f_k)" : "Var(dl/df_k)", configs[ci].name), "layer k",
             "variance (mean of " + std::to_string(nets) + " nets)", false, true, {},
             "set key bottom left font ',7'\nset yrange [1e-24:1e4]\n"};
      for (std::size_t si = 0; si < schemes().size(); ++si) {
        Series s{schemes()[si].name, {}, {}, "lines lw 2"};
        const auto& v = dir == 0 ? curves[ci][si].forward : curves[ci][si].backward;
        for (std::size_t k = 0; k < L; ++k) s.x.push_back(static_cast<double>(k)), s.y.push_back(v[k]);
        p.series.push_back(s);
      }
      r.figure.plots.push_back(p);
    }
  }

  r.claim =
      "With W_i ~ N(0, σ_w²), zero bias and h = ReLU(x) for x symmetric about zero, E(H²) = σ_x²/2 and σ_y² = (d_in/2) "
      "σ_w² σ_x². Keeping the forward variance needs σ_w² = 2/d_in (He initialisation); the backward pass multiplies "
      "by Wᵀ and needs σ_w² = 2/d_out; for a rectangular matrix both cannot hold, so one may average them. Without "
      "such care gradients vanish or explode.";
  r.literature =
      "He et al., *Delving Deep into Rectifiers* (ICCV 2015), §2.2, eqs. 10 and 14: the forward condition "
      "½ n_l Var(w_l) = 1 and the backward condition ½ n̂_l Var(w_l) = 1, either of which suffices in practice since "
      "their ratio over the whole network is a constant, not an exponential. Xavier/Glorot initialisation (Glorot & "
      "Bengio, AISTATS 2010: Var(W) = 2/(n_in + n_out)) ignores the ReLU's halving, so with equal widths the variance "
      "shrinks by 1/2 per layer, 2^-L over L layers (He et al. §2.2, comparison with Xavier). Their fig. 2 shows a "
      "22-layer net converging with both, fig. 3 a 30-layer one stalling with Xavier; a fixed std of 0.01 (as used by "
      "Krizhevsky et al. and for VGG) does not let deep plain nets converge (He et al. §2.2).";
  std::string m = fmt::format(
      "Plain ReLU networks with 50 linear layers, f_0 = W_0 x and f_k = W_k ReLU(f_{{k-1}}), zero biases, x ~ N(0, I), "
      "float64; l = Σ c ⊙ f_49 with c ~ N(0, 1), so ∂l/∂f_49 = c. The gradients ∂l/∂f_k come from one `grad` call "
      "with respect to zero offsets ε_k added to each f_k. Each curve is the mean over {} random networks (batch {} "
      "for quick, max(16, 8192/width) otherwise). The table compares log2 of the total change over the 49 layers "
      "with the prediction Π_k (d_in σ_w²/2) (forward) and Π_k (d_out σ_w²/2) (backward).\n\n",
      nets, opts.quick ? std::string("8") : std::string("max(16, 8192/width)"));
  Table shown{"", {"widths", "scheme", "forward: measured", "predicted", "backward: measured", "predicted", "max dev. fwd",
                   "max dev. bwd"}, {}};
  for (const auto& row : summary.rows) {
    auto f = [](const std::string& s) { return fmt::format("{:.1f}", std::stod(s)); };
    shown.rows.push_back({row[0], row[1], f(row[2]), f(row[3]), f(row[4]), f(row[5]), fmt::format("×{:.2g}", std::stod(row[6])),
                          fmt::format("×{:.2g}", std::stod(row[7]))});
  }
  m += markdown_table(shown);
  m += "\nThe measured log2 change follows the prediction for every scheme. He fan_in holds the forward variance and "
       "He fan_out the backward one; with equal widths they coincide (and so do Xavier and LeCun, both 1/d). The "
       "plot is cut at 1e-24; N(0, 0.01²) leaves it after a few layers. With alternating widths 256/1024, fan_in "
       "makes the backward variance oscillate by the ratio d_out/d_in = 4 from layer to layer (and fan_out the "
       "forward), without drifting, as He et al. note. With equal widths Xavier loses a factor 2 per layer in both "
       "directions, and N(0, 0.01²) loses a factor d·10⁻⁴/2 per layer until nothing is left.";
  r.measured = m;
  r.json = nlohmann::json{{"layers", L}, {"nets", nets}, {"curves", j}}.dump();
  return r;
}

}  // namespace chainrule::experiments
