// `depth`: plain against residual MLPs of growing depth on Fashion-MNIST with the same budget
// (He et al. 2016, fig. 1 and 4: plain networks degrade with depth, residual ones do not).
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "chainrule/nn/init.h"
#include "chainrule/nn/spec.h"
#include "chainrule/ops/ops.h"
#include "experiments/common.h"
#include "experiments/training.h"

namespace chainrule::experiments {

Result run_depth(const Options& opts) {
  Result r;
  r.name = "depth";
  r.title = "plain against residual networks of growing depth";
  const std::vector<int> depths = opts.quick ? std::vector<int>{2, 8, 32} : std::vector<int>{2, 4, 8, 16, 32, 64};
  const std::int64_t width = opts.quick ? 32 : 64;
  const std::int64_t steps = opts.quick ? 150 : 400, n_train = opts.quick ? 5000 : 60000, n_test = opts.quick ? 2000 : 10000;
  const double lr = 0.01;
  const auto& data = fashion_mnist(n_train, n_test);
  struct Point {
    int depth;
    std::string kind, spec;
    TrainLog log;
  };
  std::vector<Point> pts;
  for (int d : depths) {
    // Plain: d hidden layers. Residual: d/2 blocks of two linear layers (d + 2 linear layers in all,
    // against d + 1), each branch's last layer zero-initialised so every block starts as the identity.
    std::string plain = "mlp:784";
    for (int k = 0; k < d; ++k) plain += "-" + std::to_string(width);
    plain += "-10";
    std::string res = fmt::format("resmlp:784-{}x{}-10", width, std::max(1, d / 2));
    for (auto [kind, spec, zero] : {std::tuple{"plain", plain, false}, std::tuple{"residual", res, true}}) {
      auto model = nn::build_model(spec);
      Generator g(opts.seed + 3);
      nn::init_model(*model, g, {.scheme = nn::InitScheme::He, .zero_residual = zero});
      pts.push_back({d, kind, spec, train_sgd(*model, data, {.steps = steps, .batch = 128, .lr = lr, .momentum = 0.9, .seed = opts.seed, .log_every = 25})});
    }
  }
  auto final_loss = [](const Point& p) {
    return p.log.diverged ? std::numeric_limits<double>::infinity() : p.log.final_train_loss;
  };
  const Point *plain_last = nullptr, *res_last = nullptr;
  for (const auto& p : pts)
    if (p.depth == depths.back()) (p.kind == std::string("plain") ? plain_last : res_last) = &p;
  r.checks.push_back(reproduction("at the largest depth, residual training loss < plain",
                                  final_loss(*res_last) - final_loss(*plain_last), Compare::Less, 0.0,
                                fmt::format("depth {}: residual {:.4f}, plain {:.4f} (mean training loss over the last 10 % "
                                            "of {} steps)",
                                            depths.back(), final_loss(*res_last), final_loss(*plain_last), steps)));

  Table t{"depth", {"kind", "depth", "model", "final_train_loss", "train_eval_loss", "test_loss", "test_accuracy", "diverged"}, {}};
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : pts) {
    t.rows.push_back({p.kind, num(p.depth), p.spec, num(p.log.final_train_loss), num(p.log.train_eval_loss), num(p.log.test_loss),
                      num(p.log.test_accuracy), p.log.diverged ? "yes" : "no"});
    j.push_back({{"kind", p.kind}, {"depth", p.depth}, {"model", p.spec}, {"final_train_loss", p.log.final_train_loss},
                 {"test_accuracy", p.log.test_accuracy}, {"diverged", p.log.diverged}});
  }
  r.tables = {t};

  r.figure.rows = 1, r.figure.cols = 3, r.figure.width = 1500, r.figure.height = 500;
  Plot pl{"final training loss against depth", "depth (hidden layers)", "training loss", true, false, {}, "set key top left\n"};
  Plot pa{"test accuracy against depth", "depth (hidden layers)", "accuracy", true, false, {}, "set key bottom left\n"};
  Plot pc{fmt::format("training curves, depth {}", depths.back()), "step", "training loss", false, false, {}, "set key top right\n"};
  for (const char* kind : {"plain", "residual"}) {
    Series sl{kind, {}, {}, "linespoints"}, sa{kind, {}, {}, "linespoints"}, sc{kind, {}, {}, "lines lw 2"};
    for (const auto& p : pts) {
      if (p.kind != kind) continue;
      sl.x.push_back(p.depth), sl.y.push_back(p.log.final_train_loss);
      sa.x.push_back(p.depth), sa.y.push_back(p.log.test_accuracy);
      if (p.depth == depths.back())
        for (std::size_t i = 0; i < p.log.step.size(); ++i) sc.x.push_back(static_cast<double>(p.log.step[i])), sc.y.push_back(p.log.loss[i]);
    }
    pl.series.push_back(sl), pa.series.push_back(sa), pc.series.push_back(sc);
  }
  r.figure.plots = {pl, pa, pc};

  r.claim = "Deeper networks can represent more complex functions, but sequential (plain) deep networks cannot even be fitted "
            "to the training set: the problem lies in training them, in back-propagating the gradient. Residual "
            "connections fix this.";
  r.literature =
      "He et al., *Deep Residual Learning for Image Recognition* (CVPR 2016), fig. 1 and fig. 4, table 2: on ImageNet, "
      "the 34-layer plain net has higher *training* error than the 18-layer one (28.54 % vs 27.94 % top-1 validation "
      "error), while ResNet-34 beats ResNet-18 (25.03 % vs 27.88 %); on CIFAR-10 (fig. 6) plain nets of 20–56 layers get "
      "worse with depth and ResNets of 20–110 layers better.";
  std::string m = fmt::format(
      "Plain `mlp:784-{0}×d-10` (He fan_in) against residual `resmlp:784-{0}x(d/2)-10` (linear-relu-linear blocks, He "
      "with zero-initialised branches), d = {1}; the first {2} Fashion-MNIST training images, SGD lr {3} with momentum "
      "0.9, batch 128, {4} steps for each network. The final training loss is the mean over the last 10 % of steps.\n\n",
      width, [&] {
        std::string s;
        for (int d : depths) s += (s.empty() ? "" : ", ") + std::to_string(d);
        return s;
      }(),
      n_train, lr, steps);
  Table shown{"", {"depth", "plain: train loss", "plain: test acc.", "residual: train loss", "residual: test acc."}, {}};
  for (int d : depths) {
    std::vector<std::string> row{num(d)};
    for (const char* kind : {"plain", "residual"})
      for (const auto& p : pts)
        if (p.depth == d && p.kind == kind)
          row.push_back(p.log.diverged ? "diverged" : fmt::format("{:.4f}", p.log.final_train_loss)),
              row.push_back(fmt::format("{:.4f}", p.log.test_accuracy));
    shown.rows.push_back(row);
  }
  m += markdown_table(shown);
  r.measured = m;
  r.json = nlohmann::json{{"points", j}, {"steps", steps}, {"width", width}}.dump();
  return r;
}

}  // namespace chainrule::experiments
