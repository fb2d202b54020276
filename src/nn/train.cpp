#include "chainrule/nn/train.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/profiler.h"
#include "chainrule/data/loader.h"
#include "chainrule/distributed/ddp.h"
#include "chainrule/io/atomic_file.h"
#include "chainrule/nn/autocast.h"
#include "chainrule/nn/checkpoint.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/loss.h"
#include "chainrule/nn/spec.h"
#include "chainrule/optim/optimizer.h"
#include "chainrule/optim/schedule.h"

namespace chainrule::nn {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- configuration -------------------------------------------------------------------------

std::string TrainConfig::json() const {
  nlohmann::json j = {{"data", data},     {"model", model},       {"init", init},         {"zero_residual", zero_residual},
                      {"opt", opt},       {"lr", lr},             {"weight_decay", weight_decay},
                      {"momentum", momentum}, {"schedule", schedule}, {"warmup", warmup}, {"clip", clip}, {"label_smoothing", label_smoothing},
                      {"batch", batch},   {"epochs", epochs},     {"seed", seed},         {"drop_last", drop_last}, {"augment", augment}, {"shift", shift},
                      {"eval_flips", eval_flips}, {"time_budget", time_budget}, {"precision", precision}, {"dtype", std::string(dtype_name(dtype))}};
  if (world_size != 1) j["world_size"] = world_size;  // absent in one-process runs, as before
  return j.dump();
}

TrainConfig TrainConfig::from_json(const std::string& text) {
  TrainConfig c;
  try {
    auto j = nlohmann::json::parse(text);
    c.data = j.at("data"), c.model = j.at("model"), c.init = j.at("init"), c.zero_residual = j.at("zero_residual");
    c.opt = j.at("opt"), c.lr = j.at("lr"), c.weight_decay = j.at("weight_decay"), c.momentum = j.at("momentum");
    c.schedule = j.at("schedule"), c.warmup = j.at("warmup"), c.clip = j.at("clip");
    c.label_smoothing = j.at("label_smoothing");
    c.batch = j.at("batch"), c.epochs = j.at("epochs"), c.seed = j.at("seed"), c.drop_last = j.at("drop_last");
    c.augment = j.at("augment");
    c.shift = j.at("shift");
    c.eval_flips = j.value("eval_flips", 0);
    c.precision = j.value("precision", std::string("f32"));
    c.time_budget = j.value("time_budget", 0.0);  // runs saved before it was kept were float32  // runs saved before test-time flips existed had none
    c.dtype = j.at("dtype").get<std::string>() == "float64" ? DType::f64 : DType::f32;
    c.world_size = j.value("world_size", std::int64_t{1});
  } catch (const nlohmann::json::exception& e) {
    throw IOError(fmt::format("run configuration: {}", e.what()));
  }
  return c;
}

std::string recommended_model(const std::string& data, std::int64_t features, std::int64_t classes) {
  if (data.starts_with("fashion-mnist")) return fmt::format("resmlp:{}-512x2-{}:lrl+d0.1", features, classes);
  if (data == "spirals") return fmt::format("resmlp:{}-64x2-{}", features, classes);
  return fmt::format("mlp:{}-64-64-{}", features, classes);
}

std::string recommended_resnet(std::int64_t height, std::int64_t width, std::int64_t classes) {
  return fmt::format("resnet:1x{}x{}-16x1-32x1-64x1-{}", height, width, classes);
}

std::string recommended_densenet(std::int64_t height, std::int64_t width, std::int64_t classes) {
  return fmt::format("densenet:1x{}x{}-g12-b4x4x4-c0.5-{}", height, width, classes);
}

std::string recommended_unet(std::int64_t height, std::int64_t width) { return fmt::format("unet:1x{}x{}-c16-d2-1", height, width); }

double psnr(double mse) { return 10.0 * std::log10(1.0 / std::max(mse, 1e-10)); }

data::Splits denoising_splits(const data::Splits& images, double sigma) {
  auto noisy = [sigma](const data::Dataset& d, std::uint64_t seed) {
    if (d.height <= 0 || d.width <= 0 || d.features() != d.height * d.width)
      throw ValueError(fmt::format("denoising: data {} holds no images (a U-Net needs height and width)", d.name));
    data::Dataset r = d;
    Generator g(seed);
    r.y = d.x;
    r.x = add(d.x, cast(randn(d.x.shape(), g, DType::f64) * sigma, d.x.dtype()));
    r.num_classes = 0;
    return r;
  };
  constexpr std::uint64_t kSeed = 0xDE5015E;  // one stream per split, the same in every run
  return {noisy(images.train, kSeed), noisy(images.val, kSeed + 1), noisy(images.test, kSeed + 2)};
}

std::string EpochMetrics::json() const {
  nlohmann::json j = {{"epoch", epoch},
                      {"step", step},
                      {"lr", lr},
                      {"train_loss", train_loss},
                      {"train_accuracy", std::isnan(train_accuracy) ? nlohmann::json() : nlohmann::json(train_accuracy)},
                      {"val_loss", val_loss},
                      {"val_accuracy", std::isnan(val_accuracy) ? nlohmann::json() : nlohmann::json(val_accuracy)},
                      {"seconds", seconds},
                      {"samples_per_second", samples_per_second}};
  return j.dump();
}

namespace {

double num(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : std::numeric_limits<double>::quiet_NaN(); }

EpochMetrics metrics_from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch"), m.step = j.at("step"), m.lr = num(j.at("lr"));
  m.train_loss = num(j.at("train_loss")), m.train_accuracy = num(j.at("train_accuracy"));
  m.val_loss = num(j.at("val_loss")), m.val_accuracy = num(j.at("val_accuracy"));
  if (j.contains("seconds")) m.seconds = num(j["seconds"]);
  if (j.contains("samples_per_second")) m.samples_per_second = num(j["samples_per_second"]);
  return m;
}

// The deterministic part of the metrics (no timings), kept in the state file.
nlohmann::json metrics_history(const std::vector<EpochMetrics>& ms) {
  auto a = nlohmann::json::array();
  for (auto m : ms) {
    auto j = nlohmann::json::parse(m.json());
    j.erase("seconds");
    j.erase("samples_per_second");
    a.push_back(j);
  }
  return a;
}

// ---- evaluation ----------------------------------------------------------------------------

struct Counts {
  double loss_sum = 0;
  std::int64_t correct = 0;
};

std::int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  const std::int64_t n = logits.shape()[0], c = logits.shape()[1];
  const auto* y = labels.data<std::int64_t>();
  std::int64_t correct = 0;
  auto count = [&](const auto* z) {
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t best = 0;
      for (std::int64_t j = 1; j < c; ++j)
        if (z[i * c + j] > z[i * c + best]) best = j;
      correct += best == y[i];
    }
  };
  if (logits.dtype() == DType::f32) count(logits.data<float>());
  else count(logits.data<double>());
  return correct;
}

