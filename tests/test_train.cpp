// The training loop on the two-spirals set: it learns, identical runs give identical bytes, and a
// run stopped and resumed ends with the same weights, bit for bit, as an uninterrupted one.
#include <dlfcn.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "chainrule/chainrule.h"
#include "chainrule/data/loader.h"
#include "chainrule/nn/checkpoint.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/train.h"

using namespace chainrule;
using namespace chainrule::nn;
namespace fs = std::filesystem;

namespace {

struct RunDir {
  fs::path path;
  // The pid keeps concurrent runs of the suite (several checkouts on one machine) apart.
  explicit RunDir(const std::string& name) : path(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~RunDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
  std::string read(const char* file) const {
    std::ifstream f(path / file, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
  }
};

// These runs are tiny (64-wide layers): on one thread they take well under a second, while
// OpenMP's spinning barriers on a busy 2-core machine can make them 10x slower.
void one_thread() {
  if (auto* f = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(1);
}

TrainConfig spirals_config() {
  one_thread();
  TrainConfig c;
  c.data = "spirals";
  c.model = "resmlp:2-32x2-2:lrl+d0.1";  // dropout: its generator state must survive a resume
  c.opt = "adamw";
  c.lr = 1e-2;
  c.batch = 64;
  c.epochs = 4;
  c.seed = 11;
  return c;
}

const data::Splits& spirals() {
  static const data::Splits s = data::make_spirals({.train = 600, .validation = 200, .test = 200, .seed = 3});
  return s;
}

std::vector<std::string> deterministic_metrics(const std::string& jsonl) {
  std::vector<std::string> out;
  std::istringstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("seconds");
    j.erase("samples_per_second");
    out.push_back(j.dump());
  }
  return out;
}

}  // namespace

TEST(Train, LearnsTheSpirals) {
  RunDir dir("chainrule_train_learns");
  TrainConfig c = spirals_config();
  c.model = "resmlp:2-64x2-2";
  c.epochs = 20;
  TrainResult r = train(c, spirals(), {.out_dir = dir.str()});
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.epochs.size(), 20u);
  EXPECT_GT(r.test.accuracy, 0.9) << "seed " << c.seed;
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
  // One metrics line per epoch, with validation accuracy.
  auto lines = deterministic_metrics(dir.read("metrics.jsonl"));
  ASSERT_EQ(lines.size(), 20u);
  EXPECT_TRUE(nlohmann::json::parse(lines.back()).contains("val_accuracy"));
  // The model file carries the spec and step and nothing else.
  auto f = load_tensors((dir.path / "model.safetensors").string());
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"chainrule.model", "resmlp:2-64x2-2"}, {"chainrule.step", std::to_string(r.steps)}}));
  // And it evaluates to the reported test accuracy.
  LoadedModel m = load_model((dir.path / "model.safetensors").string());
  EXPECT_DOUBLE_EQ(evaluate(*m.model, spirals().test).accuracy, r.test.accuracy);
}

TEST(Train, IdenticalRunsWriteIdenticalCheckpoints) {
  RunDir a("chainrule_train_same_a"), b("chainrule_train_same_b");
  TrainConfig c = spirals_config();
  c.epochs = 2;
  train(c, spirals(), {.out_dir = a.str()});
  train(c, spirals(), {.out_dir = b.str()});
  EXPECT_EQ(a.read("model.safetensors"), b.read("model.safetensors"));
  EXPECT_EQ(a.read("state.safetensors"), b.read("state.safetensors"));
}

TEST(Train, ResumeIsBitExact) {
  RunDir full("chainrule_train_full"), part("chainrule_train_part");
  TrainConfig c = spirals_config();
  TrainResult want = train(c, spirals(), {.out_dir = full.str()});
  ASSERT_TRUE(want.finished);
  // 600 examples in batches of 64: 10 steps per epoch. Stop mid-epoch (step 13), then at an
  // epoch's end (step 20), resuming each time.
  TrainResult first = train(c, spirals(), {.out_dir = part.str(), .stop_after = 13});
  EXPECT_FALSE(first.finished);
  EXPECT_EQ(first.steps, 13);
  auto state = load_tensors((part.path / "state.safetensors").string());
  EXPECT_EQ(state.metadata.at("chainrule.step"), "13");
  TrainConfig ignored;  // a resumed run takes its configuration from the run directory
  TrainResult second = train(ignored, spirals(), {.out_dir = part.str(), .stop_after = 20, .resume = true});
  EXPECT_EQ(second.steps, 20);
  TrainResult done = train(ignored, spirals(), {.out_dir = part.str(), .resume = true});
  ASSERT_TRUE(done.finished);
  EXPECT_EQ(done.steps, want.steps);
  EXPECT_EQ(part.read("model.safetensors"), full.read("model.safetensors"));
  EXPECT_EQ(part.read("state.safetensors"), full.read("state.safetensors"));
  EXPECT_EQ(deterministic_metrics(part.read("metrics.jsonl")), deterministic_metrics(full.read("metrics.jsonl")));
  EXPECT_EQ(done.test.accuracy, want.test.accuracy);
  EXPECT_EQ(done.train_loss, want.train_loss);
}

