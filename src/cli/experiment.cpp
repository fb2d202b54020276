// Placeholder until the experiments land: registers nothing.
#include "cli/commands.h"

namespace chainrule::cli {
void add_experiment_command(CLI::App&, int&) {}
}  // namespace chainrule::cli
