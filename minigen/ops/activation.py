"""Activation functions and the softmax family, with PyTorch's names (``F.gelu``, ...).

Elementwise activations y = f(x) have the backward ∂L/∂x = g ⊙ f'(x). The ones that
matter for speed (gelu, softmax, log_softmax) are ``Function``s of their own: the
forward works on raw arrays in place. Each backward is the formula in minigen ops, so
``create_graph=True`` works; softmax and GELU also have a raw-array version of the same
formula (``minigen/kernels/activation.py``), reached through one line at the top of
their backward and taken when no graph is being recorded (``kernels.fast_path()``).

The exact GELU needs the normal CDF Φ, that is erf, which NumPy does not have. It is
built here from array operations only, so the same code runs on NumPy and CuPy:

* float64: erfc from a Chebyshev fit (Numerical Recipes, 3rd ed., §6.2.2),
  erfc(z) = t·exp(−z² + Σₖ cₖ Tₖ(2t − 1)) with t = 2/(2 + z), accurate to ~1e-16;
* float32 (and float16, computed in float32): the Zelen–Severo formula (Abramowitz &
  Stegun 26.2.17), Φ(−|x|) = φ(x)·(b₁t + … + b₅t⁵) with t = 1/(1 + p|x|), accurate to
  ~3e-7, which is float32's own resolution, at a fraction of the cost.
"""

from __future__ import annotations

import math
from typing import Any

from minigen import backend, fused, kernels
from minigen.autograd import Function
from minigen.ops.elementwise import where
from minigen.ops.reduction import normalize_dims
from minigen.tensor import Tensor

# --------------------------------------------------------------------- the normal CDF
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)

# Chebyshev coefficients c₀…c₂₇ of h(u) = log(erfc(z)/t) + z², u = 2t − 1, t = 2/(2 + z).
# h is smooth on the whole half-line z ≥ 0 (u ∈ (−1, 1]), so one series covers it.
# Recomputed with mpmath (50 digits) at 80 Chebyshev nodes; they match Numerical Recipes.
_ERFC_CHEBYSHEV = (
    -1.3026537197817094,
    6.4196979235649026e-1,
    1.9476473204185836e-2,
    -9.5615147868086316e-3,
    -9.4659534448203687e-4,
    3.6683949785276145e-4,
    4.2523324806907772e-5,
    -2.0278578112534243e-5,
    -1.6242900046470255e-6,
    1.3036558355805232e-6,
    1.5626441722066143e-8,
    -8.5238095914926543e-8,
    6.5290544390988515e-9,
    5.0593434955514689e-9,
    -9.9136415649303309e-10,
    -2.2736512229318359e-10,
    9.6467911020155268e-11,
    2.3940380830391147e-12,
    -6.8860275264975534e-12,
    8.9448792730907257e-13,
    3.1309213993429581e-13,
    -1.1270822361367252e-13,
    3.8109052551892321e-16,
    7.1060976136092370e-15,
    -1.5230282014571043e-15,
    -9.4574945712912340e-17,
    1.2102371892242790e-16,
    -2.8166630877471770e-17,
)

# Zelen–Severo (A&S 26.2.17): Φ(−|x|) ≈ φ(x)·Σₖ bₖ tᵏ, t = 1/(1 + p|x|), |error| < 7.5e-8.
_ZS_P = 0.2316419
_ZS_B = (0.319381530, -0.356563782, 1.781477937, -1.821255978, 1.330274429)


def erfc_nonnegative(z: Any) -> Any:
    """erfc(z) for an array z ≥ 0 (float64), via the Chebyshev fit above; relative error ~1e-13.

    The series is summed with Clenshaw's recurrence bₖ = 2u·bₖ₊₁ − bₖ₊₂ + cₖ, which is
    the stable way to evaluate Σ cₖ Tₖ(u).
    """
    xp = backend.xp_of(z)
    t = 2.0 / (2.0 + z)
    u = 2.0 * t - 1.0
    two_u = 2.0 * u
    b1 = xp.zeros_like(z)
    b2 = xp.zeros_like(z)
    for c in reversed(_ERFC_CHEBYSHEV[1:]):
        b1, b2 = two_u * b1 - b2 + c, b1
    h = u * b1 - b2 + 0.5 * _ERFC_CHEBYSHEV[0]
    return t * xp.exp(h - z * z)


