// The experiment registry and what every experiment shares: CSV, gnuplot and report writers, the
// matrix-chain dynamic programme, autocorrelation.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "chainrule/io/atomic_file.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"
#include "experiments/common.h"

namespace chainrule::experiments {

bool Result::pass() const {
  return std::all_of(checks.begin(), checks.end(), [](const Check& c) { return c.pass; });
}

bool holds(double value, Compare cmp, double threshold) {
  switch (cmp) {
    case Compare::Less: return value < threshold;
    case Compare::LessEq: return value <= threshold;
    case Compare::Greater: return value > threshold;
    case Compare::GreaterEq: return value >= threshold;
  }
  return false;
}

std::string_view kind_name(CheckKind k) { return k == CheckKind::Software ? "software" : "reproduction"; }

std::string_view compare_symbol(Compare c) {
  switch (c) {
    case Compare::Less: return "<";
    case Compare::LessEq: return "<=";
    case Compare::Greater: return ">";
    case Compare::GreaterEq: return ">=";
  }
  return "?";
}

Check check_value(CheckKind kind, std::string name, double value, Compare cmp, double threshold, std::string detail) {
  Check c;
  c.name = std::move(name);
  c.detail = std::move(detail);
  c.kind = kind;
  c.value = c.lo = c.hi = value;
  c.threshold = threshold;
  c.cmp = cmp;
  c.pass = holds(value, cmp, threshold);
  c.passed = c.pass ? 1 : 0;
  return c;
}

Check check_true(std::string name, bool ok, std::string detail) {
  return check_value(CheckKind::Software, std::move(name), ok ? 1 : 0, Compare::GreaterEq, 1, std::move(detail));
}

const std::vector<Experiment>& all_experiments() {
  // In the order of the experiments issue.
  static const std::vector<Experiment> list = {
      {"backprop", "The text's hand-derived backward pass against reverse mode, forward mode and finite differences",
       run_backprop},
      {"modes", "Jacobians by forward and reverse mode; the cheapest bracketing of the Jacobian chain", run_modes},
      {"init", "Variance of pre-activations and gradients through 50 layers under six initialisations", run_init},
      {"vanishing", "A 30-layer plain MLP on Fashion-MNIST under He, Xavier and N(0, 0.01²)", run_vanishing},
      {"shattered",
       "Shattered gradients (Balduzzi et al. 2017, fig. 1, theorems 1-3): gradient correlation against depth, plain and "
       "residual, with and without BN; input-bias sweep and kink counts",
       run_shattered},
      {"depth", "Plain against residual MLPs of depth 2 to 64 on Fashion-MNIST", run_depth},
      {"residual-block", "Residual block layouts lrl, pre, lrlr: sign of the branch, variance growth, training",
       run_residual_block},
      {"paths", "Residual networks as ensembles of paths (Veit et al. 2016): gradient per path length, deletion",
       run_paths},
      {"cost", "The cheap-gradient principle: gradient and JVP against the forward pass; tape bytes", run_cost},
      {"checkpointing", "Gradient checkpointing (Chen et al. 2016): peak memory and recomputation against segments",
       run_checkpointing},
  };
  return list;
}

Result run_experiment(std::string_view name, const Options& opts) {
  for (const auto& e : all_experiments()) {
    if (e.name != name) continue;
    auto t0 = std::chrono::steady_clock::now();
    Result r = e.run(opts);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.seeds = {opts.seed};
    r.seed_seconds = {r.seconds};
    return r;
  }
  std::string names;
  for (const auto& e : all_experiments()) names += (names.empty() ? "" : ", ") + e.name;
  throw ValueError(fmt::format("experiment: unknown experiment '{}' (known: {}, all)", name, names));
}

// ---- over seeds ----------------------------------------------------------------------------------

namespace {
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

std::vector<std::uint64_t> derive_seeds(std::uint64_t base, int n) {
  if (n < 1) throw ValueError(fmt::format("experiment: need at least one seed, got {}", n));
  std::vector<std::uint64_t> seeds{base};
  // 53 bits, so that readers of the per-seed JSON that hold numbers as doubles keep them exact.
  for (int k = 1; k < n; ++k) seeds.push_back(splitmix64(base ^ (static_cast<std::uint64_t>(k) << 32)) >> 11);
  return seeds;
}

Interval bootstrap_ci(const std::vector<std::size_t>& sizes, const std::function<double(const GroupIndices&)>& statistic,
                      int resamples, std::uint64_t seed) {
  if (resamples < 2) throw ValueError(fmt::format("bootstrap_ci: need at least 2 resamples, got {}", resamples));
  GroupIndices idx(sizes.size());
  for (std::size_t g = 0; g < sizes.size(); ++g)
    for (std::size_t i = 0; i < sizes[g]; ++i) idx[g].push_back(i);
  const double estimate = statistic(idx);
  Generator gen(seed);
  std::vector<double> stats;
  stats.reserve(static_cast<std::size_t>(resamples));
  for (int b = 0; b < resamples; ++b) {
    for (std::size_t g = 0; g < sizes.size(); ++g)
      for (auto& i : idx[g]) i = static_cast<std::size_t>(gen.next_u64() % static_cast<std::uint64_t>(sizes[g]));
    const double v = statistic(idx);
    if (!std::isnan(v)) stats.push_back(v);
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (stats.empty()) return {estimate, nan, nan};
  std::sort(stats.begin(), stats.end());
  const auto B = static_cast<double>(stats.size());
  const auto lo = static_cast<std::size_t>(std::floor(0.025 * B)), hi = static_cast<std::size_t>(std::ceil(0.975 * B)) - 1;
  return {estimate, stats[lo], stats[hi]};
}

Interval bootstrap_mean_ci(const std::vector<double>& values, int resamples, std::uint64_t seed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (values.empty()) return {nan, nan, nan};
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  if (values.size() == 1 || std::isnan(mean)) return {mean, mean, mean};  // NaN also when +inf and -inf mix
  if (std::all_of(values.begin(), values.end(), [&](double v) { return v == values[0]; })) return {mean, mean, mean};
  if (resamples < 2) throw ValueError(fmt::format("bootstrap_mean_ci: need at least 2 resamples, got {}", resamples));
  const Interval iv = bootstrap_ci(
      {values.size()},
      [&](const GroupIndices& idx) {
        double s = 0;
        for (std::size_t i : idx[0]) s += values[i];
        return s / static_cast<double>(values.size());
      },
      resamples, seed);
  return {mean, iv.lo, iv.hi};
}

namespace {

// A cell that is a number and nothing else.
bool parse_number(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

std::string interval_text(const Interval& iv) {
  if (iv.lo == iv.hi) return fmt::format("{:.4g}", iv.mean);
  return fmt::format("{:.4g} [{:.3g}, {:.3g}]", iv.mean, iv.lo, iv.hi);
}

bool same_shape(const Table& a, const Table& b) {
  if (a.name != b.name || a.columns != b.columns || a.rows.size() != b.rows.size()) return false;
  for (std::size_t i = 0; i < a.rows.size(); ++i)
    if (a.rows[i].size() != b.rows[i].size()) return false;
  return true;
}

Table aggregate_table(const std::vector<const Table*>& ts) {
  Table out = *ts[0];
  for (const auto* t : ts)
    if (!same_shape(*t, *ts[0])) {
      out.name += " (first seed only: its shape varies between seeds)";
      return out;
    }
  for (std::size_t i = 0; i < out.rows.size(); ++i)
    for (std::size_t j = 0; j < out.rows[i].size(); ++j) {
      bool equal = true, numeric = true;
      std::vector<double> v;
      for (const auto* t : ts) {
        const std::string& cell = t->rows[i][j];
        equal &= cell == out.rows[i][j];
        double x = 0;
        if (parse_number(cell, x)) v.push_back(x);
        else numeric = false;
      }
      if (equal) continue;
      out.rows[i][j] = numeric ? interval_text(bootstrap_mean_ci(v)) : out.rows[i][j] + " (varies)";
    }
  return out;
}

Series aggregate_series(const std::vector<const Series*>& ss) {
  Series out = *ss[0];
  for (const auto* s : ss)
    if (s->x != ss[0]->x || s->y.size() != ss[0]->y.size()) {
      out.label += " (first seed)";
      return out;
    }
  out.lo.assign(out.y.size(), 0);
  out.hi.assign(out.y.size(), 0);
  for (std::size_t i = 0; i < out.y.size(); ++i) {
    std::vector<double> v;
    for (const auto* s : ss) v.push_back(s->y[i]);
    const Interval iv = bootstrap_mean_ci(v);
    out.y[i] = iv.mean, out.lo[i] = iv.lo, out.hi[i] = iv.hi;
  }
  return out;
}

}  // namespace

Result aggregate_results(const std::vector<Result>& per_seed) {
  if (per_seed.empty()) throw ValueError("aggregate_results: no results");
  const Result& first = per_seed[0];
  if (per_seed.size() == 1) return first;
  Result out;
  out.name = first.name, out.title = first.title, out.claim = first.claim, out.literature = first.literature;
  out.measured = first.measured;
  out.figure = first.figure;
  for (const auto& r : per_seed) {
    out.seconds += r.seconds;
    out.seeds.insert(out.seeds.end(), r.seeds.begin(), r.seeds.end());
    out.seed_seconds.insert(out.seed_seconds.end(), r.seed_seconds.begin(), r.seed_seconds.end());
  }
  // Tables by position (their names may repeat), when every seed has as many.
  bool tables_match = true;
  for (const auto& r : per_seed) tables_match &= r.tables.size() == first.tables.size();
  for (std::size_t t = 0; t < first.tables.size(); ++t) {
    std::vector<const Table*> ts;
    for (const auto& r : per_seed)
      if (tables_match) ts.push_back(&r.tables[t]);
    if (!tables_match) ts.push_back(&first.tables[t]);
    out.tables.push_back(aggregate_table(ts));
  }
  // Series by plot and position.
  for (std::size_t p = 0; p < out.figure.plots.size(); ++p)
    for (std::size_t k = 0; k < out.figure.plots[p].series.size(); ++k) {
      std::vector<const Series*> ss;
      for (const auto& r : per_seed)
        if (p < r.figure.plots.size() && k < r.figure.plots[p].series.size()) ss.push_back(&r.figure.plots[p].series[k]);
      if (ss.size() == per_seed.size()) out.figure.plots[p].series[k] = aggregate_series(ss);
      else out.figure.plots[p].series[k].label += " (first seed)";
    }
  // Checks by name, in the order they first appear; a seed that lacks a check counts as failing it.
  std::vector<std::string> names;
  for (const auto& r : per_seed)
    for (const auto& c : r.checks)
      if (std::find(names.begin(), names.end(), c.name) == names.end()) names.push_back(c.name);
  const int n = static_cast<int>(per_seed.size());
  for (const auto& name : names) {
    const Check* proto = nullptr;
    std::vector<double> values;
    int passed = 0;
    for (const auto& r : per_seed)
      for (const auto& c : r.checks)
        if (c.name == name) {
          if (!proto) proto = &c;
          values.push_back(c.value);
          passed += c.pass ? 1 : 0;
        }
    Check c = *proto;
    const Interval iv = bootstrap_mean_ci(values);
    c.value = iv.mean, c.lo = iv.lo, c.hi = iv.hi;
    c.seeds = n, c.passed = passed;
    // Reproduction: the whole interval on the passing side; software: every seed.
    c.pass = c.kind == CheckKind::Software ? passed == n
                                            : static_cast<int>(values.size()) == n && holds(iv.lo, c.cmp, c.threshold) &&
                                                  holds(iv.hi, c.cmp, c.threshold);
    c.detail = fmt::format("first seed: {}", proto->detail);
    out.checks.push_back(std::move(c));
  }
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : per_seed) j.push_back(r.json.empty() ? nlohmann::json::object() : nlohmann::json::parse(r.json));
  out.json = nlohmann::json{{"seeds", out.seeds}, {"per_seed", j}}.dump();
  return out;
}

Result run_experiment_seeds(std::string_view name, const Options& opts, const std::vector<std::uint64_t>& seeds,
                            const std::function<void(const Result&)>& each) {
  if (seeds.empty()) throw ValueError("experiment: need at least one seed");
  std::vector<Result> per_seed;
  for (auto seed : seeds) {
    Options o = opts;
    o.seed = seed;
    per_seed.push_back(run_experiment(name, o));
    if (each) each(per_seed.back());
  }
  return aggregate_results(per_seed);
}

// ---- CSV ------------------------------------------------------------------------------------------

namespace {
std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
}  // namespace

void write_csv(const Result& r, const std::filesystem::path& path) {
  std::vector<std::string> columns;
  for (const auto& t : r.tables)
    for (const auto& c : t.columns)
      if (std::find(columns.begin(), columns.end(), c) == columns.end()) columns.push_back(c);
  std::ostringstream out;  // written whole and atomically at the end
  out << "table";
  for (const auto& c : columns) out << "," << csv_cell(c);
  out << "\n";
  for (const auto& t : r.tables) {
    std::vector<int> where(columns.size(), -1);
    for (std::size_t i = 0; i < columns.size(); ++i)
      for (std::size_t j = 0; j < t.columns.size(); ++j)
        if (t.columns[j] == columns[i]) where[i] = static_cast<int>(j);
    for (const auto& row : t.rows) {
      out << csv_cell(t.name);
      for (std::size_t i = 0; i < columns.size(); ++i) {
        out << ",";
        if (where[i] >= 0 && static_cast<std::size_t>(where[i]) < row.size()) out << csv_cell(row[static_cast<std::size_t>(where[i])]);
      }
      out << "\n";
    }
  }
  const std::string text = out.str();
  io::write_file_atomic(path.string(), std::as_bytes(std::span(text.data(), text.size())));
}

// ---- gnuplot --------------------------------------------------------------------------------------

namespace {
bool has_band(const Series& se) { return !se.lo.empty() && se.lo.size() == se.y.size() && se.hi.size() == se.y.size(); }

// The "lc rgb '...'" or "lc N" of a gnuplot style, if it has one.
std::optional<std::string> line_colour(const std::string& style) {
  const auto at = style.find("lc ");
  if (at == std::string::npos) return std::nullopt;
  std::size_t end = at + 3;
  if (style.compare(end, 5, "rgb '") == 0) {
    const auto close = style.find('\'', end + 5);
    if (close == std::string::npos) return std::nullopt;
    end = close + 1;
  } else {
    while (end < style.size() && std::isdigit(static_cast<unsigned char>(style[end]))) ++end;
    if (end == at + 3) return std::nullopt;
  }
  return style.substr(at, end - at);
}

std::string gp_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}
}  // namespace

std::string gnuplot_script(const Result& r, const std::filesystem::path& svg, const std::filesystem::path& png) {
  std::string s = "# Generated by `chainrule experiment " + r.name + "`; run with gnuplot.\n";
  s += "set termoption noenhanced\n";
  // Data blocks, one per series, with the points a log axis cannot show left out.
  for (std::size_t p = 0; p < r.figure.plots.size(); ++p) {
    const Plot& plot = r.figure.plots[p];
    for (std::size_t k = 0; k < plot.series.size(); ++k) {
      const Series& se = plot.series[k];
      s += fmt::format("$d{}_{} << EOD\n", p, k);
      for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
        double x = se.x[i], y = se.y[i];
        if (!std::isfinite(x) || !std::isfinite(y) || (plot.logx && x <= 0) || (plot.logy && y <= 0)) continue;
        if (has_band(se)) {
          // A band edge a log axis cannot show (or that is not finite) collapses onto the mean.
          auto edge = [&](double v) { return std::isfinite(v) && !(plot.logy && v <= 0) ? v : y; };
          s += fmt::format("{:.9g} {:.9g} {:.9g} {:.9g}\n", x, y, edge(se.lo[i]), edge(se.hi[i]));
        } else {
          s += fmt::format("{:.9g} {:.9g}\n", x, y);
        }
      }
      s += "EOD\n";
    }
  }
  std::string body = fmt::format("set multiplot layout {},{} title {}\n", r.figure.rows, r.figure.cols, gp_quote(r.title));
  for (std::size_t p = 0; p < r.figure.plots.size(); ++p) {
    const Plot& plot = r.figure.plots[p];
    body += "reset\nset termoption noenhanced\nset grid\nset key top left font ',8'\n";
    body += fmt::format("set title {}\nset xlabel {}\nset ylabel {}\n", gp_quote(plot.title), gp_quote(plot.xlabel),
                        gp_quote(plot.ylabel));
    if (plot.logx) body += "set logscale x\n";
    if (plot.logy) body += "set logscale y\nset format y '%.0e'\n";
    body += plot.extra;
    if (!plot.extra.empty() && plot.extra.back() != '\n') body += "\n";
    std::string cmd;
    // With bands the colours are explicit, so that a band and its curve share one.
    const bool bands = std::any_of(plot.series.begin(), plot.series.end(), has_band);
    for (std::size_t k = 0; k < plot.series.size(); ++k) {
      const Series& se = plot.series[k];
      bool empty = true;
      for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i)
        if (std::isfinite(se.x[i]) && std::isfinite(se.y[i]) && !(plot.logx && se.x[i] <= 0) && !(plot.logy && se.y[i] <= 0))
          empty = false;
      if (empty) continue;
      const std::string sep = cmd.empty() ? "plot " : ", \\\n     ";
      std::string style = se.style;
      if (bands && style.find("lc ") == std::string::npos) style += fmt::format(" lc {}", k + 1);
      if (has_band(se)) {
        // The band takes its curve's colour.
        const std::string lc = line_colour(style).value_or(fmt::format("lc {}", k + 1));
        cmd += fmt::format("{}$d{}_{} using 1:3:4 with filledcurves fs transparent solid 0.2 noborder {} notitle", sep, p, k, lc);
      }
      cmd += fmt::format("{}$d{}_{} using 1:2 with {} title {}", has_band(se) ? ", \\\n     " : sep, p, k, style,
                         gp_quote(se.label));
    }
    body += cmd.empty() ? "set label 1 'no data' at graph 0.5, 0.5 center\nplot NaN notitle\n" : cmd + "\n";
  }
  body += "unset multiplot\n";
  s += fmt::format("set terminal svg size {},{} font 'sans,10' background '#ffffff'\nset output {}\n", r.figure.width,
                   r.figure.height, gp_quote(svg.string()));
  s += body;
  s += fmt::format("set terminal pngcairo size {},{} font 'sans,9'\nset output {}\n", r.figure.width, r.figure.height,
                   gp_quote(png.string()));
  s += body;
  s += "set output\n";
  return s;
}