// An image output [N, C, H, W] is compared with its target row [N, C·H·W].
Tensor loss_of(const Tensor& out, const Tensor& y, bool classify, Reduction r = Reduction::Mean) {
  return classify ? cross_entropy(out, y, r) : mse_loss(out.dim() > 2 ? flatten(out, 1) : out, y, r);
}

bool image_to_image(const data::Dataset& d) { return d.num_classes == 0 && d.height > 0 && d.x.shape() == d.y.shape(); }

// Sum over the rows of 10 log10(1 / mean((a - b)²)) of [N, F] tensors.
double psnr_sum(const Tensor& a, const Tensor& b) {
  double total = 0;
  for (double m : cast(mean(square(sub(a, b)), {1}), DType::f64).to_vector<double>()) total += psnr(m);
  return total;
}

}  // namespace

Evaluation evaluate(Module& model, const data::Dataset& d, std::int64_t chunk, bool flips) {
  const bool classify = d.num_classes > 0;
  if (flips && (!classify || d.height <= 0 || d.width <= 0 || d.features() != d.height * d.width))
    throw ValueError(fmt::format("evaluate: test-time flips need image classification data; {} has {}", d.name,
                                 classify ? "no images" : "no classes"));
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  const bool images = image_to_image(d);
  // Log of the mean of the class probabilities of each image and its mirror image: the logits of
  // the flip-averaged prediction (log_softmax of it is itself).
  auto flip_averaged = [&](const Tensor& x, const Tensor& out) {
    const Shape shape = x.shape();
    Tensor mirrored = reshape(flip(reshape(x, {shape[0], d.height, d.width}), {-1}), shape);
    Tensor p = add(softmax(out, -1), softmax(model.forward(mirrored), -1));
    return log(p * 0.5);
  };
  double loss_sum = 0, psnr_out = 0, psnr_in = 0;
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < d.size(); start += chunk) {
    data::Dataset part = d.slice(start, std::min(d.size(), start + chunk));
    Tensor out = model.forward(part.x);
    if (flips) out = flip_averaged(part.x, out);
    loss_sum += loss_of(out, part.y, classify, Reduction::Sum).item();
    if (classify) correct += count_correct(out, part.y);
    if (images) psnr_out += psnr_sum(flatten(out, 1), part.y), psnr_in += psnr_sum(part.x, part.y);
  }
  model.train(was_training);
  Evaluation e;
  e.count = d.size();
  const double n = static_cast<double>(std::max<std::int64_t>(d.size(), 1));
  e.loss = loss_sum / (classify ? n : n * static_cast<double>(d.y.numel() / std::max<std::int64_t>(d.size(), 1)));
  e.accuracy = classify ? static_cast<double>(correct) / n : std::numeric_limits<double>::quiet_NaN();
  if (images) e.psnr = psnr_out / n, e.input_psnr = psnr_in / n;
  return e;
}

// ---- checkpoints of a run ------------------------------------------------------------------

namespace {

constexpr const char* kConfigKey = "chainrule.config";
constexpr const char* kMetricsKey = "chainrule.metrics";
constexpr const char* kCheckpointEveryKey = "chainrule.checkpoint_every";

std::string model_path(const std::string& dir) { return (fs::path(dir) / "model.safetensors").string(); }
std::string state_path(const std::string& dir) { return (fs::path(dir) / "state.safetensors").string(); }
std::string metrics_path(const std::string& dir) { return (fs::path(dir) / "metrics.jsonl").string(); }

Tensor u64_pair(std::uint64_t a, std::uint64_t b) {
  Tensor t = empty({2}, DType::i64);
  auto* p = t.mutable_data<std::int64_t>();
  std::memcpy(&p[0], &a, 8);
  std::memcpy(&p[1], &b, 8);
  return t;
}
std::pair<std::uint64_t, std::uint64_t> read_u64_pair(const Tensor& t) {
  std::uint64_t a, b;
  const auto* p = t.data<std::int64_t>();
  std::memcpy(&a, &p[0], 8);
  std::memcpy(&b, &p[1], 8);
  return {a, b};
}

std::int64_t step_of(const TensorFile& f, const std::string& path) {
  auto it = f.metadata.find(kStepKey);
  if (it == f.metadata.end()) throw IOError(fmt::format("{}: no \"{}\" metadata", path, kStepKey));
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    throw IOError(fmt::format("{}: metadata {} = '{}' is not an integer", path, kStepKey, it->second));
  }
}

void write_metrics_file(const std::string& dir, const std::vector<EpochMetrics>& ms) {
  std::string text;
  for (const auto& m : ms) text += m.json() + "\n";
  io::write_file_atomic(metrics_path(dir), std::as_bytes(std::span(text.data(), text.size())));
}

