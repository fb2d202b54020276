#pragma once
// Experiments that reproduce the claims of the source text (../shared/seeds) with numbers, plots
// and the figures the literature reports. Each experiment is a function Options -> Result; the
// `chainrule experiment` command writes a Result as NAME.csv, NAME.svg, NAME.png (gnuplot) and a
// section of report.md. The quick version of each experiment is small and its checks, which count
// operations and bytes but never time, are the experiment's tests (tests/test_experiments.cpp).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "chainrule/autodiff/chain.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule::experiments {

struct Options {
  bool quick = false;      // the small version (its checks are CTest tests)
  std::uint64_t seed = 0;  // every random draw derives from it
};

// One asserted property: its name, whether it holds, and the numbers behind the verdict.
struct Check {
  std::string name;
  bool pass = false;
  std::string detail;
};

// A table of the CSV. Cells are text (numbers already formatted).
struct Table {
  std::string name;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

// One curve of a plot.
struct Series {
  std::string label;
  std::vector<double> x, y;
  std::string style = "linespoints";  // gnuplot "with" clause
};
struct Plot {
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<Series> series;
  std::string extra;  // further gnuplot commands for this panel (ranges, key position)
};
struct Figure {
  int rows = 1, cols = 1;
  int width = 1200, height = 800;  // pixels
  std::vector<Plot> plots;         // row by row
};

struct Result {
  std::string name, title;
  std::vector<Table> tables;
  Figure figure;
  std::string claim;       // what the text claims (markdown)
  std::string literature;  // what the literature reports, with the paper's figure or table
  std::string measured;    // what we measured (markdown, tables)
  std::string json;        // the figures, one JSON object
  std::vector<Check> checks;
  double seconds = 0;
  bool pass() const;
};

struct Experiment {
  std::string name;
  std::string summary;
  std::function<Result(const Options&)> run;
};

// The experiments in the order `experiment all` runs them.
const std::vector<Experiment>& all_experiments();
// Runs one by name (ValueError listing the known names otherwise); fills Result::seconds.
Result run_experiment(std::string_view name, const Options& opts = {});

// Outputs. write_csv writes every table into one CSV (a "table" column first, then the union of
// the columns). write_plot writes NAME.gp and runs gnuplot for NAME.svg and NAME.png; it returns
// false (and leaves the CSV alone) when gnuplot is missing or fails.
void write_csv(const Result& r, const std::filesystem::path& path);
std::string gnuplot_script(const Result& r, const std::filesystem::path& svg, const std::filesystem::path& png);
bool write_plot(const Result& r, const std::filesystem::path& dir);
struct ReportInfo {
  std::string command;  // the command line that produced the report
  std::string commit;   // git commit, if known
  double seconds = 0;   // total duration
  bool quick = false;
  std::uint64_t seed = 0;
};
std::string report_section(const Result& r);
std::string report_markdown(const std::vector<Result>& results, const ReportInfo& info);

// ---- Building blocks exposed for the tests ----------------------------------------------------

// The Jacobian chain's orders and products live in the core (chainrule/autodiff/chain.h); the
// experiments and their tests also use the brute force over every bracketing.
using chainrule::ChainOrder;
using chainrule::chain_cost_forward;
using chainrule::chain_cost_reverse;
using chainrule::chain_order_forward;
using chainrule::chain_order_reverse;
using chainrule::matrix_chain_order;
using chainrule::multiply_chain;
std::uint64_t matrix_chain_brute_force(const std::vector<std::int64_t>& dims);  // every bracketing

// Normalised autocorrelation of a sequence at lags 0..max_lag (ρ(0) = 1).
std::vector<double> autocorrelation(const std::vector<double>& g, int max_lag);

}  // namespace chainrule::experiments
