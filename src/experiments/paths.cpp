// `paths`: residual networks as ensembles of paths (Veit et al. 2016). n blocks give 2ⁿ paths whose
// lengths are Binomial(n, ½); the gradient a path of length k carries falls quickly with k, so most
// of the gradient comes from short paths; and deleting one block of a trained residual network
// does little harm, whereas deleting one layer of a plain network breaks it.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "chainrule/autodiff/frame.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/spec.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"
#include "experiments/common.h"
#include "experiments/training.h"

namespace chainrule::experiments {

namespace {

double binomial(int n, int k) {
  double c = 1;
  for (int i = 1; i <= k; ++i) c = c * (n - k + i) / i;
  return c;
}

// Test accuracy of a Sequential with the children in `skip` left out.
double accuracy_without(nn::Sequential& model, const data::Dataset& test, const std::vector<std::size_t>& skip) {
  NoGradGuard ng;
  model.eval();
  Tensor h = test.x;
  for (std::size_t i = 0; i < model.size(); ++i)
    if (std::find(skip.begin(), skip.end(), i) == skip.end()) h = model[i]->forward(h);
  Tensor pred = argmax(h, -1);
  const double acc = mean(cast(equal(pred, test.y), DType::f32)).item();
  model.train();
  return acc;
}

}  // namespace

Result run_paths(const Options& opts) {
  Result r;
  r.name = "paths";
  r.title = "residual networks as ensembles of short paths";
  const int n = opts.quick ? 6 : 12;  // residual blocks; the plain net has n deletable hidden layers
  const std::int64_t width = 64;
  const std::int64_t steps = opts.quick ? 200 : 600, n_train = opts.quick ? 5000 : 60000, n_test = opts.quick ? 2000 : 10000;
  const int samples = opts.quick ? 6 : 24;  // random paths per length
  const auto& data = fashion_mnist(n_train, n_test);

  // Train a residual and a plain network with the same budget.
  auto res = nn::build_model(fmt::format("resmlp:784-{}x{}-10", width, n));
  std::string plain_spec = "mlp:784";
  for (int k = 0; k <= n; ++k) plain_spec += "-" + std::to_string(width);
  plain_spec += "-10";
  auto plain = nn::build_model(plain_spec);
  {
    Generator g(opts.seed + 21);
    nn::init_model(*res, g, {.scheme = nn::InitScheme::He, .zero_residual = true});
    nn::init_model(*plain, g, {.scheme = nn::InitScheme::He});
  }
  const TrainSpec ts{.steps = steps, .batch = 128, .lr = 0.01, .momentum = 0.9, .seed = opts.seed, .log_every = 50};
  TrainLog res_log = train_sgd(*res, data, ts), plain_log = train_sgd(*plain, data, ts);

  // Deleting one block (residual: child 2 + i) or one hidden-to-hidden layer (plain: Linear 2j and ReLU 2j + 1).
  const double res_base = accuracy_without(*res, data.test, {}), plain_base = accuracy_without(*plain, data.test, {});
  std::vector<double> res_del, plain_del;
  for (int i = 0; i < n; ++i) {
    res_del.push_back(accuracy_without(*res, data.test, {static_cast<std::size_t>(2 + i)}));
    plain_del.push_back(accuracy_without(*plain, data.test, {static_cast<std::size_t>(2 * (i + 1)), static_cast<std::size_t>(2 * (i + 1) + 1)}));
  }
  auto mean_drop = [](double base, const std::vector<double>& v) {
    double s = 0;
    for (double a : v) s += base - a;
    return s / static_cast<double>(v.size());
  };
  const double res_drop = mean_drop(res_base, res_del), plain_drop = mean_drop(plain_base, plain_del);
  r.checks.push_back(reproduction("deleting a residual block costs less accuracy than deleting a plain layer",
                                  res_drop - plain_drop, Compare::Less, 0.0,
                                fmt::format("mean test-accuracy drop over the {} positions: residual {:.4f} (from {:.4f}), "
                                            "plain {:.4f} (from {:.4f})",
                                            n, res_drop, res_base, plain_drop, plain_base)));

  // Gradient carried by paths of length k: in the backward pass a chosen block passes the gradient
  // through its branch only and every other block through its skip only (the forward pass is
  // unchanged), so the gradient reaching the first block's input is that of one path.
  Generator pg(opts.seed + 99);
  Tensor xb = slice(data.test.x, 0, 0, 256), yb = slice(data.test.y, 0, 0, 256);
  res->eval();
  std::vector<double> per_path(static_cast<std::size_t>(n + 1), 0.0);
  for (int k = 0; k <= n; ++k) {
    for (int s = 0; s < samples; ++s) {
      // A random subset of k blocks (partial Fisher-Yates).
      std::vector<int> idx(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
      for (int i = 0; i < k; ++i) std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(i + static_cast<int>(pg.next_u64() % static_cast<std::uint64_t>(n - i)))]);
      std::vector<bool> on(static_cast<std::size_t>(n), false);
      for (int i = 0; i < k; ++i) on[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)])] = true;
      Tensor h0;
      {
        NoGradGuard ng;
        h0 = (*res)[1]->forward((*res)[0]->forward(xb));
      }
      h0 = h0.detach().requires_grad_();
      Tensor h = h0;
      for (int i = 0; i < n; ++i) {
        Tensor out = (*res)[static_cast<std::size_t>(2 + i)]->forward(h);
        h = on[static_cast<std::size_t>(i)] ? h.detach() + (out - h) : h + (out - h).detach();
      }
      Tensor loss = cross_entropy((*res)[static_cast<std::size_t>(2 + n)]->forward(h), yb);
      loss.backward();
      per_path[static_cast<std::size_t>(k)] += std::sqrt(sum(square(h0.grad())).item()) / samples;
    }
  }
  res->train();

  Table tp{"paths", {"path_length", "paths", "fraction_of_paths", "grad_norm_per_path", "total_grad_norm"}, {}};
  std::vector<double> total(per_path.size());
  double tsum = 0;
  for (int k = 0; k <= n; ++k) {
    const double c = binomial(n, k);
    total[static_cast<std::size_t>(k)] = c * per_path[static_cast<std::size_t>(k)];
    tsum += total[static_cast<std::size_t>(k)];
    tp.rows.push_back({num(k), num(c), num(c / std::pow(2.0, n)), num(per_path[static_cast<std::size_t>(k)]), num(total[static_cast<std::size_t>(k)])});
  }
  Table td{"deletion", {"network", "deleted", "test_accuracy"}, {}};
  td.rows.push_back({"residual", "none", num(res_base)});
  td.rows.push_back({"plain", "none", num(plain_base)});
  for (int i = 0; i < n; ++i) td.rows.push_back({"residual", num(i + 1), num(res_del[static_cast<std::size_t>(i)])});
  for (int i = 0; i < n; ++i) td.rows.push_back({"plain", num(i + 1), num(plain_del[static_cast<std::size_t>(i)])});
  r.tables = {tp, td};
  // Where the gradient comes from: the shortest lengths holding half of the total.
  int kmax = 0;
  for (int k = 0; k <= n; ++k)
    if (total[static_cast<std::size_t>(k)] > total[static_cast<std::size_t>(kmax)]) kmax = k;
  double mean_len = 0;
  for (int k = 0; k <= n; ++k) mean_len += k * total[static_cast<std::size_t>(k)] / tsum;
  r.checks.push_back(reproduction("gradient per path falls with its length", per_path[static_cast<std::size_t>(n)] / per_path[1],
                                  Compare::Less, 1.0,
                                fmt::format("per-path gradient norm: length 1 {:.3g}, length {} {:.3g}", per_path[1], n,
                                            per_path[static_cast<std::size_t>(n)])));

  r.figure.rows = 1, r.figure.cols = 3, r.figure.width = 1500, r.figure.height = 500;
  Plot pa{fmt::format("paths of each length, {} blocks", n), "path length k", "fraction of paths / of gradient", false, false, {}, "set key top right\n"};
  Plot pb{"gradient norm carried by one path", "path length k", "||dl/dh_0|| per path", false, true, {}, "set key top right\n"};
  Plot pc{"test accuracy after deleting one block / layer", "deleted block (layer)", "test accuracy", false, false, {},
          "set key bottom left\nset yrange [0:1]\n"};
  Series sfrac{"paths: Binomial(n, 1/2)", {}, {}, "linespoints"}, sgrad{"share of total gradient", {}, {}, "linespoints"},
      sper{"mean over sampled paths", {}, {}, "linespoints"};
  for (int k = 0; k <= n; ++k) {
    sfrac.x.push_back(k), sfrac.y.push_back(binomial(n, k) / std::pow(2.0, n));
    sgrad.x.push_back(k), sgrad.y.push_back(total[static_cast<std::size_t>(k)] / tsum);
    sper.x.push_back(k), sper.y.push_back(per_path[static_cast<std::size_t>(k)]);
  }
  pa.series = {sfrac, sgrad};
  pb.series = {sper};
  Series sr{"residual", {}, {}, "linespoints"}, sp{"plain", {}, {}, "linespoints"}, srb{"residual, intact", {}, {}, "lines dt 2"},
      spb{"plain, intact", {}, {}, "lines dt 2"};
  for (int i = 0; i < n; ++i) {
    sr.x.push_back(i + 1), sr.y.push_back(res_del[static_cast<std::size_t>(i)]);
    sp.x.push_back(i + 1), sp.y.push_back(plain_del[static_cast<std::size_t>(i)]);
    srb.x.push_back(i + 1), srb.y.push_back(res_base);
    spb.x.push_back(i + 1), spb.y.push_back(plain_base);
  }
  pc.series = {sr, sp, srb, spb};
  r.figure.plots = {pa, pb, pc};

  r.claim = "A network with residual connections becomes an ensemble of smaller networks, in which the gradient can flow "
            "through shorter paths: the Jacobian of the output with respect to an early block is I plus a sum of "
            "products over every subset of later blocks.";
  r.literature =
      "Veit, Wilber & Belongie, *Residual Networks Behave Like Ensembles of Relatively Shallow Networks* (NeurIPS 2016): "
      "n blocks give 2ⁿ paths with Binomial(n, ½) lengths (fig. 6a); the gradient magnitude of a path falls "
      "exponentially with its length (fig. 6b), so in a 110-layer (54-block) ResNet almost all of the gradient comes "
      "from paths of 5–17 blocks (fig. 6c); deleting a single block of a trained ResNet barely changes the error while "
      "deleting a layer of VGG destroys it (fig. 3: VGG falls to chance, ResNet changes by a fraction of a point).";
  std::string m = fmt::format(
      "A residual MLP `resmlp:784-{0}x{1}-10` (zero-initialised branches) and a plain `mlp:784-{0}×{2}-10`, each trained "
      "with SGD (lr 0.01, momentum 0.9, batch 128, {3} steps) on the first {4} Fashion-MNIST training images; accuracies "
      "on the first {5} test images. Path gradients: for each length k, {6} random sets of k blocks; the backward pass "
      "goes through the branch of the chosen blocks and the skip of the others (the forward pass is untouched, via "
      "detach), on 256 test images; the total for length k is C(n, k) × the mean norm.\n\n",
      width, n, n + 1, steps, n_train, n_test, samples);
  m += fmt::format("- Most of the gradient comes from short paths: the total peaks at length {} and its mean length is "
                   "{:.1f}, against n/2 = {} for the paths themselves.\n",
                   kmax, mean_len, n / 2.0);
  m += fmt::format("- Deleting one block: residual accuracy falls on average by {:.4f} (from {:.4f}); deleting one hidden "
                   "layer of the plain net: by {:.4f} (from {:.4f}).\n\n",
                   res_drop, res_base, plain_drop, plain_base);
  m += markdown_table(tp);
  r.measured = m;
  r.json = nlohmann::json{{"blocks", n},
                          {"grad_per_path", per_path},
                          {"total_grad", total},
                          {"residual_base", res_base},
                          {"plain_base", plain_base},
                          {"residual_deleted", res_del},
                          {"plain_deleted", plain_del},
                          {"residual_train_loss", res_log.final_train_loss},
                          {"plain_train_loss", plain_log.final_train_loss}}
               .dump();
  return r;
}

}  // namespace chainrule::experiments
