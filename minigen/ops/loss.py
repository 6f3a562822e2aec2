"""Loss functions with PyTorch's names, arguments and reductions.

Each loss computes one value ℓᵢ per element (or per sample) and then reduces them:
``reduction="none"`` keeps them, ``"sum"`` adds them, ``"mean"`` averages them (for the
class-index losses a *weighted* average, Σ wᵢℓᵢ / Σ wᵢ, as in PyTorch).

* cross_entropy(x, t) = nll_loss(log_softmax(x), t): ℓᵢ = −w_tᵢ · log softmax(xᵢ)_tᵢ,
  with label smoothing ε mixing in the uniform target: (1 − ε)·ℓᵢ + ε·mean_c(−w_c log pᵢc).
* binary_cross_entropy_with_logits: ℓ = −[p y log σ(x) + (1 − y) log(1 − σ(x))], computed
  as (1 − y)·x + (1 + (p − 1)·y)·softplus(−x), which never overflows
  (softplus(−x) = max(−x, 0) + log(1 + e^(−|x|))).
* mse_loss: ℓ = (x − y)²;  l1_loss: ℓ = |x − y|.

**Out-of-range class targets.** On the CPU a target outside 0..C−1 (other than
``ignore_index``) raises ``IndexError`` naming it. On a GPU that check would read its
answer back to the host in every training step (a host sync), and CuPy's indexing
silently wraps an out-of-range index to a wrong row. So on a GPU the check stays on the
device: the loss of every position with an out-of-range target is NaN (one ``where``),
which makes the mean or sum NaN, and the error surfaces in the next loss you log.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from minigen import backend
from minigen.autograd import Function
from minigen.ops.activation import Softplus, log_softmax
from minigen.tensor import Tensor

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# ------------------------------------------------------------ picking one class per row
class PickClass(Function):
    """yᵢ = x[i, tᵢ] for x (M, C) and class indices t (M,);
    ∂L/∂x = zeros with gᵢ placed at (i, tᵢ)  (``PlaceClass``)."""

    def forward(self, x: Tensor, index: Any):
        rows = x.xp.arange(x.shape[0])
        self.saved = (index, x.shape[1])
        return x.data[rows, index]

    def backward(self, grad: Tensor):
        index, classes = self.saved
        return PlaceClass.apply(grad, index=index, classes=classes)


class PlaceClass(Function):
    """y = zeros (M, C) with y[i, tᵢ] = gᵢ;  ∂L/∂g = (∂L/∂y)[i, tᵢ]  (``PickClass``).

    Each row receives exactly one value, so plain assignment is enough (no scatter-add).
    """

    def forward(self, grad: Tensor, index: Any, classes: int):
        xp = grad.xp
        out = xp.zeros((grad.shape[0], classes), dtype=grad.dtype)
        out[xp.arange(grad.shape[0]), index] = grad.data
        self.saved = index
        return out

    def backward(self, grad: Tensor):
        return PickClass.apply(grad, index=self.saved)


# ----------------------------------------------------------------------- nll / cross entropy
def _class_layout(op: str, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check class-index targets and flatten: input (N, C, d…) -> (M, C), target -> (M,)."""
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    if target.device != input.device:
        raise RuntimeError(
            f"{op}: target is on {target.device} but the input is on {input.device}; move it with .to(device)"
        )
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    expected = input.shape[:1] + input.shape[2:] if input.ndim >= 2 else ()
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: target must hold integer class indices (dtype int64), got dtype {target.dtype} "
            f"(input shape {tuple(input.shape)}, target shape {tuple(target.shape)})"
        )
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{op}: expected target shape {expected} for input shape {tuple(input.shape)} "
            f"(input is (N, C) or (N, C, d1, ...), target (N) or (N, d1, ...)), got target shape {tuple(target.shape)}"
        )
    classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
    if input.ndim == 1:
        flat = input.reshape(1, classes)
    elif input.ndim == 2:
        flat = input
    else:  # move the class axis last, then one row per position
        flat = input.permute((0,) + tuple(range(2, input.ndim)) + (1,)).reshape(-1, classes)
    return flat, target.reshape(-1)


