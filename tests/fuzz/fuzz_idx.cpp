// libFuzzer target for parse_idx on raw bytes: plain IDX images and, through the gzip seeds,
// gzip streams (the reader tells them apart by the magic bytes). Any input must either parse
// or throw IOError, and a parsed array must hold exactly product(dims) * itemsize bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "chainrule/errors.h"
#include "chainrule/io/idx.h"

// Small enough that a decompression bomb hits the cap quickly, large enough for real seeds.
constexpr std::uint64_t kMaxDecompressed = 1 << 20;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const chainrule::io::IdxArray a = chainrule::io::parse_idx(bytes, "fuzz-input", kMaxDecompressed);
    std::uint64_t n = chainrule::io::idx_itemsize(a.type_code);
    if (n == 0 || a.dims.empty() || a.dims.size() > 8) std::abort();
    for (std::int64_t d : a.dims) n *= static_cast<std::uint64_t>(d);
    if (n != a.data.size()) std::abort();
  } catch (const chainrule::IOError&) {
  }
  return 0;
}
