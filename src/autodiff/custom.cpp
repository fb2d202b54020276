// custom_function: one generic primitive whose forward kernel and rules call the user's
// callables, held in the primitive's typed attributes.
#include "chainrule/autodiff/custom.h"

#include "autodiff/custom_internal.h"

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
  if (lead == 0) {
    Tensor out = r.forward(to_vector(x));
    // An output that is an input (an identity with a custom rule) must be a tensor of its own:
    // eager mode attaches this primitive's node to the output.
    for (const auto& xi : x)
      if (out.impl() == xi.impl()) return xi.contiguous_clone();
    return out;
  }
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

bool detail::has_custom_batch_rule(const Primitive& p, const Params& params) {
  return &p == &custom_p && params.attrs<CustomAttrs>().rules->batch;
}

Tensor detail::eval_custom_batch(const std::shared_ptr<Frame>& f, std::span<const Tensor> xs, const Params& params) {
  const CustomRules& r = *params.attrs<CustomAttrs>().rules;
  std::vector<Tensor> vals;
  std::vector<std::optional<std::int64_t>> axes;
  for (const auto& x : xs) {
    const bool batched = is_traced_by(x, f.get());
    vals.push_back(batched ? x.impl()->primal : x);
    axes.push_back(batched ? std::optional<std::int64_t>(0) : std::nullopt);
  }
  auto [out, axis] = r.batch(f->batch_size, vals, axes);
  if (!out.defined()) throw AutodiffError(fmt::format("custom function '{}': its batching rule returned an undefined tensor", r.name));
  if (!axis) return out;  // the same for every example
  const auto rank = static_cast<std::int64_t>(out.dim());
  if (*axis < -rank || *axis >= rank || out.shape()[static_cast<std::size_t>(*axis < 0 ? *axis + rank : *axis)] != f->batch_size)
    throw AutodiffError(fmt::format("custom function '{}': its batching rule returned shape {} with batch axis {}, which is not "
                                    "an axis of size {} (the batch size)", r.name, out.shape().str(), *axis, f->batch_size));
  return make_batch_tracer(f, vmap_movedim(out, *axis < 0 ? *axis + rank : *axis, 0));
}

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
