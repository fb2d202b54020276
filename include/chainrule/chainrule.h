#pragma once
// chainrule: automatic differentiation and neural networks in C++20.
#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/checkpoint.h"
#include "chainrule/autodiff/compile.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/primitive.h"
#include "chainrule/autodiff/chain.h"
#include "chainrule/autodiff/custom.h"
#include "chainrule/autodiff/stop_gradient.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/errors.h"
#include "chainrule/ops/array_api.h"
#include "chainrule/ops/einsum.h"
#include "chainrule/ops/indexing.h"
#include "chainrule/ops/linalg.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"
#include "chainrule/tensor/tensor.h"

namespace cr = chainrule;
