#pragma once
// Numeric CSV tables with one integer class-label column (e.g. Iris, Wine, small UCI sets).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chainrule::io {

struct CsvTable {
  std::vector<std::string> header;   // every column's name as in the file, label included; empty if none
  std::vector<double> values;        // rows x cols features, row-major, label column removed
  std::vector<std::int64_t> labels;  // one per row
  std::int64_t rows = 0;
  std::int64_t cols = 0;  // feature columns: the file's column count minus the label column
};

// Labels are class indices; a larger one would ask for an output layer this wide.
inline constexpr std::int64_t kMaxCsvLabel = 65535;

// Comma-separated; fields may be double-quoted (RFC 4180, "" for a quote, quoted line breaks
// allowed), surrounding spaces are ignored, blank lines skipped, CRLF and a UTF-8 BOM accepted.
// label_column: 0-based index of the label column, -1 for the last one.
// has_header: nullopt detects it (a header is a first row with any non-numeric field).
// Throws IOError naming the file, line, column and byte offset on: an empty file or no data
// rows, a non-numeric or non-finite feature, a row with a different field count than the
// first, a label that is not an integer from 0 to kMaxCsvLabel, a label_column past the last
// column, malformed quoting. Throws ValueError for label_column < -1.
CsvTable read_csv(const std::string& path, int label_column = -1, std::optional<bool> has_header = std::nullopt);
// The same on in-memory text; read_csv is read_file + parse_csv.
CsvTable parse_csv(std::string_view text, const std::string& name_for_errors, int label_column = -1,
                   std::optional<bool> has_header = std::nullopt);

}  // namespace chainrule::io
