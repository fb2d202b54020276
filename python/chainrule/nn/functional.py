"""chainrule.nn.functional: the functions of torch.nn.functional that chainrule has, under
PyTorch's names and argument names (``import chainrule.nn.functional as F``)."""
from .. import _core
from .._core import (relu, gelu, silu, elu, leaky_relu, sigmoid, tanh, conv2d, conv_transpose2d,  # noqa: F401
                     max_pool2d, avg_pool2d, adaptive_avg_pool2d, nll_loss, l1_loss, huber_loss, smooth_l1_loss,
                     kl_div, binary_cross_entropy, binary_cross_entropy_with_logits)
from . import cross_entropy  # noqa: F401  (with label_smoothing)

__all__ = ["relu", "gelu", "silu", "elu", "leaky_relu", "sigmoid", "tanh", "softplus", "logsigmoid", "softmax",
           "log_softmax", "linear", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
           "cross_entropy", "mse_loss", "nll_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "kl_div",
           "binary_cross_entropy", "binary_cross_entropy_with_logits"]


def softmax(input, dim=-1):
    return _core.softmax(input, dim)


def log_softmax(input, dim=-1):
    return _core.log_softmax(input, dim)


def logsigmoid(input):
    return _core.log_sigmoid(input)


def softplus(input, beta=1.0):
    """log(1 + exp(beta x)) / beta, exact for every x (PyTorch's threshold is not needed)."""
    if beta == 1.0:
        return _core.softplus(input)
    return _core.softplus(input * beta) / beta


def linear(input, weight, bias=None):
    """input @ weight.T + bias (weight [out, in])."""
    if bias is None:
        return _core.matmul(input, weight, transpose_b=True)
    return _core.linear(input, weight, bias)


def mse_loss(input, target, reduction="mean"):
    return _core.mse_loss(input, target, reduction)
