#include "chainrule/io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>
#include <tuple>

#include "chainrule/errors.h"
#include "chainrule/io/atomic_file.h"

namespace chainrule::io {
namespace {

// Plain json (std::map) rather than ordered_json: ordered_json inserts in linear time, which
// a header with a million entries turns into a hang. File order is recorded separately.
using Json = nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& msg) {
  throw IOError(fmt::format("safetensors '{}': {}", file, msg));
}

[[noreturn]] void bad_input(const std::string& msg) { throw ValueError(fmt::format("serialize_safetensors: {}", msg)); }

// Offset of the first byte that is not part of a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF are ill-formed), or nullopt.
std::optional<std::size_t> first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t i = 0, n = s.size();
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::nullopt;
}

// Short rendering of a JSON value for error messages; a hostile header can hold huge values.
std::string brief(const Json& v) {
  // dump() recurses; a header can nest millions of levels deep, so only flat values are shown.
  if (v.is_structured()) {
    bool flat = v.size() <= 8;
    for (const Json& child : v) flat = flat && !child.is_structured();
    if (!flat) return fmt::format("a JSON {} of {} elements", v.type_name(), v.size());
  }
  std::string s = v.dump(-1, ' ', true, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string shape_str(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Element count and byte count of a shape, or nullopt if either overflows 64 bits.
std::optional<std::uint64_t> byte_count(const std::vector<std::int64_t>& shape, std::size_t itemsize) {
  std::uint64_t n = itemsize;
  for (std::int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

// Byte offsets within the header of the top-level keys' opening quotes, in file order. The
// header has parsed as a JSON object (or as one up to an error), so a plain scan suffices:
// strings are skipped whole with their escapes, and a string at depth 1 right after '{' or ','
// is a key. nlohmann's DOM keeps no positions, and error messages should name one.
std::vector<std::size_t> top_level_key_offsets(std::string_view h) {
  std::vector<std::size_t> out;
  std::size_t depth = 0;
  bool expect_key = false;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const char c = h[i];
    if (c == '"') {
      if (depth == 1 && expect_key) out.push_back(i);
      expect_key = false;
      for (++i; i < h.size() && h[i] != '"'; ++i) {
        if (h[i] == '\\') ++i;
      }
    } else if (c == '{' || c == '[') {
      ++depth;
      expect_key = depth == 1 && c == '{';
    } else if (c == '}' || c == ']') {
      if (depth > 0) --depth;
    } else if (c == ',') {
      expect_key = depth == 1;
    }
  }
  return out;
}

struct Entry {
  std::string name;
  RawTensor tensor;
  std::uint64_t begin = 0, end = 0;
};

// A valid header nests three levels deep. The cap keeps hostile input away from anything
// recursive (dump, copies) and bounds the bookkeeping below.
constexpr std::size_t kMaxHeaderDepth = 64;

// A first SAX pass over the header. nlohmann's DOM keeps the last of duplicate keys silently
// and forgets key order; its callback parser could see both but is quadratic in the number of
// keys per object. This pass records the top-level key order, refuses duplicate keys (a file
// naming a tensor twice is ambiguous) and excessive nesting, and reports syntax errors with
// their byte position.
class HeaderScan {
 public:
  std::vector<std::string> key_order;  // top-level keys as they appear in the file
  std::string error;                   // set when the scan stops early
  bool duplicate_top_level_key = false;  // the error is key_order.size()'s key repeated

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(Json::number_integer_t) { return true; }
  bool number_unsigned(Json::number_unsigned_t) { return true; }
  bool number_float(Json::number_float_t, const Json::string_t&) { return true; }
  bool string(Json::string_t&) { return true; }
  bool binary(Json::binary_t&) { return true; }
  bool start_object(std::size_t) {
    if (!enter()) return false;
    objects_.emplace_back(depth_, std::set<std::string>{});
    return true;
  }
  bool end_object() {
    objects_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) { return enter(); }
  bool end_array() {
    --depth_;
    return true;
  }
  bool key(Json::string_t& k) {
    auto& [depth, keys] = objects_.back();
    if (!keys.insert(k).second) {
      error = depth == 1 ? fmt::format("header lists tensor '{}' more than once", k)
                         : fmt::format("header has duplicate key '{}' inside an entry", k);
      duplicate_top_level_key = depth == 1;
      return false;
    }
    if (depth == 1) key_order.push_back(k);
    return true;
  }
  bool parse_error(std::size_t position, const std::string& /*last_token*/, const nlohmann::detail::exception& e) {
    // position is 1-based within the header; the header starts at file offset 8.
    error =
        fmt::format("header is not valid JSON at file offset {}: {}", 8 + (position > 0 ? position - 1 : 0), e.what());
    return false;
  }

 private:
  bool enter() {
    if (++depth_ > kMaxHeaderDepth) {
      error = fmt::format("header nests JSON values more than {} levels deep", kMaxHeaderDepth);
      return false;
    }
    return true;
  }
  std::size_t depth_ = 0;
  std::vector<std::pair<std::size_t, std::set<std::string>>> objects_;  // (depth, keys seen)
};

struct Header {
  Json json;
  std::vector<std::string> key_order;
};

Header parse_header(std::string_view header, const std::string& file) {
  HeaderScan scan;
  bool ok = false;
  try {
    ok = Json::sax_parse(header.begin(), header.end(), &scan);
  } catch (const Json::exception& e) {
    fail(file, fmt::format("header could not be parsed: {}", e.what()));
  }
  if (!ok) {
    if (scan.duplicate_top_level_key) {
      const auto at = top_level_key_offsets(header);
      if (scan.key_order.size() < at.size()) {
        scan.error += fmt::format(" (again at file offset {})", 8 + at[scan.key_order.size()]);
      }
    }
    fail(file, scan.error.empty() ? std::string("header could not be parsed") : scan.error);
  }
  try {
    return Header{Json::parse(header.begin(), header.end()), std::move(scan.key_order)};
  } catch (const Json::exception& e) {  // not expected after a clean scan
    fail(file, fmt::format("header could not be parsed: {}", e.what()));
  }
}

Entry parse_entry(const std::string& name, const Json& v, const std::string& file, std::uint64_t data_start,
                  std::uint64_t entry_offset) {
  // Only formatted on failure: this runs once per tensor, and files can hold very many.
  const auto where = [&] { return fmt::format("tensor '{}' (header entry at file offset {})", name, entry_offset); };
  if (!v.is_object()) {
    fail(file, fmt::format("{}: entry is a JSON {}, expected an object with dtype, shape and data_offsets", where(),
                           v.type_name()));
  }
  auto field = [&](const char* key) -> const Json& {
    auto it = v.find(key);
    if (it == v.end()) fail(file, fmt::format("{}: missing field '{}'", where(), key));
    return *it;
  };

  Entry e;
  e.name = name;
  const Json& dtype = field("dtype");
  if (!dtype.is_string()) {
    fail(file, fmt::format("{}: field 'dtype' is {}, expected a string", where(), brief(dtype)));
  }
  e.tensor.dtype = dtype.get<std::string>();
  const std::size_t itemsize = safetensors_dtype_size(e.tensor.dtype);
  if (itemsize == 0) fail(file, fmt::format("{}: field 'dtype' has unknown dtype '{}'", where(), e.tensor.dtype));

  const Json& shape = field("shape");
  if (!shape.is_array()) {
    fail(file,
         fmt::format("{}: field 'shape' is {}, expected an array of non-negative integers", where(), brief(shape)));
  }
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const Json& d = shape[i];
    // is_number_unsigned excludes negatives and floats such as 2.0; values past INT64_MAX
    // would turn negative in RawTensor::shape.
    if (!d.is_number_unsigned() ||
        d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(file,
           fmt::format("{}: field 'shape' element {} is {}, expected a non-negative integer", where(), i, brief(d)));
    }
    e.tensor.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
  }
  const auto nbytes = byte_count(e.tensor.shape, itemsize);
  if (!nbytes) {
    fail(file, fmt::format("{}: field 'shape' {} of {}: element or byte count overflows 64 bits", where(),
                           shape_str(e.tensor.shape), e.tensor.dtype));
  }

  const Json& offs = field("data_offsets");
  if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
    fail(file, fmt::format("{}: field 'data_offsets' is {}, expected [begin, end] of non-negative integers", where(),
                           brief(offs)));
  }
  e.begin = offs[0].get<std::uint64_t>();
  e.end = offs[1].get<std::uint64_t>();
  if (e.begin > e.end) {
    fail(file, fmt::format("{}: field 'data_offsets' [{}, {}] has begin > end", where(), e.begin, e.end));
  }
  if (e.end - e.begin != *nbytes) {
    std::string at = e.begin <= std::numeric_limits<std::uint64_t>::max() - data_start
                         ? fmt::format(" (file offset {})", data_start + e.begin)
                         : std::string();
    fail(file,
         fmt::format("{}: field 'data_offsets' [{}, {}] spans {} bytes but shape {} of {} needs {} bytes{}", where(),
                     e.begin, e.end, e.end - e.begin, shape_str(e.tensor.shape), e.tensor.dtype, *nbytes, at));
  }
  return e;
}

std::string json_string(const std::string& s, std::string_view kind, std::string_view owner) {
  if (auto bad = first_invalid_utf8(s)) {
    bad_input(fmt::format("{} '{}' is not valid UTF-8 at byte {}", kind, owner, *bad));
  }
  return nlohmann::json(s).dump();
}

}  // namespace

std::size_t safetensors_dtype_size(std::string_view dtype) {
  static constexpr std::pair<std::string_view, std::size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},     {"C64", 8},
  };
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

