#include "chainrule/io/csv.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <system_error>

#include "chainrule/errors.h"
#include "chainrule/io/atomic_file.h"

namespace chainrule::io {
namespace {

constexpr std::size_t kMaxCsvBytes = std::size_t{4} << 30;

// Names the line and column a person looks for, and the byte offset a program can seek to.
[[noreturn]] void fail(const std::string& file, std::int64_t line, std::size_t column, std::size_t offset,
                       const std::string& msg) {
  if (column > 0) {
    throw IOError(fmt::format("csv '{}': line {}, column {} (byte offset {}): {}", file, line, column, offset, msg));
  }
  throw IOError(fmt::format("csv '{}': line {} (byte offset {}): {}", file, line, offset, msg));
}

// Field text for messages; a corrupt file can put megabytes into one field.
std::string brief(std::string_view s) {
  if (s.size() > 40) return fmt::format("'{}...'", s.substr(0, 37));
  return fmt::format("'{}'", s);
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// Splits the text into records, tracking line numbers for messages. Records are produced one
// at a time so a large file never exists as millions of small strings at once.
class RecordReader {
 public:
  RecordReader(std::string_view text, const std::string& file) : s_(text), file_(file) {
    if (s_.starts_with("\xEF\xBB\xBF")) pos_ = 3;  // UTF-8 BOM, as spreadsheets write
  }

  // Reads the next non-blank record into `fields`, and each field's byte offset into
  // `offsets`; false at the end of the input. `line` is the line the record starts on.
  bool next(std::vector<std::string>& fields, std::vector<std::size_t>& offsets, std::int64_t& line) {
    fields.clear();
    offsets.clear();
    const std::size_t n = s_.size();
    for (;;) {  // skip blank lines
      std::size_t q = pos_;
      while (q < n && is_blank(s_[q])) ++q;
      if (q == n) {
        pos_ = n;
        return false;
      }
      if (s_[q] != '\n') break;
      pos_ = q + 1;
      ++line_;
    }
    line = line_;
    for (;;) {
      const std::size_t column = fields.size() + 1;
      while (pos_ < n && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
      offsets.push_back(pos_);
      std::string text;
      if (pos_ < n && s_[pos_] == '"') {
        const std::int64_t start_line = line_;
        const std::size_t start = pos_;
        ++pos_;
        for (;;) {
          if (pos_ >= n) fail(file_, start_line, column, start, "quoted field is never closed");
          const char c = s_[pos_++];
          if (c == '"') {
            if (pos_ < n && s_[pos_] == '"') {
              text += '"';
              ++pos_;
              continue;
            }
            break;
          }
          if (c == '\n') ++line_;
          text += c;
        }
        while (pos_ < n && is_blank(s_[pos_])) ++pos_;
        if (pos_ < n && s_[pos_] != ',' && s_[pos_] != '\n') {
          fail(file_, line_, column, pos_,
               fmt::format("unexpected {} after a closing quote", brief(s_.substr(pos_, 1))));
        }
      } else {
        const std::size_t start = pos_;
        while (pos_ < n && s_[pos_] != ',' && s_[pos_] != '\n' && s_[pos_] != '"') ++pos_;
        if (pos_ < n && s_[pos_] == '"') fail(file_, line_, column, pos_, "quote character inside an unquoted field");
        text = trim(s_.substr(start, pos_ - start));
      }
      fields.push_back(std::move(text));
      if (pos_ >= n) return true;
      if (s_[pos_++] == ',') continue;
      ++line_;  // consumed the '\n' ending the record
      return true;
    }
  }

 private:
  std::string_view s_;
  const std::string& file_;
  std::size_t pos_ = 0;
  std::int64_t line_ = 1;
};

enum class Num { ok, not_a_number, out_of_range, non_finite };

Num parse_number(std::string_view t, double& v) {
  if (t.starts_with('+')) {  // from_chars rejects an explicit '+', so strip exactly one
    t.remove_prefix(1);
    if (t.starts_with('+') || t.starts_with('-')) return Num::not_a_number;
  }
  if (t.empty()) return Num::not_a_number;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (end != t.data() + t.size()) return Num::not_a_number;
  if (ec == std::errc::result_out_of_range) return Num::out_of_range;
  if (ec != std::errc()) return Num::not_a_number;
  return std::isfinite(v) ? Num::ok : Num::non_finite;
}

// Accepts "3" and also "3.0", which pandas writes for integer columns that held a NaN once.
bool parse_label(std::string_view t, std::int64_t& label) {
  if (t.starts_with('-')) return false;  // even "-0": a sign says the writer meant something else
  std::string_view digits = t.starts_with('+') ? t.substr(1) : t;
  if (!digits.empty() && digits.front() != '-' && digits.front() != '+') {
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), label);
    if (ec == std::errc() && end == digits.data() + digits.size()) return label <= kMaxCsvLabel;
  }
  double v = 0;
  if (parse_number(t, v) != Num::ok || v < 0 || v != std::floor(v) || v > static_cast<double>(kMaxCsvLabel)) {
    return false;
  }
  label = static_cast<std::int64_t>(v);
  return true;
}

}  // namespace

CsvTable parse_csv(std::string_view text, const std::string& file, int label_column, std::optional<bool> has_header) {
  if (label_column < -1) {
    throw ValueError(
        fmt::format("parse_csv('{}'): label_column must be -1 (last) or a column index, got {}", file, label_column));
  }
  RecordReader reader(text, file);
  std::vector<std::string> fields;
  std::vector<std::size_t> offsets;
  std::int64_t line = 1;
  if (!reader.next(fields, offsets, line)) {
    throw IOError(fmt::format("csv '{}': empty file, no rows ({} bytes, all blank)", file, text.size()));
  }

  const std::size_t ncols = fields.size();
  const std::int64_t first_line = line;
  const std::size_t first_offset = offsets.front();
  const std::size_t label = label_column == -1 ? ncols - 1 : static_cast<std::size_t>(label_column);
  if (label >= ncols) {
    fail(file, line, 0, first_offset,
         fmt::format("label_column {} is past the last of the {} columns", label_column, ncols));
  }

  bool header = false;
  if (has_header) {
    header = *has_header;
  } else {
    double v;
    for (const std::string& f : fields) header |= !f.empty() && parse_number(f, v) == Num::not_a_number;
  }

  CsvTable t;
  t.cols = static_cast<std::int64_t>(ncols) - 1;
  if (header) {
    t.header = fields;
    if (!reader.next(fields, offsets, line)) {
      fail(file, first_line, 0, first_offset, "header row is not followed by any data rows");
    }
  }
  do {
    if (fields.size() != ncols) {
      fail(file, line, 0, offsets.front(),
           fmt::format("row has {} fields, expected {} as on line {}", fields.size(), ncols, first_line));
    }
    for (std::size_t c = 0; c < ncols; ++c) {
      const std::string& f = fields[c];
      if (c == label) {
        std::int64_t y = 0;
        if (!parse_label(f, y)) {
          fail(file, line, c + 1, offsets[c],
               fmt::format("label {} is not a class index, an integer from 0 to {}", brief(f), kMaxCsvLabel));
        }
        t.labels.push_back(y);
        continue;
      }
      double v = 0;
      switch (parse_number(f, v)) {
        case Num::ok: t.values.push_back(v); break;
        case Num::not_a_number:
          fail(file, line, c + 1, offsets[c],
               f.empty() ? std::string("empty field") : fmt::format("{} is not a number", brief(f)));
        case Num::out_of_range:
          fail(file, line, c + 1, offsets[c], fmt::format("{} is out of range for a double", brief(f)));
        case Num::non_finite:
          fail(file, line, c + 1, offsets[c], fmt::format("{} is not a finite number", brief(f)));
      }
    }
  } while (reader.next(fields, offsets, line));
  t.rows = static_cast<std::int64_t>(t.labels.size());
  return t;
}

CsvTable read_csv(const std::string& path, int label_column, std::optional<bool> has_header) {
  const std::vector<std::byte> bytes = read_file(path, kMaxCsvBytes);
  return parse_csv(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path, label_column,
                   has_header);
}

}  // namespace chainrule::io