TEST(Train, CheckpointEveryStepsAndResumeFromEach) {
  RunDir full("chainrule_train_every_full"), part("chainrule_train_every_part");
  TrainConfig c = spirals_config();
  c.epochs = 2;
  train(c, spirals(), {.out_dir = full.str()});
  train(c, spirals(), {.out_dir = part.str(), .checkpoint_every = 3, .stop_after = 7});
  // The last checkpoint is at step 7 (stop), the one before at 6.
  EXPECT_EQ(load_tensors((part.path / "model.safetensors").string()).metadata.at("chainrule.step"), "7");
  train(c, spirals(), {.out_dir = part.str(), .resume = true});
  EXPECT_EQ(part.read("model.safetensors"), full.read("model.safetensors"));
}

TEST(Train, ResumeRefusesAMismatchedPair) {
  RunDir dir("chainrule_train_mismatch"), other("chainrule_train_mismatch_other");
  TrainConfig c = spirals_config();
  train(c, spirals(), {.out_dir = dir.str(), .stop_after = 5});
  train(c, spirals(), {.out_dir = other.str(), .stop_after = 8});
  fs::copy_file(other.path / "model.safetensors", dir.path / "model.safetensors", fs::copy_options::overwrite_existing);
  try {
    train(c, spirals(), {.out_dir = dir.str(), .resume = true});
    FAIL() << "resumed from a mismatched pair";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("step 8"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step 5"), std::string::npos) << e.what();
  }
  fs::remove(dir.path / "state.safetensors");
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str(), .resume = true}), IOError);
}

TEST(Train, ResumeRefusesAPairAtOneStepWithOtherWeights) {
  RunDir dir("chainrule_train_same_step"), other("chainrule_train_same_step_other");
  TrainConfig c = spirals_config();
  train(c, spirals(), {.out_dir = dir.str(), .stop_after = 5});
  c.seed = 12;
  train(c, spirals(), {.out_dir = other.str(), .stop_after = 5});
  fs::copy_file(other.path / "model.safetensors", dir.path / "model.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str(), .resume = true}), IOError);
}

// A save cut off between the state (committed) and the model file: resume restores the model
// from the state's copy of the weights and still ends bit-exact.
TEST(Train, ResumeRecoversASaveInterruptedBetweenTheTwoFiles) {
  RunDir full("chainrule_train_cut_full"), part("chainrule_train_cut_part"), old("chainrule_train_cut_old");
  TrainConfig c = spirals_config();
  c.epochs = 2;
  train(c, spirals(), {.out_dir = full.str()});
  train(c, spirals(), {.out_dir = old.str(), .stop_after = 4});
  train(c, spirals(), {.out_dir = part.str(), .stop_after = 7});
  fs::copy_file(old.path / "model.safetensors", part.path / "model.safetensors", fs::copy_options::overwrite_existing);
  std::string note;
  train(c, spirals(), {.out_dir = part.str(), .stop_after = 8, .resume = true, .on_message = [&](const std::string& m) { note = m; }});
  EXPECT_NE(note.find("model.safetensors was at step 4, state.safetensors at step 7"), std::string::npos) << note;
  EXPECT_EQ(load_tensors((part.path / "model.safetensors").string()).metadata.at("chainrule.step"), "8");
  train(c, spirals(), {.out_dir = part.str(), .resume = true});
  EXPECT_EQ(part.read("model.safetensors"), full.read("model.safetensors"));
}

TEST(Train, ANanLossStopsAndKeepsTheLastGoodCheckpoint) {
  RunDir dir("chainrule_train_nan"), good("chainrule_train_nan_good");
  TrainConfig c = spirals_config();
  c.opt = "sgd";
  c.lr = 1e6;  // diverges within a few steps of the warm-up
  c.warmup = 1000;
  c.model = "mlp:2-32-2";
  std::int64_t last = -1;
  try {
    train(c, spirals(), {.out_dir = dir.str(), .checkpoint_every = 1});
    FAIL() << "trained through a NaN loss";
  } catch (const NumericalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("the loss became"), std::string::npos) << m;
    auto at = m.find("the last good checkpoint, step ");
    ASSERT_NE(at, std::string::npos) << m;
    last = std::stoll(m.substr(at + 31));
  }
  ASSERT_GT(last, 0);
  EXPECT_EQ(load_tensors((dir.path / "model.safetensors").string()).metadata.at("chainrule.step"), std::to_string(last));
  train(c, spirals(), {.out_dir = good.str(), .stop_after = last});
  EXPECT_EQ(dir.read("model.safetensors"), good.read("model.safetensors"));
}

