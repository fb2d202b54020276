#pragma once
// Blocks of chainrule._core defined outside module.cpp, each registered from PYBIND11_MODULE.
#include <pybind11/pybind11.h>

#include <chainrule/tensor/dtype.h>

namespace chainrule::python {

// chainrule.nn (modules, nn.init, losses, model specs, checkpoints), chainrule.optim,
// chainrule.data, chainrule.io and train(): nn_bindings.cpp.
void bind_nn(pybind11::module_& m);
// DLPack exchange (from_dlpack, Tensor.__dlpack__, Tensor.__dlpack_device__): dlpack.cpp.
void bind_dlpack(pybind11::module_& m);

// A dtype argument: "float32"/"f32"/..., a chainrule.DType, or a numpy dtype or type.
DType dtype_arg(const pybind11::handle& h);

}  // namespace chainrule::python
