#pragma once
// Mixed precision, as torch.autocast on the CPU: while an AutocastGuard(DType::bf16) lives on a
// thread, Linear layers compute x Wᵀ + b from bfloat16 copies of their float32 operands (oneDNN's
// bf16 GEMM, float32 accumulation) and return float32. The parameters stay float32 (the master
// weights), so their gradients, which come back through `cast`, and the optimizer's state are
// float32 too. Under bf16, Conv2d and ConvTranspose2d multiply bfloat16 roundings of their float32
// operands inside oneDNN's convolutions (Conv2dOptions::bf16: float32 accumulation and result,
// the backward convolutions likewise). Everything else (activations, normalisation, losses) runs
// as it would without it.
#include <optional>

#include "chainrule/tensor/dtype.h"

namespace chainrule::nn {

class AutocastGuard {
 public:
  explicit AutocastGuard(std::optional<DType> dtype);  // bf16, f16 or nullopt (off); else DTypeError
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  std::optional<DType> prev_;
};

// The dtype Linear (and, for bf16, convolution) layers compute in on this thread, if autocast is on.
std::optional<DType> autocast_dtype();

}  // namespace chainrule::nn
