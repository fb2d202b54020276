// Data-parallel training with real processes: launches `mpirun --oversubscribe -np P` on this
// machine (loopback, shared memory) and checks the result files. Skipped when chainrule was built
// without MPI.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "chainrule/distributed/communicator.h"
#include "chainrule/nn/checkpoint.h"

using namespace chainrule;
namespace fs = std::filesystem;

namespace {

const std::string kCli = CHAINRULE_CLI;
const std::string kTrace = CHAINRULE_DDP_TRACE;

fs::path scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("chainrule_mpi_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::string mpirun(int np) {
  // Loopback only; as root in CI; shared memory without CMA, which containers often forbid.
  return fmt::format("{} --oversubscribe --allow-run-as-root --mca btl self,vader --mca btl_vader_single_copy_mechanism none -np {} ",
                     MPIEXEC, np);
}

struct Ran {
  int status;
  std::string output;
};
Ran run(const std::string& cmd, const fs::path& log) {
  int rc = std::system((cmd + " > " + log.string() + " 2>&1").c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), slurp(log)};
}

class Mpi : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!distributed::available()) GTEST_SKIP() << "chainrule was built without MPI";
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  }
};

// Every parameter of two model files: ‖a - b‖ / ‖a‖ over all of them together.
double relative_difference(const fs::path& a, const fs::path& b) {
  auto fa = nn::load_tensors(a.string()), fb = nn::load_tensors(b.string());
  double diff = 0, norm = 0;
  EXPECT_EQ(fa.tensors.size(), fb.tensors.size());
  for (auto& [name, ta] : fa.tensors) {
    auto va = ta.to_vector<float>(), vb = fb.tensors.at(name).to_vector<float>();
    for (std::size_t i = 0; i < va.size(); ++i) {
      diff += (static_cast<double>(va[i]) - vb[i]) * (static_cast<double>(va[i]) - vb[i]);
      norm += static_cast<double>(va[i]) * va[i];
    }
  }
  return std::sqrt(diff / norm);
}

const std::string kRecipe = " --data spirals --model mlp:2-64-64-2 --lr 0.001 --threads 1 --quiet ";

}  // namespace

TEST_F(Mpi, WeightsEqualOneProcessOnTheSameGlobalBatches) {
  for (int np : {2, 4}) {
    fs::path dir = scratch("equal" + std::to_string(np));
    auto one = run(fmt::format("{} train {} --batch {} --stop-after 20 --out {}", kCli, kRecipe, 16 * np, (dir / "one").string()),
                   dir / "one.log");
    ASSERT_EQ(one.status, 0) << one.output;
    auto many = run(fmt::format("{} {} train {} --batch 16 --stop-after 20 --distributed --out {}", mpirun(np), kCli, kRecipe,
                                (dir / "many").string()),
                    dir / "many.log");
    ASSERT_EQ(many.status, 0) << many.output;
    const double rel = relative_difference(dir / "one" / "model.safetensors", dir / "many" / "model.safetensors");
    EXPECT_LT(rel, 1e-6) << np << " processes";
    EXPECT_GT(rel, 0.0) << "suspicious: bit-identical to one process although the sums run in another order";
    auto meta = nn::load_tensors((dir / "many" / "model.safetensors").string()).metadata;
    EXPECT_EQ(meta.at(nn::kStepKey), "20");
    fs::remove_all(dir);
  }
}

TEST_F(Mpi, RepeatedRunsGiveIdenticalBytes) {
  for (int np : {2, 4}) {
    fs::path dir = scratch("repeat" + std::to_string(np));
    for (const char* name : {"a", "b"}) {
      auto r = run(fmt::format("{} {} train {} --batch 8 --epochs 1 --distributed --out {}", mpirun(np), kCli, kRecipe,
                               (dir / name).string()),
                   dir / (std::string(name) + ".log"));
      ASSERT_EQ(r.status, 0) << r.output;
    }
    EXPECT_EQ(slurp(dir / "a" / "model.safetensors"), slurp(dir / "b" / "model.safetensors")) << np << " processes";
    EXPECT_EQ(slurp(dir / "a" / "state.safetensors"), slurp(dir / "b" / "state.safetensors")) << np << " processes";
    fs::remove_all(dir);
  }
}

