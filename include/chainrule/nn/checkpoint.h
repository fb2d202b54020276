#pragma once
// Checkpoints in safetensors, written atomically (io::save_safetensors). A model file holds the
// state_dict under PyTorch's names, with __metadata__ {"chainrule.model": SPEC,
// "chainrule.step": "N"} and nothing that varies between identical runs (no time, path or host),
// so `torch.nn.Sequential` built the same way loads it with safetensors.torch.load_file.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "chainrule/io/safetensors.h"
#include "chainrule/nn/module.h"
#include "chainrule/nn/spec.h"

namespace chainrule::nn {

// Tensor <-> safetensors payload (F32, F64, BF16, F16, I64, BOOL; little-endian).
io::RawTensor to_raw(const Tensor& t);
Tensor from_raw(const io::RawTensor& raw, const std::string& name_for_errors);

struct TensorFile {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
};
void save_tensors(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});
// With `floats_as` (say float32), every float tensor is converted to that dtype as it loads
// (BF16 and F16 exactly); integers and bools keep theirs.
TensorFile load_tensors(const std::string& path, std::optional<DType> floats_as = std::nullopt);

inline constexpr const char* kModelKey = "chainrule.model";
inline constexpr const char* kStepKey = "chainrule.step";

// Writes the module's state_dict with {"chainrule.model": spec, "chainrule.step": step}.
void save_model(const std::string& path, const Module& model, const std::string& spec, std::int64_t step);

struct LoadedModel {
  std::shared_ptr<Sequential> model;
  ModelSpec spec;
  std::int64_t step = -1;  // -1 when the file has no chainrule.step
};
// Builds the model of the file's spec (or `spec` for a file without one; a spec that contradicts
// the file's is an error) and loads its tensors, converted to `dtype`.
LoadedModel load_model(const std::string& path, const std::optional<std::string>& spec = std::nullopt, DType dtype = DType::f32);

}  // namespace chainrule::nn
