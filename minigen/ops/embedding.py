"""Embedding lookup: y[p] = W[i_p], a row of the table W (num_embeddings, dim) per index.

Forward is plain indexing. Backward sends each output row's gradient back to the row it
came from; a token that appears several times collects the sum of its gradients,

    ∂L/∂W[v] = Σ_{p : i_p = v} g_p,

which is a scatter-add (``IndexAdd``, built on ``backend.scatter_add``), not an
assignment, precisely because indices repeat.

**Out-of-range indices.** On the CPU an index outside 0..V−1 raises ``IndexError``
naming it. On a GPU that check would read its answer back to the host in every step (a
host sync), and CuPy's indexing silently wraps the index to a wrong row; so there the
rows of out-of-range indices come out as NaN instead (one ``where`` on the device), and
the loss computed from them is NaN.
"""

from __future__ import annotations

import numpy as np

from minigen import backend
from minigen.autograd import Function
from minigen.ops.indexing import IndexAdd
from minigen.tensor import Tensor


class Embedding(Function):
    """y = W[i];  ∂L/∂W = scatter-add of g into the rows i (rows equal to ``padding_idx`` get none)."""

    __slots__ = ("padding_idx",)

    def forward(self, weight: Tensor, indices: Tensor, padding_idx: int | None):
        self.padding_idx = padding_idx
        flat = indices.data.reshape(-1)
        self.saved = (weight.shape, flat)
        rows = weight.data[flat]
        if not backend.is_host_array(flat) and rows.dtype.kind == "f":  # on a GPU: NaN rows for bad ids
            out_of_range = (flat < 0) | (flat >= weight.shape[0])
            rows = weight.xp.where(out_of_range[:, None], rows.dtype.type(np.nan), rows)
        return rows.reshape(indices.shape + weight.shape[1:])

    def backward(self, grad: Tensor):
        shape, flat = self.saved
        rows = grad.reshape((flat.shape[0],) + shape[1:])
        if self.padding_idx is not None:  # the padding row is a constant: it gets no gradient
            keep = (flat != self.padding_idx).astype(grad.dtype)
            rows = rows * Tensor(keep.reshape((-1,) + (1,) * (len(shape) - 1)))
        return IndexAdd.apply(rows, shape=shape, key=flat), None


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` picked by the integer tensor ``input``: output shape input.shape + (dim,)."""
    if input.dtype.kind not in "iu":
        raise TypeError(
            f"embedding: indices must be an integer tensor, got dtype {input.dtype} (shape {tuple(input.shape)}); "
            "convert with .long()"
        )
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape {tuple(weight.shape)}")
    if input.device != weight.device:
        raise RuntimeError(
            f"embedding: indices are on {input.device} but weight is on {weight.device}; move them with .to(device)"
        )
    count = weight.shape[0]
    if padding_idx is not None:
        if not -count <= padding_idx < count:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {count} embeddings")
        padding_idx %= count
    # The exact check reads one bool back, so it runs on the CPU only: on a GPU (and the
    # stand-in GPU) that read would be a host sync in every training step (see Embedding).
    if input.numel() and backend.is_host_array(input.data) and bool(((input.data < 0) | (input.data >= count)).any()):
        data = input.data
        bad = data[(data < 0) | (data >= count)].reshape(-1)[0].item()
        raise IndexError(
            f"embedding: index {bad} is out of range for a table of {count} embeddings "
            f"(weight shape {tuple(weight.shape)}, indices shape {tuple(input.shape)}); "
            f"valid indices are 0..{count - 1}"
        )
    return Embedding.apply(weight, input, padding_idx=padding_idx)
