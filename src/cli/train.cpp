// `chainrule train | eval | predict | grad`: training and using dense networks (src/nn, src/optim,
// src/data). Every option has a default printed by --help; bad options or files end with one
// line on stderr and a non-zero exit (main.cpp catches chainrule::Error).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/data/dataset.h"
#include "chainrule/distributed/communicator.h"
#include "chainrule/errors.h"
#include "chainrule/io/atomic_file.h"
#include "chainrule/nn/checkpoint.h"
#include "chainrule/nn/loss.h"
#include "chainrule/nn/train.h"
#include "cli/commands.h"

namespace chainrule::cli {

namespace fs = std::filesystem;

namespace {

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "f64" || s == "float64") return DType::f64;
  throw ValueError(fmt::format("--dtype must be f32 or f64, got '{}'", s));
}

const data::Dataset& pick_split(const data::Splits& s, const std::string& split) {
  if (split == "train") return s.train;
  if (split == "val") return s.val;
  if (split == "test") return s.test;
  throw ValueError(fmt::format("--split must be train, val or test, got '{}'", split));
}

// A value given on the command line must lie in its range: one line naming the option.
void require(const CLI::App* cmd, const char* option, bool ok, double value, const char* range) {
  if (cmd->count(option) && !ok) throw ValueError(fmt::format("{} {}: must be {}", option, value, range));
}

bool is_recipe(const std::string& model) {
  return model == nn::kResNetAlias || model == nn::kDenseNetAlias || model == nn::kUNetAlias || model == nn::kMLPAlias;
}

// Whether a run's resolved model spec can have come from the --model given now (a recipe's name
// or a spec).
bool same_model(const std::string& given, const std::string& saved) {
  if (given.empty()) return true;
  if (given == nn::kMLPAlias) return saved.starts_with("mlp:") || saved.starts_with("resmlp:");
  if (is_recipe(given)) return saved.starts_with(given + ":");
  return nn::ModelSpec::parse(given).str() == saved;
}

std::string fmt_acc(double a) { return std::isnan(a) ? "-" : fmt::format("{:.4f}", a); }
nlohmann::json jnum(double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); }

bool run_files_exist(const fs::path& dir) {
  for (const char* f : {"model.safetensors", "state.safetensors", "metrics.jsonl"})
    if (fs::exists(dir / f)) return true;
  return false;
}

std::string new_run_dir() {
  for (int i = 1; i < 100000; ++i) {
    fs::path p = fs::path("runs") / fmt::format("train-{:03d}", i);
    if (!fs::exists(p)) return p.string();
  }
  throw IOError("runs/: no free run directory name");
}

// ---- train ---------------------------------------------------------------------------------

// mpirun ends every rank with SIGTERM when one of them fails: say so, and where the run stands,
// instead of vanishing silently. (The checkpoint pair is written with SIGTERM held back.)
char g_termination_message[1024];
std::size_t g_termination_length = 0;
extern "C" void explain_termination(int) {
  if (write(STDERR_FILENO, g_termination_message, g_termination_length) < 0) {}
  _exit(143);
}
void on_termination_explain(int rank, int size, const std::string& out) {
  const std::string m = fmt::format("chainrule: rank {} of {}: terminated by SIGTERM (mpirun ends the job when a process fails or "
                                    "aborts); the last checkpoint in {} is complete, continue with --resume\n",
                                    rank, size, out);
  g_termination_length = std::min(m.size(), sizeof g_termination_message);
  std::memcpy(g_termination_message, m.data(), g_termination_length);
  std::signal(SIGTERM, explain_termination);
}

// Threads default to the cores (default_threads()): the recommended recipe trains about 1.3x
// faster on both cores of this machine than on one (docs/performance.md). When the machine is
// shared, fewer threads can be faster: OpenMP's barriers spin while another process runs.

