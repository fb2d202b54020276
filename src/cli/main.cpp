// chainrule command-line tool: one line of error on stderr and a non-zero exit for bad input.
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "chainrule/distributed/communicator.h"
#include "chainrule/errors.h"
#include "cli/commands.h"

namespace chainrule::cli {
// oneDNN and OpenBLAS run on OpenMP / their own pools; set both when the libraries are present.
// More threads than this only oversubscribe the machine (and 100000 crashed the OpenMP runtime).
constexpr int kMaxThreads = 256;

void set_threads(int n) {
  if (n <= 0 || n > kMaxThreads) throw ValueError(fmt::format("--threads must be in [1, {}], got {}", kMaxThreads, n));
  if (auto* f = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(n);
  if (auto* f = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

// Like PyTorch: $OMP_NUM_THREADS when set, else one thread per core, shared among the processes
// of this node in an mpirun job (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE) so that ranks do not
// oversubscribe the cores.
int default_threads() {
  auto env_int = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::atoi(v) : 0;
  };
  if (int n = env_int("OMP_NUM_THREADS"); n > 0) return std::min(n, kMaxThreads);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int ranks = std::max(1, env_int("OMPI_COMM_WORLD_LOCAL_SIZE"));
  return std::clamp(cores / ranks, 1, kMaxThreads);
}
}  // namespace chainrule::cli

namespace {
// "rank R of P: " in a data-parallel run, where every process may report its own error.
std::string rank_prefix() {
  auto& w = chainrule::distributed::Communicator::world_if_started();
  return w.size() > 1 ? fmt::format("rank {} of {}: ", w.rank(), w.size()) : std::string();
}
std::string with_rank(const std::string& message) { return message.starts_with("rank ") ? message : rank_prefix() + message; }
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chainrule: automatic differentiation and neural-network training"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "chainrule 0.1.0");
  int exit_code = 0;
  chainrule::cli::add_check_command(app, exit_code);
  chainrule::cli::add_train_commands(app, exit_code);
  chainrule::cli::add_experiment_command(app, exit_code);
  chainrule::cli::add_bench_command(app, exit_code);
  // CLI11 would only say "A subcommand is required" for a misspelt one.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const auto* c : app.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + c->get_name();
      known |= c->get_name() == argv[1];
    }
    if (!known) {
      std::cerr << "chainrule: unknown command '" << argv[1] << "' (" << names << ")\n";
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const chainrule::Error& e) {
    std::cerr << "chainrule: " << with_rank(e.what()) << "\n" << std::flush;
    chainrule::distributed::abort_job_if_distributed(1);  // the other ranks would wait for this one
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "chainrule: " << rank_prefix() << "error: " << e.what() << "\n" << std::flush;
    chainrule::distributed::abort_job_if_distributed(1);
    return 1;
  }
  return exit_code;
}
