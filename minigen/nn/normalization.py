"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm``.

Each normalises x to zero mean and unit variance over some axes and then applies a
learned per-feature scale γ and shift β:

    y = γ · (x − μ) / √(σ² + ε) + β

They differ in the axes μ and σ² are taken over: the batch (BatchNorm), each sample's
features (LayerNorm), or groups of channels within each sample (GroupNorm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigen import creation
from minigen.nn import functional as F
from minigen.nn import init
from minigen.nn.module import Module, Parameter
from minigen.tensor import Tensor


class _BatchNorm(Module):
    """Shared code of BatchNorm1d/2d: statistics per channel (dim 1) over every other dim.

    In training mode μ and σ² come from the batch, and the running estimates are
    updated as  r ← (1 − m) r + m · batch_stat  (momentum m; the running variance uses
    the unbiased batch variance). In eval mode the running estimates are used. With
    ``momentum=None`` m = 1 / (number of batches seen): a plain cumulative average.
    """

    expected_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(creation.ones(num_features))
            self.bias = Parameter(creation.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", creation.zeros(num_features))
            self.register_buffer("running_var", creation.ones(num_features))
            self.register_buffer("num_batches_tracked", creation.zeros((), dtype="int64"))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.expected_dims:
            raise ValueError(
                f"{type(self).__name__}: expected a {' or '.join(f'{d}-D' for d in self.expected_dims)} input "
                f"(N, C, ...), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}): input has {x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1  # in place, on the device: no host sync
            if momentum is None:
                # The cumulative average weighs this batch by 1/count. The count stays on the
                # device (a 0-d array): reading it as a number would be a host sync.
                count = self.num_batches_tracked.data
                momentum = (1.0 / count).astype(self.running_mean.dtype)
        use_batch_stats = self.training or not self.track_running_stats
        # Running statistics are passed only when they should be used or updated.
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, per feature C."""

    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) images, per channel C (statistics over N, H, W)."""

    expected_dims = (4,)


class LayerNorm(Module):
    """Normalise each sample over its last dims ``normalized_shape`` (statistics per sample).

    γ and β have shape ``normalized_shape`` and start at 1 and 0.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(creation.ones(self.normalized_shape))
            if bias:
                self.bias = Parameter(creation.zeros(self.normalized_shape))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Split the C channels into ``num_groups`` groups and normalise each group of each sample.

    Statistics over (C / G, H, W) per sample and group; γ, β per channel (shape (C,)).
    GroupNorm(1, C) normalises whole samples; GroupNorm(C, C) is instance norm.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = Parameter(creation.ones(num_channels))
            self.bias = Parameter(creation.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
