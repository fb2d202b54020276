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

// The Jacobian chain J = J_K ⋯ J_1 of a network with widths dims = [d_0, ..., d_K]: factor J_k is
// d_k × d_{k-1}. Multiplying a (p × q) by a (q × r) matrix costs p q r multiply-adds.
struct ChainOrder {
  std::uint64_t cost = 0;  // multiply-adds of the best bracketing
  // split[i][j] (1-based factors i <= j): the s of the top-level product (J_j..J_{s+1})(J_s..J_i).
  std::vector<std::vector<int>> split;
  std::string bracketing;  // e.g. "((J3 J2) J1)"
};
ChainOrder matrix_chain_order(const std::vector<std::int64_t>& dims);  // dynamic programming, O(K³)
std::uint64_t matrix_chain_brute_force(const std::vector<std::int64_t>& dims);  // every bracketing
std::uint64_t chain_cost_forward(const std::vector<std::int64_t>& dims);  // (J_K (… (J_2 J_1)))
std::uint64_t chain_cost_reverse(const std::vector<std::int64_t>& dims);  // (((J_K J_{K-1}) …) J_1)
// The all-forward and all-reverse bracketings as orders (cost and bracketing filled in).
ChainOrder chain_order_forward(const std::vector<std::int64_t>& dims);
ChainOrder chain_order_reverse(const std::vector<std::int64_t>& dims);
// Multiplies explicit factors (factors[k-1] = J_k) in the order of `order`.
Tensor multiply_chain(const std::vector<Tensor>& factors, const ChainOrder& order);

// Normalised autocorrelation of a sequence at lags 0..max_lag (ρ(0) = 1).
std::vector<double> autocorrelation(const std::vector<double>& g, int max_lag);

}  // namespace chainrule::experiments
