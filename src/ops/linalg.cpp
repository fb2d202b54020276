// matmul: C = op(A) op(B) with optional transposes folded into the GEMM call, and NumPy-style
// broadcasting of leading (batch) dimensions. The VJPs are matmuls with other transpose flags,
// so no transposed copy is ever made.
#include "kernels/convert.h"
#include "kernels/gemm_half.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

namespace {

struct Flags {
  bool ta, tb;
};
Flags flags(const Params& p) { return {(p.code & 1) != 0, (p.code & 2) != 0}; }

Tensor matmul_forward(std::span<const Tensor> x, const Params& p) {
  const Tensor& a = x[0];
  const Tensor& b = x[1];
  auto [ta, tb] = flags(p);
  check_same_dtype("matmul", a, b);
  if (a.dim() < 2 || b.dim() < 2)
    throw ShapeError(fmt::format("matmul: operands must have rank >= 2, got {} @ {}", a.shape().str(), b.shape().str()));
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const std::size_t ra = as.size(), rb = bs.size();
  const std::int64_t m = ta ? as[ra - 1] : as[ra - 2], k = ta ? as[ra - 2] : as[ra - 1];
  const std::int64_t k2 = tb ? bs[rb - 1] : bs[rb - 2], n = tb ? bs[rb - 2] : bs[rb - 1];
  if (k != k2)
    throw ShapeError(fmt::format("matmul: inner dimensions differ: {}{} @ {}{} ({} != {})", as.str(), ta ? "ᵀ" : "", bs.str(),
                                 tb ? "ᵀ" : "", k, k2));
  Shape abatch = as.slice(0, ra - 2), bbatch = bs.slice(0, rb - 2);
  Shape batch = kernels::broadcast_shapes("matmul", abatch, bbatch);
  const std::int64_t nb = batch.numel();
  const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
  if (is_half(a.dtype())) {
    // bfloat16 on oneDNN's bf16 GEMM (float32 accumulation, one rounding of the result) where the
    // CPU has one; float16, and bfloat16 elsewhere, in float32 as bind does for other kernels.
    if (a.dtype() == DType::bf16) {
      Tensor o32 = empty(batch + Shape{m, n}, DType::f32);
      const bfloat16* pa = kernels::in<bfloat16>(a);
      const bfloat16* pb = kernels::in<bfloat16>(b);
      float* pc = kernels::out<float>(o32);
      bool done;
      if (bbatch.numel() == 1 && abatch.numel() == nb && !ta) {
        done = kernels::gemm_bf16(false, tb, nb * m, n, k, pa, lda, pb, ldb, pc, n);
      } else {
        Shape sa = kernels::broadcast_strides(abatch, batch), sb = kernels::broadcast_strides(bbatch, batch);
        Shape idx = Shape::filled(batch.size(), 0);
        done = nb > 0;
        for (std::int64_t i = 0; i < nb && done; ++i) {
          std::int64_t oa = 0, ob = 0;
          for (std::size_t d = 0; d < batch.size(); ++d) oa += idx[d] * sa[d], ob += idx[d] * sb[d];
          done = kernels::gemm_bf16(ta, tb, m, n, k, pa + oa * m * k, lda, pb + ob * k * n, ldb, pc + i * m * n, n);
          for (std::size_t d = batch.size(); d-- > 0;) {
            if (++idx[d] < batch[d]) break;
            idx[d] = 0;
          }
        }
      }
      if (done) return kernels::convert(o32, DType::bf16);
    }
    Tensor up[] = {kernels::convert(a, DType::f32), kernels::convert(b, DType::f32)};
    return kernels::convert(matmul_forward(up, p), a.dtype());
  }
  Tensor o = empty(batch + Shape{m, n}, a.dtype());
  kernels::dispatch_float(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = kernels::in<T>(a);
    const T* pb = kernels::in<T>(b);
    T* pc = kernels::out<T>(o);
    const bool vectors = abatch.numel() == 1 && bbatch.numel() == nb && n == 1;  // A shared, each B a vector
    if (vectors && nb == k && kernels::is_identity(pb, k)) {
      // The identity seed of jacfwd / jacrev: C[i] = op(A) e_i, so C = op(A)ᵀ, a copy with no
      // multiply-adds (a Jacobian's first layer in forward mode, its last in reverse, is free).
      if (ta)
        std::copy(pa, pa + k * m, pc);
      else
        kernels::transpose_matrices(pa, pc, 1, m, k);
      return 0;
    }
    if (bbatch.numel() == 1 && abatch.numel() == nb && !ta) {
      // B is shared by every batch entry: one GEMM over all rows of A.
      kernels::gemm(false, tb, nb * m, n, k, T(1), pa, lda, pb, ldb, T(0), pc, n);
      return 0;
    }
    if (vectors) {
      // A shared, each B a vector (vmap of a matrix-vector product, as in jacfwd and jacrev):
      // every B[i] is k contiguous values and every C[i] m, so C = B_rows op(A)ᵀ in one GEMM.
      if (!ta && nb * 8 <= m) {
        // Few vectors, long results (jacfwd of a wide layer): op(A) [B_1 … B_nb] is the GEMM
        // shape oneDNN runs fastest (1.6x for 16 vectors through a 4096×512 matrix), then one
        // transpose into the batch-first layout.
        Tensor wide = empty({m, nb}, a.dtype());
        T* pw = kernels::out<T>(wide);
        kernels::gemm(false, true, m, nb, k, T(1), pa, lda, pb, k, T(0), pw, nb);
        // A plain loop: kernels::transpose_matrices (tiled, parallel) measured slower for this
        // tall, 16-wide shape (jacfwd (16, 4096): 0.91 against 0.62 ms).
        for (std::int64_t i = 0; i < nb; ++i)
          for (std::int64_t r = 0; r < m; ++r) pc[i * m + r] = pw[r * nb + i];
        return 0;
      }
      kernels::gemm(false, !ta, nb, m, k, T(1), pb, k, pa, lda, T(0), pc, m);
      return 0;
    }
    Shape sa = kernels::broadcast_strides(abatch, batch), sb = kernels::broadcast_strides(bbatch, batch);
    Shape idx = Shape::filled(batch.size(), 0);
    for (std::int64_t i = 0; i < nb; ++i) {
      std::int64_t oa = 0, ob = 0;
      for (std::size_t d = 0; d < batch.size(); ++d) oa += idx[d] * sa[d], ob += idx[d] * sb[d];
      kernels::gemm(ta, tb, m, n, k, T(1), pa + oa * m * k, lda, pb + ob * k * n, ldb, T(0), pc + i * m * n, n);
      for (std::size_t d = batch.size(); d-- > 0;) {
        if (++idx[d] < batch[d]) break;
        idx[d] = 0;
      }
    }
    return 0;
  });
  return o;
}

