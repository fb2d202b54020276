#pragma once
// The training loop behind `chainrule train`: a model spec, an initialiser, an optimiser with a
// schedule, a seeded loader, per-epoch validation, and checkpoints that make a resumed run end
// with the same weights, bit for bit, as an uninterrupted one.
//
// A run directory holds model.safetensors (the weights, loadable by PyTorch), state.safetensors
// (a copy of the weights, optimiser state, step, RNG state, the epoch's data order, partial-epoch
// sums and the run's configuration, carrying the same chainrule.step) and metrics.jsonl (one JSON
// object per epoch). A checkpoint writes the state, then the model, each atomically; the state is
// the commit point. Resume refuses a pair that no interrupted save can produce (a model newer than
// the state, or at the same step with other weights) and restores the model file from the state
// when a save was cut off between the two files. A NaN or Inf loss, or non-finite weights at a
// checkpoint, stop training with a NumericalError and leave the last good checkpoint in place.
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chainrule/autodiff/compile.h"
#include "chainrule/data/dataset.h"
#include "chainrule/distributed/communicator.h"
#include "chainrule/nn/layers.h"
#include "chainrule/optim/optimizer.h"

namespace chainrule::nn {

inline constexpr std::int64_t kRecommendedEpochs = 20;  // Fashion-MNIST

struct TrainConfig {
  std::string data = "fashion-mnist";
  std::string model;            // empty: the recommended model for the data (resnet on image data, recommended_model otherwise)
  std::string init = "he";      // parse_init names
  bool zero_residual = false;   // zero the last layer of each residual branch
  std::string opt;              // sgd, adam, adamw; empty: the recipe's (sgd for the conv recipes, adamw otherwise)
  double lr = 0;                // 0: recommended (1e-3 adam/adamw, 1e-2 on spirals; 0.05 sgd)
  double weight_decay = -1;     // < 0: the optimiser's default
  double momentum = 0.9;        // sgd
  std::string schedule = "cosine";  // cosine, step, constant
  std::int64_t warmup = -1;     // linear warm-up steps; < 0: automatic (a fraction of an epoch)
  double label_smoothing = -1;  // classification: smooth the targets towards uniform by ε (< 0: 0.1 on Fashion-MNIST, else 0)
  double clip = 0;              // clip gradients to this global norm (0: off)
  std::int64_t batch = 128;
  std::int64_t epochs = 0;      // 0: the recommended number (kRecommendedEpochs for Fashion-MNIST)
  std::uint64_t seed = 0;
  bool drop_last = false;
  bool augment = true;          // random horizontal flips and shifts of image data (no effect otherwise)
  int shift = -1;               // largest shift in pixels (0: flips only; < 0: the recipe's, kConvRecipeShift or 0)
  // Classify each test image by the mean of the class probabilities of the image and its mirror
  // image (test-time flips; only for image classification). < 0: the recipe's (on for the conv
  // classifiers, which train on flipped images too; off otherwise).
  int eval_flips = -1;
  // Wall-clock budget of the run in seconds: from the second epoch to the end of the first third
  // of the run, it sets `epochs` (at most the number given) so that, at the mean pace of the
  // epochs after the first, training and the final test end within it; the schedule then follows
  // the new length (one process only). < 0: the recipe's
  // (kConvRecipeBudget for the resnet recipe, the main job, when --epochs is not given); 0: none.
  double time_budget = -1;
  DType dtype = DType::f32;
  // "bf16": Linear layers compute on bfloat16 GEMM operands with float32 accumulation, float32
  // master weights and optimizer state (nn/autocast.h); "f32": no autocast. Kept for --resume.
  std::string precision = "f32";
  // Data-parallel runs: the number of processes. `batch` is then per process, and the run sees
  // the batches of a one-process run with batch·world_size. A resumed run needs the same number.
  std::int64_t world_size = 1;