bool write_plot(const Result& r, const std::filesystem::path& dir) {
  if (r.figure.plots.empty()) return false;
  const auto gp = dir / (r.name + ".gp");
  // Relative names: the script is run from `dir`.
  const std::string script = gnuplot_script(r, r.name + ".svg", r.name + ".png");
  io::write_file_atomic(gp.string(), std::as_bytes(std::span(script.data(), script.size())));
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) return false;
  std::string cmd = fmt::format("cd {} && gnuplot {} > {} 2>&1", gp_quote(dir.string()), gp_quote(r.name + ".gp"),
                                gp_quote(r.name + ".gnuplot.log"));
  int rc = std::system(cmd.c_str());
  std::error_code ec;
  if (rc == 0) std::filesystem::remove(dir / (r.name + ".gnuplot.log"), ec);
  return rc == 0;
}

// ---- report ---------------------------------------------------------------------------------------

std::string markdown_table(const Table& t, std::size_t max_rows) {
  std::string s = "|";
  for (const auto& c : t.columns) s += " " + c + " |";
  s += "\n|";
  for (std::size_t i = 0; i < t.columns.size(); ++i) s += "---:|";
  s += "\n";
  for (std::size_t r = 0; r < t.rows.size() && r < max_rows; ++r) {
    s += "|";
    for (const auto& c : t.rows[r]) s += " " + c + " |";
    s += "\n";
  }
  if (t.rows.size() > max_rows) s += fmt::format("\n({} more rows in the CSV)\n", t.rows.size() - max_rows);
  return s;
}

