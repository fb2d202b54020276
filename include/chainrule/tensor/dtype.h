#pragma once
#include <cstdint>
#include <string_view>

#include "chainrule/tensor/half.h"

namespace chainrule {

// float32 and float64 are differentiable, and so are the 16-bit bfloat16 and float16 (their kernels
// compute in float32, see docs/ARCHITECTURE.md); int64 (labels, indices) and bool (masks) are not.
enum class DType : std::uint8_t { f32, f64, i64, b8, bf16, f16 };

constexpr std::size_t itemsize(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
    case DType::b8: return 1;
    case DType::bf16: return 2;
    case DType::f16: return 2;
  }
  return 0;
}
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i64: return "int64";
    case DType::b8: return "bool";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
  }
  return "?";
}
constexpr bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }
constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || is_half(t); }

// Type promotion, the array API's table on chainrule's dtypes: bool < int64 < float16 < float32 <
// float64, bfloat16 beside float16 (float16 with bfloat16 gives float32, as PyTorch; the array API
// leaves it unspecified), and an integer with a float gives the float (as NumPy, JAX and PyTorch
// do). Binary operations cast both operands to this type before their primitive runs.
constexpr int promotion_rank(DType t) {
  switch (t) {
    case DType::b8: return 0;
    case DType::i64: return 1;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::f32: return 3;
    case DType::f64: return 4;
  }
  return 0;
}
constexpr DType promote_types(DType a, DType b) {
  if (is_half(a) && is_half(b) && a != b) return DType::f32;
  return promotion_rank(a) >= promotion_rank(b) ? a : b;
}

// The dtype of tensors made without one (zeros, randn, tensor, layers' parameters), and of a
// floating scalar meeting an integer tensor: float32 unless set_default_dtype chose float64
// (torch.set_default_dtype). Process-wide; set it before building models.
DType get_default_dtype();
void set_default_dtype(DType dtype);  // float32 or float64, else DTypeError

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<bool>() { return DType::b8; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::bf16; }
template <> constexpr DType dtype_of<float16>() { return DType::f16; }

}  // namespace chainrule
