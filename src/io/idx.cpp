#include "chainrule/io/idx.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string_view>
#include <system_error>

#include "chainrule/errors.h"
#include "chainrule/io/atomic_file.h"

namespace chainrule::io {
namespace {

[[noreturn]] void fail(const std::string& file, const std::string& msg) {
  throw IOError(fmt::format("idx '{}': {}", file, msg));
}

bool is_gzip(std::span<const std::byte> b) {
  return b.size() >= 2 && b[0] == std::byte{0x1f} && b[1] == std::byte{0x8b};
}

// Inflates one or more concatenated gzip members (what `gzip -d` accepts). zlib's gz* file
// API would pass a truncated or non-gzip file through without complaint, so the stream is
// driven by hand and every way it can end short is an error.
std::vector<std::uint8_t> gunzip(std::span<const std::byte> in, std::uint64_t max_out, const std::string& file) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(file, "zlib inflateInit2 failed");
  struct End {
    z_stream* zs;
    ~End() { inflateEnd(zs); }
  } end{&zs};

  // The last member's trailer holds its size mod 2^32: a good first guess for one-member files.
  std::uint64_t guess = 0;
  if (in.size() >= 4) {
    for (std::size_t i = 0; i < 4; ++i) guess |= std::to_integer<std::uint64_t>(in[in.size() - 4 + i]) << (8 * i);
  }
  // One byte past the limit is enough to know the limit was crossed.
  const std::uint64_t cap = max_out == std::numeric_limits<std::uint64_t>::max() ? max_out : max_out + 1;
  // The trailer is untrusted: bound the first allocation by deflate's best ratio (~1032:1) and
  // a fixed ceiling, then grow by doubling.
  guess = std::min<std::uint64_t>({guess + 1, 1040 * static_cast<std::uint64_t>(in.size()), 256ull << 20});
  std::vector<std::uint8_t> out(
      static_cast<std::size_t>(std::min<std::uint64_t>(cap, std::max<std::uint64_t>(guess, 1 << 16))));
  std::size_t filled = 0, consumed = 0;
  constexpr std::size_t kChunk = 1u << 30;  // avail_in / avail_out are 32-bit

  for (;;) {
    if (filled == out.size()) {
      if (out.size() >= cap) {
        fail(file, fmt::format("decompressed data exceeds the limit of {} bytes (at compressed offset {})", max_out,
                               consumed));
      }
      out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(cap, 2 * static_cast<std::uint64_t>(out.size()))));
    }
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data() + consumed));
    zs.avail_in = static_cast<uInt>(std::min(in.size() - consumed, kChunk));
    zs.next_out = out.data() + filled;
    zs.avail_out = static_cast<uInt>(std::min(out.size() - filled, kChunk));
    const uInt in_before = zs.avail_in, out_before = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    consumed += in_before - zs.avail_in;
    filled += out_before - zs.avail_out;

    if (rc == Z_STREAM_END) {
      if (consumed == in.size()) break;
      if (!is_gzip(in.subspan(consumed))) {
        fail(file, fmt::format("{} bytes of trailing data after the gzip stream at compressed offset {}",
                               in.size() - consumed, consumed));
      }
      if (inflateReset(&zs) != Z_OK) fail(file, "zlib inflateReset failed");
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_out == 0) continue;  // out of room: grow and retry
    if (rc == Z_BUF_ERROR && consumed == in.size()) {
      fail(file, fmt::format("gzip stream truncated: input ends at compressed offset {} before the end of the "
                             "stream ({} bytes decompressed so far)",
                             consumed, filled));
    }
    fail(file, fmt::format("corrupt gzip stream at compressed offset {}: {}", consumed,
                           zs.msg != nullptr ? zs.msg : fmt::format("zlib error {}", rc)));
  }
  if (filled > max_out) {
    fail(file,
         fmt::format("decompressed data exceeds the limit of {} bytes (at compressed offset {})", max_out, consumed));
  }
  out.resize(filled);
  return out;
}

void to_host_order(std::uint8_t* p, std::size_t n_bytes, std::size_t itemsize) {
  if constexpr (std::endian::native == std::endian::big) return;
  if (itemsize == 1) return;
  for (std::size_t i = 0; i < n_bytes; i += itemsize) std::reverse(p + i, p + i + itemsize);
}

}  // namespace