struct TrainArgs {
  nn::TrainConfig c;
  std::string dtype = "f32";
  std::string out;
  int threads = default_threads();
  std::int64_t checkpoint_every = 0, stop_after = -1;
  int checkpoint_segments = 0;
  bool resume = false, force = false, json = false, quiet = false, detect_anomaly = false, no_compile = false;
  bool distributed = false;
  bool eval_flips = false, no_eval_flips = false;
  double bucket_mb = 1, dist_timeout = 25;
};

// The library takes 0 or a negative value as "the default" for several options; given on the
// command line such a value is a mistake, so it is refused here.
void validate_train_args(const CLI::App* cmd, const TrainArgs& a) {
  const nn::TrainConfig& c = a.c;
  auto finite = [](double v) { return std::isfinite(v); };
  require(cmd, "--lr", finite(c.lr) && c.lr > 0, c.lr, "a positive finite number");
  require(cmd, "--wd", finite(c.weight_decay) && c.weight_decay >= 0, c.weight_decay, "a finite number >= 0");
  require(cmd, "--momentum", finite(c.momentum) && c.momentum >= 0 && c.momentum < 1, c.momentum, "in [0, 1)");
  require(cmd, "--warmup", c.warmup >= 0, static_cast<double>(c.warmup), "an integer >= 0");
  require(cmd, "--label-smoothing", finite(c.label_smoothing) && c.label_smoothing >= 0 && c.label_smoothing <= 1, c.label_smoothing,
          "in [0, 1]");
  require(cmd, "--clip", finite(c.clip) && c.clip >= 0, c.clip, "a finite number >= 0 (0: off)");
  require(cmd, "--shift", c.shift >= 0 && c.shift <= 1000, c.shift, "an integer in [0, 1000]");
  require(cmd, "--time-budget", finite(c.time_budget) && c.time_budget >= 0, c.time_budget, "a finite number of seconds >= 0 (0: none)");
  require(cmd, "--batch", c.batch >= 1, static_cast<double>(c.batch), "a positive integer");
  require(cmd, "--epochs", c.epochs >= 1 && c.epochs <= 1000000, static_cast<double>(c.epochs), "an integer in [1, 1000000]");
  require(cmd, "--checkpoint-every", a.checkpoint_every >= 0, static_cast<double>(a.checkpoint_every), "an integer >= 0 (0: epoch ends only)");
  require(cmd, "--stop-after", a.stop_after >= 0, static_cast<double>(a.stop_after), "an integer >= 0");
  require(cmd, "--checkpoint-segments", a.checkpoint_segments >= 0, a.checkpoint_segments, "an integer >= 0 (0: off)");
}

