"""Convolution, pooling and upsampling layers for images of shape (N, C, H, W)."""

from __future__ import annotations

from typing import Any

from minigen import creation
from minigen.nn import functional as F
from minigen.nn import init
from minigen.nn.module import Module, Parameter
from minigen.ops.geometry import int_pair
from minigen.tensor import Tensor

IntOrPair = int | tuple[int, int]


def _check_groups(layer: str, in_channels: int, out_channels: int, groups: int) -> None:
    if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{layer}: in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible "
            f"by groups ({groups})"
        )


def _kernel_size(layer: str, kernel_size: IntOrPair) -> tuple[int, int]:
    """(k_H, k_W), both positive: a kernel with no taps has nothing to compute."""
    size = int_pair(kernel_size, "kernel_size", layer)
    if min(size) < 1:
        raise ValueError(f"{layer}: kernel_size must be positive, got {size}")
    return size


class Conv2d(Module):
    """2-D cross-correlation (stride s, padding p, dilation d):

        y[n, o, h, w] = b[o] + Σ_{c,i,j} W[o, c, i, j] · x[n, c, s·h + d·i − p, s·w + d·j − p]

    W has shape (out_channels, in_channels / groups, kH, kW); ``padding`` is an int, a
    pair, or "same" / "valid" (as in ``F.conv2d``). Initialised as in PyTorch:
    W, b ~ U(−1/√fan_in, 1/√fan_in) with fan_in = in_channels / groups · kH · kW.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        _check_groups("Conv2d", in_channels, out_channels, groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _kernel_size("Conv2d", kernel_size)
        self.stride = int_pair(stride, "stride", "Conv2d")
        self.padding = padding if isinstance(padding, str) else int_pair(padding, "padding", "Conv2d")  # or "same"
        self.dilation = int_pair(dilation, "dilation", "Conv2d")
        self.groups = groups
        self.weight = Parameter(creation.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = Parameter(creation.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return _conv_repr(self)


class ConvTranspose2d(Module):
    """Transposed convolution (the adjoint of Conv2d: it scatters each input pixel through the kernel).

    Output size per side: (H − 1)·s − 2p + d·(k − 1) + output_padding + 1. W has shape
    (in_channels, out_channels / groups, kH, kW); initialised like PyTorch, with fan_in
    computed from that shape (out_channels / groups · kH · kW).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        _check_groups("ConvTranspose2d", in_channels, out_channels, groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _kernel_size("ConvTranspose2d", kernel_size)
        self.stride = int_pair(stride, "stride", "ConvTranspose2d")
        self.padding = int_pair(padding, "padding", "ConvTranspose2d")
        self.output_padding = int_pair(output_padding, "output_padding", "ConvTranspose2d")
        self.groups = groups
        self.dilation = int_pair(dilation, "dilation", "ConvTranspose2d")
        self.weight = Parameter(creation.empty(in_channels, out_channels // groups, *self.kernel_size))
        if bias:
            self.bias = Parameter(creation.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )

    def extra_repr(self) -> str:
        return _conv_repr(self)


class MaxPool2d(Module):
    """y[n, c, h, w] = max over the k × k window at (s·h − p, s·w − p); stride defaults to kernel_size.

    ``return_indices=True`` also returns the flat position of each maximum (as PyTorch).
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(Module):
    """y[n, c, h, w] = mean over the k × k window at (s·h − p, s·w − p); stride defaults to kernel_size.

    With ``count_include_pad=True`` (the default) padded zeros count in the mean.
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Upsample(Module):
    """Resize (N, C, H, W) by ``scale_factor`` (or to ``size``) with ``F.interpolate``."""

    def __init__(
        self,
        size: int | tuple[int, ...] | None = None,
        scale_factor: float | tuple[float, ...] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) else scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x, size=self.size, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners
        )

    def extra_repr(self) -> str:
        which = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{which}, mode={self.mode!r}"


def _conv_repr(layer: Module) -> str:
    """PyTorch-style summary of a (transposed) convolution: only non-default options."""
    text = f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, stride={layer.stride}"
    if layer.padding != (0, 0):
        text += f", padding={layer.padding}"
    if getattr(layer, "output_padding", (0, 0)) != (0, 0):
        text += f", output_padding={layer.output_padding}"
    if layer.dilation != (1, 1):
        text += f", dilation={layer.dilation}"
    if layer.groups != 1:
        text += f", groups={layer.groups}"
    if layer.bias is None:
        text += ", bias=False"
    return text