def normal_cdf_pdf(x: Any) -> tuple[Any, Any]:
    """(Φ(x), φ(x)) for an array: the standard normal CDF and density, on x's device.

    Both are built from the lower tail Φ(−|x|), which is small and accurate, using the
    symmetry Φ(x) = 1 − Φ(−x). ``tests/test_activation.py`` checks the accuracy per dtype.
    """
    xp = backend.xp_of(x)
    dtype = x.dtype
    if dtype.kind != "f":
        raise TypeError(f"normal CDF: needs a floating-point array, got dtype {dtype}")
    if dtype.itemsize < 4:  # float16: compute in float32, round at the end
        cdf, pdf = normal_cdf_pdf(x.astype("float32"))
        return cdf.astype(dtype), pdf.astype(dtype)
    pdf = x * x
    pdf *= -0.5
    xp.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI  # φ(x) = e^(−x²/2) / √(2π)
    magnitude = xp.abs(x)
    if dtype.itemsize >= 8:
        tail = erfc_nonnegative(magnitude * _INV_SQRT_2)
        tail *= 0.5  # Φ(−|x|) = ½ erfc(|x|/√2)
        # Φ = u + (1 − 2u)·tail with u = [x > 0]: one rounding either way, so Φ stays
        # monotone and the lower tail keeps its full relative accuracy.
        upper = (x > 0).astype(dtype)
        cdf = upper * -2.0
        cdf += 1.0
        cdf *= tail
        cdf += upper
        return cdf, pdf
    # float32: t = 1/(1 + p|x|) = k/(k + |x|) with k = 1/p, then Horner ((b₅t + b₄)t + …)t.
    t = magnitude
    t += 1.0 / _ZS_P
    xp.divide(1.0 / _ZS_P, t, out=t)
    tail = t * _ZS_B[-1]
    for b in reversed(_ZS_B[:-1]):
        tail += b
        tail *= t
    tail *= pdf
    # Φ = ½ + sign(x)·(½ − tail): three array passes. Φ's lower tail is then only accurate
    # to float32's absolute resolution (~6e-8), which is all float32 can hold near ½ anyway.
    cdf = 0.5 - tail
    xp.copysign(cdf, x, out=cdf)
    cdf += 0.5
    return cdf, pdf


def _pdf(x: Tensor) -> Tensor:
    """φ(x) = e^(−x²/2)/√(2π) in differentiable ops (for second derivatives)."""
    return (x * x * -0.5).exp() * _INV_SQRT_2PI


class NormalCDF(Function):
    """y = Φ(x) = ½(1 + erf(x/√2));  ∂L/∂x = g ⊙ φ(x)."""

    def forward(self, x: Tensor):
        cdf, _ = normal_cdf_pdf(x.data)
        self.saved = x
        return cdf

    def backward(self, grad: Tensor):
        return grad * _pdf(self.saved)


# ------------------------------------------------------------------------------ ReLU family
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """y = max(x, 0);  ∂L/∂x = g ⊙ [x > 0].  (``inplace`` is accepted for PyTorch code; the
    result is always a new tensor.)"""
    return input.relu()


class LeakyRelu(Function):
    """y = x for x > 0, a·x otherwise;  ∂L/∂x = g ⊙ (1 if x > 0 else a)  (a at the kink x = 0)."""

    def forward(self, x: Tensor, negative_slope: float):
        if x.dtype.kind != "f":
            raise TypeError(f"leaky_relu: needs a floating-point tensor, got dtype {x.dtype}")
        slope = (x.data > 0).astype(x.dtype)  # 1 where x > 0, then 1 -> 1, 0 -> a
        slope *= 1.0 - negative_slope
        slope += negative_slope
        self.saved = slope
        return x.data * slope

    def backward(self, grad: Tensor):
        return grad * Tensor(self.saved)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """y = max(x, 0) + a·min(x, 0) with a = ``negative_slope``."""
    return LeakyRelu.apply(input, negative_slope=float(negative_slope))