void add_train(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train a network (default: the recommended Fashion-MNIST recipe)");
  cmd->add_option("--data", a->c.data, "fashion-mnist[:DIR], spirals, regression or csv:PATH")->capture_default_str();
  cmd->add_option("--model", a->c.model,
                  "Model spec, mlp:IN-H-...-OUT, resmlp:IN-WIDTHxBLOCKS-OUT[:lrl|pre|lrlr[+ln|+bn][+dP]], "
                  "resnet:CxHxW-WIDTHxBLOCKS-...-OUT[:post|pre], densenet:CxHxW-gGROWTH-bN1xN2x...[-cTHETA]-OUT[:basic], "
                  "unet:CxHxW-cBASE-dDEPTH-OUT (trained to denoise the images: noise sigma 0.5, MSE, PSNR reported), or "
                  "a recipe: resnet (recommended_resnet(): " + std::to_string(nn::kResNetEpochs) + " epochs, sgd at lr " +
                      fmt::format("{}", nn::kConvRecipeLr) + ", shifts of " + std::to_string(nn::kConvRecipeShift) +
                      " pixels, each unless given), densenet (recommended_densenet(), " + std::to_string(nn::kDenseNetEpochs) +
                      " epochs, the same optimiser and shifts), unet (recommended_unet(), " + std::to_string(nn::kUNetEpochs) +
                      " epochs) or mlp (recommended_model(): resmlp:784-512x2-10:lrl+d0.1 on Fashion-MNIST, resmlp:2-64x2-2 "
                      "on spirals, mlp:IN-64-64-OUT otherwise). Default: resnet on image classification data, mlp otherwise");
  cmd->add_option("--init", a->c.init,
                  "Initialiser: he (kaiming_normal, fan_in), he_fan_out, he_fan_avg, he_uniform, xavier, xavier_uniform, lecun, torch")
      ->capture_default_str();
  cmd->add_flag("--zero-residual", a->c.zero_residual, "Zero-initialise the last layer of each residual branch");
  cmd->add_option("--opt", a->c.opt, "Optimiser: sgd (Nesterov momentum), adam, adamw (default: sgd for the resnet and densenet recipes, adamw otherwise)");
  cmd->add_option("--lr", a->c.lr, fmt::format("Peak learning rate (default: {} for sgd in the resnet and densenet recipes, 0.05 for sgd otherwise, 1e-3 for "
                              "adam/adamw, 1e-2 on spirals and regression)", nn::kConvRecipeLr));
  cmd->add_option("--wd", a->c.weight_decay, "Weight decay (default: 0.05 adamw, 0 adam, 5e-4 sgd)");
  cmd->add_option("--momentum", a->c.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--schedule", a->c.schedule, "Learning-rate schedule after warm-up: cosine, step, constant")->capture_default_str();
  cmd->add_option("--warmup", a->c.warmup, "Linear warm-up steps (default: a quarter of an epoch)");
  cmd->add_option("--label-smoothing", a->c.label_smoothing,
                  "Smooth classification targets towards uniform by this much (default: 0.1 on Fashion-MNIST, 0 otherwise)");
  cmd->add_option("--clip", a->c.clip, "Clip gradients to this global L2 norm (0: off)")->capture_default_str();
  cmd->add_flag("!--no-augment", a->c.augment, "Turn off random flips and shifts of image data");
  cmd->add_option("--shift", a->c.shift,
                  fmt::format("Largest random shift of images in pixels when augmenting (0: flips only; default: {} for the resnet and densenet recipes, 0 otherwise)",
                              nn::kConvRecipeShift));
  cmd->add_flag("--eval-flips", a->eval_flips,
                "Classify each test image by the mean prediction for it and its mirror image (default: on for the resnet and "
                "densenet recipes, off otherwise)");
  cmd->add_flag("--no-eval-flips", a->no_eval_flips, "Classify each test image as it is")->excludes("--eval-flips");
  cmd->add_option("--time-budget", a->c.time_budget,
                  fmt::format("Seconds the run may take: after the second epoch, train fewer epochs if the pace so far would exceed "
                              "it (0: none; default: {} for the resnet recipe without --epochs, 0 otherwise)",
                              nn::kConvRecipeBudget));
  cmd->add_option("--batch", a->c.batch, "Batch size")->capture_default_str();
  cmd->add_option("--epochs", a->c.epochs,
                  fmt::format("Epochs (default: the recipe's, {} for the mlp recipe on Fashion-MNIST, 30 for spirals, 50 for regression, 20 otherwise)", nn::kRecommendedEpochs));
  cmd->add_option("--seed", a->c.seed, "Seed of initialisation and data order")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "Parameter and data precision: f32 or f64")->capture_default_str();
  cmd->add_option("--precision", a->c.precision,
                  "Linear and convolution layers' operands: f32, or bf16 (bfloat16 inputs, float32 accumulation; float32 "
                  "master weights and optimizer state; needs --dtype f32)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads for matrix products and kernels")->capture_default_str();
  cmd->add_option("--out", a->out, "Run directory (default: a new runs/train-NNN)");
  cmd->add_option("--checkpoint-every", a->checkpoint_every, "Also checkpoint every N steps (0: at the end of each epoch; --resume keeps the run's)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-segments", a->checkpoint_segments,
                  "Activation checkpointing: split the model into N segments and recompute their activations in the "
                  "backward pass (less memory for about one more forward pass; same results; 0: off)")
      ->capture_default_str();
  cmd->add_option("--stop-after", a->stop_after, "Stop, checkpointed, after N steps in total (for testing --resume)");
  cmd->add_flag("--resume", a->resume, "Continue the run in --out from its checkpoint (same configuration)");
  cmd->add_flag("--force", a->force, "Overwrite an existing run directory");
  cmd->add_flag("--json", a->json, "End stdout with one JSON line of results");
  cmd->add_flag("--quiet", a->quiet, "No per-epoch lines or progress bar");
  cmd->add_flag("--no-compile", a->no_compile,
                "Run each training step uncompiled (by default its forward, loss and backward are traced once per batch "
                "shape and replayed; the results are the same bytes)");
  cmd->add_flag("--detect-anomaly", a->detect_anomaly,
                "Check every forward and backward result for NaN and Inf and name the primitive, shapes and module (slower)");
  cmd->add_flag("--distributed", a->distributed,
                "Data-parallel training over MPI: run under mpirun -np P; --batch is per process (docs/distributed.md)");
  cmd->add_option("--bucket-mb", a->bucket_mb, "With --distributed: gradient bucket size in MiB")->capture_default_str();
  cmd->add_option("--dist-timeout", a->dist_timeout,
                  "With --distributed: seconds to wait for the other processes before giving up (0: forever)")
      ->capture_default_str();
  cmd->callback([a, cmd, &exit_code] {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    validate_train_args(cmd, *a);
    set_threads(a->threads);
    nn::TrainConfig c = a->c;
    c.dtype = parse_dtype(a->dtype);
    if (a->eval_flips || a->no_eval_flips) c.eval_flips = a->eval_flips ? 1 : 0;
    if (a->resume && a->force) throw ValueError("--resume and --force exclude each other");
    distributed::Communicator* comm = nullptr;
    bool quiet = a->quiet, json = a->json;
    if (a->distributed) {
      if (!distributed::available())
        throw DistributedError("--distributed: this chainrule was built without MPI (CHAINRULE_MPI=OFF or no MPI found by CMake); "
                               "install libopenmpi-dev and rebuild");
      if (a->bucket_mb <= 0) throw ValueError(fmt::format("--bucket-mb must be positive, got {}", a->bucket_mb));
      comm = &distributed::Communicator::world();
      comm->set_timeout(a->dist_timeout);
      if (comm->rank() != 0) quiet = true, json = false;  // rank 0 alone prints and writes
    }
    const bool writer = !comm || comm->rank() == 0;
    std::string out = a->out;
    if (!writer) {
      if (out.empty()) out = "-";  // unused: only rank 0 touches the run directory
    } else if (a->resume) {
      if (out.empty()) throw ValueError("--resume needs --out DIR, the run to continue");
      if (!fs::exists(fs::path(out) / "state.safetensors"))
        throw IOError(fmt::format("{}: no state.safetensors to resume from", out));
      nn::TrainConfig saved = nn::read_run_config(out);
      // A resumed run keeps its configuration; an option given again must agree with it.
      auto same = [&](const char* opt, bool equal, const std::string& given, const std::string& run) {
        if (cmd->count(opt) && !equal) throw ValueError(fmt::format("{} {} differs from the run's {} (a resumed run keeps its configuration)", opt, given, run));
      };
      same("--data", c.data == saved.data, c.data, saved.data);
      same("--model", same_model(c.model, saved.model), c.model, saved.model);
      same("--init", c.init == saved.init, c.init, saved.init);
      same("--opt", c.opt == saved.opt, c.opt, saved.opt);
      same("--lr", c.lr == saved.lr, fmt::format("{}", c.lr), fmt::format("{}", saved.lr));
      same("--wd", c.weight_decay == saved.weight_decay, fmt::format("{}", c.weight_decay), fmt::format("{}", saved.weight_decay));
      same("--batch", c.batch == saved.batch, std::to_string(c.batch), std::to_string(saved.batch));
      same("--epochs", c.epochs == saved.epochs, std::to_string(c.epochs), std::to_string(saved.epochs));
      same("--seed", c.seed == saved.seed, std::to_string(c.seed), std::to_string(saved.seed));
      same("--schedule", c.schedule == saved.schedule, c.schedule, saved.schedule);
      same("--shift", c.shift == saved.shift, std::to_string(c.shift), std::to_string(saved.shift));
      same("--label-smoothing", c.label_smoothing == saved.label_smoothing, fmt::format("{}", c.label_smoothing),
           fmt::format("{}", saved.label_smoothing));
      same("--dtype", c.dtype == saved.dtype, a->dtype, std::string(dtype_name(saved.dtype)));
      same("--precision", c.precision == saved.precision, c.precision, saved.precision);
      if (cmd->count("--eval-flips") || cmd->count("--no-eval-flips"))
        same(a->eval_flips ? "--eval-flips" : "--no-eval-flips", c.eval_flips == saved.eval_flips, "(on/off)", saved.eval_flips > 0 ? "on" : "off");
      c = saved;
    } else {
      if (out.empty()) out = new_run_dir();
      if (fs::exists(out) && !fs::is_directory(out)) throw IOError(fmt::format("--out {}: exists and is not a directory", out));
      if (fs::exists(out) && run_files_exist(out) && !a->force)
        throw IOError(fmt::format("--out {}: already holds a run; pass --resume to continue it or --force to overwrite it", out));
      if (a->force)
        for (const char* f : {"model.safetensors", "state.safetensors", "metrics.jsonl"}) fs::remove(fs::path(out) / f);
    }
    if (comm && comm->size() > 1) on_termination_explain(comm->rank(), comm->size(), out);
    if (comm && a->resume) {
      // The run's configuration, as rank 0 read it, picks the data every rank loads.
      std::string text = writer ? c.json() : std::string();
      comm->broadcast(text);
      c = nn::TrainConfig::from_json(text);
    }
    if (!quiet) fmt::print("run directory: {}{}\n", out, comm ? fmt::format(" ({} processes)", comm->size()) : "");
    std::fflush(stdout);
    data::Splits splits = data::load_by_name(c.data, c.dtype);

    const bool tty = !quiet && isatty(fileno(stderr));
    nn::RunOptions ro;
    ro.out_dir = out;
    if (cmd->count("--checkpoint-every")) ro.checkpoint_every = a->checkpoint_every;
    ro.stop_after = a->stop_after;
    ro.checkpoint_segments = a->checkpoint_segments;
    ro.resume = a->resume;
    ro.compile = !a->no_compile;
    ro.on_message = [](const std::string& m) { fmt::print(stderr, "chainrule: {}\n", m); };
    ro.comm = comm;
    ro.bucket_bytes = static_cast<std::int64_t>(a->bucket_mb * 1024 * 1024);
    auto last_draw = std::make_shared<clock::time_point>();
    if (tty) {
      ro.on_batch = [last_draw, batch = c.batch](std::int64_t b, std::int64_t n, double loss, double acc, double sps) {
        auto now = clock::now();
        if (b != n && now - *last_draw < std::chrono::milliseconds(100)) return;
        *last_draw = now;
        const int width = 30;
        const int filled = static_cast<int>(width * b / n);
        const double eta = sps > 0 ? static_cast<double>((n - b) * batch) / sps : 0;
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.resize(width, '.');
        fmt::print(stderr, "\r  [{}] {}/{}  loss {:.4f}  acc {}  {:.0f} samples/s  ETA {:.0f} s ", bar, b, n, loss, fmt_acc(acc), sps, eta);
        if (b == n) fmt::print(stderr, "\r{:80}\r", "");
        std::fflush(stderr);
      };
    }
    if (!quiet) {
      ro.on_epoch = [](const nn::EpochMetrics& m) {
        fmt::print("epoch {:>3}/{}  loss {:.4f}  train acc {}  val loss {:.4f}  val acc {}  {:.1f} s  {:.0f} samples/s\n", m.epoch,
                   m.epochs, m.train_loss, fmt_acc(m.train_accuracy), m.val_loss, fmt_acc(m.val_accuracy), m.seconds,
                   m.samples_per_second);
        std::fflush(stdout);
      };
    }
    if (!quiet) {
      fmt::print("data {}: {} train, {} validation, {} test examples\n", c.data, splits.train.size(), splits.val.size(), splits.test.size());
    }
    std::optional<DetectAnomalyGuard> anomaly;
    if (a->detect_anomaly) anomaly.emplace();
    if (c.precision == "bf16" && c.dtype != DType::f32)
      throw ValueError(fmt::format("--precision bf16 needs --dtype f32 (the master weights), got {}", a->dtype));
    nn::TrainResult r = nn::train(c, splits, ro);
    const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
    // Throughput of this run's training steps (all processes' examples), and the time spent
    // waiting for the other processes' gradients: the communication share of a step.
    auto timing = [&](nlohmann::json j) {
      j["train_seconds"] = r.train_seconds;
      j["samples_per_second"] = r.train_seconds > 0 ? r.samples / r.train_seconds : 0.0;
      if (comm) j["processes"] = comm->size(), j["sync_seconds"] = r.sync_seconds;
      return j;
    };
    if (!quiet && !r.epochs.empty() && r.finished)
      fmt::print("model {}, {} parameters, {} steps\n", r.model_spec, r.model->num_parameters(), r.steps);
    if (!r.finished) {
      if (!quiet) fmt::print("stopped after step {} (checkpoint in {}; continue with --resume --out {})\n", r.steps, out, out);
      if (json)
        std::cout << timing({{"stopped_at_step", r.steps}, {"epochs", r.epochs.size()}, {"seconds", seconds}}).dump() << "\n";
      exit_code = 0;
      return;
    }
    const bool denoising = !std::isnan(r.test.psnr);
    if (!quiet) {
      if (denoising)
        fmt::print("test PSNR {:.2f} dB, noisy input {:.2f} dB: gain {:.2f} dB  test loss {:.5f}  ({} epochs, {:.1f} s)\n", r.test.psnr,
                   r.test.input_psnr, r.test.psnr - r.test.input_psnr, r.test.loss, r.epochs.size(), seconds);
      else
        fmt::print("test accuracy {}  test loss {:.4f}  ({} epochs, {:.1f} s){}\n", fmt_acc(r.test.accuracy), r.test.loss, r.epochs.size(), seconds,
                   r.config.eval_flips > 0 ? fmt::format("; with test-time flips (without: accuracy {}, loss {:.4f})",
                                                         fmt_acc(r.test_single.accuracy), r.test_single.loss)
                                           : "");
    }
    if (json) {
      nlohmann::json j = {{"test_accuracy", jnum(r.test.accuracy)},
                          {"test_loss", r.test.loss},
                          {"train_loss", r.train_loss},
                          {"epochs", r.epochs.size()},
                          {"seconds", seconds}};
      if (r.config.eval_flips > 0)
        j["eval_flips"] = true, j["test_accuracy_without_flips"] = jnum(r.test_single.accuracy), j["test_loss_without_flips"] = r.test_single.loss;
      if (denoising) j["test_psnr"] = r.test.psnr, j["test_input_psnr"] = r.test.input_psnr, j["test_psnr_gain"] = r.test.psnr - r.test.input_psnr;
      std::cout << timing(j).dump() << "\n";
    }
    exit_code = 0;
  });
}