MedianIqr median_iqr(std::vector<double> v) {
  if (v.empty()) return {0, 0};
  std::sort(v.begin(), v.end());
  auto q = [&](double p) {
    const double at = p * static_cast<double>(v.size() - 1);
    const auto i = static_cast<std::size_t>(std::floor(at));
    const double f = at - static_cast<double>(i);
    return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
  };
  return {q(0.5), q(0.75) - q(0.25)};
}

namespace {

std::string seconds_text(const Result& r) {
  if (r.seed_seconds.size() <= 1) return fmt::format("{:.1f}", r.seconds);
  auto [med, iqr] = median_iqr(r.seed_seconds);
  return fmt::format("{:.1f} ± {:.1f}", med, iqr);
}

std::string statement_text(const Check& c) {
  if (c.seeds <= 1 || c.lo == c.hi)
    return fmt::format("{:.4g} {} {:.4g}", c.value, compare_symbol(c.cmp), c.threshold);
  return fmt::format("mean {:.4g} [{:.4g}, {:.4g}] {} {:.4g}", c.value, c.lo, c.hi, compare_symbol(c.cmp), c.threshold);
}

std::string check_line(const Check& c) {
  std::string rate = c.seeds > 1 ? fmt::format("; {}/{} seeds pass", c.passed, c.seeds) : "";
  return fmt::format("- {} {} ({}{}): {}\n", c.pass ? "PASS" : "FAIL", c.name, statement_text(c), rate, c.detail);
}

int count_kind(const Result& r, CheckKind k, bool passing_only) {
  return static_cast<int>(std::count_if(r.checks.begin(), r.checks.end(),
                                        [&](const Check& c) { return c.kind == k && (!passing_only || c.pass); }));
}

}  // namespace

