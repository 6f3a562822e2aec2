"""Fused GPU kernels: several NumPy-style array passes done as one CUDA kernel.

On a GPU most of minigen's time in GELU, softmax, layer/group/batch norm and the Adam
update goes into reading and writing memory: the reference code in ``ops/`` and
``optim.py`` makes one array pass per arithmetic step (``xhat = x − μ``,
``xhat *= rstd``, ``y = xhat * γ``, ``y += β`` ...), and each pass reads and writes the
whole tensor. A fused kernel reads each input once, does all the arithmetic in
registers, and writes each output once.

The kernels are CuPy ``ElementwiseKernel`` objects (a few CUDA statements run for
every element, with NumPy broadcasting; ``T`` is the element type, float32 or float64)
and ``ReductionKernel`` objects (map each element, then add them up over some axes).
Each function below says which reference code it replaces; that reference (a forward
in ``ops/``, a backward fast path in ``kernels/``) is what runs on the CPU, on the test
``"standin"`` device, and on CUDA while the switch is off. The callers dispatch with one
visible ``if``::

    if fused.applies(x.data):      # CUDA array and the switch on: the fused kernel
        return fused.gelu_forward(x.data)
    ...                             # otherwise: the reference code, unchanged

**The switch is off by default**, because these kernels have not yet been run on a
GPU: ``bash benchmarks/gpu_check.sh`` tests them against their references and times
them both ways on a GPU machine. Turn them on with::

    minigen.fused.enable(True)     # or: with minigen.fused.enabled(): ...
    MINIGEN_FUSED=1 python demos/gpt_chars.py --device cuda

Importing this module never imports CuPy: each kernel is built on its first call and
cached (CuPy then compiles it once per dtype and keeps the binary on disk).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

from minigen import backend
from minigen.ops.reduction import reduced_count


# --------------------------------------------------------------------------- the switch
def _flag_from_environment(value: str | None) -> bool:
    """MINIGEN_FUSED: "1", "true", "yes" or "on" (any case) switch the kernels on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_enabled = _flag_from_environment(os.environ.get("MINIGEN_FUSED"))


def enable(on: bool = True) -> bool:
    """Switch the fused CUDA kernels on (or off); returns the previous setting.

    Only CuPy arrays ever take the fused path: on the CPU (and the stand-in device)
    nothing changes either way.
    """
    global _enabled
    previous = _enabled
    _enabled = bool(on)
    return previous


def is_enabled() -> bool:
    """Whether the fused kernels are switched on (off unless enabled or MINIGEN_FUSED=1)."""
    return _enabled


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """``with fused.enabled(): ...`` runs the block with the switch set, then restores it."""
    previous = enable(on)
    try:
        yield
    finally:
        enable(previous)


_DTYPES = ("float32", "float64")


def applies(*arrays: Any) -> bool:
    """True when the fused path should run: the switch is on and every array is a CUDA
    (CuPy) array of one dtype, float32 or float64. Everything else takes the reference."""
    if not _enabled:
        return False
    first = arrays[0]
    if not backend.is_cuda_array(first) or first.dtype.name not in _DTYPES:
        return False
    return all(backend.is_cuda_array(a) and a.dtype == first.dtype for a in arrays[1:])


# ------------------------------------------------------------------------ kernel cache
_kernels: dict[str, Any] = {}


def _elementwise(name: str, in_params: str, out_params: str, operation: str, preamble: str = "") -> Any:
    """The ``cupy.ElementwiseKernel`` called ``name``, built on first use.

    Calling it with the inputs (scalars allowed; they are cast to T) returns new
    outputs; passing the outputs too writes into them, and an output can be read
    before it is written, which is how the in-place Adam update works.
    """
    kernel = _kernels.get(name)
    if kernel is None:
        import cupy

        kernel = _kernels[name] = cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=preamble)
    return kernel


def _reduction(name: str, in_params: str, map_expr: str) -> Any:
    """A ``cupy.ReductionKernel`` that sums ``map_expr`` over the given axes (in type T)."""
    kernel = _kernels.get(name)
    if kernel is None:
        import cupy

        kernel = _kernels[name] = cupy.ReductionKernel(in_params, "T total", map_expr, "a + b", "total = a", "0", name)
    return kernel


