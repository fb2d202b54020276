#pragma once
// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of UTF-8 JSON describing each tensor, then the raw data buffer.
// This layer knows nothing of chainrule::Tensor; it moves dtype strings, shapes and bytes.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chainrule::io {

// One tensor as stored: `data` is the little-endian, row-major payload, exactly
// numel(shape) * itemsize(dtype) bytes.
struct RawTensor {
  std::string dtype;  // "F32", "F64", "I64", "I32", "U8", "BOOL", "F16", "BF16", ...
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;
};

struct Safetensors {
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
  // In the order the header lists them (which, for files we write, is sorted by name).
  std::vector<std::pair<std::string, RawTensor>> tensors;

  const RawTensor* find(std::string_view name) const;  // nullptr if absent
};

// Largest header accepted, as in the reference implementation: bounds the JSON parse.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype string, or 0 if unknown (sub-byte types such as
// F4 are not supported and count as unknown).
std::size_t safetensors_dtype_size(std::string_view dtype);

// Throw IOError naming the file, the offending field or tensor, and the byte offset where one
// applies. Every structural rule of the format is checked: header bounds, UTF-8, JSON object,
// metadata of strings, known dtypes, shapes, byte counts, and that the data offsets tile the
// data buffer exactly (no overlap, no gap, starting at 0, ending at the end of the file).
// Duplicate keys in the header are rejected too, rather than silently keeping one.
Safetensors read_safetensors(const std::string& path);
Safetensors parse_safetensors(std::span<const std::byte> bytes, const std::string& name_for_errors);

// Deterministic: the header is compact JSON with "__metadata__" first (omitted when empty),
// then the tensors sorted by name with data offsets laid out contiguously from 0 in that
// order, padded with spaces to a multiple of 8 bytes. Throws ValueError if the struct cannot
// be written as a valid file (unknown dtype, negative dimension, data size not matching the
// shape, duplicate or reserved names, strings that are not UTF-8).
std::vector<std::byte> serialize_safetensors(const Safetensors& st);
// serialize_safetensors + write_file_atomic.
void save_safetensors(const std::string& path, const Safetensors& st);

}  // namespace chainrule::io
