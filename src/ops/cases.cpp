#include "ops/cases.h"

#include <cmath>

namespace chainrule::cases {

Tensor sample(const Shape& shape, Domain d, std::uint64_t seed) {
  Generator g(seed);
  switch (d) {
    case Domain::Real: return randn(shape, g, DType::f64);
    case Domain::Logits: return randn(shape, g, DType::f64) * 2.0;
    case Domain::Positive: return uniform(shape, 0.5, 2.0, g, DType::f64);
    case Domain::Unit: return uniform(shape, -0.9, 0.9, g, DType::f64);
    case Domain::AboveOne: return uniform(shape, 1.2, 3.0, g, DType::f64);
    case Domain::AwayFromZero: {
      Tensor m = uniform(shape, 0.2, 2.0, g, DType::f64);
      Tensor s = uniform(shape, -1.0, 1.0, g, DType::f64);
      return where(s > 0.0, m, -m);
    }
    case Domain::Quarter:
    case Domain::ThreeQuarter: {
      auto v = uniform(shape, -3.0, 4.0, g, DType::f64).to_vector<double>();
      for (auto& x : v) x = std::floor(x) + (d == Domain::Quarter ? 0.25 : 0.75);
      return from_vector(v, shape);
    }
  }
  return {};
}

std::vector<OpCase> along_axis(Tensor (*fn)(const Tensor&, std::int64_t), Domain d) {
  return {
      single("[5] axis0", {sample({5}, d, 1)}, [fn](auto x) { return fn(x[0], 0); }),
      single("[3,4] axis-1", {sample({3, 4}, d, 2)}, [fn](auto x) { return fn(x[0], -1); }),
      single("[3,4] axis0", {sample({3, 4}, d, 3)}, [fn](auto x) { return fn(x[0], 0); }),
      single("[2,1,3] axis1", {sample({2, 1, 3}, d, 4)}, [fn](auto x) { return fn(x[0], 1); }),
      single("[0,3] axis-1", {sample({0, 3}, d, 5)}, [fn](auto x) { return fn(x[0], -1); }),
      single("[1] axis0", {sample({1}, d, 6)}, [fn](auto x) { return fn(x[0], 0); }),
      single("[10,12] axis-1", {sample({10, 12}, d, 7)}, [fn](auto x) { return fn(x[0], -1); }),
  };
}

std::vector<OpCase> unary(Fn fn, Domain d) {
  std::vector<OpCase> cs;
  std::uint64_t seed = 100;
  for (Shape s : {Shape{}, Shape{1}, Shape{5}, Shape{2, 3}, Shape{0, 3}, Shape{3, 1, 4}, Shape{16, 24}})
    cs.push_back({"x" + s.str(), {sample(s, d, seed++)}, fn});
  return cs;
}

std::vector<OpCase> binary(Fn fn, Domain da, Domain db) {
  std::vector<OpCase> cs;
  std::uint64_t seed = 200;
  const std::pair<Shape, Shape> pairs[] = {
      {Shape{}, Shape{}},     {Shape{4}, Shape{4}},       {Shape{2, 3}, Shape{3}},     {Shape{3}, Shape{2, 3}},
      {Shape{2, 1}, Shape{1, 4}}, {Shape{}, Shape{2, 2}}, {Shape{0, 3}, Shape{3}},     {Shape{12, 20}, Shape{12, 20}}};
  for (const auto& [a, b] : pairs)
    cs.push_back({"a" + a.str() + " b" + b.str(), {sample(a, da, seed++), sample(b, db, seed++)}, fn});
  return cs;
}

OpCase single(std::string label, std::vector<Tensor> inputs, Fn fn, bool second_order) {
  return OpCase{std::move(label), std::move(inputs), std::move(fn), second_order};
}

}  // namespace chainrule::cases
