#pragma once
// Networks: modules, initialisers, losses, model specs, checkpoints.
#include "chainrule/nn/checkpoint.h"
#include "chainrule/nn/init.h"
#include "chainrule/nn/layers.h"
#include "chainrule/nn/loss.h"
#include "chainrule/nn/manual_backprop.h"
#include "chainrule/nn/module.h"
#include "chainrule/nn/resnet.h"
#include "chainrule/nn/spec.h"
