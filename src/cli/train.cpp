// Placeholder until the networks work lands: registers nothing.
#include "cli/commands.h"

namespace chainrule::cli {
void add_train_commands(CLI::App&, int&) {}
}  // namespace chainrule::cli
