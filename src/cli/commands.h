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

}  // namespace chainrule::cli