def _nll_terms(op: str, input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> tuple:
    """Per-position losses −w_tᵢ·x[i, tᵢ] (0 where ignored), the weights w_tᵢ, and the
    flattened input (M, C) and target (M,)."""
    flat, t = _class_layout(op, input, target)
    classes = flat.shape[1]
    xp = flat.xp
    valid = t.data != ignore_index
    if weight is not None:
        if tuple(weight.shape) != (classes,):
            raise ValueError(
                f"{op}: weight must have shape ({classes},), one per class, got {tuple(weight.shape)} "
                f"(input shape {tuple(input.shape)})"
            )
        if weight.device != input.device:
            raise RuntimeError(f"{op}: weight is on {weight.device} but the input is on {input.device}")
    out_of_range = valid & ((t.data < 0) | (t.data >= classes))
    # The exact check reads one bool back, so it runs on the CPU only: on a GPU (and the
    # stand-in GPU) that read would be a host sync in every training step.
    if t.data.size and backend.is_host_array(t.data) and bool(out_of_range.any()):
        bad = t.data[out_of_range].reshape(-1)[0].item()
        raise IndexError(
            f"{op}: target {bad} is out of range for {classes} classes (input shape {tuple(input.shape)}, "
            f"target shape {tuple(target.shape)}); targets must be in 0..{classes - 1} or ignore_index={ignore_index}"
        )
    safe = xp.where(valid, t.data, 0)  # ignored positions pick class 0, then get weight 0
    sample_weight = valid.astype(flat.dtype)
    if weight is not None:
        sample_weight *= weight.data[safe].astype(flat.dtype, copy=False)
    if not backend.is_host_array(t.data):  # on a GPU: NaN where the target is out of range (no host sync)
        sample_weight = xp.where(out_of_range, sample_weight.dtype.type(np.nan), sample_weight)
    losses = -PickClass.apply(flat, index=safe) * Tensor(sample_weight)
    return losses, sample_weight, flat, safe, valid


def _constant_weight(weight: Tensor, like: Tensor) -> Tensor:
    """Class weights as a constant in the input's dtype (PyTorch gives them no gradient either)."""
    return Tensor(weight.data.astype(like.dtype, copy=False))


def _weighted_reduce(losses: Tensor, sample_weight: Any, reduction: str, shape: tuple[int, ...]) -> Tensor:
    if reduction == "none":
        return losses.reshape(shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / Tensor(sample_weight.sum())  # weighted mean: Σ wᵢℓᵢ / Σ wᵢ


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of class indices: ℓᵢ = −w_tᵢ · input[i, tᵢ] for log-probabilities
    ``input`` (N, C) or (N, C, d1, ...) and ``target`` (N) or (N, d1, ...)."""
    _check_reduction("nll_loss", reduction)
    losses, sample_weight, *_ = _nll_terms("nll_loss", input, target, weight, ignore_index)
    return _weighted_reduce(losses, sample_weight, reduction, tuple(target.shape))


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C) or (N, C, d1, ...) and ``target``.

    ``target`` holds class indices (N) / (N, d1, ...), or class probabilities with the
    input's shape (a float tensor). With label smoothing ε the target becomes
    (1 − ε)·one_hot(t) + ε/C.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    class_dim = 1 if input.ndim >= 2 else 0
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    log_probs = log_softmax(input, dim=class_dim)
    classes = input.shape[class_dim]
    weight_shape = (1, classes) + (1,) * (input.ndim - 2) if input.ndim >= 2 else (classes,)

    if target.dtype.kind == "f":  # class probabilities
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError(
                f"{op}: a floating-point target holds class probabilities and must have the input's shape "
                f"{tuple(input.shape)}, got {tuple(target.shape)} (for class indices use an int64 target)"
            )
        if label_smoothing > 0:
            target = target * (1.0 - label_smoothing) + label_smoothing / classes
        weighted = log_probs * target
        if weight is not None:
            weighted = weighted * _constant_weight(weight, log_probs).reshape(weight_shape)
        return _reduce(-weighted.sum(dim=class_dim), reduction)

    losses, sample_weight, flat, _, valid = _nll_terms(op, log_probs, target, weight, ignore_index)
    if label_smoothing == 0:
        return _weighted_reduce(losses, sample_weight, reduction, tuple(target.shape))
    # The uniform part: −Σ_c w_c log p_ic for each position (0 where ignored).
    weighted = flat if weight is None else flat * _constant_weight(weight, flat)
    smooth = -weighted.sum(dim=1) * Tensor(valid.astype(flat.dtype))
    eps = label_smoothing
    if reduction == "none":
        return ((1.0 - eps) * losses + (eps / classes) * smooth).reshape(tuple(target.shape))
    total = (1.0 - eps) * losses.sum() + (eps / classes) * smooth.sum()
    return total if reduction == "sum" else total / Tensor(sample_weight.sum())


# --------------------------------------------------------------------- binary cross entropy
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """ℓ = −[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] from logits x, computed stably as
    (1 − y)·x + (1 + (p − 1)·y)·softplus(−x);  ∂ℓ/∂x = σ(x) − y when p = 1."""
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"{op}: target shape {tuple(target.shape)} must be the same as input shape {tuple(input.shape)}"
        )
    if target.dtype.kind != "f":
        raise TypeError(
            f"{op}: target must be a floating-point tensor of 0/1 labels or probabilities, got dtype {target.dtype}"
        )
    softplus_neg = Softplus.apply(-input, beta=1.0, threshold=float("inf"))
    if pos_weight is None:
        log_weight = softplus_neg
    else:
        log_weight = (1.0 + (pos_weight.to(input.dtype) - 1.0) * target) * softplus_neg
    loss = (1.0 - target) * input + log_weight
    if weight is not None:
        loss = loss * weight.to(input.dtype)
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------- regression
def _regression_pair(op: str, input: Tensor, target: Any, reduction: str) -> Tensor:
    _check_reduction(op, reduction)
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(
            f"{op}: target shape {tuple(target.shape)} differs from input shape {tuple(input.shape)}; "
            "they will be broadcast, which is probably not what you want",
            stacklevel=3,
        )
    return input - target


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error: ℓ = (x − y)²;  ∂ℓ/∂x = 2(x − y)."""
    diff = _regression_pair("mse_loss", input, target, reduction)
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error: ℓ = |x − y|;  ∂ℓ/∂x = sign(x − y)  (0 where x = y)."""
    diff = _regression_pair("l1_loss", input, target, reduction)
    return _reduce(diff.abs(), reduction)