std::vector<EpochMetrics> read_metrics_file(const std::string& dir) {
  std::vector<EpochMetrics> out;
  std::ifstream in(metrics_path(dir));
  std::string line;
  while (std::getline(in, line)) {
    try {
      out.push_back(metrics_from_json(nlohmann::json::parse(line)));
    } catch (const std::exception&) {
      break;  // a damaged line: the state file's copy is used from here on
    }
  }
  return out;
}

// Bitwise equality of two sets of named tensors (same names, dtypes, shapes and bytes).
bool same_tensors(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [n, t] : a) {
    auto it = b.find(n);
    if (it == b.end()) return false;
    io::RawTensor x = to_raw(t), y = to_raw(it->second);
    if (x.dtype != y.dtype || x.shape != y.shape || x.data != y.data) return false;
  }
  return true;
}

// Index of the first NaN or Inf of a float tensor, or -1.
std::int64_t first_non_finite(const Tensor& t) {
  auto v = cast(t.detach(), DType::f64).to_vector<double>();
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return static_cast<std::int64_t>(i);
  return -1;
}

// A process killed in the middle of write_file_atomic leaves its temporary file (".NAME.tmp.*")
// behind; the next run in the directory removes those of its own files.
void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    for (const char* f : {".model.safetensors.tmp.", ".state.safetensors.tmp.", ".metrics.jsonl.tmp."})
      if (name.starts_with(f)) fs::remove(e.path(), ec);
  }
}

std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& c, const NamedTensors& params) {
  if (c.opt == "sgd") {
    return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = c.lr,
                                                                  .momentum = c.momentum,
                                                                  .weight_decay = c.weight_decay,
                                                                  .nesterov = c.momentum > 0});
  }
  if (c.opt == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = c.lr, .weight_decay = c.weight_decay});
  if (c.opt == "adamw") {
    optim::AdamWOptions o;
    o.lr = c.lr, o.weight_decay = c.weight_decay;
    return std::make_unique<optim::AdamW>(params, o);
  }
  throw ValueError(fmt::format("unknown optimiser '{}' (sgd, adam, adamw)", c.opt));
}

void fill_defaults(TrainConfig& c, const data::Splits& s) {
  const std::int64_t outputs = s.train.num_classes > 0 ? s.train.num_classes : s.train.y.shape()[1];
  const bool fashion = c.data.starts_with("fashion-mnist"), spirals = c.data == "spirals";
  const std::int64_t h = s.train.height, w = s.train.width;
  const bool images = h > 0 && w > 0;
  // Classification on images defaults to the convolutional recipe; `--model mlp` is the MLP one.
  if (c.model.empty()) c.model = images && s.train.num_classes > 0 ? kResNetAlias : kMLPAlias;
  if (c.model == kMLPAlias) c.model = recommended_model(c.data, s.train.features(), outputs);
  // The convolutional recipes: a spec for the data's images, the recipe's number of epochs, and
  // (unless given) SGD with random shifts for the classifiers.
  std::int64_t recipe_epochs = 0;
  const bool main_recipe = c.model == kResNetAlias;  // the main job's, the only one with a time budget
  if (c.model == kResNetAlias || c.model == kDenseNetAlias || c.model == kUNetAlias) {
    if (!images)
      throw ValueError(fmt::format("--model {}: data {} holds no images (a convolutional network needs height and width)", c.model, c.data));
    if (c.model != kUNetAlias) {
      if (c.opt.empty()) c.opt = "sgd";
      if (c.opt == "sgd" && c.lr <= 0) c.lr = kConvRecipeLr;
      if (c.shift < 0) c.shift = kConvRecipeShift;
    }
    recipe_epochs = c.model == kResNetAlias ? kResNetEpochs : c.model == kDenseNetAlias ? kDenseNetEpochs : kUNetEpochs;
    c.model = c.model == kResNetAlias ? recommended_resnet(h, w, outputs)
              : c.model == kDenseNetAlias ? recommended_densenet(h, w, outputs)
                                          : recommended_unet(h, w);
  }
  if (c.eval_flips < 0) c.eval_flips = recipe_epochs > 0 && s.train.num_classes > 0 && c.augment ? 1 : 0;
  if (c.eval_flips > 0 && !(images && s.train.num_classes > 0))
    throw ValueError(fmt::format("--eval-flips: data {} is not image classification", c.data));
  if (c.opt.empty()) c.opt = "adamw";
  if (c.shift < 0) c.shift = 0;
  const ModelSpec spec = ModelSpec::parse(c.model);
  c.model = spec.str();
  // A U-Net denoises (denoising_splits): flipping or shifting the noisy input alone would break
  // its pairing with the clean target.
  if (spec.kind == ModelSpec::Kind::UNet) c.augment = false;
  if (c.opt != "sgd" && c.opt != "adam" && c.opt != "adamw") throw ValueError(fmt::format("unknown optimiser '{}' (sgd, adam, adamw)", c.opt));
  const bool regression = c.data == "regression";
  if (c.lr <= 0) c.lr = c.opt == "sgd" ? 0.05 : spirals || regression ? 1e-2 : 1e-3;
  if (c.weight_decay < 0) c.weight_decay = c.opt == "sgd" ? 5e-4 : c.opt == "adamw" ? 0.05 : 0.0;
  if (c.label_smoothing < 0) c.label_smoothing = fashion ? 0.1 : 0.0;
  if (c.label_smoothing > 1) throw ValueError(fmt::format("--label-smoothing must be in [0, 1], got {}", c.label_smoothing));
  if (c.time_budget < 0) c.time_budget = main_recipe && c.epochs == 0 ? kConvRecipeBudget : 0;
  if (!std::isfinite(c.time_budget)) throw ValueError(fmt::format("--time-budget must be finite, got {}", c.time_budget));
  if (c.epochs == 0 && recipe_epochs > 0) c.epochs = recipe_epochs;
  if (c.epochs == 0) c.epochs = fashion ? kRecommendedEpochs : spirals ? 30 : regression ? 50 : 20;
  if (c.batch <= 0) throw ValueError(fmt::format("--batch must be positive, got {}", c.batch));
  if (c.epochs < 0) throw ValueError(fmt::format("--epochs must be positive, got {}", c.epochs));
  if (c.schedule != "cosine" && c.schedule != "step" && c.schedule != "constant")
    throw ValueError(fmt::format("unknown schedule '{}' (cosine, step, constant)", c.schedule));
  parse_init(c.init);
}