std::string report_section(const Result& r) {
  std::string s = fmt::format("<a id=\"{0}\"></a>\n\n## `{0}`: {1}\n\n", r.name, r.title);
  if (!r.figure.plots.empty()) s += fmt::format("![{}]({}.svg)\n\n", r.name, r.name);
  s += "**What the text claims.** " + r.claim + "\n\n";
  s += "**What the literature reports.** " + r.literature + "\n\n";
  const bool many = r.seeds.size() > 1;
  s += std::string("**What we measured") + (many ? fmt::format(" (first seed, {})", r.seeds[0]) : "") + ".** " + r.measured + "\n\n";
  if (many) {
    s += fmt::format("**Over {} seeds.** Each number that varies is the mean over the seeds and its percentile-bootstrap "
                     "95 % interval; the plot's bands are the same intervals.\n\n",
                     r.seeds.size());
    for (const auto& t : r.tables) s += "*" + t.name + "*\n\n" + markdown_table(t, 40) + "\n";
  }
  for (CheckKind k : {CheckKind::Software, CheckKind::Reproduction}) {
    const int total = count_kind(r, k, false);
    if (total == 0) continue;
    s += fmt::format("**{} checks** ({}/{} pass{}).\n\n", k == CheckKind::Software ? "Software" : "Reproduction",
                     count_kind(r, k, true), total,
                     !many ? ""
                     : k == CheckKind::Software ? "; each must hold on every seed"
                                                : "; each passes when the whole 95 % interval of its mean lies on the passing side");
    for (const auto& c : r.checks)
      if (c.kind == k) s += check_line(c);
    s += "\n";
  }
  s += fmt::format("Data: [`{0}.csv`]({0}.csv), plot script [`{0}.gp`]({0}.gp); {1} s{2}.\n\n", r.name, seconds_text(r),
                   many ? " per seed (median ± IQR)" : "");
  return s;
}

