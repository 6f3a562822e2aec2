"""Fast paths of normalisation (``ops/normalization.py``): raw arrays, few passes over memory.

``Normalize.backward`` states the formula in minigen ops, recomputing x̂ and 1/σ from x.
``normalize_backward`` computes the same gradients from the x̂ and 1/σ that the node's
forward saved, and ``normalize_forward`` is that forward. On CUDA with ``minigen.fused``
switched on, they hand over to fused kernels, and the array code here is their reference.

**Passes over memory.** A (4096, 768) float32 array is 12 MiB, more than the caches
hold close to the core, so each full-size read or write costs about the same, and the
time of an op is about its number of passes. NumPy runs each ufunc as one pass, so
the cuts here are: per-row sums as matrix-vector products with BLAS (a row sum is
x·1, a row dot product is one row of a batched matmul), which read the array once and
run at memory speed, where NumPy's ``sum``/``einsum`` are two to three times slower;
in-place ufuncs (``out=``) instead of new arrays; and 1/σ folded into per-row
constants where possible. ``Counted passes`` in each docstring counts the full-size
reads and writes (r, w) of one call; a per-row or per-feature vector is free.
"""

from __future__ import annotations

from typing import Any

from minigen import backend, fused
from minigen.ops.reduction import reduced_count
from minigen.tensor import Tensor


# ----------------------------------------------------------------- per-row reductions
def as_rows(a: Any, dims: tuple[int, ...]) -> Any:
    """``a`` as a 2-D (rows, n) view when ``dims`` are its trailing axes and it is
    C-contiguous (so each reduced group is one contiguous row), else None."""
    if tuple(dims) != tuple(range(a.ndim - len(dims), a.ndim)) or not a.flags.c_contiguous:
        return None
    n = reduced_count(a.shape, dims)
    return a.reshape(-1, n) if n else None


def row_sums(rows: Any) -> Any:
    """Σⱼ aᵢⱼ for each row of a 2-D array: one matrix-vector product a·1 (one read)."""
    xp = backend.xp_of(rows)
    return rows @ xp.ones(rows.shape[1], dtype=rows.dtype)


def row_dots(a: Any, b: Any) -> Any:
    """Σⱼ aᵢⱼ bᵢⱼ for each row i of two 2-D arrays: a batched (1 × n)·(n × 1) matmul,
    which reads each array once and never forms the product a ⊙ b."""
    return (a[:, None, :] @ b[:, :, None]).reshape(a.shape[0])


def sum_of_products(a: Any, b: Any, axes: tuple[int, ...], keepdims: bool = True) -> Any:
    """Σ over ``axes`` of a ⊙ b, for two arrays of the same shape.

    Per-row dot products through BLAS when ``axes`` are the trailing axes of two
    contiguous arrays; otherwise ``einsum``, which forms each product only in a register,
    never the full array a ⊙ b, and so beats ``(a * b).sum(axes)`` about twice on a CPU.
    """
    rows_a, rows_b = as_rows(a, axes), as_rows(b, axes)
    if rows_a is not None and rows_b is not None:
        total = row_dots(rows_a, rows_b)
    else:
        letters = "abcdefghijklmnopqrstuvwxyz"[: a.ndim]
        kept = "".join(letter for i, letter in enumerate(letters) if i not in axes)
        total = backend.xp_of(a).einsum(f"{letters},{letters}->{kept}", a, b)
    if keepdims:
        return total.reshape(tuple(1 if i in axes else n for i, n in enumerate(a.shape)))
    return total.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))


def mean_over(a: Any, dims: tuple[int, ...]) -> Any:
    """The mean over ``dims`` (kept as size-1 axes): a BLAS row sum when the reduced axes
    are trailing and contiguous, else NumPy's ``mean``."""
    rows = as_rows(a, dims)
    if rows is None:
        return a.mean(axis=dims, keepdims=True)
    shape = tuple(1 if i in dims else n for i, n in enumerate(a.shape))
    return (row_sums(rows) * (1.0 / rows.shape[1])).reshape(shape)


