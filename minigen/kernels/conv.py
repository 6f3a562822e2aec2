"""The fast convolution: im2col on a phase grid, then one big matrix product.

``ops/conv.py`` opens with the readable reference (pad, then one product per kernel
offset) and holds the ``Function``s; this file is the array code they run.

**im2col (the GEMM path).** For each kernel offset (i, j) the strided slice
``x_pad[:, :, i·d :: s, j·d :: s]`` (cut to H_out × W_out) holds, at every output pixel,
the input value that W[:, :, i, j] multiplies. Copying the k_H·k_W slices into one
matrix ``cols`` of shape (C_in·k_H·k_W, N·H_out·W_out), one column per output pixel,
turns the whole layer into one matrix product, which BLAS (or cuBLAS) runs at full speed:

    Y = W_mat · cols,     W_mat = W.reshape(C_out, C_in·k_H·k_W),

and Y (C_out, N·H_out·W_out) is y with its batch axis moved. On the CPU the batch goes
through in chunks of a few images, reusing one cache-sized ``cols`` buffer; with
groups, W_mat and cols gain a group axis and each group is its own product.

**The phase grid (how cols is filled).** Copying one kernel offset of a small image
goes one short image row at a time, which is slow. So ``grid_im2col`` first lays out
x, split into its s×s phases (stride 1: one phase, x itself), as one long row per
channel with zero gaps between image rows. On that layout every output pixel reads a
given kernel offset at the same fixed distance, so each row of ``cols`` is one
contiguous slice (the padding reads land on the gap zeros), and the gap columns are
computed and thrown away. ``grid_col2im`` is its adjoint.

**Channels-last im2col (small images).** With x laid out as (N, H, W, C), the values
that one output pixel reads at kernel offset (i, j) are C contiguous numbers, so cols
becomes a (N·H_out·W_out) × (k_H·k_W·C) matrix with no gap columns, filled by one
strided copy per offset, and y = cols · W_mat with W_mat of shape (k_H·k_W·C, C_out).
On small images the phase grid's gap columns are a large share of the work (a 4 × 4
image with padding 1 sits on a 5 × 5 grid: 56 % more columns), while the channels-last
copies move C numbers at a time instead of whole rows. Which one is faster depends on
the shape; ``prefers_channels_last`` holds the rule, measured per shape (issue 18).

Every function takes an explicit padding *before* the data (a negative one crops) and
explicit output sizes, so all cases reduce to the index relation
"input position = output position · s + kernel offset · d − p".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from minigen.backend import device_of, xp_of

# On the CPU the batch is processed in chunks whose cols buffer holds about this many
# elements (8 MB in float32): the buffer stays in cache between im2col and the matmul,
# and it is reused from chunk to chunk. (A fresh 75 MB buffer per call costs as much in
# page faults as the copy itself.) A GPU gets big chunks, for fewer kernel launches,
# capped so that a large batch does not exhaust its memory.
CPU_CHUNK_ELEMENTS = 1 << 21
GPU_CHUNK_ELEMENTS = 1 << 26


def batch_chunk_size(x: Any, elements_per_sample: int) -> int:
    """How many samples go into one cols buffer."""
    budget = GPU_CHUNK_ELEMENTS if device_of(x).type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, min(x.shape[0], budget // max(elements_per_sample, 1)))


# ------------------------------------------------------------------- the phase grid
class AxisLayout(NamedTuple):
    """How one axis (height or width) of the input is laid out on the phase grid.

    Kernel tap i reads input position o·s + i·d − p = s·(o + δᵢ) + aᵢ for output
    position o: sample o + δᵢ of phase aᵢ (the inputs aᵢ, aᵢ + s, aᵢ + 2s, ...).
    """

    tap_phase: list[int]  # aᵢ = (i·d − p) mod s: which phase tap i reads
    tap_shift: list[int]  # δᵢ = ⌊(i·d − p)/s⌋: how many phase samples tap i is ahead of the output
    phase_length: list[int]  # how many input samples each phase a = 0 .. s−1 holds
    grid_size: int  # the grid's length along this axis (its height, or its row width)


def axis_layout(n_in: int, k: int, stride: int, pad: int, dilation: int, n_out: int) -> AxisLayout:
    """One axis of the phase grid (see ``grid_im2col``).

    The grid's length along the axis has room for every output, every phase sample,
    and every read past either end, so that a read outside the input lands on a zero of
    the gap and never on a sample of the next row or image.
    """
    reads = [i * dilation - pad for i in range(k)]
    tap_phase = [r % stride for r in reads]
    tap_shift = [r // stride for r in reads]
    phase_length = [len(range(a, n_in, stride)) for a in range(stride)]
    size = max(n_out, max(phase_length), n_out + max(tap_shift), max(phase_length) - min(tap_shift))
    return AxisLayout(tap_phase, tap_shift, phase_length, size)


def grid_layout(
    x_hw: tuple, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple
) -> tuple[AxisLayout, AxisLayout]:
    """Both axes' layouts, for the convolution from an input of size ``x_hw`` to ``out_hw``."""
    height, width = (axis_layout(*args) for args in zip(x_hw, kernel, stride, pad, dilation, out_hw))
    return height, width


