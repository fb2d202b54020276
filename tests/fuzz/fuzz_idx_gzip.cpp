// libFuzzer target for the IDX reader behind gzip: the input is compressed into a well-formed
// gzip stream, so the fuzzer explores IDX headers as the reader sees them after inflating.
// The last input byte picks what happens to the stream: below 0xC0 nothing, then truncation,
// then a bit flip. Oracle: an intact stream gives exactly the same outcome as the raw bytes
// (same array, or IOError for both); a truncated stream is always an IOError; a bit flip gives
// IOError or (in a header field such as the time stamp) the same array as the raw bytes.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include "chainrule/errors.h"
#include "chainrule/io/idx.h"

namespace {

constexpr std::uint64_t kMaxDecompressed = 1 << 20;

std::vector<std::byte> gzip(const std::uint8_t* data, std::size_t size) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<std::byte> out(deflateBound(&zs, static_cast<uLong>(size)) + 32);
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::optional<chainrule::io::IdxArray> parse(std::span<const std::byte> bytes) {
  try {
    return chainrule::io::parse_idx(bytes, "fuzz-input", kMaxDecompressed);
  } catch (const chainrule::IOError&) {
    return std::nullopt;
  }
}

bool same(const std::optional<chainrule::io::IdxArray>& a, const std::optional<chainrule::io::IdxArray>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->type_code == b->type_code && a->dims == b->dims && a->data == b->data);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > kMaxDecompressed) return 0;
  const std::uint8_t knob = data[size - 1];
  const std::span<const std::byte> raw(reinterpret_cast<const std::byte*>(data), size - 1);
  // Raw bytes that are themselves gzip would be inflated twice on one side only.
  if (raw.size() >= 2 && raw[0] == std::byte{0x1f} && raw[1] == std::byte{0x8b}) return 0;
  const auto expected = parse(raw);
  std::vector<std::byte> gz = gzip(data, size - 1);
  if (knob < 0xC0) {
    if (!same(parse(gz), expected)) std::abort();
    return 0;
  }
  if (knob < 0xE0) {
    gz.resize(gz.size() * (knob - 0xC0) / 32);  // cut somewhere before the end: never valid
    if (parse(gz)) std::abort();
    return 0;
  }
  gz[gz.size() * (knob - 0xE0) / 32] ^= std::byte{0x5A};  // flip bits somewhere
  const auto damaged = parse(gz);
  if (damaged && !same(damaged, expected)) std::abort();
  return 0;
}
