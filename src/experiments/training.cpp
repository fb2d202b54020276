#include "experiments/training.h"

#include <cmath>
#include <map>
#include <optional>

#include "chainrule/data/loader.h"
#include "chainrule/nn/train.h"
#include "chainrule/ops/ops.h"
#include "chainrule/optim/optimizer.h"

namespace chainrule::experiments {

const FashionData& fashion_mnist(std::int64_t n_train, std::int64_t n_test) {
  static std::map<std::pair<std::int64_t, std::int64_t>, FashionData> cache;
  static std::optional<data::Splits> full;
  auto key = std::make_pair(n_train, n_test);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (!full) full = data::load_fashion_mnist({.validation = 0});
  FashionData d;
  d.train = n_train > 0 && n_train < full->train.size() ? full->train.slice(0, n_train) : full->train;
  d.test = n_test > 0 && n_test < full->test.size() ? full->test.slice(0, n_test) : full->test;
  return cache.emplace(key, std::move(d)).first->second;
}

TrainLog train_sgd(nn::Module& model, const FashionData& data, const TrainSpec& spec) {
  TrainLog log;
  optim::SGD opt(model.named_parameters(), {.lr = spec.lr, .momentum = spec.momentum});
  data::DataLoader loader(data.train, {.batch_size = spec.batch, .shuffle = true, .drop_last = true, .seed = spec.seed});
  model.train();
  std::int64_t step = 0, epoch = 0;
  double window = 0, tail = 0;
  std::int64_t in_window = 0, in_tail = 0;
  const std::int64_t tail_from = spec.steps - std::max<std::int64_t>(1, spec.steps / 10);
  while (step < spec.steps) {
    auto order = loader.order(epoch++);
    for (std::int64_t b = 0; b < loader.batches_per_epoch() && step < spec.steps; ++b, ++step) {
      data::Batch batch = loader.batch(order, b);
      opt.zero_grad();
      Tensor loss = cross_entropy(model(batch.x), batch.y);
      const double l = loss.item();
      if (!std::isfinite(l)) {
        log.diverged = true;
        step = spec.steps;
        break;
      }
      loss.backward();
      opt.step();
      window += l, ++in_window;
      if (step >= tail_from) tail += l, ++in_tail;
      if (in_window == spec.log_every) {
        log.step.push_back(step + 1), log.loss.push_back(window / static_cast<double>(in_window));
        window = 0, in_window = 0;
      }
    }
  }
  log.final_train_loss = in_tail ? tail / static_cast<double>(in_tail) : std::nan("");
  if (log.diverged) {
    log.final_train_loss = log.test_loss = log.train_eval_loss = std::nan(""), log.test_accuracy = 0.1;
    return log;
  }
  auto ev = nn::evaluate(model, data.test);
  log.test_loss = ev.loss, log.test_accuracy = ev.accuracy;
  log.train_eval_loss = nn::evaluate(model, data.train).loss;
  model.train();
  return log;
}

}  // namespace chainrule::experiments
