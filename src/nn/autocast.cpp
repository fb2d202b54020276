#include "chainrule/nn/autocast.h"

#include <fmt/format.h>

#include "chainrule/errors.h"

namespace chainrule::nn {

namespace {
thread_local std::optional<DType> t_autocast;
}

AutocastGuard::AutocastGuard(std::optional<DType> dtype) : prev_(t_autocast) {
  if (dtype && !is_half(*dtype))
    throw DTypeError(fmt::format("autocast: the compute dtype must be bfloat16 or float16, got {}", dtype_name(*dtype)));
  t_autocast = dtype;
}
AutocastGuard::~AutocastGuard() { t_autocast = prev_; }

std::optional<DType> autocast_dtype() { return t_autocast; }

}  // namespace chainrule::nn
