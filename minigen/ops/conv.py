"""2-D convolution and transposed convolution.

A convolution layer (PyTorch's ``conv2d``; strictly a cross-correlation, the kernel is
not flipped) slides a filter W of shape (C_out, C_in/groups, k_H, k_W) over the
zero-padded input x of shape (N, C_in, H, W):

    y[n, o, h, w] = b[o] + Σ_c Σ_i Σ_j  W[o, c, i, j] · x_pad[n, c, h·s + i·d, w·s + j·d]

with stride s, dilation d and padding p. Each output side has length

    H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1.

**Read this first: ``conv2d_reference``.** It computes the formula the way the slide
does: pad the image, then for each kernel offset (i, j) take the input pixels that
W[:, :, i, j] multiplies (one strided slice, for every output pixel at once) and add one
product per offset. ``conv2d`` computes the same sums as one big matrix product (im2col,
``minigen/kernels/conv.py``), and the tests check the two against each other.

**Backward.** The convolution is linear in x and in W, so both gradients are again
convolutions:

* ∂L/∂x = ``conv_transpose2d(g, W)``: every output gradient is spread back over the
  input window it came from, overlapping windows adding up. With stride 1 this is a
  plain convolution of g with the kernel flipped (its channel axes swapped, padding
  d(k − 1) − p), and that is what runs; with a larger stride the spread-back products
  W_matᵀ · g are added into place by col2im (``kernels.conv.grid_col2im``);
* ∂L/∂W = ``Conv2dWeightGrad(x, g)``: G_W[o, c, i, j] = Σ_{n,h,w} g[n, o, h, w] ·
  x_pad[n, c, h·s + i·d, w·s + j·d], the same sliding sum with g as the "filter";
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

from minigen import kernels
from minigen.autograd import Function
from minigen.kernels import conv as conv_kernels
from minigen.ops.geometry import IntPair, add_batch_axis, int_pair, strided_slice
from minigen.ops.join import pad as pad_tensor
from minigen.tensor import Tensor


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1 (the slide's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ------------------------------------------------------------- the readable reference
def conv2d_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Tensor:
    """The convolution as the slide computes it (groups = 1), in minigen ops:

        y[n, o, h, w] = b[o] + Σ_i Σ_j  Σ_c W[o, c, i, j] · x_pad[n, c, h·s + i·d, w·s + j·d]

    Pad x with zeros; then, for each kernel offset (i, j), the pixels that W[:, :, i, j]
    multiplies form one strided slice of x_pad (an (N, C_in, H_out, W_out) block, one
    pixel per output position), and one matrix product with W[:, :, i, j] adds that
    offset's term Σ_c to every output at once. k_H·k_W small products where ``conv2d``
    does one big one, so it is slow for big layers; its gradients come from the ops it
    uses, like any minigen code.

    Worked example (the slide): the 6×6 image below and the 3×3 Laplacian filter, no
    padding, stride 1: H_out = ⌊(6 + 0 − 1·(3 − 1) − 1)/1⌋ + 1 = 4, and each output is
    the sum of the pixel's four neighbours minus 4 times the pixel::

        x = [[0, 0, 0, 0, 0, 0],      W = [[0,  1, 0],      y = [[ 0, −1, −1,  0],
             [0, 1, 2, 2, 1, 0],           [1, −4, 1],           [−2, −5, −5, −2],
             [0, 2, 4, 4, 2, 0],           [0,  1, 0]]           [ 2, −2, −1,  2],
             [0, 1, 3, 3, 1, 0],                                 [−1,  0, −5,  0]]
             [0, 1, 2, 3, 1, 0],
             [0, 0, 1, 1, 0, 0]]

    (The slide prints 3 at row 3, column 4, where the sum is 2.)
    """
    op = "conv2d_reference"
    s, p, d = int_pair(stride, "stride", op), int_pair(padding, "padding", op), int_pair(dilation, "dilation", op)
    c_out, _, k_h, k_w = weight.shape
    h_out = conv_output_size(x.shape[2], k_h, s[0], p[0], d[0])
    w_out = conv_output_size(x.shape[3], k_w, s[1], p[1], d[1])
    x_pad = pad_tensor(x, (p[1], p[1], p[0], p[0]))  # p zero columns left and right, p zero rows above and below
    y = None
    for i in range(k_h):
        for j in range(k_w):
            # The pixels that offset (i, j) reads, for every output pixel: (N, C_in, H_out, W_out).
            reads = x_pad[:, :, strided_slice(i * d[0], s[0], h_out), strided_slice(j * d[1], s[1], w_out)]
            # One product per offset: Σ_c reads[n, c, h, w] · W[o, c, i, j] -> (N, H_out, W_out, C_out).
            term = reads.permute(0, 2, 3, 1) @ weight[:, :, i, j].transpose(0, 1)
            y = term if y is None else y + term
    y = y.permute(0, 3, 1, 2)  # (N, C_out, H_out, W_out)
    return y if bias is None else y + bias.reshape(1, c_out, 1, 1)


# ----------------------------------------------------------------------- Functions
class Conv2d(Function):
    """y = conv2d(x, W) + b: ``conv2d_reference``'s sums as one matrix product (im2col, kernels/conv.py).

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
        y = conv_kernels.conv2d_array(x.data, w.data, stride, pad, dilation, groups, tuple(out_hw))
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
        y = conv_kernels.conv_transpose2d_array(x.data, w.data, stride, pad, dilation, groups, tuple(out_hw))
        if bias:
            y += bias[0].data.reshape(1, -1, 1, 1)
        self.saved = (x, w)
        return y

    def backward(self, grad: Tensor):
        x, w = self.saved
        need = self.needs_grad
        geometry = dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)
        if kernels.fast_path() and need[0] and need[1]:  # both gradients from one pass over g's im2col matrix
            grad_x, grad_w = map(
                Tensor,
                kernels.conv2d_and_weight_grad(grad.data, w.data, x.data, w.shape[2:], out_hw=x.shape[2:], **geometry),
            )
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
        return conv_kernels.conv2d_weight_grad_array(x.data, g.data, tuple(kernel), stride, pad, dilation, groups)

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
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"{op}: the kernel size must be positive, got weight shape {tuple(weight.shape)}")
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
    x, unbatched = add_batch_axis(input)
    _check_inputs(op, x, weight, bias)
    stride_ = int_pair(stride, "stride", op)
    dilation_ = int_pair(dilation, "dilation", op)
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
        pad_before = int_pair(padding, "padding", op)
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
    x, unbatched = add_batch_axis(input)
    _check_inputs(op, x, weight, bias)
    stride_ = int_pair(stride, "stride", op)
    pad_ = int_pair(padding, "padding", op)
    out_pad = int_pair(output_padding, "output_padding", op)
    dilation_ = int_pair(dilation, "dilation", op)
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
