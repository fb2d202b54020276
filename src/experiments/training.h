#pragma once
// A small, fixed-budget training loop shared by the experiments that train on Fashion-MNIST.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "chainrule/data/dataset.h"
#include "chainrule/nn/layers.h"

namespace chainrule::experiments {

// Fashion-MNIST, loaded once per process; `train` holds the first `n_train` training images (all
// when 0), `test` the first `n_test` test images.
struct FashionData {
  data::Dataset train, test;
};
const FashionData& fashion_mnist(std::int64_t n_train, std::int64_t n_test);

struct TrainSpec {
  std::int64_t steps = 100;
  std::int64_t batch = 128;
  double lr = 0.01;
  double momentum = 0.9;
  std::uint64_t seed = 0;  // data order
  std::int64_t log_every = 10;  // record the running training loss every this many steps
};
struct TrainLog {
  std::vector<std::int64_t> step;
  std::vector<double> loss;  // mean training loss over the last log_every steps
  double final_train_loss = 0;  // mean over the last 10 % of steps
  double test_loss = 0, test_accuracy = 0;
  double train_eval_loss = 0;  // loss on the whole training subset at the end (eval mode)
  bool diverged = false;       // a non-finite loss appeared
};
// Plain SGD with momentum on mean cross-entropy, eager reverse mode.
TrainLog train_sgd(nn::Module& model, const FashionData& data, const TrainSpec& spec);

}  // namespace chainrule::experiments