  std::string json() const;  // the configuration as one JSON object (stored in state.safetensors)
  static TrainConfig from_json(const std::string& json);
};

// The recommended model for a data set with `features` inputs and `classes` outputs.
std::string recommended_model(const std::string& data, std::int64_t features, std::int64_t classes);

// `--model mlp`: the recommended MLP recipe (recommended_model, kRecommendedEpochs), the main
// job's default before the convolutional recipe took its place.
inline constexpr const char* kMLPAlias = "mlp";

// The convolutional recipe, `--model resnet`, and the default on image data: a small
// post-activation ResNet (nn/resnet.h) for images of height × width pixels, trained for
// kResNetEpochs epochs with SGD (Nesterov momentum) at peak learning rate kConvRecipeLr, random
// flips and shifts of up to kConvRecipeShift pixels (each unless given).
inline constexpr const char* kResNetAlias = "resnet";
std::string recommended_resnet(std::int64_t height, std::int64_t width, std::int64_t classes);
inline constexpr std::int64_t kResNetEpochs = 25;
inline constexpr double kConvRecipeLr = 0.1;
inline constexpr int kConvRecipeShift = 2;
// The conv recipe's time budget: the main job's 10 minutes, less the data loading and start-up
// around nn::train and a margin for the estimate.
inline constexpr double kConvRecipeBudget = 570;
// `--model densenet`: a small DenseNet-BC (nn/densenet.h) for the data's images, trained for all
// its epochs (no time budget: about 23 minutes on two cores, 2026-12-08).
inline constexpr const char* kDenseNetAlias = "densenet";
std::string recommended_densenet(std::int64_t height, std::int64_t width, std::int64_t classes);
inline constexpr std::int64_t kDenseNetEpochs = 10;
// `--model unet`: a small U-Net (nn/unet.h) trained to denoise the data's images (below).
inline constexpr const char* kUNetAlias = "unet";
std::string recommended_unet(std::int64_t height, std::int64_t width);
inline constexpr std::int64_t kUNetEpochs = 5;

// The task of a unet model: denoising. Inputs are the clean images plus Gaussian noise of standard
// deviation sigma (pixels in [0, 1]), the targets the clean images ([N, H·W] regression targets),
// the loss MSE. The noise of each split is drawn once per example from a generator with a fixed
// seed of that split (not the run's seed), so the test set's noisy images are the same in every
// run and every precision (drawn in float64). Throws ValueError for data without images.
inline constexpr double kDenoiseSigma = 0.5;
data::Splits denoising_splits(const data::Splits& images, double sigma = kDenoiseSigma);
// 10·log10(1 / MSE) in dB, for images with pixels in [0, 1] (peak 1); MSE 0 counts as 1e-10 (100 dB).
double psnr(double mse);

struct EpochMetrics {
  std::int64_t epoch = 0;  // 1-based
  std::int64_t epochs = 0; // of the whole run
  std::int64_t step = 0;   // optimiser steps so far
  double lr = 0;           // at the end of the epoch
  double train_loss = 0;   // sample-weighted mean over the epoch
  double train_accuracy = 0;
  double val_loss = 0, val_accuracy = 0;
  double seconds = 0;            // wall time of the epoch (training only)
  double samples_per_second = 0;
  std::string json() const;
};

// One optimiser step on a batch: zero the gradients, forward, loss, backward, clip (when clip > 0),
// update. It is the step `chainrule train` runs and `chainrule bench` times.
struct StepOutput {
  Tensor out, loss;
};
using LossFn = std::function<Tensor(const Tensor& out, const Tensor& target)>;
// Throws NumericalError, before the update, when the loss is NaN or infinite.
StepOutput train_step(Module& model, optim::Optimizer& opt, const Tensor& x, const Tensor& target, const LossFn& loss,
                      double clip = 0);

// train_step with the forward pass, the loss and loss.backward() compiled (autodiff/compile.h):
// traced on the first batch of each shape and dtype, replayed after, the parameters' .grad()
// assigned from the replay; the finiteness check, clipping and the optimiser step then run as in
// train_step. The results are the same bytes as train_step's. Host state the model reads
// (train()/eval(), its layers) is baked into a trace: call clear() after changing it.
class CompiledTrainStep {
 public:
  CompiledTrainStep(Module& model, LossFn loss);
  StepOutput operator()(optim::Optimizer& opt, const Tensor& x, const Tensor& target, double clip = 0);
  CompileStats stats() const;
  void clear();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

struct Evaluation {
  double loss = 0, accuracy = 0;  // accuracy is NaN for regression
  std::int64_t count = 0;
  // Image-to-image data (targets images of the inputs' shape, as denoising_splits makes): the
  // mean over the examples of each output's PSNR against its target, and of each input's; NaN
  // otherwise.
  double psnr = std::numeric_limits<double>::quiet_NaN(), input_psnr = std::numeric_limits<double>::quiet_NaN();
};
// Mean loss and accuracy (or PSNR) of the model (in eval mode, no graph) over a data set, in chunks.
// With `flips` (classification of images): the prediction for each image is the mean of the class
// probabilities of the image and of its mirror image (left to right), and the loss is that
// mixture's negative log-likelihood.
Evaluation evaluate(Module& model, const data::Dataset& data, std::int64_t chunk = 1000, bool flips = false);

struct RunOptions {
  std::string out_dir;                // must be set; created if missing
  // Also checkpoint every N steps (0: at epoch ends only). Unset: 0 for a new run; a resumed run
  // keeps the value it was started with (kept in the state file).
  std::optional<std::int64_t> checkpoint_every;
  std::int64_t stop_after = -1;       // stop (checkpointed) after this many steps in total
  int checkpoint_segments = 0;        // > 1: recompute activations in the backward pass
                                      // (Sequential::set_checkpoint_segments); same results, less memory
  bool resume = false;                // continue from out_dir's checkpoint pair
  std::function<void(const std::string&)> on_message;  // notes for the user (e.g. a recovered interrupted save)
  std::function<void(const EpochMetrics&)> on_epoch;
  // After every step: step in epoch (1-based), steps per epoch, running loss and accuracy, samples/s.
  std::function<void(std::int64_t, std::int64_t, double, double, double)> on_batch;
  // Data-parallel training: every process of `comm` calls train() with the same arguments; rank 0
  // alone reads and writes the run directory and calls on_epoch/on_batch (with the sums of all
  // ranks). Null: one process, as without MPI.
  distributed::Communicator* comm = nullptr;
  std::int64_t bucket_bytes = std::int64_t{1} << 20;  // gradient bucket size (DDPOptions)
  // One process: each step's forward, loss and backward compiled (CompiledTrainStep), the same
  // results as uncompiled; false runs train_step (`chainrule train --no-compile`).
  bool compile = true;
};

struct TrainResult {
  TrainConfig config;
  std::string model_spec;
  std::vector<EpochMetrics> epochs;  // every epoch of the run, also those before a resume
  bool finished = false;             // false when stopped by stop_after
  std::int64_t steps = 0;
  Evaluation test;                   // when finished (with the test-time flips of config.eval_flips)
  Evaluation test_single;            // when finished and config.eval_flips: the test set without them
  double train_loss = 0;             // of the last epoch
  double seconds = 0;                // this process's training and evaluation time
  double train_seconds = 0;          // in training steps (this process)
  double sync_seconds = 0;           // of which waiting for gradients and sums from the other ranks
  double samples = 0;                // examples trained on in this process's steps (all ranks together)
  std::shared_ptr<Sequential> model;
};

// Trains on splits.train, validates on splits.val after every epoch and tests on splits.test at
// the end. With opts.resume the configuration comes from the run directory's state file.
TrainResult train(TrainConfig config, const data::Splits& splits, const RunOptions& opts);

// Reads the configuration stored in DIR/state.safetensors.
TrainConfig read_run_config(const std::string& dir);

}  // namespace chainrule::nn