// ---- eval, predict, grad -------------------------------------------------------------------

struct ModelArgs {
  std::string checkpoint, model, data = "fashion-mnist", split = "test", dtype = "f32", out;
  std::int64_t batch = 128, limit = -1;
  int threads = default_threads();
  bool json = false, detect_anomaly = false;
};

void add_model_options(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--checkpoint", a.checkpoint, "Model file (safetensors)")->required();
  cmd->add_option("--model", a.model, "Model spec, needed only for a file without chainrule.model metadata");
  cmd->add_option("--data", a.data, "fashion-mnist[:DIR], spirals, regression or csv:PATH")->capture_default_str();
  cmd->add_option("--threads", a.threads, "Threads for matrix products and kernels")->capture_default_str();
}

nn::LoadedModel load_for(const ModelArgs& a, DType dtype) {
  set_threads(a.threads);
  auto m = nn::load_model(a.checkpoint, a.model.empty() ? std::nullopt : std::optional<std::string>(a.model), dtype);
  m.model->eval();
  return m;
}

void check_fits(const nn::ModelSpec& spec, const data::Dataset& d) {
  const std::int64_t outputs = d.num_classes > 0 ? d.num_classes : d.y.shape()[1];
  if (spec.input_dim() != d.features() || spec.output_dim() != outputs)
    throw ValueError(fmt::format("model {} maps {} inputs to {} outputs; data {} has {} features and {} outputs", spec.str(),
                                 spec.input_dim(), spec.output_dim(), d.name, d.features(), outputs));
}

