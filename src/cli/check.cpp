// `chainrule check [--op NAME] [--json]`: runs the generated derivative checks of every primitive.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "chainrule/autodiff/check.h"
#include "cli/commands.h"

namespace chainrule::cli {

void add_check_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("check", "Check every primitive's derivative rules against finite differences");
  auto op = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--op", *op, "Check only this primitive");
  cmd->add_flag("--json", *json, "Print one JSON object instead of a table");
  cmd->callback([op, json, &exit_code] {
    std::vector<const Primitive*> prims;
    for (const auto* p : all_primitives())
      if (p->differentiable() && (op->empty() || p->name == *op)) prims.push_back(p);
    if (prims.empty()) {
      std::string names;
      for (const auto* p : all_primitives())
        if (p->differentiable()) names += (names.empty() ? "" : ", ") + std::string(p->name);
      throw ValueError(fmt::format("check: no differentiable primitive named '{}' (known: {})", *op, names));
    }
    bool all_pass = true;
    nlohmann::json out = {{"primitives", nlohmann::json::array()}};
    if (!*json) fmt::print("{:<16} {:>6} {:>14}  {}\n", "primitive", "cases", "max |ad-fd|", "result");
    for (const auto* p : prims) {
      PrimitiveReport r = check_primitive(*p);
      all_pass &= r.pass && r.cases > 0;
      if (*json) {
        out["primitives"].push_back({{"name", r.name}, {"cases", r.cases}, {"max_abs_error", r.max_abs_error},
                                     {"checks", r.checks}, {"pass", r.pass && r.cases > 0}, {"failures", r.failures},
                                     {"labels", r.labels}, {"coverage", r.coverage}, {"not_applicable", r.not_applicable},
                                     {"kinks", std::string(p->kinks)}});
      } else {
        fmt::print("{:<16} {:>6} {:>14.3e}  {}\n", r.name, r.cases, r.max_abs_error, r.pass && r.cases > 0 ? "pass" : "FAIL");
        for (const auto& f : r.failures) fmt::print("    {}\n", f);
      }
    }
    if (*json) {
      out["pass"] = all_pass;
      std::cout << out.dump() << "\n";
    } else {
      fmt::print("{} primitives, {}\n", prims.size(), all_pass ? "all pass" : "FAILURES");
    }
    exit_code = all_pass ? 0 : 1;
  });
}

}  // namespace chainrule::cli
