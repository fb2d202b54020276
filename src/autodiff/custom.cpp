// custom_function: one generic primitive whose forward kernel and rules call the user's
// callables, held in the primitive's typed attributes.
#include "chainrule/autodiff/custom.h"

#include <fmt/format.h>

#include <memory>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/primitive.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/errors.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

namespace {

struct CustomAttrs {
  std::shared_ptr<const CustomRules> rules;
  std::vector<std::size_t> ranks;  // of the inputs where the function was called
};

std::vector<Tensor> to_vector(std::span<const Tensor> xs) { return {xs.begin(), xs.end()}; }

void check_like(const CustomRules& r, const char* what, std::size_t i, const Tensor& got, const Shape& shape, DType dtype) {
  if (got.shape() != shape || got.dtype() != dtype)
    throw AutodiffError(fmt::format("custom function '{}': its {} {} is {} {}, expected {} {}", r.name, what, i,
                                    dtype_name(got.dtype()), got.shape().str(), dtype_name(dtype), shape.str()));
}

// The VJP: the user's, or the transpose of the user's JVP (the VJP of t -> jvp(t), linear in t).
std::vector<Tensor> cotangents(const CustomRules& r, const std::vector<Tensor>& xs, const Tensor& out, const Tensor& ct) {
  std::vector<Tensor> g;
  if (r.vjp) {
    g = r.vjp(xs, out, ct);
  } else {
    std::vector<Tensor> zeros;
    for (const auto& x : xs) zeros.push_back(zeros_like(x));
    g = vjp([&](const std::vector<Tensor>& ts) { return r.jvp(xs, out, ts); }, zeros).pullback(ct);
  }
  if (g.size() != xs.size())
    throw AutodiffError(fmt::format("custom function '{}': its VJP returned {} cotangents for {} inputs", r.name, g.size(), xs.size()));
  return g;
}

// The JVP of input i: the user's (other tangents zero), or the transpose of the VJP in ct.
Tensor tangent(const CustomRules& r, int i, const std::vector<Tensor>& xs, const Tensor& out, const Tensor& t) {
  if (r.jvp) {
    std::vector<Tensor> ts;
    for (std::size_t j = 0; j < xs.size(); ++j) ts.push_back(static_cast<int>(j) == i ? t : zeros_like(xs[j]));
    return r.jvp(xs, out, ts);
  }
  auto pullback = vjp([&](const Tensor& ct) { return cotangents(r, xs, out, ct)[static_cast<std::size_t>(i)]; }, zeros_like(out)).pullback;
  return pullback(t);
}

Tensor custom_forward(std::span<const Tensor> x, const Params& p) {
  const auto& a = p.attrs<CustomAttrs>();
  const CustomRules& r = *a.rules;
  NoGradGuard no_grad;  // the value only: the node of this primitive carries the derivative
  const std::size_t lead = x.empty() ? 0 : x[0].shape().size() - a.ranks[0];
  if (lead == 0) return r.forward(to_vector(x));
  // Under vmap every input carries the same leading batch axes (Materialize): fold them into one
  // and run the user's function per example through vmap, which needs nothing of it.
  const Shape batch = x[0].shape().slice(0, lead);
  std::vector<Tensor> folded;
  for (std::size_t i = 0; i < x.size(); ++i) folded.push_back(reshape(x[i], Shape{batch.numel()} + x[i].shape().slice(lead)));
  Tensor out = vmap([&](const std::vector<Tensor>& xs) { return r.forward(xs); }, {InAxis{0}})(folded);
  return reshape(out, batch + out.shape().slice(1));
}

std::vector<Tensor> custom_vjp_all(const Tensor& ct, const Ctx& c, const std::vector<bool>&) {
  const CustomRules& r = *c.p.attrs<CustomAttrs>().rules;
  auto xs = to_vector(c.x);
  auto g = cotangents(r, xs, c.out, ct);
  for (std::size_t i = 0; i < g.size(); ++i)
    if (g[i].defined()) check_like(r, "cotangent of input", i, g[i], c.shape(static_cast<int>(i)), xs[i].dtype());
  return g;
}

Tensor custom_jvp_rule(int i, const Tensor& t, const Ctx& c) {
  const CustomRules& r = *c.p.attrs<CustomAttrs>().rules;
  Tensor out_t = tangent(r, i, to_vector(c.x), c.out, t);
  if (out_t.defined()) check_like(r, "output tangent for input", static_cast<std::size_t>(i), out_t, c.out.shape(), c.out.dtype());
  return out_t;
}

const Primitive custom_p{
    .name = "custom_function",
    .forward = custom_forward,
    .jvp = custom_jvp_rule,
    .vjp_all = custom_vjp_all,
    .batching = Batching::Materialize,
    .saves = kSaveInputs | kSaveOutput,
};

}  // namespace

std::function<Tensor(const std::vector<Tensor>&)> custom_function(CustomRules rules) {
  if (!rules.forward) throw ValueError(fmt::format("custom_function '{}': needs a forward function", rules.name));
  if (!rules.vjp && !rules.jvp) throw ValueError(fmt::format("custom_function '{}': needs a VJP or a JVP rule", rules.name));
  auto shared = std::make_shared<const CustomRules>(std::move(rules));
  return [shared](const std::vector<Tensor>& xs) {
    if (xs.empty()) throw ValueError(fmt::format("custom function '{}': needs at least one input", shared->name));
    std::vector<std::size_t> ranks;
    for (const auto& x : xs) ranks.push_back(x.shape().size());
    return chainrule::bind(custom_p, std::span<const Tensor>(xs), Params::with_attrs(CustomAttrs{shared, std::move(ranks)}));
  };
}

}  // namespace chainrule
