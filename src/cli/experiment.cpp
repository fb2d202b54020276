// `chainrule experiment NAME|all [--out DIR] [--json] [--quick] [--seed N] [--seeds N]`: runs the
// experiments that reproduce the source text's claims (src/experiments/). With --out it writes
// DIR/report.md and, per experiment, DIR/NAME.csv, DIR/NAME.gp, DIR/NAME.svg and DIR/NAME.png;
// with --seeds N > 1 also every seed's result as DIR/NAME.seed-K.json (K = 0..N-1), and the
// report's tables, plots and checks aggregate the seeds.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "chainrule/errors.h"
#include "chainrule/experiments/experiments.h"
#include "chainrule/io/atomic_file.h"
#include "chainrule/ops/ops.h"
#include "cli/commands.h"

namespace chainrule::cli {

namespace {

// The commit of the working directory's repository, "-dirty" when it has changes; empty outside git.
std::string git_commit() {
  auto run = [](const char* cmd) {
    std::string out;
    if (FILE* p = popen(cmd, "r")) {
      char buf[256];
      while (fgets(buf, sizeof buf, p)) out += buf;
      if (pclose(p) != 0) return std::string();
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
  };
  std::string commit = run("git rev-parse --short=12 HEAD 2>/dev/null");
  if (!commit.empty() && !run("git status --porcelain --untracked-files=no 2>/dev/null").empty()) commit += "-dirty";
  return commit;
}

// JSON has no infinities or NaN: those numbers become strings.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(fmt::format("{}", v)); }

nlohmann::json result_json(const experiments::Result& r) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : r.checks)
    checks.push_back({{"name", c.name}, {"kind", experiments::kind_name(c.kind)}, {"pass", c.pass}, {"value", number(c.value)},
                      {"compare", experiments::compare_symbol(c.cmp)}, {"threshold", number(c.threshold)},
                      {"interval", {number(c.lo), number(c.hi)}}, {"seeds", c.seeds}, {"seeds_passing", c.passed},
                      {"pass_rate", c.pass_rate()}, {"detail", c.detail}});
  return {{"name", r.name}, {"title", r.title}, {"pass", r.pass()}, {"seconds", r.seconds}, {"seeds", r.seeds},
          {"seed_seconds", r.seed_seconds}, {"figures", r.json.empty() ? nlohmann::json::object() : nlohmann::json::parse(r.json)},
          {"checks", checks}};
}

}  // namespace