TEST(Train, RejectsAModelThatDoesNotFitTheData) {
  RunDir dir("chainrule_train_fit");
  TrainConfig c = spirals_config();
  c.model = "mlp:3-8-2";
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str()}), ValueError);
  c.model = "mlp:2-8-2";
  c.opt = "rmsprop";
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str()}), ValueError);
}

TEST(Train, ConfigRoundTripsThroughJson) {
  TrainConfig c = spirals_config();
  c.dtype = DType::f64;
  c.warmup = 7;
  EXPECT_EQ(TrainConfig::from_json(c.json()).json(), c.json());
  // Kept for --resume: the precision and test-time flips; runs saved before them read as f32, off.
  c.dtype = DType::f32, c.precision = "bf16", c.eval_flips = 1;
  const TrainConfig back = TrainConfig::from_json(c.json());
  EXPECT_EQ(back.precision, "bf16");
  EXPECT_EQ(back.eval_flips, 1);
  auto j = nlohmann::json::parse(c.json());
  j.erase("precision"), j.erase("eval_flips");
  EXPECT_EQ(TrainConfig::from_json(j.dump()).precision, "f32");
  EXPECT_EQ(TrainConfig::from_json(j.dump()).eval_flips, 0);
  // A precision train() cannot run is refused before anything is written.
  RunDir dir("chainrule_train_precision");
  c.precision = "fp8";
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str()}), ValueError);
  c.precision = "bf16", c.dtype = DType::f64;
  EXPECT_THROW(train(c, spirals(), {.out_dir = dir.str()}), ValueError);
  EXPECT_FALSE(fs::exists(dir.path));
}

// `chainrule bench` times nn::train_step; `chainrule train` must run exactly that step. Three steps
// of the trainer (SGD with momentum, constant rate) and three hand-driven train_step calls on the
// same batches give identical parameters.
TEST(TrainStep, TrainerRunsTheBenchmarkedStep) {
  one_thread();
  TrainConfig c;
  c.data = "spirals";
  c.model = "mlp:2-16-16-2";
  c.opt = "sgd";
  c.momentum = 0.9;
  c.lr = 0.05;
  c.schedule = "constant";
  c.warmup = 0;
  c.batch = 32;
  c.epochs = 1;
  c.seed = 5;
  RunDir dir("chainrule_train_step");
  TrainResult r = train(c, spirals(), {.out_dir = dir.str(), .stop_after = 3});
  ASSERT_EQ(r.steps, 3);

  auto model = build_model(c.model);
  Generator gen(c.seed);
  init_model(*model, gen, {.scheme = parse_init(c.init)});
  // The trainer's SGD: Nesterov momentum and its default weight decay (r.config has the defaults filled in).
  optim::SGD opt(model->named_parameters(),
                 {.lr = c.lr, .momentum = c.momentum, .weight_decay = r.config.weight_decay, .nesterov = true});
  data::DataLoader loader(spirals().train, {.batch_size = c.batch, .shuffle = true, .seed = c.seed});
  auto order = loader.order(0);
  for (std::int64_t b = 0; b < 3; ++b) {
    data::Batch batch = loader.batch(order, b, 0);
    train_step(*model, opt, batch.x, batch.y, [](const Tensor& out, const Tensor& y) { return cross_entropy(out, y); });
  }
  auto want = model->named_parameters(), got = r.model->named_parameters();
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].first, got[i].first);
    EXPECT_EQ(want[i].second.to_vector<float>(), got[i].second.to_vector<float>()) << want[i].first;
  }
}

// A time budget shortens a run after its second epoch (never lengthens it), and the shortened
// length is what the run directory keeps for a resume.
TEST(Train, TimeBudgetShortensTheRunAfterTheSecondEpoch) {
  TrainConfig c = spirals_config();
  c.epochs = 6;
  c.time_budget = 1e-6;  // already spent: the run stops after its second epoch
  RunDir a("chainrule_train_budget"), b("chainrule_train_budget_ref"), big("chainrule_train_budget_big");
  std::vector<std::string> messages;
  TrainResult r = train(c, spirals(), {.out_dir = a.str(), .on_message = [&](const std::string& m) { messages.push_back(m); }});
  EXPECT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(r.config.epochs, 2);
  EXPECT_TRUE(r.finished);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("training 2 epochs instead of 6"), std::string::npos) << messages[0];
  EXPECT_EQ(read_run_config(a.str()).epochs, 2);  // a resume continues the shortened run
  // Its first two epochs are those of the unbudgeted run (the budget acts only after them).
  c.time_budget = 0;
  c.epochs = 6;
  RunOptions stop{.out_dir = b.str()};
  stop.stop_after = r.steps;
  TrainResult ref = train(c, spirals(), stop);
  ASSERT_EQ(ref.epochs.size(), 2u);
  EXPECT_EQ(ref.epochs[1].train_loss, r.epochs[1].train_loss);
  c.time_budget = 1e9;
  EXPECT_EQ(train(c, spirals(), {.out_dir = big.str()}).epochs.size(), 6u);
}
