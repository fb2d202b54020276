#include "chainrule/autodiff/linearize.h"

#include <fmt/format.h>

#include "chainrule/autodiff/tracer.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

std::int64_t LinearTape::add(const Tensor& tracer) {
  auto id = values++;
  tracers.push_back(tracer);
  ids.emplace(tracer.impl(), id);
  return id;
}

std::int64_t LinearTape::id_of(const Tensor& tracer) const {
  auto it = ids.find(tracer.impl());
  return it == ids.end() ? -1 : it->second;
}

std::vector<Tensor> LinearTape::apply(std::span<const std::int64_t> ins, std::span<const Tensor> us,
                                      std::span<const std::int64_t> outs) const {
  std::vector<Tensor> t(static_cast<std::size_t>(values));  // undefined: a symbolic zero
  for (std::size_t i = 0; i < ins.size(); ++i) t[static_cast<std::size_t>(ins[i])] = us[i];
  for (const auto& e : entries) {
    Ctx c{e.primals, e.out, e.params, e.shapes};
    Tensor acc;
    for (std::size_t i = 0; i < e.in_ids.size(); ++i) {
      if (e.in_ids[i] < 0) continue;
      const Tensor& ti = t[static_cast<std::size_t>(e.in_ids[i])];
      if (!ti.defined()) continue;
      Tensor d = e.prim->jvp(static_cast<int>(i), ti, c);
      if (!d.defined()) continue;
      if (d.shape() != e.out.shape()) d = broadcast_to(d, e.out.shape());
      acc = acc.defined() ? chainrule::add(acc, d) : d;
    }
    t[static_cast<std::size_t>(e.out_id)] = acc;
  }
  std::vector<Tensor> r;
  for (auto id : outs) r.push_back(t[static_cast<std::size_t>(id)]);
  return r;
}

namespace detail {

Tensor make_linearize_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal) {
  Tensor t = make_jvp_tracer(f, primal, Tensor());  // a primal and a frame; the tape holds the rest
  f->tape->add(t);
  return t;
}

// Apply one level down and record the application (not for piecewise-constant primitives: their
// output is a constant of the linear map).
Tensor eval_linearize(const std::shared_ptr<Frame>& f, const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  LinearTape::Entry e{&p, params, {}, {}, {}, {}, -1};
  e.primals.resize(xs.size());
  e.shapes.resize(xs.size());
  e.in_ids.resize(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    bool mine = is_traced_by(xs[i], f.get());
    e.primals[i] = mine ? xs[i].impl()->primal : xs[i];
    e.shapes[i] = xs[i].shape();
    e.in_ids[i] = mine ? f->tape->id_of(xs[i]) : -1;
  }
  Tensor out = bind(p, e.primals, params);
  if (!p.differentiable()) return out;
  Tensor tracer = make_linearize_tracer(f, out);
  e.out = out;
  e.out_id = f->tape->id_of(tracer);
  f->tape->entries.push_back(std::move(e));
  return tracer;
}

}  // namespace detail

}  // namespace chainrule