std::string report_markdown(const std::vector<Result>& results, const ReportInfo& info) {
  std::string s = "# chainrule experiments\n\n";
  s += "Each section reproduces a claim of the source text, beside the figures the literature reports. Its checks are of "
       "two kinds: *software* checks are identities the code must satisfy (counts, exact agreements, bounds that are "
       "theorems); *reproduction* checks are the papers' empirical claims measured on random networks or training runs.\n\n";
  s += fmt::format("- command: `{}`\n", info.command);
  if (!info.commit.empty()) s += fmt::format("- commit: `{}`\n", info.commit);
  s += fmt::format("- version: {}, {} seed{} from base seed {}\n", info.quick ? "quick" : "full", info.seeds,
                   info.seeds == 1 ? "" : "s", info.seed);
  s += fmt::format("- threads: {}; load average at the start: {:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)\n", info.threads,
                   info.load[0], info.load[1], info.load[2]);
  s += fmt::format("- duration: {:.1f} s\n\n", info.seconds);
  s += fmt::format("| experiment | software checks | reproduction checks | seconds{} |\n|---|---|---|---:|\n",
                   info.seeds > 1 ? " per seed (median ± IQR)" : "");
  int sw = 0, sw_pass = 0, rp = 0, rp_pass = 0;
  for (const auto& r : results) {
    sw += count_kind(r, CheckKind::Software, false), sw_pass += count_kind(r, CheckKind::Software, true);
    rp += count_kind(r, CheckKind::Reproduction, false), rp_pass += count_kind(r, CheckKind::Reproduction, true);
    auto cell = [&](CheckKind k) {
      const int total = count_kind(r, k, false);
      return total == 0 ? std::string("–") : fmt::format("{}/{} pass", count_kind(r, k, true), total);
    };
    s += fmt::format("| [`{}`](#{}) | {} | {} | {} |\n", r.name, r.name, cell(CheckKind::Software), cell(CheckKind::Reproduction),
                     seconds_text(r));
  }
  s += fmt::format("| all | {}/{} pass | {}/{} pass | |\n\n", sw_pass, sw, rp_pass, rp);
  if (info.seeds > 1) {
    s += fmt::format("**Pass rate of every check over the {} seeds** (a check below 95 % is marked).\n\n", info.seeds);
    s += "| experiment | kind | check | seeds passing | rate | verdict |\n|---|---|---|---:|---:|---|\n";
    for (const auto& r : results)
      for (const auto& c : r.checks)
        s += fmt::format("| {} | {} | {} | {}/{} | {:.0f} %{} | {} |\n", r.name, kind_name(c.kind), c.name, c.passed, c.seeds,
                         100 * c.pass_rate(), c.pass_rate() < 0.95 ? " **(< 95 %)**" : "", c.pass ? "PASS" : "FAIL");
    s += "\n";
  }
  for (const auto& r : results) s += report_section(r);
  return s;
}

