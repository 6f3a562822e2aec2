"""Fast paths of the activation backwards (``ops/activation.py``): raw arrays, in place.

Each function computes the same gradient as the readable formula in its op's
``backward``, from the arrays its forward saved, with as few passes over memory as
possible. On CUDA with ``minigen.fused`` switched on, softmax and the exact GELU hand
over to a fused kernel, for which the array code here is the reference.

**Passes over memory** (issue 18; r = one full-size read, w = one full-size write, for
x of shape (4096, 768) float32; per-row vectors are free). PyTorch makes about two per
op and direction, in one fused loop.

* softmax forward: max (r), x − max (r, w), exp (r, w), Σ (r), · 1/Σ (r, w): 8.
  Backward: Σ g ⊙ s (r, r), g − Σ (r, w), ⊙ s (r, r, w): 7.
* GELU forward: Φ and φ take 19 ufunc calls (about 50 r/w, but run on cache-sized blocks
  by ``elementwise_in_blocks``, so the memory sees x read once and Φ, φ written once),
  then x ⊙ Φ (r, r, w). Backward: x ⊙ φ (r, r, w), + Φ (r, r, w), ⊙ g (r, r, w): 9.

What is left is not memory traffic but arithmetic: NumPy's float32 ``exp`` takes
1.7 ns per element on this machine's CPU (5.3 ms for the array above, single-threaded),
more than PyTorch's whole softmax forward and backward on two threads (2.8 ms), and the
normal CDF's ``exp``, division and ``copysign`` cost 7 ms of GELU's forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from minigen import backend, fused
from minigen.kernels.normalization import sum_of_products

# The constants of the tanh GELU, c = √(2/π) and a (``ops.activation.GeluTanh``).
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715


# A block of this many elements (256 KiB in float32) and the temporaries of a chain of
# ufuncs on it fit in a core's L2 cache together, so the chain's intermediate passes run
# from cache instead of from memory.
ELEMENTWISE_BLOCK = 1 << 16


def elementwise_in_blocks(fn: Callable[[Any], tuple[Any, ...]], x: Any) -> tuple[Any, ...]:
    """``fn(x)`` for an elementwise ``fn`` that returns a tuple of arrays of x's shape,
    computed block by block on the CPU.

    A long chain of NumPy ufuncs (the normal CDF makes about twenty) over a large array
    streams every intermediate through main memory. On blocks of ``ELEMENTWISE_BLOCK``
    elements the intermediates stay in cache: measured (issue 18, one thread) 16-17 ms
    instead of 20-22 for the GELU forward of a (4096, 768) float32 array. A GPU gets one
    call: its kernels gain nothing from blocks and would pay a launch per block.
    """
    if backend.device_of(x).type != "cpu" or x.size <= ELEMENTWISE_BLOCK:
        return fn(x)
    flat = x.reshape(-1)  # a copy only if x is not contiguous
    outputs = None
    for start in range(0, flat.size, ELEMENTWISE_BLOCK):
        block = slice(start, start + ELEMENTWISE_BLOCK)
        results = fn(flat[block])
        if outputs is None:
            outputs = tuple(backend.xp_of(x).empty(flat.shape, dtype=r.dtype) for r in results)
        for out, result in zip(outputs, results):
            out[block] = result
    return tuple(out.reshape(x.shape) for out in outputs)


def softmax_backward(s: Any, grad: Any, dims: tuple[int, ...]) -> Any:
    """∂L/∂x = s ⊙ (g − Σⱼ gⱼsⱼ) from the saved output s: three passes, one new array."""
    if fused.applies(s, grad):  # opt-in CUDA kernels (minigen/fused.py); below is their reference
        return fused.softmax_backward(s, grad, dims)
    dx = grad - sum_of_products(grad, s, dims)
    dx *= s
    return dx


def gelu_backward(x: Any, cdf: Any, pdf: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ (Φ(x) + x·φ(x)) from the Φ and φ the forward saved, in place.

    ``cdf`` is None when the forward ran the fused CUDA kernel; its backward then
    recomputes Φ and φ in the fused backward kernel.
    """
    if cdf is None:  # the forward ran the fused kernel, so does the backward; below is its reference
        return fused.gelu_backward(x, grad)
    slope = x * pdf
    slope += cdf
    slope *= grad
    return slope


def gelu_tanh_backward(x: Any, t: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ (½(1 + T) + ½x(1 − T²)·c(1 + 3a x²)) from the saved T = tanh(u), in place."""
    slope = x * x  # ½x·c(1 + 3a x²)·(1 − T²) + ½T + ½, in place
    slope *= 3.0 * _TANH_A * _TANH_C
    slope += _TANH_C
    slope *= x
    slope *= 0.5
    slope *= 1.0 - t * t
    slope += 0.5 * t
    slope += 0.5
    slope *= grad
    return slope
