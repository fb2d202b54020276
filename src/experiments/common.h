#pragma once
// Helpers shared by the experiments (not installed).
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "chainrule/experiments/experiments.h"
#include "kernels/kernels.h"

namespace chainrule::experiments {

Result run_backprop(const Options& opts);
Result run_modes(const Options& opts);
Result run_cost(const Options& opts);
Result run_init(const Options& opts);
Result run_shattered(const Options& opts);
Result run_residual_block(const Options& opts);
Result run_vanishing(const Options& opts);
Result run_depth(const Options& opts);
Result run_paths(const Options& opts);
Result run_checkpointing(const Options& opts);

// GEMM multiply-adds done by `fn` on this thread.
template <class Fn>
std::uint64_t count_madds(Fn&& fn) {
  const std::uint64_t before = kernels::gemm_madds();
  fn();
  return kernels::gemm_madds() - before;
}

// Median and interquartile range of a sample (linear interpolation between order statistics).
struct MedianIqr {
  double median = 0, iqr = 0;
};
MedianIqr median_iqr(std::vector<double> v);

// Wall time of `fn` in seconds, median and IQR of the runs: at least `repeats` runs and at least
// `min_total` seconds of runs (short operations are repeated), at most `budget` seconds.
template <class Fn>
MedianIqr median_time(Fn&& fn, int repeats = 3, double min_total = 0.05, double budget = 2.0) {
  std::vector<double> runs;
  double spent = 0;
  for (int i = 0; i < 1000 && (i < repeats || spent < min_total) && (i == 0 || spent < budget); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    runs.push_back(s);
    spent += s;
  }
  return median_iqr(std::move(runs));
}

struct Timing {
  int repeats = 3;
  double min_total = 0.05;
};
template <class Fn>
MedianIqr median_time(Fn&& fn, const Timing& t) {
  return median_time(fn, t.repeats, t.min_total);
}

inline std::string num(double v) { return fmt::format("{:.6g}", v); }
inline std::string num(std::uint64_t v) { return std::to_string(v); }
inline std::string num(std::int64_t v) { return std::to_string(v); }
inline std::string num(int v) { return std::to_string(v); }

// A markdown table from a Table (all rows, or the first `max_rows`).
std::string markdown_table(const Table& t, std::size_t max_rows = 1000);

// Short forms of check_value for the experiments.
inline Check software(std::string name, double value, Compare cmp, double threshold, std::string detail) {
  return check_value(CheckKind::Software, std::move(name), value, cmp, threshold, std::move(detail));
}
inline Check reproduction(std::string name, double value, Compare cmp, double threshold, std::string detail) {
  return check_value(CheckKind::Reproduction, std::move(name), value, cmp, threshold, std::move(detail));
}

}  // namespace chainrule::experiments
