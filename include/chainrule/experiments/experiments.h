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

// Software checks are identities the code must satisfy (counts, exact agreements, bounds that are
// theorems); they must hold on every seed. Reproduction checks are the papers' empirical claims,
// measured on random networks or training runs; over seeds they are judged on an interval.
enum class CheckKind { Software, Reproduction };
// The numeric statement "value OP threshold".
enum class Compare { Less, LessEq, Greater, GreaterEq };

// One asserted property: its name, kind, the numeric statement behind the verdict, and words.
// After aggregation over seeds (run_experiment_seeds) `value` is the mean over seeds, [lo, hi]
// its bootstrap 95 % interval and `passed` of `seeds` seeds passed on their own; `pass` is the
// verdict: every seed for a software check, the whole interval on the passing side for a
// reproduction check. For one seed lo = hi = value.
struct Check {
  std::string name;
  bool pass = false;
  std::string detail;
  CheckKind kind = CheckKind::Software;
  double value = 0, threshold = 0;
  Compare cmp = Compare::LessEq;
  double lo = 0, hi = 0;
  int seeds = 1, passed = 0;
  double pass_rate() const { return seeds > 0 ? static_cast<double>(passed) / seeds : 0; }
};
// Whether `value` satisfies the statement (NaN never does).
bool holds(double value, Compare cmp, double threshold);
// A check from its numeric statement; `pass` is holds(value, cmp, threshold).
Check check_value(CheckKind kind, std::string name, double value, Compare cmp, double threshold, std::string detail);
// A software check that is a plain yes/no (value 1 or 0, statement value >= 1).
Check check_true(std::string name, bool ok, std::string detail);
std::string_view kind_name(CheckKind k);      // "software", "reproduction"
std::string_view compare_symbol(Compare c);   // "<", "<=", ">", ">="

// A table of the CSV. Cells are text (numbers already formatted).
struct Table {
  std::string name;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

// One curve of a plot. `lo` and `hi`, when given (one per point), are drawn as a shaded band:
// after aggregation over seeds y is the mean and [lo, hi] its bootstrap 95 % interval.
struct Series {
  std::string label;
  std::vector<double> x, y;
  std::string style = "linespoints";  // gnuplot "with" clause
  std::vector<double> lo = {}, hi = {};
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
  std::vector<std::uint64_t> seeds;   // the seeds run (one, or those aggregated)
  std::vector<double> seed_seconds;   // the duration of each seed's run
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

// ---- over seeds ----------------------------------------------------------------------------------

// The seeds of an n-seed run from the base seed: the base itself first (so that one seed is the
// plain run), then well-mixed 53-bit derivatives that do not collide with the experiments' seed + k.
std::vector<std::uint64_t> derive_seeds(std::uint64_t base, int n);

// The percentile bootstrap 95 % interval of the mean: `resamples` resamples drawn with a
// generator seeded from `seed`, so that the interval is reproducible. One value gives [v, v].
struct Interval {
  double mean = 0, lo = 0, hi = 0;
};
Interval bootstrap_mean_ci(const std::vector<double>& values, int resamples = 2000, std::uint64_t seed = 0x5eed);
// The same percentile bootstrap for any statistic of independent groups of observations (networks
// drawn per configuration, say): each resample draws, for every group g, sizes[g] indices into it
// with replacement, and `statistic` maps those index lists to a number. `mean` is the statistic of
// the data as drawn; resamples where it is NaN are left out. bootstrap_mean_ci is the case of one
// group and the mean (it draws the same indices).
using GroupIndices = std::vector<std::vector<std::size_t>>;
Interval bootstrap_ci(const std::vector<std::size_t>& sizes, const std::function<double(const GroupIndices&)>& statistic,
                      int resamples = 2000, std::uint64_t seed = 0x5eed);

// Aggregates the Results of one experiment run with different seeds (in order): tables cell-wise
// (a numeric cell that varies becomes "mean [lo, hi]"; cells equal over seeds stay), plot series
// as means with a band, checks by name (see Check). Tables or series whose shape differs between
// seeds are those of the first seed, said so in the table name or series label.
Result aggregate_results(const std::vector<Result>& per_seed);
// Runs the experiment once per seed (opts.seed is replaced) and aggregates; `each`, if given, is
// called with every seed's Result as it finishes (the CLI writes it as JSON).
Result run_experiment_seeds(std::string_view name, const Options& opts, const std::vector<std::uint64_t>& seeds,
                            const std::function<void(const Result&)>& each = {});

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
  int seeds = 1;               // seeds per experiment
  int threads = 0;             // chainrule's threads
  double load[3] = {0, 0, 0};  // the machine's load averages at the start (getloadavg)
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
