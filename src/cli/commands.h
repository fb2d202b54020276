#pragma once
// Each subcommand of the `chainrule` tool lives in its own file and registers itself here.
#include <CLI/CLI.hpp>

namespace chainrule::cli {

// Registers the subcommand on `app`; its callback runs the command and sets `exit_code`.
void add_check_command(CLI::App& app, int& exit_code);
void add_train_commands(CLI::App& app, int& exit_code);  // train, eval, predict, grad
void add_experiment_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);

// Threads for matrix products and kernels: OpenMP (oneDNN and chainrule's loops) and OpenBLAS.
void set_threads(int n);
// $OMP_NUM_THREADS, else the cores of this machine (divided among the ranks of an mpirun job).
int default_threads();

// For unsigned options: CLI11 would wrap "-1" around; this refuses it with one short line.
inline const CLI::Validator kNonNegative(
    [](std::string& s) { return s.starts_with('-') ? std::string("must be an integer >= 0, got ") + s : std::string(); }, "UINT");

}  // namespace chainrule::cli