def _sum_of_products(u: Any, v: Any, axes: tuple[int, ...]) -> Any:
    """Σ over ``axes`` of u ⊙ v (kept as size-1 axes); v may broadcast against u.
    Reference: ``kernels.normalization.sum_of_products``."""
    return _reduction("minigen_sum_of_products", "T u, T v", "u * v")(u, v, axis=axes, keepdims=True)


def _as(array: Any, like: Any) -> Any:
    return array if array.dtype == like.dtype else array.astype(like.dtype)


# ---------------------------------------------------------------------------------- GELU
# Φ and φ for float and double, so that one generic kernel serves both dtypes.
_NORMAL = r"""
__device__ inline float minigen_cdf(float x) { return normcdff(x); }
__device__ inline double minigen_cdf(double x) { return normcdf(x); }
__device__ inline float minigen_pdf(float x) { return 0.3989422804014327f * expf(-0.5f * x * x); }
__device__ inline double minigen_pdf(double x) { return 0.3989422804014327 * exp(-0.5 * x * x); }
"""


def gelu_forward(x: Any) -> Any:
    """y = x·Φ(x) (exact GELU), one pass; Φ is CUDA's ``normcdf``.

    Reference: ``ops.activation.Gelu.forward`` (Φ and φ from ``normal_cdf_pdf``, then
    x ⊙ Φ). The fused forward saves neither Φ nor φ: its backward recomputes them.
    """
    return _elementwise("minigen_gelu_forward", "T x", "T y", "y = x * minigen_cdf(x)", _NORMAL)(x)


