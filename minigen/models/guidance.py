"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and not.

**Training.** The condition y (a class label, a caption, …) is replaced by the null
condition ∅ with probability p_uncond (``drop_condition``, ``drop_labels``), so the one
network ε_θ learns both ε_θ(x_t, t, y) and the unconditional ε_θ(x_t, t, ∅).

**Sampling.** The two predictions are mixed with a guidance scale w (``guided_eps``):

    ε̃_θ(x_t, t, y) = ε_θ(x_t, t, ∅) + w · (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅)).

w = 0 is the unconditional model, w = 1 the conditional one, and w > 1 pushes further in
the direction that "y" adds, trading diversity for fidelity to y.

**What a condition is.** Whatever the network takes after (x_t, t): one tensor, such as
class labels y (B,) with ``model.null_label`` as ∅, or a tuple of tensors, such as a
caption's (context (B, M, d), key_padding_mask (B, M)) with the empty caption as ∅. The
network is called as ``model(x_t, t, *condition)``; every tensor of a condition has the
batch as its first dimension.
"""

from __future__ import annotations

from collections.abc import Callable

import minigen as mg
from minigen.tensor import Tensor

Condition = Tensor | tuple[Tensor, ...]  # the network's arguments after (x_t, t)


def condition_args(condition: Condition | None) -> tuple[Tensor, ...]:
    """The condition as the tuple of extra arguments of ``model(x_t, t, *args)``: () for none."""
    if condition is None:
        return ()
    return condition if isinstance(condition, tuple) else (condition,)


def drop_condition(condition: Condition, null: Condition, p_uncond: float, drop: Tensor | None = None) -> Condition:
    """Classifier-free guidance training: replace sample i's condition by ∅ with
    probability ``p_uncond``, so the network also learns the unconditional ε_θ(x_t, t, ∅).

    ``null`` is ∅ in the condition's form, for the whole batch or for one sample (first
    dimension 1, repeated). ``drop`` (bool, (B,)) gives the choice explicitly; by default
    it is drawn from the seeded generator. A tuple condition is dropped as a whole: a
    caption's tokens and its mask together.
    """
    parts = condition_args(condition)
    nulls = _null_for_batch(parts, null, "drop_condition")
    batch = parts[0].shape[0]
    if drop is None:
        drop = mg.rand(batch, device=parts[0].device) < p_uncond
    dropped = []
    for part, null_part in zip(parts, nulls):
        per_sample = drop.reshape((batch,) + (1,) * (part.ndim - 1))  # one choice for all of a sample's entries
        dropped.append(mg.where(per_sample, null_part, part))
    return tuple(dropped) if isinstance(condition, tuple) else dropped[0]


def drop_labels(y: Tensor, p_uncond: float, null_label: int, drop: Tensor | None = None) -> Tensor:
    """``drop_condition`` for class labels: ∅ is the extra label ``null_label``."""
    null = mg.full(tuple(y.shape), null_label, dtype=y.dtype, device=y.device)
    return drop_condition(y, null, p_uncond, drop)


def guided_eps(
    model: Callable[..., Tensor],
    x: Tensor,
    t: Tensor,
    y: Condition,
    guidance_scale: float,
    null: Condition | None = None,
) -> Tensor:
    """Classifier-free guidance: ε̃ = ε_θ(x_t, t, ∅) + w · (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅)).

    Both predictions come from one forward pass on the batch doubled: [x, x] with
    conditions [y, ∅]. ``null`` is ∅ in y's form (for the batch, or for one sample);
    by default y are class labels and ∅ is ``model.null_label``.
    """
    parts = condition_args(y)
    if null is None:
        null_label = getattr(model, "null_label", None)
        if null_label is None or len(parts) != 1:
            raise ValueError(
                "guided_eps: no null condition: the model has no null_label (build it with num_classes for "
                "guidance), or the condition is not a single label tensor; pass null= (∅ in the condition's form)"
            )
        null = mg.full(tuple(parts[0].shape), null_label, dtype=parts[0].dtype, device=parts[0].device)
    nulls = _null_for_batch(parts, null, "guided_eps")
    both = [mg.cat([part, null_part], dim=0) for part, null_part in zip(parts, nulls)]
    b = x.shape[0]
    eps = model(mg.cat([x, x], dim=0), mg.cat([t, t], dim=0), *both)
    eps_cond, eps_uncond = eps[:b], eps[b:]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def predict_eps(
    model: Callable[..., Tensor],
    x: Tensor,
    t: Tensor,
    y: Condition | None = None,
    guidance_scale: float = 1.0,
    null: Condition | None = None,
) -> Tensor:
    """ε̂ for the samplers: unconditional if ``y`` is None, conditional for w = 1, else guided."""
    if y is None:
        return model(x, t)
    if guidance_scale == 1.0:  # ε̃ = ε_cond exactly: skip the unconditional half
        return model(x, t, *condition_args(y))
    return guided_eps(model, x, t, y, guidance_scale, null)


def _null_for_batch(parts: tuple[Tensor, ...], null: Condition, caller: str) -> tuple[Tensor, ...]:
    """∅ in the condition's form for every sample: each tensor as given, or one sample
    (first dimension 1) repeated over the batch."""
    nulls = condition_args(null)
    if len(nulls) != len(parts):
        raise ValueError(
            f"{caller}: the condition has {len(parts)} tensors but null has {len(nulls)}; give ∅ in the same form"
        )
    batch = []
    for part, null_part in zip(parts, nulls):
        if null_part.shape[0] == 1 and null_part.shape[1:] == part.shape[1:]:
            null_part = null_part.expand(*part.shape)
        elif null_part.shape != part.shape:
            raise ValueError(
                f"{caller}: the null condition must have the condition's shape {tuple(part.shape)} "
                f"or that of one sample {(1,) + tuple(part.shape[1:])}, got {tuple(null_part.shape)}"
            )
        batch.append(null_part)
    return tuple(batch)
