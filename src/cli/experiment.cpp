// `chainrule experiment NAME|all [--out DIR] [--json] [--quick] [--seed N]`: runs the experiments
// that reproduce the source text's claims (src/experiments/). With --out it writes DIR/report.md
// and, per experiment, DIR/NAME.csv, DIR/NAME.gp, DIR/NAME.svg and DIR/NAME.png.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "chainrule/errors.h"
#include "chainrule/experiments/experiments.h"
#include "chainrule/io/atomic_file.h"
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

nlohmann::json result_json(const experiments::Result& r) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : r.checks) checks.push_back({{"name", c.name}, {"pass", c.pass}, {"detail", c.detail}});
  return {{"name", r.name}, {"title", r.title}, {"pass", r.pass()}, {"seconds", r.seconds},
          {"figures", r.json.empty() ? nlohmann::json::object() : nlohmann::json::parse(r.json)}, {"checks", checks}};
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
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("name", a->name, "Experiment to run, or 'all'")->required();
  cmd->add_option("--out", a->out, "Write report.md and NAME.{csv,gp,svg,png} into this directory");
  cmd->add_flag("--json", a->json, "Print one JSON object with the figures");
  cmd->add_flag("--quick", a->quick, "The small version (the one the tests run)");
  cmd->add_option("--seed", a->seed, "Seed of every random draw")->check(kNonNegative);
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
    // The commit is read before any output is written, so that writing into a tracked folder
    // (docs/experiments) does not make the report call its own commit dirty.
    const std::string commit = out.empty() ? std::string() : git_commit();
    auto t0 = std::chrono::steady_clock::now();
    std::vector<experiments::Result> results;
    bool all_pass = true;
    for (const auto& name : todo) {
      if (!a->json) fmt::print(stderr, "experiment {}{} ...\n", name, a->quick ? " (quick)" : "");
      experiments::Result r = experiments::run_experiment(name, opts);
      all_pass &= r.pass();
      if (!out.empty()) {
        experiments::write_csv(r, out / (r.name + ".csv"));
        if (!experiments::write_plot(r, out))
          fmt::print(stderr, "experiment {}: gnuplot missing or failed; wrote the CSV and {}.gp only\n", r.name, r.name);
      }
      if (!a->json) {
        for (const auto& c : r.checks) fmt::print("  {} {}: {}\n", c.pass ? "PASS" : "FAIL", c.name, c.detail);
        fmt::print("  {:.1f} s\n", r.seconds);
      }
      results.push_back(std::move(r));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!out.empty()) {
      std::string command = "chainrule experiment " + a->name + (a->quick ? " --quick" : "") +
                            (a->seed ? fmt::format(" --seed {}", a->seed) : "") + " --out " + a->out;
      experiments::ReportInfo info{command, commit, seconds, a->quick, a->seed};
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