// ---- the Jacobian chain (the dynamic programme itself is in autodiff/chain.cpp) ----------------

namespace {
using u64 = std::uint64_t;
u64 U(std::int64_t v) { return static_cast<u64>(v); }
// The cost of every bracketing of J_j..J_i, listed explicitly (Catalan(j-i) of them).
std::vector<u64> all_costs(const std::vector<std::int64_t>& dims, int i, int j) {
  if (i == j) return {0};
  std::vector<u64> out;
  for (int s = i; s < j; ++s) {
    auto right = all_costs(dims, i, s), left = all_costs(dims, s + 1, j);
    const u64 top = U(dims[static_cast<std::size_t>(j)]) * U(dims[static_cast<std::size_t>(s)]) * U(dims[static_cast<std::size_t>(i - 1)]);
    for (u64 a : left)
      for (u64 b : right) out.push_back(a + b + top);
  }
  return out;
}
}  // namespace

std::uint64_t matrix_chain_brute_force(const std::vector<std::int64_t>& dims) {
  if (dims.size() < 2) throw ValueError(fmt::format("matrix_chain_brute_force: need at least two widths, got {}", dims.size()));
  if (dims.size() > 13) throw ValueError("matrix_chain_brute_force: at most 12 factors");
  for (auto d : dims)
    if (d <= 0) throw ValueError(fmt::format("matrix_chain_brute_force: widths must be positive, got {}", d));
  auto costs = all_costs(dims, 1, static_cast<int>(dims.size()) - 1);
  return *std::min_element(costs.begin(), costs.end());
}

std::vector<double> autocorrelation(const std::vector<double>& g, int max_lag) {
  const std::size_t n = g.size();
  double mean = 0;
  for (double v : g) mean += v;
  mean /= static_cast<double>(std::max<std::size_t>(n, 1));
  double c0 = 0;
  for (double v : g) c0 += (v - mean) * (v - mean);
  std::vector<double> rho(static_cast<std::size_t>(max_lag + 1), 0.0);
  for (int k = 0; k <= max_lag; ++k) {
    if (c0 == 0 || static_cast<std::size_t>(k) >= n) continue;
    double c = 0;
    for (std::size_t i = 0; i + static_cast<std::size_t>(k) < n; ++i) c += (g[i] - mean) * (g[i + static_cast<std::size_t>(k)] - mean);
    rho[static_cast<std::size_t>(k)] = c / c0;
  }
  return rho;
}

}  // namespace chainrule::experiments