# ---------------------------------------------------------------------------------- GELU
class Gelu(Function):
    """y = x·Φ(x) (exact GELU);  ∂L/∂x = g ⊙ (Φ(x) + x·φ(x))."""

    def forward(self, x: Tensor):
        if x.dtype.kind != "f":
            raise TypeError(f"gelu: needs a floating-point tensor, got dtype {x.dtype}")
        if fused.applies(x.data):  # opt-in CUDA kernel (minigen/fused.py); the lines below are its reference
            self.saved = (x, None, None)  # Φ and φ are recomputed by the fused backward
            return fused.gelu_forward(x.data)
        cdf, pdf = kernels.elementwise_in_blocks(
            normal_cdf_pdf, x.data
        )  # in cache-sized blocks (kernels/activation.py)
        self.saved = (x, cdf, pdf)
        return x.data * cdf

    def backward(self, grad: Tensor):
        x, cdf, pdf = self.saved
        if kernels.fast_path():  # the same formula from the saved Φ and φ, in place (kernels/activation.py)
            return Tensor(kernels.gelu_backward(x.data, cdf, pdf, grad.data))
        return grad * (NormalCDF.apply(x) + x * _pdf(x))


_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715


class GeluTanh(Function):
    """The tanh approximation of GELU (GPT-2): y = ½x(1 + T),  T = tanh(u),  u = c(x + a x³),
    c = √(2/π), a = 0.044715;  ∂L/∂x = g ⊙ (½(1 + T) + ½x(1 − T²)·c(1 + 3a x²))."""

    def forward(self, x: Tensor):
        if x.dtype.kind != "f":
            raise TypeError(f"gelu: needs a floating-point tensor, got dtype {x.dtype}")
        xp = x.xp
        t = x.data * x.data  # u = x(c + ac·x²), then T = tanh(u), in place
        t *= _TANH_A * _TANH_C
        t += _TANH_C
        t *= x.data
        xp.tanh(t, out=t)
        self.saved = (x, t)
        half_x = 0.5 * x.data
        y = half_x * t
        y += half_x
        return y

    def backward(self, grad: Tensor):
        x, t = self.saved
        if kernels.fast_path():  # the same formula from the saved T, in place (kernels/activation.py)
            return Tensor(kernels.gelu_tanh_backward(x.data, t, grad.data))
        tanh_u = (x * (_TANH_C + (_TANH_A * _TANH_C) * (x * x))).tanh()
        du = _TANH_C + (3.0 * _TANH_A * _TANH_C) * (x * x)
        return grad * (0.5 * (1.0 + tanh_u) + (0.5 * x) * (1.0 - tanh_u * tanh_u) * du)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x·Φ(x), Φ the standard normal CDF; ``approximate="tanh"`` uses the tanh form."""
    if isinstance(input, Tensor) and input.ndim == 0:
        # As a 1-element tensor: NumPy returns a 0-d result as a scalar, which the in-place forwards cannot fill.
        return gelu(input.reshape(1), approximate).reshape(())
    if approximate == "none":
        return Gelu.apply(input)
    if approximate == "tanh":
        return GeluTanh.apply(input)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ------------------------------------------------------------------- smooth activations
def sigmoid(input: Tensor) -> Tensor:
    """σ(x) = 1/(1 + e⁻ˣ);  ∂L/∂x = g ⊙ σ(1 − σ)."""
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    """tanh(x);  ∂L/∂x = g ⊙ (1 − tanh²x)."""
    return input.tanh()


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """SiLU (swish): y = x·σ(x);  ∂L/∂x = g ⊙ σ(x)(1 + x(1 − σ(x)))  (by the product rule)."""
    return input * input.sigmoid()


class Softplus(Function):
    """y = (1/β)·log(1 + e^(βx)), and y = x where βx > threshold (as in PyTorch);
    ∂L/∂x = g ⊙ σ(βx)  (1 above the threshold).

    Computed as (max(z, 0) + log(1 + e^(−|z|)))/β with z = βx, which never overflows.
    """

    __slots__ = ("beta", "threshold")

    def forward(self, x: Tensor, beta: float, threshold: float):
        if x.dtype.kind != "f":
            raise TypeError(f"softplus: needs a floating-point tensor, got dtype {x.dtype}")
        xp = x.xp
        self.beta, self.threshold = beta, threshold
        z = x.data * beta if beta != 1.0 else x.data
        y = xp.log1p(xp.exp(-xp.abs(z)))
        y += xp.maximum(z, 0)
        if beta != 1.0:
            y /= beta
        self.saved = (x, None)
        if math.isfinite(threshold):
            linear = z > threshold
            y = xp.where(linear, x.data, y)
            self.saved = (x, linear)
        return y

    def backward(self, grad: Tensor):
        x, linear = self.saved
        slope = (x * self.beta).sigmoid() if self.beta != 1.0 else x.sigmoid()
        if linear is not None:
            slope = where(Tensor(linear), 1.0, slope)
        return grad * slope


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """Softplus(x) = (1/β)·log(1 + exp(βx)), reverting to x for βx > ``threshold``."""
    return Softplus.apply(input, beta=float(beta), threshold=float(threshold))


# --------------------------------------------------------------------------- softmax
def _softmax_dim(x: Tensor, dim: int | None, op: str) -> tuple[int, ...]:
    if dim is None:
        raise TypeError(f"{op}: pass dim explicitly (e.g. dim=-1); input shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: needs a floating-point tensor, got dtype {x.dtype} (shape {tuple(x.shape)})")
    return normalize_dims(dim, x.ndim, op)


def _shifted(x: Tensor, dims: tuple[int, ...]) -> Any:
    """x − max(x) along dims: the largest entry becomes 0, so exp never overflows."""
    xp = x.xp
    top = x.data.max(axis=dims, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0)  # an all −inf row gives NaN below, not an error
    return x.data - top


class Softmax(Function):
    """sᵢ = e^(xᵢ − m) / Σⱼ e^(xⱼ − m) with m = maxⱼ xⱼ (stable);
    ∂L/∂x = g ⊙ s − s ⊙ Σⱼ(g ⊙ s)ⱼ   (the Jacobian diag(s) − s sᵀ applied to g)."""

    __slots__ = ("dims",)

    def forward(self, x: Tensor, dims: tuple[int, ...]):
        xp = x.xp
        self.dims = dims
        if fused.applies(x.data):  # opt-in CUDA kernels (minigen/fused.py); the lines below are their reference
            self.saved = fused.softmax_forward(x.data, dims)
            return self.saved
        e = _shifted(x, dims)
        xp.exp(e, out=e)
        e *= 1.0 / e.sum(axis=dims, keepdims=True)
        self.saved = e
        return e

    def backward(self, grad: Tensor):
        if kernels.fast_path():  # the same formula on the saved s, in place (kernels/activation.py)
            return Tensor(kernels.softmax_backward(self.saved, grad.data, self.dims))
        s = self.output_tensor(self.saved)
        gs = grad * s
        return gs - s * gs.sum(dim=self.dims, keepdim=True)


class LogSoftmax(Function):
    """yᵢ = xᵢ − log Σⱼ e^(xⱼ)  (computed as (xᵢ − m) − log Σⱼ e^(xⱼ − m));
    ∂L/∂x = g − softmax(x) ⊙ Σⱼ gⱼ,  with softmax(x) = e^y."""

    __slots__ = ("dims",)

    def forward(self, x: Tensor, dims: tuple[int, ...]):
        xp = x.xp
        self.dims = dims
        shifted = _shifted(x, dims)
        shifted -= xp.log(xp.exp(shifted).sum(axis=dims, keepdims=True))
        self.saved = shifted
        return shifted

    def backward(self, grad: Tensor):
        softmax = self.output_tensor(self.saved).exp()
        return grad - softmax * grad.sum(dim=self.dims, keepdim=True)


def softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """softmax(x)ᵢ = e^(xᵢ) / Σⱼ e^(xⱼ) along ``dim``; finite for any finite logits.

    ``F.softmax``, ``x.softmax(dim)`` and ``mg.softmax`` all build this one ``Softmax`` node.
    """
    x = input if dtype is None else input.to(dtype)
    dims = _softmax_dim(x, dim, "softmax")
    if x.ndim == 0:  # a softmax over one element: 1, with gradient 0, as in PyTorch (computed as a 1-element tensor)
        return Softmax.apply(x.reshape(1), dims=(0,)).reshape(())
    return Softmax.apply(x, dims=dims)


def log_softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """log softmax(x)ᵢ = xᵢ − logsumexp(x) along ``dim``; finite for any finite logits."""
    x = input if dtype is None else input.to(dtype)
    return LogSoftmax.apply(x, dims=_softmax_dim(x, dim, "log_softmax"))