# ----------------------------------------------------------------------- the forward
def normalize_forward(
    x: Any,
    dims: tuple[int, ...],
    eps: float,
    weight: Any = None,
    bias: Any = None,
    mean: Any = None,
    var: Any = None,
) -> tuple[Any, Any, Any]:
    """y = γ ⊙ x̂ + β with x̂ = (x − μ)/σ, σ = √(Var[x] + ε), μ and the biased Var over ``dims``.

    ``weight`` and ``bias`` are already shaped to broadcast against x; ``mean`` and
    ``var`` may be given (batch norm computes them for its running statistics).
    Returns (x̂, y, 1/σ), as the fused kernel does; x̂ and 1/σ are saved for
    ``normalize_backward``.

    Var = mean((x − μ)²), two passes, which unlike E[x²] − μ² does not cancel.
    Counted passes (layer norm with γ and β): μ (r), x − μ (r, w), Var (r), x̂ ← x̂/σ
    (r, w), γ ⊙ x̂ (r, w), + β (r, w): 10, where PyTorch makes 3.
    """
    xp = backend.xp_of(x)
    if fused.applies(x, *(a for a in (weight, bias, mean, var) if a is not None)):  # opt-in CUDA kernels
        return fused.normalize_forward(x, dims, eps, weight=weight, bias=bias, mean=mean, var=var)
    if mean is None:
        mean = mean_over(x, dims)
    xhat = x - mean
    if var is None:
        var = sum_of_products(xhat, xhat, dims) / reduced_count(x.shape, dims)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat *= rstd
    if weight is None and bias is None:
        return xhat, xhat, rstd  # y is x̂ itself: the graph never writes to an op's output in place
    y = xhat * weight if weight is not None else xhat + bias
    if weight is not None and bias is not None:
        y += bias
    return xhat, y, rstd


# ---------------------------------------------------------------------- the backward
def normalize_backward(node: Any, grad: Any) -> tuple[Any, ...]:
    """``Normalize.backward`` from the arrays its forward saved, as Tensors in the node's
    input order (x, then γ and β when present; None where no gradient is needed):

        ∂L/∂x = (1/σ)·(g_γ − mean(g_γ) − x̂ ⊙ mean(g_γ ⊙ x̂)),  g_γ = g ⊙ γ   (means over ``dims``)
        ∂L/∂γ = Σ g ⊙ x̂,   ∂L/∂β = Σ g                                   (sums over γ's broadcast axes)

    With the per-row constants a = mean(g_γ)/σ and b = mean(g_γ ⊙ x̂)/σ this is
    ∂L/∂x = g_γ/σ − (x̂ ⊙ b + a), computed in the buffer of g_γ.
    Counted passes (layer norm with γ and β): g_γ (r, w), mean(g_γ) (r),
    mean(g_γ ⊙ x̂) (r, r), x̂ ⊙ b + a (r, w, r, w), g_γ/σ (r, w), − (r, r, w),
    ∂L/∂γ (r, r), ∂L/∂β (r): 17, where PyTorch makes about 6.
    """
    x, params, xhat, rstd = node.saved
    weight, bias = (None if p is None else p.data for p in node.weight_bias(params))
    g, dims, axes = grad.data, node.dims, node.param_axes(x.ndim)
    dx = None
    if node.needs_grad[0]:
        if fused.applies(g, xhat, *(p.data for p in params)):  # opt-in CUDA kernels (minigen/fused.py)
            w = None if weight is None else weight.reshape(node.param_shape)
            dx = fused.normalize_backward(g, xhat, rstd, w, dims)
        else:
            dx = g * weight.reshape(node.param_shape) if weight is not None else g.copy()
            count = reduced_count(x.shape, dims)
            a = mean_over(dx, dims) * rstd
            b = sum_of_products(dx, xhat, dims) * (rstd / count)
            correction = xhat * b
            correction += a
            dx *= rstd
            dx -= correction
    grads = [None if dx is None else Tensor(dx)]
    if weight is not None:
        grads.append(
            Tensor(sum_of_products(g, xhat, axes, keepdims=False).reshape(weight.shape)) if node.needs_grad[1] else None
        )
    if bias is not None:
        grads.append(Tensor(g.sum(axis=axes).reshape(bias.shape)) if node.needs_grad[-1] else None)
    return tuple(grads)