def row_margins(layout: tuple[AxisLayout, AxisLayout], columns: int) -> tuple[int, int]:
    """(leading zeros, length) of a laid-out row: zeros before the first image for reads
    before it, then ``columns`` grid positions, then room for the reads past the last one."""
    height, width = layout
    first_read = min(height.tap_shift) * width.grid_size + min(width.tap_shift)
    last_read = max(height.tap_shift) * width.grid_size + max(width.tap_shift)
    leading_zeros = max(0, -first_read)
    return leading_zeros, leading_zeros + columns + max(0, last_read)


def grid_im2col(x: Any, kernel: tuple, stride: tuple, layout: tuple, buffers: list) -> Any:
    """im2col with long contiguous copies: cols[c, i, j, m] = x_pad[n, c, h·s + i·d, w·s + j·d]
    for the output pixel (n, h, w) of grid column m = (n·R + h)·P + w.

    Copying one kernel offset of small images is slow when it goes one short image row
    at a time. So first each phase of x (the samples a, a + s, a + 2s, ... along each
    axis; stride 1 has one phase, x itself) is laid out as one long row per channel:
    images one after another, each on a grid of R rows (``grid_height``) of P columns
    (``grid_width``), with zeros in the grid's gaps. On that layout output pixel m reads
    tap (i, j) at the fixed distance δᵢ·P + δⱼ from m in phase (aᵢ, aⱼ) (``AxisLayout``),
    for every pixel at once: each row of cols is one contiguous slice, and reads of the
    padding land on gap zeros. The grid columns of the gaps (h ≥ H_out or w ≥ W_out) are
    computed and thrown away: some more matrix product, for copies that run at memory speed.

    ``buffers`` keeps the laid-out phases and cols from the previous chunk for reuse
    (the gaps stay zero). Returns cols of shape (C, k_H, k_W, N·R·P).
    """
    xp = xp_of(x)
    n, c = x.shape[:2]
    height, width = layout
    grid_height, grid_width = height.grid_size, width.grid_size
    columns = n * grid_height * grid_width
    leading_zeros, length = row_margins(layout, columns)
    if not buffers or buffers[0].shape != (*stride, c, length):
        buffers[:] = [xp.zeros((*stride, c, length), dtype=x.dtype), xp.empty((c, *kernel, columns), dtype=x.dtype)]
    laid_out, cols = buffers
    for a in sorted(set(height.tap_phase)):
        for b in sorted(set(width.tap_phase)):
            grid = laid_out[a, b, :, leading_zeros : leading_zeros + columns].reshape(c, n, grid_height, grid_width)
            phase = x[:, :, a :: stride[0], b :: stride[1]].transpose(1, 0, 2, 3)  # (C, n, ...): channels first
            grid[:, :, : height.phase_length[a], : width.phase_length[b]] = phase
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            start = leading_zeros + height.tap_shift[i] * grid_width + width.tap_shift[j]
            cols[:, i, j] = laid_out[height.tap_phase[i], width.tap_phase[j], :, start : start + columns]
    return cols