TEST_F(Mpi, FirstBucketStartsBeforeTheLastVjp) {
  fs::path dir = scratch("overlap");
  auto r = run(mpirun(2) + kTrace, dir / "trace.log");
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<std::string> lines;
  std::istringstream in(r.output);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto at = [&](const std::string& e) { return std::find(lines.begin(), lines.end(), e) - lines.begin(); };
  const auto n = static_cast<std::ptrdiff_t>(lines.size());
  ASSERT_LT(at("start 0"), n) << r.output;
  ASSERT_LT(at("vjp probe"), n) << r.output;
  EXPECT_LT(at("start 0"), at("vjp probe")) << r.output;
  EXPECT_LT(at("start 1"), at("vjp probe")) << r.output;
  EXPECT_LT(at("mean ok"), n) << r.output;
  fs::remove_all(dir);
}

// The pid of the process launched by mpirun (a child of `parent`) with the given rank.
pid_t child_with_rank(pid_t parent, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(slurp(e.path() / "stat"));
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != parent) continue;
    std::string env = slurp(e.path() / "environ");
    std::istringstream vars(env);
    for (std::string v; std::getline(vars, v, '\0');)
      if (v == want) return std::stoi(name);
  }
  return -1;
}

// Whether a process exists and is not a zombie (in a container nobody may reap it).
bool running(pid_t pid) {
  std::istringstream stat(slurp(fs::path("/proc") / std::to_string(pid) / "stat"));
  std::string id, comm, state;
  stat >> id >> comm >> state;
  return !state.empty() && state != "Z" && state != "X";
}

TEST_F(Mpi, KilledRankEndsTheJobAndTheCheckpointResumes) {
  fs::path dir = scratch("kill");
  const fs::path out = dir / "run";
  const std::string args = fmt::format("train {} --batch 16 --epochs 6 --checkpoint-every 20 --distributed --out {}", kRecipe, out.string());
  pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    const std::string cmd = "exec " + mpirun(2) + kCli + " " + args + " > " + (dir / "killed.log").string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait for a checkpoint, then kill rank 1.
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  pid_t rank0 = -1, rank1 = -1;
  while (clock::now() - t0 < std::chrono::seconds(120)) {
    if (rank1 < 0) rank0 = child_with_rank(launcher, 0), rank1 = child_with_rank(launcher, 1);
    if (rank1 > 0 && fs::exists(out / "model.safetensors")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(rank1, 0) << slurp(dir / "killed.log");
  ASSERT_TRUE(fs::exists(out / "model.safetensors")) << slurp(dir / "killed.log");
  ASSERT_EQ(kill(rank1, SIGKILL), 0);
  const auto t_kill = clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0 && clock::now() - t_kill < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (done == 0) {
    kill(launcher, SIGKILL);
    waitpid(launcher, &status, 0);
    FAIL() << "the job did not end within 60 s of killing rank 1";
  }
  const double seconds = std::chrono::duration<double>(clock::now() - t_kill).count();
  const std::string log = slurp(dir / "killed.log");
  EXPECT_LT(seconds, 30.0) << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;  // the error names the lost rank
  EXPECT_NE(log.find("rank 0 of 2: terminated by SIGTERM"), std::string::npos) << log;
  EXPECT_FALSE(running(rank0)) << "rank 0 is still running";
  RecordProperty("seconds_to_exit", std::to_string(seconds));
  std::cout << "job ended " << seconds << " s after rank 1 was killed\n";

  // Rank 0's last checkpoint is a matching pair, and the run continues from it to the end.
  auto model = nn::load_tensors((out / "model.safetensors").string());
  auto state = nn::load_tensors((out / "state.safetensors").string());
  EXPECT_EQ(model.metadata.at(nn::kStepKey), state.metadata.at(nn::kStepKey));
  auto resumed = run(fmt::format("{} {} train --out {} --resume --distributed --json --quiet", mpirun(2), kCli, out.string()),
                     dir / "resumed.log");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("\"test_accuracy\""), std::string::npos) << resumed.output;
  EXPECT_EQ(nn::load_tensors((out / "model.safetensors").string()).metadata.at(nn::kStepKey), std::to_string(6 * 63));
  fs::remove_all(dir);
}

TEST(MpiCompiledOut, DistributedSaysSo) {
  if (distributed::available()) GTEST_SKIP() << "chainrule was built with MPI";
  fs::path dir = scratch("off");
  auto r = run(kCli + " train --data spirals --distributed --out " + (dir / "run").string(), dir / "off.log");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("built without MPI"), std::string::npos) << r.output;
  fs::remove_all(dir);
}