void add_experiment_command(CLI::App& app, int& exit_code) {
  std::string names;
  for (const auto& e : experiments::all_experiments()) names += (names.empty() ? "" : ", ") + e.name;
  auto* cmd = app.add_subcommand("experiment", "Reproduce the source text's claims with numbers and plots (" + names + ", all)");
  struct Args {
    std::string name, out;
    bool json = false, quick = false;
    std::uint64_t seed = 0;
    int seeds = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("name", a->name, "Experiment to run, or 'all'")->required();
  cmd->add_option("--out", a->out, "Write report.md and NAME.{csv,gp,svg,png} into this directory");
  cmd->add_flag("--json", a->json, "Print one JSON object with the figures");
  cmd->add_flag("--quick", a->quick, "The small version (the one the tests run)");
  cmd->add_option("--seed", a->seed, "Seed of every random draw (the base seed with --seeds)")->check(kNonNegative);
  cmd->add_option("--seeds", a->seeds,
                  "Run each experiment with N seeds (the base seed and N-1 derived from it; init and data order) and "
                  "report means with bootstrap 95 % intervals, and each check's pass rate")
      ->check(CLI::Range(1, 1000));
  cmd->callback([a, names, &exit_code] {
    std::vector<std::string> todo;
    if (a->name == "all") {
      for (const auto& e : experiments::all_experiments()) todo.push_back(e.name);
    } else {
      bool known = false;
      for (const auto& e : experiments::all_experiments()) known |= e.name == a->name;
      if (!known) throw ValueError(fmt::format("experiment: unknown experiment '{}' (known: {}, all)", a->name, names));
      todo.push_back(a->name);
    }
    std::filesystem::path out;
    if (!a->out.empty()) {
      out = a->out;
      std::error_code ec;
      std::filesystem::create_directories(out, ec);
      if (ec) throw IOError(fmt::format("experiment: cannot create {}: {}", out.string(), ec.message()));
    }
    const experiments::Options opts{.quick = a->quick, .seed = a->seed};
    const std::vector<std::uint64_t> seeds = experiments::derive_seeds(a->seed, a->seeds);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) != 3) load[0] = load[1] = load[2] = -1;
    // The commit is read before any output is written, so that writing into a tracked folder
    // (docs/experiments) does not make the report call its own commit dirty.
    const std::string commit = out.empty() ? std::string() : git_commit();
    auto t0 = std::chrono::steady_clock::now();
    std::vector<experiments::Result> results;
    bool all_pass = true;
    for (const auto& name : todo) {
      if (!a->json)
        fmt::print(stderr, "experiment {}{}{} ...\n", name, a->quick ? " (quick)" : "",
                   seeds.size() > 1 ? fmt::format(", {} seeds", seeds.size()) : "");
      std::size_t k = 0;
      auto each = [&](const experiments::Result& one) {
        if (!out.empty() && seeds.size() > 1) {
          const std::string text = result_json(one).dump(1) + "\n";
          io::write_file_atomic((out / fmt::format("{}.seed-{}.json", one.name, k)).string(),
                                std::as_bytes(std::span(text.data(), text.size())));
        }
        if (!a->json && seeds.size() > 1)
          fmt::print(stderr, "  seed {} ({}): {} in {:.1f} s\n", k, one.seeds.at(0), one.pass() ? "pass" : "FAIL", one.seconds);
        ++k;
      };
      experiments::Result r = experiments::run_experiment_seeds(name, opts, seeds, each);
      all_pass &= r.pass();
      if (!out.empty()) {
        experiments::write_csv(r, out / (r.name + ".csv"));
        if (!experiments::write_plot(r, out))
          fmt::print(stderr, "experiment {}: gnuplot missing or failed; wrote the CSV and {}.gp only\n", r.name, r.name);
      }
      if (!a->json) {
        for (const auto& c : r.checks)
          fmt::print("  {} {} {}: {}{}: {}\n", c.pass ? "PASS" : "FAIL", experiments::kind_name(c.kind), c.name,
                     c.seeds > 1 ? fmt::format("mean {:.4g} [{:.4g}, {:.4g}]", c.value, c.lo, c.hi) : fmt::format("{:.4g}", c.value),
                     fmt::format(" {} {:.4g}{}", experiments::compare_symbol(c.cmp), c.threshold,
                                 c.seeds > 1 ? fmt::format(", {}/{} seeds", c.passed, c.seeds) : ""),
                     c.detail);
        fmt::print("  {:.1f} s\n", r.seconds);
      }
      results.push_back(std::move(r));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!out.empty()) {
      std::string command = "chainrule experiment " + a->name + (a->quick ? " --quick" : "") +
                            (a->seed ? fmt::format(" --seed {}", a->seed) : "") +
                            (a->seeds > 1 ? fmt::format(" --seeds {}", a->seeds) : "") + " --out " + a->out;
      experiments::ReportInfo info{command, commit, seconds, a->quick, a->seed, a->seeds, get_num_threads(), {load[0], load[1], load[2]}};
      const std::string md = experiments::report_markdown(results, info);
      io::write_file_atomic((out / "report.md").string(), std::as_bytes(std::span(md.data(), md.size())));
    }
    if (a->json) {
      nlohmann::json j;
      if (results.size() == 1) {
        j = result_json(results[0]);
      } else {
        j["experiments"] = nlohmann::json::array();
        for (const auto& r : results) j["experiments"].push_back(result_json(r));
        j["pass"] = all_pass;
        j["seconds"] = seconds;
      }
      std::cout << j.dump() << "\n";
    } else {
      fmt::print("{} experiment(s), {}, {:.1f} s{}\n", results.size(), all_pass ? "all checks pass" : "CHECKS FAIL", seconds,
                 out.empty() ? "" : fmt::format("; report in {}", (out / "report.md").string()));
    }
    exit_code = all_pass ? 0 : 1;
  });
}

}  // namespace chainrule::cli