def grid_col2im(cols: Any, out: Any, stride: tuple, layout: tuple) -> Any:
    """The adjoint of ``grid_im2col``: out[n, c, h·s + i·d − p, w·s + j·d − p] += cols[c, i, j, m].

    Each kernel offset adds its row of cols, one contiguous slice, into the laid-out
    phase it belongs to; then each phase goes back into every s-th position of ``out``.
    Sums that land in the gaps (the padding) are dropped. ``cols`` must be zero in the
    grid's gap columns.
    """
    xp = xp_of(cols)
    c, kh, kw, columns = cols.shape
    n = out.shape[0]
    height, width = layout
    grid_height, grid_width = height.grid_size, width.grid_size
    leading_zeros, length = row_margins(layout, columns)
    laid_out = xp.zeros((*stride, c, length), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            start = leading_zeros + height.tap_shift[i] * grid_width + width.tap_shift[j]
            laid_out[height.tap_phase[i], width.tap_phase[j], :, start : start + columns] += cols[:, i, j]
    for a in sorted(set(height.tap_phase)):
        for b in sorted(set(width.tap_phase)):
            grid = laid_out[a, b, :, leading_zeros : leading_zeros + columns].reshape(c, n, grid_height, grid_width)
            phase = grid[:, :, : height.phase_length[a], : width.phase_length[b]]
            out[:, :, a :: stride[0], b :: stride[1]] = phase.transpose(1, 0, 2, 3)  # back to batch first
    return out


def channels_first_on_grid(a: Any, grid: tuple) -> Any:
    """a (b, C, H, W) as (C, b, R, P): channels first, each image in the top-left corner of
    its R × P grid, zeros in the gaps (a view when the grid is the image itself)."""
    if tuple(a.shape[2:]) == tuple(grid):
        return a.transpose(1, 0, 2, 3)
    laid_out = xp_of(a).zeros((a.shape[1], a.shape[0], *grid), dtype=a.dtype)
    laid_out[:, :, : a.shape[2], : a.shape[3]] = a.transpose(1, 0, 2, 3)
    return laid_out


def im2col_chunks(
    x: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple
) -> Iterator[tuple[int, int, Any, tuple[int, int]]]:
    """Yield (start, stop, cols, grid) over batch chunks, reusing one cols buffer.

    ``grid`` = (R, P): output pixel (h, w) of an image is column h·P + w of that image's
    R·P columns of cols (``grid_im2col``).
    """
    n, c = x.shape[:2]
    layout = grid_layout(x.shape[2:], kernel, stride, pad, dilation, out_hw)
    grid = (layout[0].grid_size, layout[1].grid_size)
    chunk = batch_chunk_size(x, c * kernel[0] * kernel[1] * grid[0] * grid[1])
    buffers: list = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        yield start, stop, grid_im2col(x[start:stop], kernel, stride, layout, buffers), grid


# ----------------------------------------------------------- the three convolutions
def conv2d_and_weight_grad(
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
    """One pass over an im2col matrix of x, chunk by chunk, computing what is asked for:

    * y = conv2d(x, W) when ``w`` is given:  Y = W_mat · cols (per group), and
    * ∂L/∂W = Σ_n g_n · cols_nᵀ when ``g`` is given: the batch is folded into the
      contraction, (C_out/G × b·L) · (b·L × K) per chunk.

    Each is one wide matrix product per chunk, on the phase grid (``grid_im2col``) or,
    where that is faster, channels-last (``channels_last_conv2d_and_weight_grad``).
    Returns (y or None, dW or None).
    ``ConvTranspose2d``'s backward asks for both at once: its ∂L/∂x is conv2d(g, W) and
    its ∂L/∂W reads the same im2col matrix of g.
    """
    if prefers_channels_last(x, kernel, pad, groups, out_hw):
        return channels_last_conv2d_and_weight_grad(x, w, g, kernel, stride, pad, dilation, out_hw)
    xp = xp_of(x)
    n, c_in = x.shape[:2]
    k = (c_in // groups) * kernel[0] * kernel[1]
    y = dw = None
    if w is not None:
        y = xp.empty((n, w.shape[0], *out_hw), dtype=x.dtype)
        w_mat = w.reshape(groups, w.shape[0] // groups, k)
    for start, stop, cols, grid in im2col_chunks(x, kernel, stride, pad, dilation, out_hw):
        b = stop - start
        columns = b * grid[0] * grid[1]
        cols = cols.reshape(groups, k, columns)
        if w is not None:  # (G, C_out/G, K) @ (G, K, columns) -> (C_out, b, H_out, W_out), then batch-first
            product = xp.matmul(w_mat, cols).reshape(w.shape[0], b, *grid)
            y[start:stop] = product[:, :, : out_hw[0], : out_hw[1]].transpose(1, 0, 2, 3)
        if g is not None:  # (G, C_out/G, columns) @ (G, columns, K), g laid out on cols' grid
            c_out = g.shape[1]
            g_t = channels_first_on_grid(g[start:stop], grid)  # zeros in the gap columns: they add nothing
            part = xp.matmul(g_t.reshape(groups, c_out // groups, columns), cols.swapaxes(-1, -2))
            if dw is None:
                dw = part
            else:
                dw += part
    if g is not None:
        if dw is None:  # an empty batch: no chunk ran, and the sum over no samples is zero
            dw = xp.zeros((groups, g.shape[1] // groups, k), dtype=x.dtype)
        dw = dw.reshape(g.shape[1], c_in // groups, *kernel)
    return y, dw


# -------------------------------------------------- channels-last im2col (small images)
# Measured (issue 18; one CPU thread, best of 15, forward and ∂L/∂W alike), channels-last
# against the phase grid, in ms:
#   64 × 32 × 4 × 4 → 32, 3 × 3:          0.38 against 0.61
#   64 × 64 × 8 × 8 → 32, 3 × 3:          2.9 against 4.1
#   128 × 32 × 8 × 8 → 64, 4 × 4 stride 2: 2.4 against 3.7
# and slower: on 16 × 16 outputs (64 × 48 × 16 × 16 → 16, 3 × 3: 13.2 against 6.3), for
# 5 × 5 kernels (128 × 16 × 8 × 8 → 32: 6.9 against 6.1), whose 25 copies cost more than
# the grid's gap columns, and for one or two input channels (64 × 2 × 16 × 16 → 32, 4 × 4
# stride 2: 0.79 against 0.39), where each copy moves one or two numbers at a time.
CHANNELS_LAST_MAX_TAPS = 16
CHANNELS_LAST_MAX_PIXELS = 64
CHANNELS_LAST_MIN_CHANNELS = 8


def prefers_channels_last(x: Any, kernel: tuple, pad: tuple, groups: int, out_hw: tuple) -> bool:
    """Whether channels-last im2col beats the phase grid here (CPU, no groups, no cropping)."""
    return (
        device_of(x).type == "cpu"
        and groups == 1
        and min(pad) >= 0
        and x.shape[1] >= CHANNELS_LAST_MIN_CHANNELS
        and kernel[0] * kernel[1] <= CHANNELS_LAST_MAX_TAPS
        and out_hw[0] * out_hw[1] <= CHANNELS_LAST_MAX_PIXELS
    )


def channels_last_im2col(x: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple) -> Any:
    """cols[(n, h, w), (i, j, c)] = x_pad[n, c, h·s + i·d, w·s + j·d], of shape
    (N·H_out·W_out, k_H·k_W·C): x is padded and moved to (N, H, W, C) once, then each kernel
    offset (i, j) is one strided slice of it, copied into its C columns of every row."""
    xp = xp_of(x)
    n, c, h, w = x.shape
    # Room for every read: the last output's last tap, and the input after the padding.
    padded = [
        max(pad[a] + (h, w)[a], (out_hw[a] - 1) * stride[a] + (kernel[a] - 1) * dilation[a] + 1) for a in range(2)
    ]
    x_pad = xp.zeros((n, *padded, c), dtype=x.dtype)
    x_pad[:, pad[0] : pad[0] + h, pad[1] : pad[1] + w, :] = x.transpose(0, 2, 3, 1)
    cols = xp.empty((n, *out_hw, *kernel, c), dtype=x.dtype)
    for i in range(kernel[0]):
        rows = slice(i * dilation[0], i * dilation[0] + (out_hw[0] - 1) * stride[0] + 1, stride[0])
        for j in range(kernel[1]):
            columns = slice(j * dilation[1], j * dilation[1] + (out_hw[1] - 1) * stride[1] + 1, stride[1])
            cols[:, :, :, i, j, :] = x_pad[:, rows, columns, :]
    return cols.reshape(n * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * c)


def channels_last_conv2d_and_weight_grad(
    x: Any, w: Any, g: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, out_hw: tuple
) -> tuple[Any, Any]:
    """``conv2d_and_weight_grad`` (groups = 1) on the channels-last im2col matrix, chunk by chunk:

    * y = cols · W_mat, W_mat[(i, j, c), o] = W[o, c, i, j], then back to (N, C_out, H_out, W_out);
    * ∂L/∂W = colsᵀ · G, G[(n, h, w), o] = g[n, o, h, w] (g moved channels-last).
    """
    xp = xp_of(x)
    n, c_in = x.shape[:2]
    pixels = out_hw[0] * out_hw[1]
    y = dw = None
    if w is not None:
        y = xp.empty((n, w.shape[0], *out_hw), dtype=x.dtype)
        w_mat = w.transpose(2, 3, 1, 0).reshape(kernel[0] * kernel[1] * c_in, w.shape[0])
    chunk = batch_chunk_size(x, kernel[0] * kernel[1] * c_in * pixels)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = channels_last_im2col(x[start:stop], kernel, stride, pad, dilation, out_hw)
        if w is not None:
            y[start:stop] = (cols @ w_mat).reshape(stop - start, *out_hw, w.shape[0]).transpose(0, 3, 1, 2)
        if g is not None:
            g_rows = g[start:stop].transpose(0, 2, 3, 1).reshape((stop - start) * pixels, g.shape[1])
            part = cols.T @ g_rows
            if dw is None:
                dw = part
            else:
                dw += part
    if g is not None:
        if dw is None:  # an empty batch: the sum over no samples is zero
            dw = xp.zeros((kernel[0] * kernel[1] * c_in, g.shape[1]), dtype=x.dtype)
        dw = dw.reshape(*kernel, c_in, g.shape[1]).transpose(3, 2, 0, 1).copy()
    return y, dw


def conv2d_array(x: Any, w: Any, stride: tuple, pad: tuple, dilation: tuple, groups: int, out_hw: tuple) -> Any:
    """y = conv2d(x, W) with explicit padding-before and output size."""
    return conv2d_and_weight_grad(x, w, None, w.shape[2:], stride, pad, dilation, groups, out_hw)[0]


def conv_transpose2d_array(
    x: Any, w: Any, stride: tuple, pad: tuple, dilation: tuple, groups: int, out_hw: tuple
) -> Any:
    """The adjoint of ``conv2d_array`` in x, onto an output of spatial size ``out_hw``.

    Stride 1: a transposed convolution is a plain convolution with the kernel flipped,
    its in/out channel axes swapped and padding d(k − 1) − p, which is cheaper than
    col2im. Larger strides: cols = W_matᵀ · x per group and chunk, then col2im
    (``grid_col2im``).
    """
    xp = xp_of(x)
    n, c_in, h, w_len = x.shape
    _, c_group_out, kh, kw = w.shape
    c_out = groups * c_group_out
    if stride == (1, 1):
        flipped = w[:, :, ::-1, ::-1].reshape(groups, c_in // groups, c_group_out, kh, kw).swapaxes(1, 2)
        flipped = flipped.reshape(c_out, c_in // groups, kh, kw)
        flipped_pad = (dilation[0] * (kh - 1) - pad[0], dilation[1] * (kw - 1) - pad[1])
        return conv2d_array(x, flipped, stride, flipped_pad, dilation, groups, out_hw)
    # Stride > 1: cols = W_matᵀ · x per group, on the grid of x (zeros in its gaps), then col2im.
    layout = grid_layout(out_hw, (kh, kw), stride, pad, dilation, (h, w_len))  # the conv that maps y to x
    grid_height, grid_width = layout[0].grid_size, layout[1].grid_size
    y = xp.zeros((n, c_out, *out_hw), dtype=x.dtype)
    w_t = w.reshape(groups, c_in // groups, c_group_out * kh * kw).swapaxes(-1, -2)  # (G, K, C_in/G)
    chunk = batch_chunk_size(x, c_out * kh * kw * grid_height * grid_width)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        b = stop - start
        x_grid = channels_first_on_grid(x[start:stop], (grid_height, grid_width))
        cols = xp.matmul(w_t, x_grid.reshape(groups, c_in // groups, b * grid_height * grid_width))
        grid_col2im(cols.reshape(c_out, kh, kw, b * grid_height * grid_width), y[start:stop], stride, layout)
    return y


def conv2d_weight_grad_array(
    x: Any, g: Any, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, groups: int
) -> Any:
    """∂L/∂W = Σ_n g_n · cols_nᵀ per group, shape (C_out, C_in/G, k_H, k_W)."""
    return conv2d_and_weight_grad(x, None, g, kernel, stride, pad, dilation, groups, g.shape[2:])[1]