using cases::Domain;

}  // namespace


const Primitive matmul_p{
    .name = "matmul",
    .forward = matmul_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      auto [ta, tb] = flags(c.p);
      return i == 0 ? matmul(t, c.x[1], ta, tb) : matmul(c.x[0], t, ta, tb);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      auto [ta, tb] = flags(c.p);
      const Tensor& a = c.x[0];
      const Tensor& b = c.x[1];
      if (i == 0) return ta ? matmul(b, ct, tb, true) : matmul(ct, b, false, !tb);
      return tb ? matmul(ct, a, true, ta) : matmul(a, ct, !ta, false);
    },
    .batching = Batching::Broadcast,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto mm = [](std::span<const Tensor> x) { return matmul(x[0], x[1]); };
      return std::vector<OpCase>{
          cases::single("[2,3]@[3,4]", {s({2, 3}, 1), s({3, 4}, 2)}, mm),
          cases::single("[3]@[3,2] (vector)", {s({3}, 3), s({3, 2}, 4)}, mm),
          cases::single("[2,3]@[3]", {s({2, 3}, 5), s({3}, 6)}, mm),
          cases::single("[2,2,3]@[3,1] batched", {s({2, 2, 3}, 7), s({3, 1}, 8)}, mm),
          cases::single("[2,1,1,3]@[4,3,2] broadcast", {s({2, 1, 1, 3}, 9), s({4, 3, 2}, 10)}, mm),
          cases::single("[0,3]@[3,2] empty", {s({0, 3}, 11), s({3, 2}, 12)}, mm),
          cases::single("[2,0]@[0,3] empty inner", {s({2, 0}, 13), s({0, 3}, 14)}, mm),
          cases::single("[3,2]ᵀ@[3,4]", {s({3, 2}, 15), s({3, 4}, 16)}, [](auto x) { return matmul(x[0], x[1], true, false); }),
          cases::single("[2,3]@[4,3]ᵀ", {s({2, 3}, 17), s({4, 3}, 18)}, [](auto x) { return matmul(x[0], x[1], false, true); }),
          cases::single("[16,24]@[24,20]", {s({16, 24}, 19), s({24, 20}, 20)}, mm),
      };
    },
    .half_kernels = true,
};

