"""Joining and splitting: cat, stack, split, chunk, pad.

cat's backward slices the gradient back into the pieces; split and chunk are just
slices (``GetItem``), so their backward comes for free; pad's backward crops.
"""

from __future__ import annotations

from collections.abc import Sequence

from minigen.arguments import normalize_dim
from minigen.autograd import Function
from minigen.tensor import Tensor


class Cat(Function):
    """y = [x₁, x₂, ...] joined along ``dim`` (checked by ``cat``);  ∂L/∂xᵢ = the slice of g that xᵢ filled."""

    __slots__ = ("dim",)

    def forward(self, *tensors: Tensor, dim: int):
        first = tensors[0]
        self.dim = dim
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
    for position, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected a sequence of Tensors, got a {type(t).__name__} at position {position}")
        if t.ndim == 0:
            raise RuntimeError(
                f"cat: zero-dimensional tensor (at position {position}) cannot be concatenated, as in PyTorch; "
                "use mg.stack to join 0-d tensors into a 1-d one"
            )
    return Cat.apply(*tensors, dim=normalize_dim(dim, tensors[0].ndim, "cat"))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors of equal shape along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    dim = normalize_dim(dim, tensors[0].ndim, "stack", new_axis=True)
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
    if x.ndim == 0:
        raise ValueError("split: a 0-d tensor has no dimension to split")
    dim = normalize_dim(dim, x.ndim, "split")
    length = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, length - s) for s in range(0, length, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if any(not isinstance(s, int) or s < 0 for s in sizes) or sum(sizes) != length:
            raise ValueError(
                f"split: sizes {sizes} must be non-negative ints adding up to {length}, the size of dim {dim}"
            )
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(x[(slice(None),) * dim + (slice(start, start + size),)])
        start += size
    return tuple(pieces)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``chunks`` pieces of (nearly) equal size along ``dim``, as in PyTorch."""
    if not isinstance(chunks, int) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    if x.ndim == 0:
        raise ValueError("chunk: a 0-d tensor has no dimension to split")
    dim = normalize_dim(dim, x.ndim, "chunk")
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
