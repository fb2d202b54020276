#pragma once
// bfloat16 GEMM on oneDNN's matmul primitive: C (float32) = op(A) op(B), row-major, bfloat16
// inputs, float32 accumulation. Kept apart from kernels.h so that its users alone include it.
#include <cstdint>
#include <string>

#include "chainrule/tensor/half.h"

namespace chainrule::kernels {

// False (C untouched) where oneDNN offers only its reference kernel for bf16 (a CPU without
// AVX-512), or for an empty product: the caller then computes in float32.
bool gemm_bf16(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const bfloat16* a, std::int64_t lda,
               const bfloat16* b, std::int64_t ldb, float* c, std::int64_t ldc);
// oneDNN's name for its bf16 matmul kernel on this CPU ("" if only the reference one).
std::string bf16_gemm_kernel();

}  // namespace chainrule::kernels
