"""2-D convolution and transposed convolution, computed as one big matrix multiply.

A convolution layer (PyTorch's ``conv2d``; strictly a cross-correlation, the kernel is
not flipped) slides a filter W of shape (C_out, C_in/groups, k_H, k_W) over the
zero-padded input x of shape (N, C_in, H, W):

    y[n, o, h, w] = b[o] + Σ_c Σ_i Σ_j  W[o, c, i, j] · x_pad[n, c, h·s + i·d, w·s + j·d]

with stride s, dilation d and padding p. Each output side has length

    H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1.

**im2col (the GEMM path).** For each kernel offset (i, j) the strided slice
``x_pad[:, :, i·d :: s, j·d :: s]`` (cut to H_out × W_out) holds, at every output pixel,
the input value that W[:, :, i, j] multiplies. Copying the k_H·k_W slices into one
matrix ``cols`` of shape (C_in·k_H·k_W, N·H_out·W_out), one column per output pixel,
turns the whole layer into one matrix product, which BLAS (or cuBLAS) runs at full speed:

    Y = W_mat · cols,     W_mat = W.reshape(C_out, C_in·k_H·k_W),

and Y (C_out, N·H_out·W_out) is y with its batch axis moved. (On the CPU the batch goes
through in chunks of a few images, reusing one cache-sized ``cols`` buffer; with groups,
W_mat and cols gain a group axis and each group is its own product.)

**The phase grid (how cols is filled).** Copying one kernel offset of a small image
goes one short image row at a time, which is slow. So ``_grid_im2col`` first lays out
x, split into its s×s phases (stride 1: one phase, x itself), as one long row per
channel with zero gaps between image rows. On that layout every output pixel reads a
given kernel offset at the same fixed distance, so each row of ``cols`` is one
contiguous slice (the padding reads land on the gap zeros), and the gap columns are
computed and thrown away. ``_grid_col2im`` is its adjoint.

**Backward.** The convolution is linear in x and in W, so both gradients are again
convolutions:

* ∂L/∂x = ``conv_transpose2d(g, W)``: the matrix product W_matᵀ · g spreads each output
  gradient back over its window, and **col2im** adds the k_H·k_W slices back into place
  (overlapping windows accumulate). With stride 1 the same thing is
  a plain convolution of g with the flipped kernel, which is what runs then;
* ∂L/∂W = Σ_n g_n · cols_nᵀ (``Conv2dWeightGrad``), one (C_out × N·L)·(N·L × C_in·k_H·k_W)
  product per chunk;
* ∂L/∂b = Σ_{n,h,w} g.

``conv_transpose2d`` is the adjoint of ``conv2d`` in x, so its backward is ``conv2d``
(for x) and ``Conv2dWeightGrad`` (for W). ``Conv2dWeightGrad`` is linear in both of its
inputs; its backward is ``conv_transpose2d`` and ``conv2d``. These three Functions call
only each other, so gradients of gradients (``create_graph=True``, WGAN-GP, the
``gradgradcheck`` tests) work to any order.

Internally every Function takes an explicit padding *before* the data and explicit
output sizes, so asymmetric cases (``padding="same"`` with an even kernel, transposed
convolutions with ``output_padding``) all reduce to the same index relation
"input position = output position · s + kernel offset · d − p".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigen.autograd import Function, is_grad_enabled
from minigen.backend import device_of, xp_of
from minigen.tensor import Tensor

IntPair = int | Sequence[int]

# On the CPU the batch is processed in chunks whose cols buffer holds about this many
# elements (8 MB in float32): the buffer stays in cache between im2col and the matmul,
# and it is reused from chunk to chunk. (A fresh 75 MB buffer per call costs as much in
# page faults as the copy itself.) A GPU gets big chunks, for fewer kernel launches,
# capped so that a large batch does not exhaust its memory.
CPU_CHUNK_ELEMENTS = 1 << 21
GPU_CHUNK_ELEMENTS = 1 << 26


# ------------------------------------------------------------------------ geometry
def _pair(value: Any, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints, as PyTorch accepts for stride, padding, kernel size..."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1 (the slide's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _span(k: int, stride: int, pad: int, dilation: int, n_in: int, n_out: int) -> tuple[int, int, int]:
    """For kernel offset k: the output positions [lo, hi) whose input position
    o·s + k·d − p falls inside [0, n_in) (the others read zero padding), and the input
    position of output position ``lo``. A negative ``pad`` crops instead of padding."""
    offset = k * dilation - pad
    lo = -(offset // stride) if offset < 0 else 0  # ⌈−offset / s⌉
    hi = min(n_out, (n_in - 1 - offset) // stride + 1)
    hi = max(hi, lo)
    return lo, hi, lo * stride + offset


def _window(start: int, stride: int, count: int) -> slice:
    """The strided slice start, start + s, ..., covering ``count`` positions."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _batch_chunk(x: Any, per_sample: int) -> int:
    """How many samples go into one cols buffer."""
    budget = GPU_CHUNK_ELEMENTS if device_of(x).type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, min(x.shape[0], budget // max(per_sample, 1)))


def _axis_plan(n_in: int, k: int, stride: int, pad: int, dilation: int, n_out: int) -> tuple:
    """One axis of the phase grid (see ``_grid_im2col``).

    Tap i reads input position o·s + i·d − p = s·(o + δᵢ) + aᵢ for output position o:
    sample o + δᵢ of phase aᵢ (the inputs a, a + s, a + 2s, ...), with
    aᵢ = (i·d − p) mod s and δᵢ = ⌊(i·d − p)/s⌋. Returns (phases aᵢ, shifts δᵢ, the
    length of each phase, rows), where ``rows`` is the grid's length along this axis:
    room for every output, every phase sample, and every read past either end, so
    that a read outside the input lands on a zero of the gap and never on a sample of
    the next row or image.
    """
    reads = [i * dilation - pad for i in range(k)]
    phases = [r % stride for r in reads]
    shifts = [r // stride for r in reads]
    lengths = [len(range(a, n_in, stride)) for a in range(stride)]
    rows = max(n_out, max(lengths), n_out + max(shifts), max(lengths) - min(shifts))
    return phases, shifts, lengths, rows


def _grid_plan(x_hw: tuple, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple) -> tuple:
    """Both axes' plans, for the convolution from an input of size ``x_hw`` to ``out_hw``."""
    return tuple(_axis_plan(*args) for args in zip(x_hw, kernel, stride, pad, dilation, out_hw))


def _margins(plan: tuple, columns: int) -> tuple[int, int]:
    """(lead, length) of a laid-out row: zeros before the first image for reads before
    it, then ``columns`` grid positions, then room for the reads past the last one."""
    (_, shifts_h, _, _), (_, shifts_w, _, pitch) = plan
    first = min(shifts_h) * pitch + min(shifts_w)
    last = max(shifts_h) * pitch + max(shifts_w)
    lead = max(0, -first)
    return lead, lead + columns + max(0, last)


def _grid_im2col(x: Any, kernel: tuple, stride: tuple, plan: tuple, buffers: list) -> Any:
    """im2col with long contiguous copies: cols[c, i, j, m] = x_pad[n, c, h·s + i·d, w·s + j·d]
    for the output pixel (n, h, w) of grid column m = (n·R + h)·P + w.

    Copying one kernel offset of small images is slow when it goes one short image row
    at a time. So first each phase of x (the samples a, a + s, a + 2s, ... along each
    axis; stride 1 has one phase, x itself) is laid out as one long row per channel:
    images one after another, each on a grid of R rows of pitch P, with zeros in the
    grid's gaps. On that layout output pixel m reads tap (i, j) at the fixed distance
    δᵢ·P + δⱼ from m in phase (aᵢ, aⱼ) (``_axis_plan``), for every pixel at once: each
    row of cols is one contiguous slice, and reads of the padding land on gap zeros.
    The grid columns of the gaps (h ≥ H_out or w ≥ W_out) are computed and thrown away:
    some more matrix product, for copies that run at memory speed.

    ``buffers`` keeps the laid-out phases and cols from the previous chunk for reuse
    (the gaps stay zero). Returns cols of shape (C, k_H, k_W, N·R·P).
    """
    xp = xp_of(x)
    n, c = x.shape[:2]
    (phases_h, shifts_h, lengths_h, rows), (phases_w, shifts_w, lengths_w, pitch) = plan
    columns = n * rows * pitch
    lead, length = _margins(plan, columns)
    if not buffers or buffers[0].shape != (*stride, c, length):
        buffers[:] = [xp.zeros((*stride, c, length), dtype=x.dtype), xp.empty((c, *kernel, columns), dtype=x.dtype)]
    laid_out, cols = buffers
    for a in sorted(set(phases_h)):
        for b in sorted(set(phases_w)):
            grid = laid_out[a, b, :, lead : lead + columns].reshape(c, n, rows, pitch)
            grid[:, :, : lengths_h[a], : lengths_w[b]] = x[:, :, a :: stride[0], b :: stride[1]].transpose(1, 0, 2, 3)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            start = lead + shifts_h[i] * pitch + shifts_w[j]
            cols[:, i, j] = laid_out[phases_h[i], phases_w[j], :, start : start + columns]
    return cols


def _grid_col2im(cols: Any, out: Any, stride: tuple, plan: tuple) -> Any:
    """The adjoint of ``_grid_im2col``: out[n, c, h·s + i·d − p, w·s + j·d − p] += cols[c, i, j, m].

    Each kernel offset adds its row of cols, one contiguous slice, into the laid-out
    phase it belongs to; then each phase goes back into every s-th position of ``out``.
    Sums that land in the gaps (the padding) are dropped. ``cols`` must be zero in the
    grid's gap columns.
    """
    xp = xp_of(cols)
    c, kh, kw, columns = cols.shape
    n = out.shape[0]
    (phases_h, shifts_h, lengths_h, rows), (phases_w, shifts_w, lengths_w, pitch) = plan
    lead, length = _margins(plan, columns)
    laid_out = xp.zeros((*stride, c, length), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            start = lead + shifts_h[i] * pitch + shifts_w[j]
            laid_out[phases_h[i], phases_w[j], :, start : start + columns] += cols[:, i, j]
    for a in sorted(set(phases_h)):
        for b in sorted(set(phases_w)):
            grid = laid_out[a, b, :, lead : lead + columns].reshape(c, n, rows, pitch)
            out[:, :, a :: stride[0], b :: stride[1]] = grid[:, :, : lengths_h[a], : lengths_w[b]].transpose(1, 0, 2, 3)
    return out


def _channels_first_on_grid(a: Any, grid: tuple) -> Any:
    """a (b, C, H, W) as (C, b, R, P): channels first, each image in the top-left corner of
    its R × P grid, zeros in the gaps (a view when the grid is the image itself)."""
    if tuple(a.shape[2:]) == tuple(grid):
        return a.transpose(1, 0, 2, 3)
    laid_out = xp_of(a).zeros((a.shape[1], a.shape[0], *grid), dtype=a.dtype)
    laid_out[:, :, : a.shape[2], : a.shape[3]] = a.transpose(1, 0, 2, 3)
    return laid_out


def _cols_chunks(x: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple):
    """Yield (start, stop, cols, grid) over batch chunks, reusing one cols buffer.

    ``grid`` = (R, P): output pixel (h, w) of an image is column h·P + w of that image's
    R·P columns of cols (``_grid_im2col``).
    """
    n, c = x.shape[:2]
    plan = _grid_plan(x.shape[2:], kernel, stride, pad, dilation, out_hw)
    grid = (plan[0][3], plan[1][3])
    chunk = _batch_chunk(x, c * kernel[0] * kernel[1] * grid[0] * grid[1])
    buffers: list = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        yield start, stop, _grid_im2col(x[start:stop], kernel, stride, plan, buffers), grid


# -------------------------------------------------------------- array-level kernels
def _conv_and_weight_grad(
    x: Any,
    w: Any,
    g: Any,
    kernel: tuple,
    stride: tuple,
    pad: tuple,
    dilation: tuple,
    groups: int,
    out_hw: tuple,
) -> tuple[Any, Any]:
    """One pass over the im2col matrix of x, chunk by chunk, computing what is asked for:

    * y = conv2d(x, W) when ``w`` is given:  Y = W_mat · cols (per group), and
    * ∂L/∂W = Σ_n g_n · cols_nᵀ when ``g`` is given: the batch is folded into the
      contraction, (C_out/G × b·L) · (b·L × K) per chunk.

    Each is one wide matrix product per chunk. Returns (y or None, dW or None).
    """
    xp = xp_of(x)
    n, c_in = x.shape[:2]
    k = (c_in // groups) * kernel[0] * kernel[1]
    y = dw = None
    if w is not None:
        y = xp.empty((n, w.shape[0], *out_hw), dtype=x.dtype)
        w_mat = w.reshape(groups, w.shape[0] // groups, k)
    for start, stop, cols, grid in _cols_chunks(x, kernel, stride, pad, dilation, out_hw):
        b = stop - start
        columns = b * grid[0] * grid[1]
        cols = cols.reshape(groups, k, columns)
        if w is not None:  # (G, C_out/G, K) @ (G, K, columns) -> (C_out, b, H_out, W_out), then batch-first
            product = xp.matmul(w_mat, cols).reshape(w.shape[0], b, *grid)
            y[start:stop] = product[:, :, : out_hw[0], : out_hw[1]].transpose(1, 0, 2, 3)
        if g is not None:  # (G, C_out/G, columns) @ (G, columns, K), g laid out on cols' grid
            c_out = g.shape[1]
            g_t = _channels_first_on_grid(g[start:stop], grid)  # zeros in the gap columns: they add nothing
            part = xp.matmul(g_t.reshape(groups, c_out // groups, columns), cols.swapaxes(-1, -2))
            if dw is None:
                dw = part
            else:
                dw += part
    if dw is not None:
        dw = dw.reshape(g.shape[1], c_in // groups, *kernel)
    return y, dw


def _conv2d_array(x: Any, w: Any, stride: tuple, pad: tuple, dilation: tuple, groups: int, out_hw: tuple) -> Any:
    """y = conv2d(x, W) with explicit padding-before and output size."""
    return _conv_and_weight_grad(x, w, None, w.shape[2:], stride, pad, dilation, groups, out_hw)[0]


def _conv_transpose2d_array(
    x: Any, w: Any, stride: tuple, pad: tuple, dilation: tuple, groups: int, out_hw: tuple
) -> Any:
    """The adjoint of ``_conv2d_array`` in x, onto an output of spatial size ``out_hw``.

    Stride 1: a transposed convolution is a plain convolution with the kernel flipped,
    its in/out channel axes swapped and padding d(k − 1) − p, which is cheaper than
    col2im. Larger strides: cols = W_matᵀ · x per group and chunk, then col2im
    (``_grid_col2im``).
    """
    xp = xp_of(x)
    n, c_in, h, w_len = x.shape
    _, c_group_out, kh, kw = w.shape
    c_out = groups * c_group_out
    if stride == (1, 1):
        flipped = w[:, :, ::-1, ::-1].reshape(groups, c_in // groups, c_group_out, kh, kw).swapaxes(1, 2)
        flipped = flipped.reshape(c_out, c_in // groups, kh, kw)
        flipped_pad = (dilation[0] * (kh - 1) - pad[0], dilation[1] * (kw - 1) - pad[1])
        return _conv2d_array(x, flipped, stride, flipped_pad, dilation, groups, out_hw)
    # Stride > 1: cols = W_matᵀ · x per group, on the grid of x (zeros in its gaps), then col2im.
    plan = _grid_plan(out_hw, (kh, kw), stride, pad, dilation, (h, w_len))  # the conv that maps y to x
    rows, pitch = plan[0][3], plan[1][3]
    y = xp.zeros((n, c_out, *out_hw), dtype=x.dtype)
    w_t = w.reshape(groups, c_in // groups, c_group_out * kh * kw).swapaxes(-1, -2)  # (G, K, C_in/G)
    chunk = _batch_chunk(x, c_out * kh * kw * rows * pitch)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        b = stop - start
        x_grid = _channels_first_on_grid(x[start:stop], (rows, pitch))
        cols = xp.matmul(w_t, x_grid.reshape(groups, c_in // groups, b * rows * pitch))
        _grid_col2im(cols.reshape(c_out, kh, kw, b * rows * pitch), y[start:stop], stride, plan)
    return y


def _weight_grad_array(x: Any, g: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, groups: int) -> Any:
    """∂L/∂W = Σ_n g_n · cols_nᵀ per group, shape (C_out, C_in/G, k_H, k_W)."""
    return _conv_and_weight_grad(x, None, g, kernel, stride, pad, dilation, groups, g.shape[2:])[1]


# ----------------------------------------------------------------------- Functions
class Conv2d(Function):
    """y = conv2d(x, W) + b (im2col + matmul).

    ∂L/∂x = conv_transpose2d(g, W),  ∂L/∂W = Conv2dWeightGrad(x, g),  ∂L/∂b = Σ_{n,h,w} g.
    """

    __slots__ = ("stride", "pad", "dilation", "groups")

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        *bias: Tensor,
        stride: tuple,
        pad: tuple,
        dilation: tuple,
        groups: int,
        out_hw: tuple,
    ):
        self.stride, self.pad, self.dilation, self.groups = stride, pad, dilation, groups
        y = _conv2d_array(x.data, w.data, stride, pad, dilation, groups, tuple(out_hw))
        if bias:
            y += bias[0].data.reshape(1, -1, 1, 1)
        self.saved = (x, w)
        return y

    def backward(self, grad: Tensor):
        x, w = self.saved
        need = self.needs_grad
        geometry = dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)
        grad_x = ConvTranspose2d.apply(grad, w, out_hw=x.shape[2:], **geometry) if need[0] else None
        grad_w = Conv2dWeightGrad.apply(x, grad, kernel=w.shape[2:], **geometry) if need[1] else None
        if len(need) == 2:
            return grad_x, grad_w
        return grad_x, grad_w, grad.sum(dim=(0, 2, 3)) if need[2] else None


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, W) + b: the adjoint of conv2d in its input.

    ∂L/∂x = conv2d(g, W),  ∂L/∂W = Conv2dWeightGrad(g, x),  ∂L/∂b = Σ_{n,h,w} g.
    (W's layout (C_in, C_out/G, k_H, k_W) is conv2d's (C_out, C_in/G, ...) layout for the
    convolution that maps y's shape back to x's, which is why both gradients are conv2d's.)
    """

    __slots__ = ("stride", "pad", "dilation", "groups")

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        *bias: Tensor,
        stride: tuple,
        pad: tuple,
        dilation: tuple,
        groups: int,
        out_hw: tuple,
    ):
        self.stride, self.pad, self.dilation, self.groups = stride, pad, dilation, groups
        y = _conv_transpose2d_array(x.data, w.data, stride, pad, dilation, groups, tuple(out_hw))
        if bias:
            y += bias[0].data.reshape(1, -1, 1, 1)
        self.saved = (x, w)
        return y

    def backward(self, grad: Tensor):
        x, w = self.saved
        need = self.needs_grad
        geometry = dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)
        if need[0] and need[1] and not is_grad_enabled():
            # No graph to record (create_graph=False): both gradients read the im2col
            # matrix of g, so compute them from one pass over it.
            grad_x, grad_w = _conv_and_weight_grad(
                grad.data, w.data, x.data, w.shape[2:], out_hw=x.shape[2:], **geometry
            )
            grad_x, grad_w = Tensor(grad_x), Tensor(grad_w)
        else:
            grad_x = Conv2d.apply(grad, w, out_hw=x.shape[2:], **geometry) if need[0] else None
            grad_w = Conv2dWeightGrad.apply(grad, x, kernel=w.shape[2:], **geometry) if need[1] else None
        if len(need) == 2:
            return grad_x, grad_w
        return grad_x, grad_w, grad.sum(dim=(0, 2, 3)) if need[2] else None


class Conv2dWeightGrad(Function):
    """∂L/∂W of conv2d as an op of its own:

        G_W[o, c, i, j] = Σ_{n,h,w} g[n, o, h, w] · x_pad[n, c, h·s + i·d, w·s + j·d].

    It is bilinear in (x, g), so for an upstream gradient U of W's shape
    ∂⟨U, G_W⟩/∂x = conv_transpose2d(g, U) and ∂⟨U, G_W⟩/∂g = conv2d(x, U).
    """

    __slots__ = ("stride", "pad", "dilation", "groups")

    def forward(self, x: Tensor, g: Tensor, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, groups: int):
        self.stride, self.pad, self.dilation, self.groups = stride, pad, dilation, groups
        self.saved = (x, g)
        return _weight_grad_array(x.data, g.data, tuple(kernel), stride, pad, dilation, groups)

    def backward(self, grad: Tensor):
        x, g = self.saved
        need_x, need_g = self.needs_grad
        geometry = dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)
        grad_x = ConvTranspose2d.apply(g, grad, out_hw=x.shape[2:], **geometry) if need_x else None
        grad_g = Conv2d.apply(x, grad, out_hw=g.shape[2:], **geometry) if need_g else None
        return grad_x, grad_g


# ---------------------------------------------------------------- public functions
def _check_inputs(op: str, input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if input.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W) (or 3-D (C, H, W)), got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight, got shape {tuple(weight.shape)}")
    if input.dtype.kind != "f" or input.dtype != weight.dtype or (bias is not None and bias.dtype != input.dtype):
        dtypes = f"input {input.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"{op}: input, weight and bias must share one floating-point dtype, got {dtypes}")
    devices = {t.device for t in (input, weight, bias) if t is not None}
    if len(devices) > 1:
        raise RuntimeError(
            f"{op}: expected all tensors on the same device, got input on {input.device} and weight on "
            f"{weight.device}" + (f" and bias on {bias.device}" if bias is not None else "")
        )


def _check_positive(op: str, **pairs: tuple[int, int]) -> None:
    for name, (a, b) in pairs.items():
        low = 0 if name in ("padding", "output_padding") else 1
        if a < low or b < low:
            bound = "non-negative" if low == 0 else "positive"
            raise ValueError(f"{op}: {name} must be {bound}, got {(a, b)}")


def _check_groups(op: str, groups: int, c_in: int, c_out: int, shapes: str) -> None:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input channels ({c_in}) and the output channels "
            f"({c_out}); {shapes}"
        )


def _batched(input: Tensor) -> tuple[Tensor, bool]:
    """PyTorch accepts an unbatched (C, H, W) image: add the batch axis, remove it later."""
    if isinstance(input, Tensor) and input.ndim == 3:
        return input.unsqueeze(0), True
    return input, False


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation), PyTorch's ``F.conv2d``.

    ``input`` (N, C_in, H, W) or (C_in, H, W); ``weight`` (C_out, C_in/groups, k_H, k_W);
    ``bias`` (C_out,) or None. ``stride``, ``padding``, ``dilation``: int or (h, w) pair;
    ``padding`` may also be ``"valid"`` (0) or ``"same"`` (output size = input size,
    stride 1 only; an odd total padding puts the extra row/column at the end, as PyTorch
    does).

        y[n, o, h, w] = b[o] + Σ_c Σ_i Σ_j W[o, c, i, j] · x_pad[n, c, h·s + i·d, w·s + j·d]

    Output size per side: H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1.

    Worked example (the slide): a 3×3 filter over a 6×6 image padded by 1, stride 1,
    gives ⌊(6 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 6, a 6×6 output: padding by 1 keeps the
    size. With stride 2 it would be ⌊5/2⌋ + 1 = 3. On a tiny image, the 2×2 filter
    [[1, 0], [0, −1]] computes "top-left minus bottom-right" in each window::

        x = [[1, 2, 3],        W = [[1,  0],       y = [[1−5, 2−6],   = [[−4, −4],
             [4, 5, 6],             [0, −1]]            [4−8, 5−9]]      [−4, −4]]
             [7, 8, 9]]

    (3 + 0 − 1·(2 − 1) − 1) / 1 + 1 = 2, so y is 2×2.
    """
    op = "conv2d"
    x, unbatched = _batched(input)
    _check_inputs(op, x, weight, bias)
    stride_ = _pair(stride, "stride", op)
    dilation_ = _pair(dilation, "dilation", op)
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    shapes = f"input shape {tuple(x.shape)}, weight shape {tuple(weight.shape)}"
    _check_groups(op, groups, c_in, c_out, shapes)
    if c_group * groups != c_in:
        raise ValueError(
            f"{op}: the input has {c_in} channels, but the weight of shape {tuple(weight.shape)} with groups={groups} "
            f"expects {c_group} × {groups} = {c_group * groups} input channels (weight layout: "
            "(C_out, C_in/groups, kH, kW))"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{op}: bias must have shape ({c_out},) to match the weight's C_out, got {tuple(bias.shape)}")
    if isinstance(padding, str):
        if padding == "valid":
            pad_before, pad_total = (0, 0), (0, 0)
        elif padding == "same":
            if stride_ != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride_}")
            pad_total = (dilation_[0] * (kh - 1), dilation_[1] * (kw - 1))
            pad_before = (pad_total[0] // 2, pad_total[1] // 2)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        pad_before = _pair(padding, "padding", op)
        pad_total = (2 * pad_before[0], 2 * pad_before[1])
    _check_positive(op, stride=stride_, dilation=dilation_, padding=pad_before)
    reach = (dilation_[0] * (kh - 1) + 1, dilation_[1] * (kw - 1) + 1)
    padded = (h + pad_total[0], w + pad_total[1])
    if reach[0] > padded[0] or reach[1] > padded[1]:
        raise ValueError(
            f"{op}: the kernel (effective size {reach[0]}×{reach[1]} with dilation {dilation_}) is larger than the "
            f"padded input ({padded[0]}×{padded[1]}); {shapes}, padding {padding}"
        )
    out_hw = ((padded[0] - reach[0]) // stride_[0] + 1, (padded[1] - reach[1]) // stride_[1] + 1)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    out = Conv2d.apply(*inputs, stride=stride_, pad=pad_before, dilation=dilation_, groups=groups, out_hw=out_hw)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> Tensor:
    """Transposed convolution ("deconvolution"), PyTorch's ``F.conv_transpose2d``.

    ``input`` (N, C_in, H, W) or (C_in, H, W); ``weight`` (C_in, C_out/groups, k_H, k_W)
    (note: C_in first, the transpose of conv2d's layout); ``bias`` (C_out,) or None.

    It is the adjoint (the gradient with respect to the input) of ``conv2d`` with the
    same weight: every input pixel scatters W[c, :, :, :] · x[n, c, h, w] onto the output
    window starting at (h·s − p, w·s − p), overlapping windows adding up:

        y[n, o, h·s + i·d − p, w·s + j·d − p] += x[n, c, h, w] · W[c, o, i, j]

    so it upsamples by the stride. Output size per side:

        H_out = (H − 1)·s − 2p + d(k − 1) + output_padding + 1.

    ``output_padding`` (< stride or < dilation) adds rows/columns at the end, choosing
    among the input sizes that conv2d with this stride maps to the same size. E.g.
    k=4, s=2, p=1 doubles the size: (8 − 1)·2 − 2 + 3 + 1 = 16.
    """
    op = "conv_transpose2d"
    x, unbatched = _batched(input)
    _check_inputs(op, x, weight, bias)
    stride_ = _pair(stride, "stride", op)
    pad_ = _pair(padding, "padding", op)
    out_pad = _pair(output_padding, "output_padding", op)
    dilation_ = _pair(dilation, "dilation", op)
    _check_positive(op, stride=stride_, dilation=dilation_, padding=pad_, output_padding=out_pad)
    n, c_in, h, w = x.shape
    c_w, c_group_out, kh, kw = weight.shape
    c_out = c_group_out * groups if isinstance(groups, int) else 0
    shapes = f"input shape {tuple(x.shape)}, weight shape {tuple(weight.shape)}"
    _check_groups(op, groups, c_in, c_out, shapes)
    if c_w != c_in:
        raise ValueError(
            f"{op}: the input has {c_in} channels, but the weight of shape {tuple(weight.shape)} expects {c_w} "
            "(weight layout: (C_in, C_out/groups, kH, kW))"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(
            f"{op}: bias must have shape ({c_out},) (C_out = {c_group_out} × groups {groups}), got {tuple(bias.shape)}"
        )
    for axis in range(2):
        if out_pad[axis] >= max(stride_[axis], dilation_[axis]):
            raise ValueError(
                f"{op}: output_padding {out_pad} must be smaller than either stride {stride_} or dilation {dilation_}"
            )
    out_hw = tuple(
        (size - 1) * stride_[a] - 2 * pad_[a] + dilation_[a] * (k - 1) + out_pad[a] + 1
        for a, (size, k) in enumerate(((h, kh), (w, kw)))
    )
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(f"{op}: the output size {out_hw} is not positive; {shapes}, padding {pad_}, stride {stride_}")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    out = ConvTranspose2d.apply(*inputs, stride=stride_, pad=pad_, dilation=dilation_, groups=groups, out_hw=out_hw)
    return out.squeeze(0) if unbatched else out
