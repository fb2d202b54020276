#pragma once
// check_grads of f(x, params...) = functional_call(module, params, x) in float64: the module's
// derivatives in its input and every parameter at once (tests of layers and model specs).
#include <map>
#include <span>
#include <string>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/nn/nn.h"

namespace chainrule::test_util {

inline CheckReport gradcheck_module(nn::Module& m, const Tensor& x, CheckOptions opts = {}) {
  m.to(DType::f64);
  std::vector<std::string> names;
  std::vector<Tensor> inputs{x};
  for (auto& [n, t] : m.named_parameters()) names.push_back(n), inputs.push_back(t.detach());
  return check_grads(
      [&](std::span<const Tensor> in) {
        std::map<std::string, Tensor> p;
        for (std::size_t i = 0; i < names.size(); ++i) p.emplace(names[i], in[i + 1]);
        return nn::functional_call(m, p, in[0]);
      },
      inputs, opts);
}

}  // namespace chainrule::test_util
