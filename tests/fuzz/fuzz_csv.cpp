// libFuzzer target for parse_csv. The first input byte picks the options (label column -1..2,
// header auto / yes / no); the rest is the text. Any input must either parse or throw IOError,
// and a parsed table must be consistent: rows x cols finite values, one non-negative label
// per row, a header of cols + 1 names when there is one.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "chainrule/errors.h"
#include "chainrule/io/csv.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int label_column = data[0] % 4 - 1;
  const std::optional<bool> has_header =
      data[0] / 4 % 3 == 0 ? std::nullopt : std::optional<bool>(data[0] / 4 % 3 == 1);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const chainrule::io::CsvTable t = chainrule::io::parse_csv(text, "fuzz-input", label_column, has_header);
    if (t.rows <= 0 || t.cols < 0) std::abort();
    if (t.values.size() != static_cast<std::size_t>(t.rows * t.cols)) std::abort();
    if (t.labels.size() != static_cast<std::size_t>(t.rows)) std::abort();
    if (!t.header.empty() && t.header.size() != static_cast<std::size_t>(t.cols + 1)) std::abort();
    for (double v : t.values) {
      if (!std::isfinite(v)) std::abort();
    }
    for (std::int64_t y : t.labels) {
      if (y < 0) std::abort();
    }
  } catch (const chainrule::IOError&) {
  }
  return 0;
}
