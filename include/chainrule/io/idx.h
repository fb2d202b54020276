#pragma once
// IDX files, the format of MNIST and Fashion-MNIST: two zero bytes, a type code, the number of
// dimensions, that many big-endian u32 sizes, then the big-endian row-major payload. Files may
// be gzip-compressed; gzip is recognised by its magic bytes, not by the file name.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace chainrule::io {

struct IdxArray {
  std::uint8_t type_code = 0;  // 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
  std::vector<std::int64_t> dims;
  // Raw payload, product(dims) * itemsize bytes, multi-byte values already converted from the
  // file's big-endian order to host order.
  std::vector<std::uint8_t> data;
};

// Bytes per element of an IDX type code, or 0 if the code is unknown.
std::size_t idx_itemsize(std::uint8_t type_code);

// Throws IOError naming the file, the field and the byte offset (an offset into the
// decompressed stream for gzip files, into the compressed file for gzip errors) on: a bad
// magic, unknown type code, dimension count outside 1..8, truncated header, a corrupt or
// truncated gzip stream (including trailing bytes after it), decompressed data larger than
// max_decompressed_bytes, or a payload that is shorter or longer than the dims require.
IdxArray read_idx(const std::string& path, std::uint64_t max_decompressed_bytes = 1ull << 30);
// The same on an in-memory image of a file (raw or gzip); read_idx is read_file + parse_idx.
IdxArray parse_idx(std::span<const std::byte> bytes, const std::string& name_for_errors,
                   std::uint64_t max_decompressed_bytes = 1ull << 30);

}  // namespace chainrule::io