// f = x Wᵀ + β for every row x of x [..., in] (W [out, in], β [out]): the dense layer as one
// primitive, so that β is added in the GEMM's epilogue and its gradient is one column sum
// (PyTorch's addmm). Its rules are matmuls and a sum.
namespace {

Tensor linear_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& in = x[0];
  const Tensor& w = x[1];
  const Tensor& bias = x[2];
  check_same_dtype("linear", in, w);
  check_same_dtype("linear", w, bias);
  if (w.dim() != 2 || bias.dim() != 1 || bias.shape()[0] != w.shape()[0] || in.dim() < 1 || in.shape().back() != w.shape()[1])
    throw ShapeError(fmt::format("linear: needs x [..., in], weight [out, in] and bias [out], got {}, {} and {}", in.shape().str(),
                                 w.shape().str(), bias.shape().str()));
  const std::int64_t n_in = w.shape()[1], n_out = w.shape()[0], rows = in.shape().slice(0, in.shape().size() - 1).numel();
  if (is_half(in.dtype())) {
    // As matmul: bfloat16 on the bf16 GEMM, the bias added in float32, one rounding at the end.
    Tensor o32 = empty(in.shape().slice(0, in.shape().size() - 1) + Shape{n_out}, DType::f32);
    float* pc = kernels::out<float>(o32);
    if (in.dtype() == DType::bf16 &&
        kernels::gemm_bf16(false, true, rows, n_out, n_in, kernels::in<bfloat16>(in), n_in, kernels::in<bfloat16>(w), n_in, pc, n_out)) {
      const Tensor b32 = kernels::convert(bias, DType::f32);
      const float* pb = kernels::in<float>(b32);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < n_out; ++j) pc[r * n_out + j] += pb[j];
      return kernels::convert(o32, DType::bf16);
    }
    Tensor up[] = {kernels::convert(in, DType::f32), kernels::convert(w, DType::f32), kernels::convert(bias, DType::f32)};
    return kernels::convert(linear_forward(up, {}), in.dtype());
  }
  Tensor o = empty(in.shape().slice(0, in.shape().size() - 1) + Shape{n_out}, in.dtype());
  kernels::dispatch_float(in.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    kernels::gemm_bias(false, true, rows, n_out, n_in, kernels::in<T>(in), n_in, kernels::in<T>(w), n_in, kernels::in<T>(bias),
                       kernels::out<T>(o), n_out);
    return 0;
  });
  return o;
}

Axes leading_axes(std::size_t rank) {
  Axes a;
  for (std::size_t i = 0; i + 1 < rank; ++i) a.push_back(static_cast<std::int64_t>(i));
  return a;
}

}  // namespace

const Primitive linear_p{
    .name = "linear",
    .forward = linear_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      if (i == 0) return matmul(t, c.x[1], false, true);
      if (i == 1) return matmul(c.x[0], t, false, true);
      return broadcast_to(t, c.shape(0).slice(0, c.shape(0).size() - 1) + t.shape());
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      if (i == 0) return matmul(ct, c.x[1]);
      if (i == 2) return ct.dim() == 1 ? ct : sum(ct, leading_axes(ct.shape().size()));
      // dW = Σ over rows of ct_rowᵀ x_row: one GEMM over all leading axes.
      const Tensor& x = c.x[0];
      const std::int64_t rows = x.shape().slice(0, x.shape().size() - 1).numel();
      auto as_rows = [rows](const Tensor& t) { return t.dim() == 2 ? t : reshape(t, {rows, t.shape().back()}); };
      return matmul(as_rows(ct), as_rows(x), true, false);
    },
    .batching = Batching::Leading,  // linear() falls back to matmul + add when the weights are traced
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto f = [](std::span<const Tensor> x) { return linear(x[0], x[1], x[2]); };
      auto lin = [&](std::string label, Shape x, std::int64_t out, std::uint64_t seed) {
        const std::int64_t in = x.back();
        return cases::single(std::move(label), {s(x, seed), s({out, in}, seed + 1), s({out}, seed + 2)}, f);
      };
      return std::vector<OpCase>{
          lin("[3] vector", {3}, 2, 1),           lin("[4,3] rows", {4, 3}, 5, 4),     lin("[2,2,3] batched rows", {2, 2, 3}, 4, 7),
          lin("[1,1] size-1", {1, 1}, 1, 10),     lin("[0,3] empty batch", {0, 3}, 2, 13), lin("[2,0] no inputs", {2, 0}, 3, 16),
          lin("[16,24] medium", {16, 24}, 20, 19),
      };
    },
    .half_kernels = true,
};

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  // Traced weights (vmap over parameters, forward mode in the weights) take the composition,
  // which every transform batches; the fused primitive batches only its input.
  if ((weight.defined() && weight.impl()->frame) || (bias.defined() && bias.impl()->frame))
    return add(matmul(x, weight, false, true), bias);
  return bind(linear_p, {x, weight, bias});
}

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  if (a.dim() == 0 || b.dim() == 0)
    throw ShapeError(fmt::format("matmul: operands must not be scalars, got {} @ {}", a.shape().str(), b.shape().str()));
  if (a.dtype() != b.dtype()) {  // type promotion, as every binary op
    DType t = promote_types(a.dtype(), b.dtype());
    return matmul(a.dtype() == t ? a : cast(a, t), b.dtype() == t ? b : cast(b, t), transpose_a, transpose_b);
  }
  // NumPy semantics for vectors: promote, multiply, drop the added axis (both, for a dot product).
  if (a.dim() == 1 && b.dim() == 1) return reshape(matmul(unsqueeze(a, 0), unsqueeze(b, -1), false, false), Shape{});
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b, false, transpose_b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, -1), transpose_a, false), -1);
  Params p;
  p.code = (transpose_a ? 1 : 0) | (transpose_b ? 2 : 0);
  return bind(matmul_p, {a, b}, p);
}
Tensor matmul(const Tensor& a, const Tensor& b) { return matmul(a, b, false, false); }

const Primitive* const kLinalgPrimitives[] = {&matmul_p, &linear_p};
std::span<const Primitive* const> linalg_primitives() { return kLinalgPrimitives; }

}  // namespace chainrule