void add_eval(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ModelArgs>();
  auto* cmd = app.add_subcommand("eval", "Accuracy and loss of a checkpoint on a data split");
  add_model_options(cmd, *a);
  cmd->add_option("--split", a->split, "train, val or test")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print {\"accuracy\": x, \"loss\": x}");
  auto flips = std::make_shared<bool>(false);
  cmd->add_flag("--flips", *flips, "Classify each image by the mean prediction for it and its mirror image (test-time flips)");
  cmd->callback([a, flips, &exit_code] {
    auto m = load_for(*a, DType::f32);
    data::Splits s = data::load_by_name(a->data, DType::f32);
    const data::Dataset& d = pick_split(s, a->split);
    check_fits(m.spec, d);
    nn::Evaluation e = nn::evaluate(*m.model, d, 1000, *flips);
    if (a->json)
      std::cout << nlohmann::json{{"accuracy", jnum(e.accuracy)}, {"loss", e.loss}}.dump() << "\n";
    else
      fmt::print("{} on {} ({} examples): accuracy {}  loss {:.4f}\n", m.spec.str(), d.name, e.count, fmt_acc(e.accuracy), e.loss);
    exit_code = 0;
  });
}

void add_predict(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ModelArgs>();
  auto* cmd = app.add_subcommand("predict", "Class and class probabilities per input, as CSV");
  add_model_options(cmd, *a);
  cmd->add_option("--split", a->split, "train, val or test")->capture_default_str();
  cmd->add_option("--limit", a->limit, "Only the first N inputs (default: all)");
  cmd->add_option("--out", a->out, "CSV file to write (default: stdout)");
  cmd->callback([a, cmd, &exit_code] {
    require(cmd, "--limit", a->limit >= 0, static_cast<double>(a->limit), "an integer >= 0");
    auto m = load_for(*a, DType::f32);
    data::Splits s = data::load_by_name(a->data, DType::f32);
    data::Dataset d = pick_split(s, a->split);
    check_fits(m.spec, d);
    if (d.num_classes == 0) throw ValueError(fmt::format("predict: data {} is a regression set; predict needs classes", a->data));
    if (a->limit >= 0) d = d.slice(0, std::min(a->limit, d.size()));
    std::string text = "index,label,class";
    for (std::int64_t c = 0; c < d.num_classes; ++c) text += fmt::format(",p{}", c);
    text += "\n";
    NoGradGuard ng;
    for (std::int64_t start = 0; start < d.size(); start += 1000) {
      data::Dataset part = d.slice(start, std::min(d.size(), start + 1000));
      Tensor p = softmax(m.model->forward(part.x), -1);
      const float* pp = p.data<float>();
      const auto* y = part.y.data<std::int64_t>();
      const std::int64_t C = d.num_classes;
      for (std::int64_t i = 0; i < part.size(); ++i) {
        std::int64_t best = 0;
        for (std::int64_t c = 1; c < C; ++c)
          if (pp[i * C + c] > pp[i * C + best]) best = c;
        text += fmt::format("{},{},{}", start + i, y[i], best);
        for (std::int64_t c = 0; c < C; ++c) text += fmt::format(",{:.6g}", pp[i * C + c]);
        text += "\n";
      }
    }
    if (a->out.empty()) {
      std::cout << text;
    } else {
      io::write_file_atomic(a->out, std::as_bytes(std::span(text.data(), text.size())));
      fmt::print("wrote {} predictions to {}\n", d.size(), a->out);
    }
    exit_code = 0;
  });
}