def gelu_backward(x: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π), one pass.

    Reference: ``kernels.activation.gelu_backward`` (the fast path of ``ops.activation.Gelu.backward``).
    """
    return _elementwise(
        "minigen_gelu_backward",
        "T x, T g",
        "T dx",
        "dx = (x * minigen_pdf(x) + minigen_cdf(x)) * g",
        _NORMAL,
    )(x, _as(grad, x))


# ------------------------------------------------------------------------------- softmax
def softmax_forward(x: Any, dims: tuple[int, ...]) -> Any:
    """sᵢ = e^(xᵢ − m) / Σⱼ e^(xⱼ − m),  m = maxⱼ xⱼ, along ``dims``.

    Three passes over x instead of six: the max (a CuPy reduction), Σⱼ e^(xⱼ − m) (a
    reduction kernel that never stores e^(x − m)), and one kernel that writes
    e^(xᵢ − m) · (1/Σ). Reference: ``ops.activation.Softmax.forward``.
    """
    xp = backend.xp_of(x)
    top = x.max(axis=dims, keepdims=True)
    top = xp.where(xp.isfinite(top), top, x.dtype.type(0))  # all −inf row: NaN, as in the reference
    total = _reduction("minigen_sum_exp", "T x, T top", "exp(x - top)")(x, top, axis=dims, keepdims=True)
    scale = 1.0 / total
    return _elementwise("minigen_softmax_forward", "T x, T top, T scale", "T y", "y = exp(x - top) * scale")(
        x, top, scale
    )


def softmax_backward(s: Any, grad: Any, dims: tuple[int, ...]) -> Any:
    """∂L/∂x = s ⊙ (g − Σⱼ gⱼsⱼ): one reduction kernel for Σ g ⊙ s, one elementwise pass.

    Reference: ``kernels.activation.softmax_backward`` (the fast path of ``ops.activation.Softmax.backward``).
    """
    weighted = _sum_of_products(grad, s, dims)
    return _elementwise("minigen_softmax_backward", "T g, T s, T gs_sum", "T dx", "dx = (g - gs_sum) * s")(
        grad, s, weighted
    )


# ---------------------------------------------------------------------- normalisation
def normalize_forward(
    x: Any,
    dims: tuple[int, ...],
    eps: float,
    weight: Any = None,
    bias: Any = None,
    mean: Any = None,
    var: Any = None,
) -> tuple[Any, Any, Any]:
    """x̂ = (x − μ)·rstd,  rstd = 1/√(σ² + ε),  y = γ ⊙ x̂ + β; returns (x̂, y, rstd).

    μ and σ² = mean((x − μ)²) are taken over ``dims`` unless given; σ² comes from a
    reduction kernel that never stores x − μ, and one kernel writes both x̂ (saved for
    backward) and y. ``weight`` and ``bias`` arrive already shaped to broadcast against
    x (or None). Reference: ``ops.normalization.Normalize.forward``.
    """
    xp = backend.xp_of(x)
    if mean is None:
        mean = x.mean(axis=dims, keepdims=True)
    if var is None:
        squares = _reduction("minigen_sum_squared_deviation", "T x, T mu", "(x - mu) * (x - mu)")
        var = squares(x, mean, axis=dims, keepdims=True) / reduced_count(x.shape, dims)
    rstd = 1.0 / xp.sqrt(var + eps)
    if weight is None and bias is None:
        xhat = _elementwise("minigen_normalize", "T x, T mu, T rstd", "T xhat", "xhat = (x - mu) * rstd")(x, mean, rstd)
        return xhat, xhat, rstd
    xhat, y = _elementwise(
        "minigen_normalize_affine",
        "T x, T mu, T rstd, T gamma, T beta",
        "T xhat, T y",
        "xhat = (x - mu) * rstd; y = xhat * gamma + beta",
    )(x, mean, rstd, 1.0 if weight is None else weight, 0.0 if bias is None else bias)
    return xhat, y, rstd


def normalize_backward(grad: Any, xhat: Any, rstd: Any, weight: Any, dims: tuple[int, ...]) -> Any:
    """∂L/∂x = rstd·(g_γ − mean(g_γ) − x̂ ⊙ mean(g_γ ⊙ x̂)),  g_γ = g ⊙ γ (g without γ).

    Two reduction kernels give the means without storing g_γ, and one elementwise pass
    writes ∂L/∂x. ``weight`` is shaped to broadcast against g (or None).
    Reference: ``kernels.normalization.normalize_backward`` (the fast path of ``Normalize.backward``).
    """
    count = reduced_count(grad.shape, dims)
    if weight is None:
        mean_g = grad.mean(axis=dims, keepdims=True)
        mean_g_xhat = _sum_of_products(grad, xhat, dims) / count
        weight = 1.0
    else:
        mean_g = _sum_of_products(grad, weight, dims) / count
        triple = _reduction("minigen_sum_of_triple_products", "T u, T v, T w", "u * v * w")
        mean_g_xhat = triple(grad, weight, xhat, axis=dims, keepdims=True) / count
    return _elementwise(
        "minigen_normalize_backward",
        "T g, T gamma, T xhat, T rstd, T mean_g, T mean_g_xhat",
        "T dx",
        "dx = (g * gamma - mean_g - xhat * mean_g_xhat) * rstd",
    )(grad, weight, xhat, rstd, mean_g, mean_g_xhat)


# ---------------------------------------------------------------------------------- Adam
def adam_step(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step: int,
) -> None:
    """One Adam/AdamW update of θ, m and v, in place, in one pass:

        g_t = ∇L + λ θ                     (Adam's L2 term; AdamW instead θ ← θ (1 − η λ))
        m_t = β₁ m + (1 − β₁) g_t,   v_t = β₂ v + (1 − β₂) g_t²
        θ_t = θ − (η / (1 − β₁ᵗ)) · m_t / (√v_t / √(1 − β₂ᵗ) + ε)

    The bias corrections are scalars computed on the host from the Python step count,
    so no value is read back from the GPU. Reference: ``optim.Adam.step`` (the lines
    after its ``if fused.applies(...)``), with the same operations in the same order.
    """
    beta1, beta2 = betas
    l2 = 0.0 if decoupled else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    _elementwise(
        "minigen_adam_step",
        "T grad, T l2, T decay, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, "
        "T sqrt_bias_correction2, T step_size, T eps",
        "T param, T exp_avg, T exp_avg_sq",
        """
        T g = grad;
        if (l2 != 0) g = g + l2 * param;
        if (decay != 1) param = param * decay;
        exp_avg = exp_avg * beta1 + one_minus_beta1 * g;
        exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * (g * g);
        T denominator = sqrt(exp_avg_sq) / sqrt_bias_correction2 + eps;
        param = param - step_size * exp_avg / denominator;
        """,
    )(
        grad,
        l2,
        decay,
        beta1,
        1 - beta1,
        beta2,
        1 - beta2,
        math.sqrt(bias_correction2),
        lr / bias_correction1,
        eps,
        param,
        exp_avg,
        exp_avg_sq,
    )