std::size_t idx_itemsize(std::uint8_t type_code) {
  switch (type_code) {
    case 0x08: return 1;
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: return 4;
    case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
  }
}

IdxArray parse_idx(std::span<const std::byte> bytes, const std::string& file, std::uint64_t max_decompressed_bytes) {
  const bool gz = is_gzip(bytes);
  std::vector<std::uint8_t> inflated;
  std::span<const std::uint8_t> s;
  if (gz) {
    inflated = gunzip(bytes, max_decompressed_bytes, file);
    s = inflated;
  } else {
    if (bytes.size() > max_decompressed_bytes) {
      fail(file, fmt::format("file is {} bytes, over the limit of {} bytes", bytes.size(), max_decompressed_bytes));
    }
    s = {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()};
  }
  // Offsets below are into what the IDX parser sees; for gzip files that is the inflated data.
  const char* off = gz ? "decompressed offset" : "offset";

  if (s.size() < 4) fail(file, fmt::format("field 'magic': file has only {} bytes, need 4 at {} 0", s.size(), off));
  if (s[0] != 0 || s[1] != 0) {
    fail(file, fmt::format("field 'magic': bytes at {} 0 must be 00 00, got {:02x} {:02x}{}", off, s[0], s[1],
                           gz ? "" : " (not an IDX file, nor gzip)"));
  }
  IdxArray a;
  a.type_code = s[2];
  const std::size_t itemsize = idx_itemsize(a.type_code);
  if (itemsize == 0) fail(file, fmt::format("field 'type code' at {} 2: unknown type code 0x{:02x}", off, a.type_code));
  const std::size_t ndims = s[3];
  if (ndims < 1 || ndims > 8) {
    fail(file, fmt::format("field 'dimension count' at {} 3 is {}, expected 1 to 8", off, ndims));
  }
  const std::size_t header = 4 + 4 * ndims;
  if (s.size() < header) {
    fail(file, fmt::format("field 'dims': header truncated at {} {}, {} dimensions need {} header bytes", off, s.size(),
                           ndims, header));
  }
  std::uint64_t need = itemsize;
  bool overflow = false;
  for (std::size_t i = 0; i < ndims; ++i) {
    const std::uint8_t* p = s.data() + 4 + 4 * i;
    const std::uint32_t d =
        (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
    a.dims.push_back(d);
    overflow |= __builtin_mul_overflow(need, std::uint64_t{d}, &need);
  }
  if (overflow) {
    fail(file, fmt::format("field 'dims' [{}] at {} 4: payload size overflows 64 bits", fmt::join(a.dims, ", "), off));
  }
  const std::uint64_t have = s.size() - header;
  if (have < need) {
    fail(file, fmt::format("payload truncated: dims [{}] of type 0x{:02x} need {} bytes after the header at {} {}, "
                           "but only {} are present (data ends at {} {})",
                           fmt::join(a.dims, ", "), a.type_code, need, off, header, have, off, s.size()));
  }
  if (have > need) {
    fail(file, fmt::format("payload has {} trailing bytes at {} {}: dims [{}] of type 0x{:02x} need exactly {} bytes",
                           have - need, off, header + need, fmt::join(a.dims, ", "), a.type_code, need));
  }

  if (gz) {
    inflated.erase(inflated.begin(), inflated.begin() + static_cast<std::ptrdiff_t>(header));
    a.data = std::move(inflated);
  } else {
    a.data.assign(s.begin() + static_cast<std::ptrdiff_t>(header), s.end());
  }
  to_host_order(a.data.data(), a.data.size(), itemsize);
  return a;
}

IdxArray read_idx(const std::string& path, std::uint64_t max_decompressed_bytes) {
  // A gzip file can be slightly larger than its contents (incompressible data); allow for
  // that so the real limit is enforced on the decompressed size.
  const std::uint64_t slack = max_decompressed_bytes / 64 + 65536;
  const std::uint64_t max_file = max_decompressed_bytes > std::numeric_limits<std::size_t>::max() - slack
                                     ? std::numeric_limits<std::size_t>::max()
                                     : max_decompressed_bytes + slack;
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_file) {
    fail(path, fmt::format("file is {} bytes, too large to hold at most {} bytes of IDX data even compressed", size,
                           max_decompressed_bytes));
  }
  return parse_idx(read_file(path, static_cast<std::size_t>(max_file)), path, max_decompressed_bytes);
}

}  // namespace chainrule::io