void add_grad(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ModelArgs>();
  a->split = "train";
  auto* cmd = app.add_subcommand("grad", "Gradient of the mean cross-entropy over the first N examples, per parameter, as safetensors");
  add_model_options(cmd, *a);
  cmd->add_option("--split", a->split, "train, val or test")->capture_default_str();
  cmd->add_option("--batch", a->batch, "N: the first N examples of the split, in file order")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "f32 or f64 (weights and data converted)")->capture_default_str();
  cmd->add_option("--out", a->out, "Output safetensors file")->required();
  cmd->add_flag("--json", a->json, "Print {\"loss\": x, \"parameters\": n}");
  cmd->add_flag("--detect-anomaly", a->detect_anomaly, "Check every forward and backward result for NaN and Inf");
  cmd->callback([a, &exit_code] {
    std::optional<DetectAnomalyGuard> anomaly;
    if (a->detect_anomaly) anomaly.emplace();
    const DType dt = parse_dtype(a->dtype);
    auto m = load_for(*a, dt);
    data::Splits s = data::load_by_name(a->data, dt);
    const data::Dataset& full = pick_split(s, a->split);
    check_fits(m.spec, full);
    if (a->batch <= 0 || a->batch > full.size())
      throw ValueError(fmt::format("--batch {} must be in [1, {}] for the {} split", a->batch, full.size(), a->split));
    data::Dataset d = full.slice(0, a->batch);
    auto named = m.model->named_parameters();
    std::vector<std::string> names;
    std::vector<Tensor> values;
    for (auto& [n, t] : named) names.push_back(n), values.push_back(t.detach());
    const bool classify = d.num_classes > 0;
    auto loss_fn = [&](const std::vector<Tensor>& p) {
      std::map<std::string, Tensor> params;
      for (std::size_t i = 0; i < p.size(); ++i) params.emplace(names[i], p[i]);
      Tensor out = nn::functional_call(*m.model, params, d.x);
      return classify ? cross_entropy(out, d.y) : mse_loss(out, d.y);
    };
    auto [loss, grads] = value_and_grad(loss_fn)(values);
    nn::NamedTensors out;
    for (std::size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], grads[i]);
    nn::save_tensors(a->out, out, {{nn::kModelKey, m.spec.str()}, {"chainrule.loss", fmt::format("{:.17g}", loss.item())}});
    if (a->json)
      std::cout << nlohmann::json{{"loss", loss.item()}, {"parameters", names.size()}}.dump() << "\n";
    else
      fmt::print("mean loss {:.10g} over {} examples; gradients of {} parameters written to {}\n", loss.item(), d.size(), names.size(), a->out);
    exit_code = 0;
  });
}

}  // namespace

void add_train_commands(CLI::App& app, int& exit_code) {
  add_train(app, exit_code);
  add_eval(app, exit_code);
  add_predict(app, exit_code);
  add_grad(app, exit_code);
}

}  // namespace chainrule::cli