optim::SchedulePtr make_schedule(const TrainConfig& c, std::int64_t steps_per_epoch) {
  const std::int64_t total = c.epochs * steps_per_epoch;
  const std::int64_t warmup = c.warmup >= 0 ? c.warmup : std::min<std::int64_t>(steps_per_epoch / 4, total / 10);
  optim::SchedulePtr after;
  if (c.schedule == "cosine") after = std::make_shared<optim::CosineLR>(std::max<std::int64_t>(total - warmup, 1));
  else if (c.schedule == "step") after = std::make_shared<optim::StepLR>(std::max<std::int64_t>(total / 3, 1), 0.1);
  else after = std::make_shared<optim::ConstantLR>();
  return std::make_shared<optim::WarmupLR>(warmup, after);
}

}  // namespace

StepOutput train_step(Module& model, optim::Optimizer& opt, const Tensor& x, const Tensor& target, const LossFn& loss,
                      double clip) {
  {
    profiler::RecordFunction region("optimizer.zero_grad");
    opt.zero_grad();
  }
  StepOutput r;
  r.out = model.forward(x);
  r.loss = loss(r.out, target);
  // Checked before the update, so that the weights stay the last good ones.
  if (const double v = r.loss.item(); !std::isfinite(v))
    throw NumericalError(fmt::format("the loss became {} (learning rate {:g} too high?)", std::isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", opt.lr()));
  r.loss.backward();
  if (clip > 0) optim::clip_grad_norm_(model.parameters(), clip);
  {
    profiler::RecordFunction region("optimizer.step");
    opt.step();
  }
  return r;
}

struct CompiledTrainStep::Impl {
  Module& model;
  LossFn loss;
  // The model's output and the loss, detached: backward() has run inside.
  std::function<std::pair<Tensor, Tensor>(const Tensor&, const Tensor&)> forward_backward = [this](const Tensor& x, const Tensor& target) {
    Tensor out = model.forward(x);
    Tensor l = loss(out, target);
    l.backward();
    return std::pair{out.detach(), l.detach()};
  };
  Compiled<std::function<std::pair<Tensor, Tensor>(const Tensor&, const Tensor&)>> compiled{forward_backward};
  Impl(Module& m, LossFn l) : model(m), loss(std::move(l)) {}
};

CompiledTrainStep::CompiledTrainStep(Module& model, LossFn loss) : impl_(std::make_shared<Impl>(model, std::move(loss))) {}
CompileStats CompiledTrainStep::stats() const { return impl_->compiled.stats(); }
void CompiledTrainStep::clear() { impl_->compiled.clear(); }

StepOutput CompiledTrainStep::operator()(optim::Optimizer& opt, const Tensor& x, const Tensor& target, double clip) {
  {
    profiler::RecordFunction region("optimizer.zero_grad");
    opt.zero_grad();
  }
  StepOutput r;
  std::tie(r.out, r.loss) = impl_->compiled(x, target);
  // After the backward pass here (train_step checks before it), still before the update.
  if (const double v = r.loss.item(); !std::isfinite(v))
    throw NumericalError(fmt::format("the loss became {} (learning rate {:g} too high?)", std::isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", opt.lr()));
  if (clip > 0) optim::clip_grad_norm_(impl_->model.parameters(), clip);
  {
    profiler::RecordFunction region("optimizer.step");
    opt.step();
  }
  return r;
}

TrainConfig read_run_config(const std::string& dir) {
  const std::string path = state_path(dir);
  TensorFile st = load_tensors(path);
  auto it = st.metadata.find(kConfigKey);
  if (it == st.metadata.end()) throw IOError(fmt::format("{}: no \"{}\" metadata; not a chainrule run state", path, kConfigKey));
  return TrainConfig::from_json(it->second);
}

// ---- the loop ------------------------------------------------------------------------------

// ---- the run ---------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The sums of one step (or an epoch so far): loss times examples, correct predictions, examples.
struct StepSums {
  double loss = 0, correct = 0, n = 0;
};

// One training run. train() is its steps in order: configure (a resumed run reads its own
// configuration), build the task and the model, restore a checkpoint, bring every rank to rank 0's
// state, then epochs of steps, each epoch ending in validation and a checkpoint. Each step is a
// function of its own, so image models, mixed precision or a profiler plug into one of them.
class Run {
 public:
  Run(TrainConfig config, const data::Splits& splits, const RunOptions& opts)
      : config_(std::move(config)), opts_(opts), comm_(opts.comm ? *opts.comm : distributed::Communicator::single()),
        rank_(comm_.rank()), world_(comm_.size()), writer_(rank_ == 0), init_gen_(0) {
    if (opts_.out_dir.empty()) throw ValueError("train: no output directory");
    configure(splits);
    build_task(splits);
    build_network();
    if (writer_) {
      fs::create_directories(opts_.out_dir);
      remove_stale_temporaries(opts_.out_dir);
    }
    checkpoint_every_ = opts_.checkpoint_every.value_or(0);
    if (opts_.resume && writer_) restore();
    if (world_ > 1) join_ranks();
  }

  const std::string& precision() const { return config_.precision; }

  TrainResult execute() {
    model_->train();
    for (std::int64_t epoch = step_ / bpe_; epoch < config_.epochs; ++epoch)
      if (!run_epoch(epoch)) return result();
    result_.finished = true;
    if (writer_) {
      result_.test = evaluate(*model_, test_set_, eval_chunk_, config_.eval_flips > 0);
      if (config_.eval_flips > 0) result_.test_single = evaluate(*model_, test_set_, eval_chunk_);
    }
    result_.train_loss = history_.empty() ? 0 : history_.back().train_loss;
    return result();
  }

 private:
  // The configuration: a resumed run's own (rank 0 reads it and sends it to the others), with
  // the defaults for its data filled in.
  void configure(const data::Splits& splits) {
    if (opts_.resume) {
      if (world_ == 1) {
        config_ = read_run_config(opts_.out_dir);
      } else {
        std::string text = writer_ ? read_run_config(opts_.out_dir).json() : std::string();
        comm_.broadcast(text);
        config_ = TrainConfig::from_json(text);
      }
      if (config_.world_size != world_)
        throw ValueError(fmt::format("train: the run in {} was trained by {} process{}; resume it with as many (mpirun -np {}{}), not {}",
                                     opts_.out_dir, config_.world_size, config_.world_size == 1 ? "" : "es", config_.world_size,
                                     config_.world_size == 1 ? ", or without --distributed" : " ... --distributed", world_));
    } else {
      config_.world_size = world_;
    }
    fill_defaults(config_, splits);
    spec_ = ModelSpec::parse(config_.model);
  }

  // The task: a U-Net maps images to images, so it denoises the data's images; the others
  // classify (or regress) as the data says. The model must fit the task's sizes.
  void build_task(const data::Splits& splits) {
    const data::Splits task = spec_.kind == ModelSpec::Kind::UNet ? denoising_splits(splits) : splits;
    classify_ = task.train.num_classes > 0;
    const std::int64_t outputs = classify_ ? task.train.num_classes : task.train.y.shape()[1];
    if (spec_.input_dim() != task.train.features() || spec_.output_dim() != outputs)
      throw ValueError(fmt::format("model {} maps {} inputs to {} outputs, but data set {} has {} features and {} {}", spec_.str(),
                                   spec_.input_dim(), spec_.output_dim(), config_.data, task.train.features(), outputs,
                                   classify_ ? "classes" : "targets"));
    train_set_ = task.train.to(config_.dtype), val_set_ = task.val.to(config_.dtype), test_set_ = task.test.to(config_.dtype);
    // A convolution's columns are [chunk, C·9, H·W]: smaller evaluation chunks keep them in cache.
    const bool conv = spec_.kind == ModelSpec::Kind::ResNet || spec_.kind == ModelSpec::Kind::DenseNet || spec_.kind == ModelSpec::Kind::UNet;
    eval_chunk_ = conv ? 200 : 1000;
    loss_fn_ = [this](const Tensor& out, const Tensor& y) {
      return classify_ && config_.label_smoothing > 0 ? cross_entropy(out, y, config_.label_smoothing) : loss_of(out, y, classify_);
    };
  }

  // The model (initialised from the run's seed), its optimiser, the loader and the schedule.
  void build_network() {
    model_ = nn::build_model(spec_, config_.dtype);
    init_gen_ = Generator(config_.seed);
    init_model(*model_, init_gen_, {.scheme = parse_init(config_.init), .zero_residual = config_.zero_residual});
    model_->set_checkpoint_segments(opts_.checkpoint_segments);
    std::uint64_t k = 0;
    for (auto& [name, m] : model_->named_modules())
      if (auto* d = dynamic_cast<Dropout*>(m)) d->generator.set_state(Generator::bits(config_.seed, 0xD0D0D0D0ull + k++), 0);
    opt_ = make_optimizer(config_, model_->named_parameters());
    if (opts_.compile && world_ == 1) compiled_.emplace(*model_, loss_fn_);
    // A global batch is every rank's batch together.
    loader_.emplace(train_set_, data::LoaderOptions{.batch_size = config_.batch * world_, .shuffle = true, .drop_last = config_.drop_last,
                                                    .seed = config_.seed, .augment = config_.augment, .shift = config_.shift});
    bpe_ = loader_->batches_per_epoch();
    if (bpe_ == 0) throw ValueError(fmt::format("train: {} examples make no batch of {} with drop_last", train_set_.size(), config_.batch));
    schedule_ = make_schedule(config_, bpe_);
    total_steps_ = config_.epochs * bpe_;
  }

  // Resume (rank 0): weights, optimiser state, step, the epoch's sums, dropout streams, metrics
  // and the data order, from the checkpoint pair in the run directory, checked for consistency.
  void restore() {
    const std::string spath = state_path(opts_.out_dir), mpath = model_path(opts_.out_dir);
    TensorFile st = load_tensors(spath);
    const std::int64_t s_step = step_of(st, spath);
    if (auto it = st.metadata.find(kCheckpointEveryKey); it != st.metadata.end() && !opts_.checkpoint_every) {
      try {
        checkpoint_every_ = std::stoll(it->second);
      } catch (const std::exception&) {
        throw IOError(fmt::format("{}: metadata {} = '{}' is not an integer", spath, kCheckpointEveryKey, it->second));
      }
    }
    // The state holds its own copy of the weights ("model.*"), so it alone is a checkpoint;
    // model.safetensors is the exported copy, written after it.
    std::map<std::string, Tensor> weights;
    for (auto& [n, t] : st.tensors)
      if (n.starts_with("model.")) weights.emplace(n.substr(6), t);
    std::optional<TensorFile> mf;
    try {
      mf = load_tensors(mpath);
    } catch (const IOError&) {
      if (weights.empty()) throw;  // an old state without weights needs the model file
    }
    if (mf) {
      const std::int64_t m_step = step_of(*mf, mpath);
      auto it = mf->metadata.find(kModelKey);
      if (it == mf->metadata.end() || it->second != spec_.str())
        throw IOError(fmt::format("{}: model.safetensors holds model '{}', the run state says '{}'", opts_.out_dir,
                                  it == mf->metadata.end() ? "" : it->second, spec_.str()));
      const bool interrupted = !weights.empty() && m_step < s_step;  // killed between the two renames
      if ((m_step != s_step && !interrupted) || (m_step == s_step && !weights.empty() && !same_tensors(mf->tensors, weights)))
        throw IOError(fmt::format("{}: model.safetensors is at step {} but state.safetensors at step {}; the checkpoint pair does not "
                                  "match (files from different runs or checkpoints?), refusing to resume",
                                  opts_.out_dir, m_step, s_step));
      if (interrupted && opts_.on_message)
        opts_.on_message(fmt::format("{}: model.safetensors was at step {}, state.safetensors at step {} (a save was interrupted); "
                                     "resuming from the state's copy of the weights",
                                     opts_.out_dir, m_step, s_step));
      if (weights.empty()) weights = mf->tensors;
    }
    model_->load_state_dict(weights, true);
    std::map<std::string, Tensor> ostate;
    for (auto& [n, t] : st.tensors)
      if (n.starts_with("optim.")) ostate.emplace(n.substr(6), t);
    opt_->load_state(ostate);
    if (opt_->steps() != s_step)
      throw IOError(fmt::format("{}: optimiser state is at step {}, the checkpoint at {}", spath, opt_->steps(), s_step));
    step_ = saved_step_ = s_step;
    if (!mf || step_of(*mf, mpath) != s_step) save_model(mpath, *model_, spec_.str(), step_);  // the pair matches again
    auto sums = st.tensors.at("train.sums").to_vector<double>();
    epoch_ = {sums.at(0), sums.at(1), sums.at(2)};
    for (auto& [name, m] : model_->named_modules())
      if (auto* d = dynamic_cast<Dropout*>(m)) {
        auto [seed, counter] = read_u64_pair(st.tensors.at("rng.dropout." + name));
        d->generator.set_state(seed, counter);
      }
    // Metrics: the file's lines (with timings) where present, else the state's copy.
    auto saved = nlohmann::json::parse(st.metadata.at(kMetricsKey));
    auto on_disk = read_metrics_file(opts_.out_dir);
    for (std::size_t i = 0; i < saved.size(); ++i)
      history_.push_back(i < on_disk.size() && on_disk[i].epoch == static_cast<std::int64_t>(i + 1) ? on_disk[i] : metrics_from_json(saved[i]));
    if (step_ % bpe_ != 0 || step_ == total_steps_) {
      order_ = st.tensors.at("data.order").to_vector<std::int64_t>();
      if (order_ != loader_->order(step_ / bpe_ - (step_ % bpe_ == 0 ? 1 : 0)))
        throw IOError(fmt::format("{}: the saved data order differs from the loader's; the data set changed?", spath));
    }
  }

  // Data-parallel: every rank starts from rank 0's weights, optimiser state, step and sums.
  void join_ranks() {
    ddp_.emplace(*model_, comm_, distributed::DDPOptions{.bucket_bytes = opts_.bucket_bytes});
    ddp_->broadcast_parameters(0);
    std::map<std::string, Tensor> ostate;
    for (auto& [n, t] : opt_->state()) {
      Tensor c = t.contiguous_clone();
      comm_.broadcast(c, 0);
      ostate.emplace(n, c);
    }
    opt_->load_state(ostate);
    Tensor progress = tensor({static_cast<double>(step_), epoch_.loss, epoch_.correct, epoch_.n}, {4}, DType::f64);
    comm_.broadcast(progress, 0);
    const auto v = progress.to_vector<double>();
    step_ = static_cast<std::int64_t>(v[0]), epoch_ = {v[1], v[2], v[3]};
    if (!writer_ && step_ < total_steps_) order_ = loader_->order(step_ / bpe_);
  }

  std::string last_good() const {
    return saved_step_ < 0 ? std::string("no checkpoint was written")
                           : fmt::format("the last good checkpoint, step {}, is in {}", saved_step_, opts_.out_dir);
  }

  // Dropout masks must differ between ranks and survive a resume without per-rank state: in a
  // data-parallel run each rank's stream is a function of (seed, rank, step).
  void reseed_dropout() {
    std::uint64_t k = 0;
    for (auto& [name, m] : model_->named_modules())
      if (auto* d = dynamic_cast<Dropout*>(m))
        d->generator.set_state(Generator::bits(config_.seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(rank_ + 1)), 0xD0D0D0D0ull + k++),
                               static_cast<std::uint64_t>(step_) << 32);
  }

  // The checkpoint pair (rank 0): the state file (optimiser, data order, sums, generators and its
  // own copy of the weights), then the model file.
  void save_checkpoint() {
    if (!writer_) return;
    // In a data-parallel run mpirun ends this process with SIGTERM when another one fails: hold
    // the signal back until the pair is written, so the last checkpoint is always complete.
    sigset_t term, previous;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    if (world_ > 1) pthread_sigmask(SIG_BLOCK, &term, &previous);
    struct Restore {
      bool on;
      sigset_t* previous;
      ~Restore() {
        if (on) pthread_sigmask(SIG_SETMASK, previous, nullptr);
      }
    } restore{world_ > 1, &previous};
    NamedTensors st;
    for (auto& [n, t] : opt_->state()) st.emplace_back("optim." + n, t);
    st.emplace_back("data.order", from_vector(order_, {static_cast<std::int64_t>(order_.size())}));
    st.emplace_back("train.sums", tensor({epoch_.loss, epoch_.correct, epoch_.n}, {3}, DType::f64));
    st.emplace_back("rng.init", u64_pair(init_gen_.seed(), init_gen_.counter()));
    for (auto& [name, m] : model_->named_modules())
      if (auto* d = dynamic_cast<Dropout*>(m)) st.emplace_back("rng.dropout." + name, u64_pair(d->generator.seed(), d->generator.counter()));
    // Weights that overflowed in the last step must not replace the last good checkpoint.
    for (auto& [n, t] : model_->state_dict()) {
      if (!is_floating(t.dtype())) continue;
      if (std::int64_t i = first_non_finite(t); i >= 0)
        throw NumericalError(fmt::format("train: parameter '{}' {} holds a NaN or Inf (element {}) after step {}; not saved, {}", n,
                                         t.shape().str(), i, step_, last_good()));
    }
    for (auto& [n, t] : model_->state_dict()) st.emplace_back("model." + n, t);
    // The state (with its own copy of the weights) first, then the model: a crash in between
    // leaves a newer state, from which resume restores the model file.
    save_tensors(state_path(opts_.out_dir), st,
                 {{kModelKey, spec_.str()}, {kStepKey, std::to_string(step_)}, {kConfigKey, config_.json()},
                  {kMetricsKey, metrics_history(history_).dump()}, {kCheckpointEveryKey, std::to_string(checkpoint_every_)}});
    save_model(model_path(opts_.out_dir), *model_, spec_.str(), step_);
    saved_step_ = step_;
  }

  // One optimiser step on batch b; returns its sums (of all ranks).
  StepSums step(const data::Batch& batch, std::int64_t b) {
    if (world_ > 1) return distributed_step(batch, b);
    auto [out, l] = compiled_ ? (*compiled_)(*opt_, batch.x, batch.y, config_.clip)
                              : train_step(*model_, *opt_, batch.x, batch.y, loss_fn_, config_.clip);
    const double n = static_cast<double>(batch.size());
    return {l.item() * n, classify_ ? static_cast<double>(count_correct(out, batch.y)) : 0.0, n};
  }

  // A data-parallel step: this rank's part of the batch, its loss sums reduced during the backward
  // pass, the gradients averaged by DistributedDataParallel. Returns the sums of all ranks.
  StepSums distributed_step(const data::Batch& batch, std::int64_t b) {
    StepSums local{0, 0, static_cast<double>(batch.size())};
    Tensor stats;
    distributed::Work stats_work;
    auto start_stats = [&] {
      stats = tensor({local.loss, local.correct, local.n}, {3}, DType::f64);
      stats_work = comm_.iallreduce_sum(stats);
    };
    opt_->zero_grad();
    if (batch.size() > 0) {
      Tensor out = model_->forward(batch.x);
      Tensor l = loss_fn_(out, batch.y);
      local.loss = l.item() * local.n;
      if (classify_) local.correct = static_cast<double>(count_correct(out, batch.y));
      start_stats();
      // A rank with a smaller part of a last partial batch weighs its mean by its share, so that
      // the mean over ranks is the mean over the global batch.
      const std::int64_t global_batch = config_.batch * world_;
      const std::int64_t global_n = std::min(global_batch, train_set_.size() - b * global_batch);
      if (batch.size() * world_ != global_n) l = l * (static_cast<double>(batch.size() * world_) / static_cast<double>(global_n));
      l.backward();
    } else {
      start_stats();  // no examples: zeros, in the same order of collectives as the others
    }
    const auto t_sync = Clock::now();
    ddp_->synchronize();
    stats_work.wait();
    sync_seconds_ += seconds_since(t_sync);
    const auto v = stats.to_vector<double>();
    // Checked on every rank alike, before the update, so that the weights stay the last good ones.
    if (const double mean = v[0] / v[2]; !std::isfinite(mean))
      throw NumericalError(fmt::format("the loss became {} (learning rate {:g} too high?)", mean, opt_->lr()));
    if (config_.clip > 0) optim::clip_grad_norm_(model_->parameters(), config_.clip);
    opt_->step();
    return {v[0], v[1], v[2]};
  }

  bool stop_requested() const { return opts_.stop_after >= 0 && step_ >= opts_.stop_after && step_ < total_steps_; }

  // The rest of one epoch (from the step a resume left off at), then validation, the epoch's
  // metrics and a checkpoint. False when stop_after ends the run inside it.
  bool run_epoch(std::int64_t epoch) {
    const std::int64_t first = step_ - epoch * bpe_;
    if (first == 0) {
      order_ = loader_->order(epoch);
      epoch_ = {};
    }
    const auto t_epoch = Clock::now();
    double epoch_samples = 0;
    for (std::int64_t b = first; b < bpe_; ++b) {
      opt_->set_lr(config_.lr * schedule_->factor(step_));
      if (world_ > 1) reseed_dropout();
      StepSums s;
      try {
        s = step(loader_->shard(order_, b, epoch, rank_, world_), b);
      } catch (const NumericalError& e) {
        throw NumericalError(fmt::format("train: step {} (epoch {}, batch {}): {}; training stopped, {}", step_ + 1, epoch + 1, b + 1,
                                         e.what(), last_good()));
      }
      ++step_;
      epoch_.loss += s.loss, epoch_.correct += s.correct, epoch_.n += s.n;
      epoch_samples += s.n;
      trained_samples_ += s.n;
      if (opts_.on_batch && writer_) {
        const double secs = seconds_since(t_epoch);
        opts_.on_batch(b + 1, bpe_, epoch_.loss / epoch_.n, classify_ ? epoch_.correct / epoch_.n : std::numeric_limits<double>::quiet_NaN(),
                       secs > 0 ? epoch_samples / secs : 0);
      }
      const bool stopping = stop_requested();
      if (b + 1 < bpe_ && ((checkpoint_every_ > 0 && step_ % checkpoint_every_ == 0) || stopping)) save_checkpoint();
      if (stopping && b + 1 < bpe_) {
        train_seconds_ += seconds_since(t_epoch);
        return false;
      }
    }
    const double secs = seconds_since(t_epoch);
    train_seconds_ += secs;
    EpochMetrics m;
    m.epoch = epoch + 1, m.epochs = config_.epochs, m.step = step_, m.lr = opt_->lr();
    m.train_loss = epoch_.loss / epoch_.n;
    m.train_accuracy = classify_ ? epoch_.correct / epoch_.n : std::numeric_limits<double>::quiet_NaN();
    Evaluation v = writer_ ? evaluate(*model_, val_set_, eval_chunk_) : Evaluation{};
    m.val_loss = v.loss, m.val_accuracy = v.accuracy;
    m.seconds = secs, m.samples_per_second = secs > 0 ? epoch_samples / secs : 0;
    history_.push_back(m);
    fit_time_budget(epoch, first == 0, seconds_since(t_epoch), v.count);
    save_checkpoint();
    if (writer_) write_metrics_file(opts_.out_dir, history_);
    if (opts_.on_epoch && writer_) opts_.on_epoch(m);
    return !stop_requested();
  }

  // A fresh one-process run with a time budget, at the end of each of its epochs from the second
  // to the end of its first third: the epochs that fit in the budget at the mean pace of the
  // epochs since the first (training and validation; the first also pays for planning the
  // kernels), keeping room for the final test (with test-time flips, three passes over the test
  // set, each costing per example what validation did). Never more epochs than the run was given,
  // and only early, so that the schedule's change of length comes while the learning rate is
  // still high; a later, better estimate may give back epochs an earlier one took.
  void fit_time_budget(std::int64_t epoch, bool whole_epoch, double epoch_seconds, std::int64_t val_count) {
    if (config_.time_budget <= 0 || world_ > 1 || !writer_ || opts_.resume || !whole_epoch) return;
    if (epoch == 0) budget_epochs_ = config_.epochs;
    if (epoch > 0) budget_paces_.push_back(epoch_seconds);
    if (epoch < 1 || 3 * (epoch + 1) > config_.epochs) return;
    double pace = 0;
    for (double s : budget_paces_) pace += s / static_cast<double>(budget_paces_.size());
    const double val_seconds = epoch_seconds - history_.back().seconds;
    const double per_example = val_count > 0 ? val_seconds / static_cast<double>(val_count) : 0;
    const double test_seconds = (config_.eval_flips > 0 ? 3 : 1) * per_example * static_cast<double>(test_set_.size());
    const double left = config_.time_budget - seconds_since(t_start_) - test_seconds;
    const auto fit = std::min(budget_epochs_, epoch + 1 + static_cast<std::int64_t>(std::floor(std::max(left, 0.0) / pace)));
    if (fit == config_.epochs) return;
    if (opts_.on_message)
      opts_.on_message(fmt::format("time budget {:.0f} s: at {:.1f} s per epoch, {:.0f} s so far, training {} epochs instead of {} "
                                   "(--epochs N trains exactly N)",
                                   config_.time_budget, pace, seconds_since(t_start_), fit, config_.epochs));
    config_.epochs = fit;
    schedule_ = make_schedule(config_, bpe_);
    total_steps_ = config_.epochs * bpe_;
  }
  std::vector<double> budget_paces_;  // fit_time_budget: the wall seconds of each epoch after the first
  std::int64_t budget_epochs_ = 0;    // and the epochs the run was given

  TrainResult result() {
    result_.config = config_, result_.model_spec = spec_.str(), result_.model = model_;
    result_.epochs = history_, result_.steps = step_;
    result_.train_seconds = train_seconds_, result_.sync_seconds = sync_seconds_, result_.samples = trained_samples_;
    result_.seconds = seconds_since(t_start_);
    return result_;
  }

  const Clock::time_point t_start_ = Clock::now();
  TrainConfig config_;
  const RunOptions& opts_;
  // Data-parallel: rank 0 (the writer) alone touches the run directory and evaluates.
  distributed::Communicator& comm_;
  const std::int64_t rank_, world_;
  const bool writer_;
  ModelSpec spec_;
  bool classify_ = true;
  LossFn loss_fn_;
  std::optional<CompiledTrainStep> compiled_;  // RunOptions::compile
  data::Dataset train_set_, val_set_, test_set_;
  std::int64_t eval_chunk_ = 1000;
  std::shared_ptr<Sequential> model_;
  Generator init_gen_;
  std::unique_ptr<optim::Optimizer> opt_;
  std::optional<data::DataLoader> loader_;
  optim::SchedulePtr schedule_;
  std::int64_t bpe_ = 0, total_steps_ = 0;
  std::optional<distributed::DistributedDataParallel> ddp_;
  // Progress, saved by a checkpoint.
  std::int64_t step_ = 0, saved_step_ = -1, checkpoint_every_ = 0;
  StepSums epoch_;  // of the current epoch
  std::vector<EpochMetrics> history_;
  std::vector<std::int64_t> order_;
  double train_seconds_ = 0, sync_seconds_ = 0, trained_samples_ = 0;
  TrainResult result_;
};

}  // namespace

TrainResult train(TrainConfig config, const data::Splits& splits, const RunOptions& opts) {
  if (config.precision != "f32" && config.precision != "bf16")
    throw ValueError(fmt::format("precision must be f32 or bf16, got '{}'", config.precision));
  if (config.precision == "bf16" && config.dtype != DType::f32)
    throw ValueError(fmt::format("precision bf16 needs float32 master weights (dtype f32), got {}", dtype_name(config.dtype)));
  // A resumed run's own precision is read inside Run; the guard then follows the saved setting.
  Run run(std::move(config), splits, opts);
  AutocastGuard autocast(run.precision() == "bf16" ? std::optional<DType>(DType::bf16) : std::nullopt);
  return run.execute();
}

}  // namespace chainrule::nn
