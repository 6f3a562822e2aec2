"""minigen: a small, readable autograd engine on NumPy (CPU) or CuPy (GPU).

Reading order: backend -> autograd -> tensor -> ops/ -> gradcheck -> nn/ -> optim -> models/.
"""

from minigen import autograd  # noqa: I001  (first: tensor.py imports it)
from minigen import backend, cuda, fused
from minigen.autograd import Function, enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from minigen.backend import Device, manual_seed
from minigen.tensor import Tensor
from minigen.creation import (
    arange,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from minigen.ops.elementwise import maximum, minimum, where
from minigen.ops.join import cat, chunk, pad, split, stack
from minigen.ops.matmul import matmul
from minigen import gradcheck  # the module, callable as the function: mg.gradcheck(fn, x)
from minigen.gradcheck import GradcheckError, GradcheckResult, gradgradcheck
from minigen.serialization import CheckpointError, load, save
from minigen import nn, optim, data, utils  # noqa: E402  (after the engine they build on)
from minigen.debug import detect_anomaly, trace

import numpy as _np

float32 = _np.float32
float64 = _np.float64
float16 = _np.float16
int64 = _np.int64
int32 = _np.int32
long = _np.int64
bool_ = _np.bool_
uint8 = _np.uint8


def device(spec: str) -> Device:
    return Device(spec)


def is_tensor(obj: object) -> bool:
    return isinstance(obj, Tensor)


def exp(x: Tensor) -> Tensor:
    return x.exp()


def log(x: Tensor) -> Tensor:
    return x.log()


def sqrt(x: Tensor) -> Tensor:
    return x.sqrt()


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return x.abs()


def sin(x: Tensor) -> Tensor:
    return x.sin()


def cos(x: Tensor) -> Tensor:
    return x.cos()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def relu(x: Tensor) -> Tensor:
    return x.relu()


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    return x.clamp(min, max)


def sum(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return x.sum(dim=dim, keepdim=keepdim)


def mean(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return x.mean(dim=dim, keepdim=keepdim)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    return x.logsumexp(dim=dim, keepdim=keepdim)


def softmax(x: Tensor, dim: int) -> Tensor:
    return x.softmax(dim)


def reshape(x: Tensor, shape) -> Tensor:
    return x.reshape(shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    return x.transpose(dim0, dim1)


def permute(x: Tensor, dims) -> Tensor:
    return x.permute(dims)


def argmax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return x.argmax(dim, keepdim)


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    return bool(_np.allclose(backend.asnumpy(a.data), backend.asnumpy(b.data), rtol=rtol, atol=atol))


__version__ = "0.1.0"