const RawTensor* Safetensors::find(std::string_view name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

Safetensors parse_safetensors(std::span<const std::byte> bytes, const std::string& file) {
  if (bytes.size() < 8) {
    fail(file, fmt::format("file is {} bytes, shorter than the 8-byte header length at offset 0", bytes.size()));
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  if (n > kMaxSafetensorsHeaderBytes) {
    fail(file,
         fmt::format("header length {} at offset 0 exceeds the limit of {} bytes", n, kMaxSafetensorsHeaderBytes));
  }
  if (n > bytes.size() - 8) {
    fail(file, fmt::format("header length {} at offset 0 runs past the end of the file ({} bytes after offset 8)", n,
                           bytes.size() - 8));
  }
  const std::uint64_t data_start = 8 + n;
  const std::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  if (auto bad = first_invalid_utf8(header)) {
    fail(file, fmt::format("header is not valid UTF-8 at file offset {}", 8 + *bad));
  }
  const Header h = parse_header(header, file);
  const Json& j = h.json;
  if (!j.is_object()) fail(file, fmt::format("header at offset 8 is a JSON {}, expected an object", j.type_name()));

  Safetensors out;
  std::vector<Entry> entries;
  const std::vector<std::size_t> key_at = top_level_key_offsets(header);
  if (key_at.size() != h.key_order.size()) fail(file, "header keys could not be located");  // not expected
  for (std::size_t k = 0; k < h.key_order.size(); ++k) {
    const std::string& key = h.key_order[k];
    const std::uint64_t key_offset = 8 + key_at[k];
    const Json& value = j.at(key);
    if (key == "__metadata__") {
      const Json& m = value;
      if (!m.is_object()) {
        fail(file, fmt::format("field '__metadata__' at file offset {} is a JSON {}, expected an object", key_offset,
                               m.type_name()));
      }
      for (auto mt = m.begin(); mt != m.end(); ++mt) {
        if (!mt.value().is_string()) {
          fail(file, fmt::format("field '__metadata__' at file offset {}: entry '{}' is {}, expected a string",
                                 key_offset, mt.key(), brief(mt.value())));
        }
        out.metadata.emplace(mt.key(), mt.value().get<std::string>());
      }
    } else {
      entries.push_back(parse_entry(key, value, file, data_start, key_offset));
    }
  }

  // The offsets must tile [0, buffer size) exactly. Sorting by (begin, end) lets zero-byte
  // tensors sit at any boundary while overlaps and gaps show up as a mismatch with the
  // previous end.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return std::tie(a->begin, a->end) < std::tie(b->begin, b->end); });
  std::uint64_t covered = 0;
  const Entry* prev = nullptr;
  const std::uint64_t buffer = bytes.size() - data_start;
  // File offsets are only printed for data offsets inside the file; others could overflow.
  const auto file_offset = [&](std::uint64_t rel) {
    return rel <= buffer ? fmt::format(" (file offset {})", data_start + rel) : std::string();
  };
  for (const Entry* e : by_offset) {
    if (e->begin < covered) {
      fail(file, fmt::format("tensor '{}': field 'data_offsets' [{}, {}] overlaps tensor '{}' [{}, {}]{}", e->name,
                             e->begin, e->end, prev->name, prev->begin, prev->end, file_offset(e->begin)));
    }
    if (e->begin > covered) {
      const std::string at = file_offset(covered);
      if (prev == nullptr) {
        fail(file, fmt::format("tensor '{}': field 'data_offsets' [{}, {}] leaves a hole: the lowest offset must be "
                               "0 but is {}{}",
                               e->name, e->begin, e->end, e->begin, at));
      }
      fail(file, fmt::format("tensor '{}': field 'data_offsets' [{}, {}] leaves a hole of {} bytes after tensor "
                             "'{}' which ends at {}{}",
                             e->name, e->begin, e->end, e->begin - covered, prev->name, covered, at));
    }
    covered = e->end;
    prev = e;
  }
  if (covered < buffer) {
    fail(file, fmt::format("data buffer is {} bytes but the tensors' data_offsets cover only {}: {} unused bytes at "
                           "file offset {}",
                           buffer, covered, buffer - covered, data_start + covered));
  }
  if (covered > buffer) {
    fail(file, fmt::format("tensor '{}': field 'data_offsets' ends at {} but the data buffer is only {} bytes "
                           "(file truncated: {} bytes, data buffer starts at file offset {})",
                           prev->name, covered, buffer, bytes.size(), data_start));
  }

  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    auto first = bytes.begin() + static_cast<std::ptrdiff_t>(data_start + e.begin);
    e.tensor.data.assign(first, first + static_cast<std::ptrdiff_t>(e.end - e.begin));
    out.tensors.emplace_back(std::move(e.name), std::move(e.tensor));
  }
  return out;
}

Safetensors read_safetensors(const std::string& path) {
  const std::vector<std::byte> bytes = read_file(path, std::numeric_limits<std::size_t>::max());
  return parse_safetensors(bytes, path);
}

std::vector<std::byte> serialize_safetensors(const Safetensors& st) {
  std::vector<std::size_t> order(st.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return st.tensors[a].first < st.tensors[b].first; });

  std::string header = "{";
  if (!st.metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : st.metadata) {
      if (!first) header += ',';
      first = false;
      header += json_string(k, "metadata key", k);
      header += ':';
      header += json_string(v, "metadata value of key", k);
    }
    header += '}';
  }
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& [name, t] = st.tensors[order[i]];
    if (name == "__metadata__") bad_input("tensor name '__metadata__' is reserved by the format");
    if (i > 0 && st.tensors[order[i - 1]].first == name) bad_input(fmt::format("tensor '{}' appears twice", name));
    const std::size_t itemsize = safetensors_dtype_size(t.dtype);
    if (itemsize == 0) bad_input(fmt::format("tensor '{}': unknown dtype '{}'", name, t.dtype));
    for (std::int64_t d : t.shape) {
      if (d < 0) bad_input(fmt::format("tensor '{}': negative dimension in shape {}", name, shape_str(t.shape)));
    }
    const auto nbytes = byte_count(t.shape, itemsize);
    if (!nbytes || *nbytes != t.data.size()) {
      bad_input(fmt::format("tensor '{}': shape {} of {} needs {} bytes but data has {}", name, shape_str(t.shape),
                            t.dtype, nbytes ? fmt::format("{}", *nbytes) : std::string("more than 2^64"),
                            t.data.size()));
    }
    if (header.size() > 1) header += ',';
    header += json_string(name, "tensor name", name);
    header += fmt::format(R"(:{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", t.dtype,
                          fmt::format("[{}]", fmt::join(t.shape, ",")), offset, offset + t.data.size());
    offset += t.data.size();
  }
  header += '}';
  // Padding keeps the data buffer 8-byte aligned relative to the file start, so readers that
  // map the file can view it in place.
  header.resize((header.size() + 7) / 8 * 8, ' ');
  if (header.size() > kMaxSafetensorsHeaderBytes) {
    bad_input(fmt::format("header would be {} bytes, over the {}-byte limit readers accept", header.size(),
                          kMaxSafetensorsHeaderBytes));
  }

  std::vector<std::byte> out(8 + header.size() + offset);
  std::uint64_t n = header.size();
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
  std::memcpy(out.data() + 8, header.data(), header.size());
  std::byte* p = out.data() + 8 + header.size();
  for (std::size_t idx : order) {
    const auto& data = st.tensors[idx].second.data;
    if (!data.empty()) std::memcpy(p, data.data(), data.size());
    p += data.size();
  }
  return out;
}

void save_safetensors(const std::string& path, const Safetensors& st) {
  write_file_atomic(path, serialize_safetensors(st));
}

}  // namespace chainrule::io
