#include "chainrule/nn/checkpoint.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "chainrule/ops/ops.h"

namespace chainrule::nn {

namespace {

// The weight-matrix elements a model of this spec holds at the least (biases and norms aside),
// in double: only compared against what a file holds, so hostile metadata cannot make
// load_model build a petabyte model before finding that the tensors do not match.
double min_parameters(const ModelSpec& spec) {
  auto d = [](std::int64_t v) { return static_cast<double>(v); };
  if (spec.kind == ModelSpec::Kind::MLP) {
    double n = 0;
    for (std::size_t i = 0; i + 1 < spec.sizes.size(); ++i) n += d(spec.sizes[i]) * d(spec.sizes[i + 1]);
    return n;
  }
  if (spec.kind == ModelSpec::Kind::ResNet) {  // the convolution and fc weights (BN adds 4 per channel)
    double n = d(spec.image[0]) * 9 * d(spec.stages.front().first);
    std::int64_t c = spec.stages.front().first;
    for (auto [w, blocks] : spec.stages) {
      n += 9 * d(c) * d(w) + 9 * d(w) * d(w) * d(2 * blocks - 1) + (c != w ? d(c) * d(w) : 0);
      c = w;
    }
    return n + d(c) * d(spec.out);
  }
  if (spec.kind == ModelSpec::Kind::DenseNet) return d(spec.image[0]) * 9 * d(2 * spec.growth) + d(spec.growth) * d(spec.out);
  if (spec.kind == ModelSpec::Kind::UNet) return d(spec.image[0]) * 9 * d(spec.base_channels) + d(spec.base_channels) * d(spec.out);
  return d(spec.in) * d(spec.width) + 2 * d(spec.blocks) * d(spec.width) * d(spec.width) + d(spec.width) * d(spec.out);
}

}  // namespace

static_assert(std::endian::native == std::endian::little, "safetensors payloads are little-endian; add byte swapping");

io::RawTensor to_raw(const Tensor& t) {
  io::RawTensor r;
  switch (t.dtype()) {
    case DType::f32: r.dtype = "F32"; break;
    case DType::f64: r.dtype = "F64"; break;
    case DType::i64: r.dtype = "I64"; break;
    case DType::b8: r.dtype = "BOOL"; break;
    case DType::bf16: r.dtype = "BF16"; break;
    case DType::f16: r.dtype = "F16"; break;
  }
  r.shape = t.shape().vec();
  Tensor c = concrete(t);
  const std::size_t n = static_cast<std::size_t>(t.numel()) * itemsize(t.dtype());
  r.data.resize(n);
  if (n) std::memcpy(r.data.data(), static_cast<const char*>(c.impl()->storage->data) + c.impl()->offset * static_cast<std::int64_t>(itemsize(t.dtype())), n);
  return r;
}

Tensor from_raw(const io::RawTensor& r, const std::string& name) {
  DType dt;
  if (r.dtype == "F32") dt = DType::f32;
  else if (r.dtype == "F64") dt = DType::f64;
  else if (r.dtype == "I64") dt = DType::i64;
  else if (r.dtype == "BOOL") dt = DType::b8;
  else if (r.dtype == "BF16") dt = DType::bf16;
  else if (r.dtype == "F16") dt = DType::f16;
  else throw IOError(fmt::format("{}: dtype {} is not supported (F32, F64, BF16, F16, I64, BOOL)", name, r.dtype));
  Tensor t = empty(Shape(r.shape), dt);
  if (static_cast<std::size_t>(t.numel()) * itemsize(dt) != r.data.size())
    throw IOError(fmt::format("{}: {} bytes for shape {} {}", name, r.data.size(), t.shape().str(), r.dtype));
  if (!r.data.empty()) std::memcpy(t.impl()->storage->data, r.data.data(), r.data.size());
  return t;
}

void save_tensors(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  io::Safetensors st;
  st.metadata = metadata;
  for (const auto& [n, t] : tensors) st.tensors.emplace_back(n, to_raw(t));
  io::save_safetensors(path, st);
}

TensorFile load_tensors(const std::string& path, std::optional<DType> floats_as) {
  if (floats_as && !is_floating(*floats_as))
    throw DTypeError(fmt::format("load_tensors: floats_as must be a float dtype, got {}", dtype_name(*floats_as)));
  io::Safetensors st = io::read_safetensors(path);
  TensorFile f;
  f.metadata = st.metadata;
  for (const auto& [n, r] : st.tensors) {
    Tensor t = from_raw(r, path + ": tensor '" + n + "'");
    if (floats_as && is_floating(t.dtype())) t = cast(t, *floats_as);
    f.tensors.emplace(n, t);
  }
  return f;
}

void save_model(const std::string& path, const Module& model, const std::string& spec, std::int64_t step) {
  NamedTensors all;
  for (auto& [n, t] : model.state_dict()) all.emplace_back(n, t);
  save_tensors(path, all, {{kModelKey, spec}, {kStepKey, std::to_string(step)}});
}

LoadedModel load_model(const std::string& path, const std::optional<std::string>& spec, DType dtype) {
  TensorFile f = load_tensors(path);
  LoadedModel out;
  auto it = f.metadata.find(kModelKey);
  if (it != f.metadata.end()) {
    out.spec = ModelSpec::parse(it->second);
    if (spec && ModelSpec::parse(*spec).str() != out.spec.str())
      throw ValueError(fmt::format("{}: --model {} contradicts the checkpoint's model {}", path, *spec, it->second));
  } else if (spec) {
    out.spec = ModelSpec::parse(*spec);
  } else {
    throw ValueError(fmt::format("{}: the file has no \"{}\" metadata; pass --model SPEC", path, kModelKey));
  }
  if (auto s = f.metadata.find(kStepKey); s != f.metadata.end()) {
    try {
      out.step = std::stoll(s->second);
    } catch (const std::exception&) {
      throw IOError(fmt::format("{}: metadata {} = '{}' is not an integer", path, kStepKey, s->second));
    }
  }
  double held = 0;
  for (const auto& [n, t] : f.tensors) held += static_cast<double>(t.numel());
  if (min_parameters(out.spec) > held) {
    throw IOError(fmt::format("{}: model {} needs at least {:.0f} parameters but the file's tensors hold {:.0f} "
                              "elements (field '__metadata__' entry '{}')",
                              path, out.spec.str(), min_parameters(out.spec), held, kModelKey));
  }
  out.model = build_model(out.spec, dtype);
  try {
    out.model->load_state_dict(f.tensors, true);
  } catch (const Error& e) {
    throw IOError(fmt::format("{}: does not match model {}: {}", path, out.spec.str(), e.what()));
  }
  return out;
}

}  // namespace chainrule::nn
