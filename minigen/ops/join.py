"""Joining and splitting: cat, stack, split, chunk, pad.

cat's backward slices the gradient back into the pieces; split and chunk are just
slices (``GetItem``), so their backward comes for free; pad's backward crops.
"""

from __future__ import annotations

from collections.abc import Sequence

from minigen.autograd import Function
from minigen.tensor import Tensor


class Cat(Function):
    """y = [x₁, x₂, ...] joined along ``dim``;  ∂L/∂xᵢ = the slice of g that xᵢ filled."""

    __slots__ = ("dim",)

    def forward(self, *tensors: Tensor, dim: int):
        first = tensors[0]
        self.dim = dim % first.ndim
        for t in tensors[1:]:
            if t.ndim != first.ndim or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != self.dim
            ):
                shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
                raise ValueError(f"cat: tensors must match in every dimension except {dim}, got shapes {shapes}")
        self.saved = [t.shape[self.dim] for t in tensors]
        return first.xp.concatenate([t.data for t in tensors], axis=self.dim)

    def backward(self, grad: Tensor):
        grads = []
        start = 0
        for length, needed in zip(self.saved, self.needs_grad):
            index = (slice(None),) * self.dim + (slice(start, start + length),)
            grads.append(grad[index] if needed else None)
            start += length
        return tuple(grads)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate tensors along an existing dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    return Cat.apply(*tensors, dim=dim)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors of equal shape along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
    dim = dim % x.ndim
    length = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, length - s) for s in range(0, length, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} do not add up to {length}, the size of dim {dim}")
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(x[(slice(None),) * dim + (slice(start, start + size),)])
        start += size
    return tuple(pieces)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``chunks`` pieces of (nearly) equal size along ``dim``, as in PyTorch."""
    length = x.shape[dim]
    size = -(-length // chunks)
    return split(x, size, dim)


class Pad(Function):
    """y = x with ``value`` added around it;  ∂L/∂x = g cropped back to x.

    ``pad`` is PyTorch's: pairs (before, after) starting from the last dimension,
    e.g. (left, right, top, bottom) for an image.
    """

    def forward(self, x: Tensor, pad: Sequence[int], value: float):
        if len(pad) % 2 or len(pad) // 2 > x.ndim:
            raise ValueError(f"pad: expected pairs for at most {x.ndim} dims, got {tuple(pad)}")
        if any(p < 0 for p in pad):
            raise ValueError(f"pad: negative padding is not supported, got {tuple(pad)}")
        widths = [(0, 0)] * x.ndim
        for i in range(len(pad) // 2):
            widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        self.saved = tuple(slice(before, before + size) for (before, _), size in zip(widths, x.shape))
        return x.xp.pad(x.data, widths, mode="constant", constant_values=value)

    def backward(self, grad: Tensor):
        return grad[self.saved]


def pad(x: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Constant padding, PyTorch's ``F.pad`` convention."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    return Pad.apply(x, pad=tuple(pad), value=value)
