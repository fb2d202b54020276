#pragma once
// Hooks of anomaly mode used by bind() and the reverse pass.
#include <span>
#include <string>
#include <string_view>

#include "chainrule/tensor/tensor.h"

namespace chainrule::detail {

// While alive, anomaly reports add "while computing the backward of ...".
class BackwardContext {
 public:
  explicit BackwardContext(const std::string& what);
  ~BackwardContext();
  BackwardContext(const BackwardContext&) = delete;
  BackwardContext& operator=(const BackwardContext&) = delete;

 private:
  std::string prev_;
};

std::string describe_site();
std::int64_t first_non_finite(const Tensor& t);
// Throws NumericalError if `out` (concrete) holds a NaN or Inf that its inputs did not.
void check_output(std::string_view op, std::span<const Tensor> inputs, const Tensor& out);

}  // namespace chainrule::detail
