"""The Tensor: an array (NumPy or CuPy) plus what autograd needs to know about it.

A Tensor holds
* ``data``: the backend array (``numpy.ndarray``, ``cupy.ndarray`` or a stand-in),
* ``requires_grad``: whether gradients should flow to it,
* ``grad_fn``: the ``Function`` node that produced it (``None`` for leaves),
* ``grad``: the accumulated gradient (a Tensor), filled in by ``backward()``,
* a version counter (``t._version``), bumped by every in-place change and shared with
  the views of the same memory, so that backward can refuse saved values that changed.

The methods mirror PyTorch's names (``dim``/``keepdim``), so lecture code ports both
ways. Each differentiable method is a thin call to a ``Function`` in ``minigen/ops``:
follow it there to see forward and backward side by side.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minigen import autograd, backend
from minigen.arguments import DTYPE_NAMES, VALID_DEVICES, normalize_dim, normalize_dims, parse_device, parse_dtype
from minigen.autograd import Version
from minigen.backend import Device

DTypeLike = Any

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _shape_from_args(size: tuple) -> tuple[int, ...]:
    """Accept both ``zeros(2, 3)`` and ``zeros((2, 3))``, as PyTorch does."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"a size must be a non-negative int, got {size!r}")
    return tuple(int(s) for s in size)


class Tensor:
    """An n-dimensional array that records the operations applied to it."""

    __slots__ = {
        "data": "The backend array. Writing to it directly (t.data[...] = v, t.data -= ...) is the "
        "unchecked escape hatch, as in PyTorch: it bumps no version, so backward cannot notice "
        "that values it saved have changed. Use the in-place methods (t[...] = v, fill_, add_ ...) "
        "under mg.no_grad() to have changes checked.",
        "grad": "The accumulated gradient ∂L/∂self (a Tensor), or None.",
        "requires_grad": "Whether gradients flow to this tensor.",
        "grad_fn": "The Function node that produced this tensor (None for leaves).",
        "_hooks": "Gradient hooks of a leaf (non-leaf hooks live on grad_fn).",
        "_version_counter": "The Version shared with the views of the same memory (made on first need).",
        "__weakref__": None,
    }
    __hash__ = object.__hash__  # comparison operators are elementwise, identity hashing

    def __init__(self, data: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if device is not None:
            device = parse_device(device, "tensor")
        if backend.is_host_array(data) or not hasattr(data, "shape"):
            from_python = not isinstance(data, (np.ndarray, np.generic))
            array = np.asarray(data) if dtype is None else np.asarray(data, dtype=parse_dtype(dtype, "tensor"))
            if from_python and dtype is None and array.dtype == np.float64:
                array = array.astype(backend.DEFAULT_DTYPE)  # Python floats become float32, as in PyTorch
            if array.dtype == object:
                raise TypeError(f"tensor: cannot build a tensor from {type(data).__name__} data")
            data = array if device is None else backend.to_device(array, device)
        else:
            if dtype is not None:
                data = data.astype(parse_dtype(dtype, "tensor"), copy=False)
            if device is not None:
                data = backend.to_device(data, device)
        self.data = data
        self.grad: Tensor | None = None
        self.grad_fn: autograd.Function | None = None
        self._hooks: list[Callable] | None = None
        self._version_counter: Version | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------------ description
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def device(self) -> Device:
        return backend.device_of(self.data)

    @property
    def xp(self) -> Any:
        """The array module (numpy or cupy) of this tensor's data."""
        return backend.xp_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        if self.ndim == 0:
            raise IndexError(f"size: a 0-d tensor has no dimensions, so it has no size along dim {dim}")
        return self.shape[normalize_dim(dim, self.ndim, "size")]

    def numel(self) -> int:
        return int(self.data.size)

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's memory has seen (as PyTorch's ``t._version``)."""
        counter = self._version_counter
        return 0 if counter is None else counter.count

    def shared_version(self) -> Version:
        """This tensor's version counter, made on first need: most tensors are never changed
        in place nor viewed, so they never pay for one. Views and ``detach()`` share it."""
        if self._version_counter is None:
            self._version_counter = Version()
            if self.grad_fn is not None:  # the node that made this tensor may have saved it
                self.grad_fn.remember_output_version(self)
        return self._version_counter

    def bump_version(self) -> None:
        """Record an in-place change of this tensor's memory (every in-place method calls it;
        so do optimisers after updating ``.data``), so that backward notices that values it
        saved before have changed."""
        self.shared_version().bump()

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def is_floating_point(self) -> bool:
        return self.dtype.kind == "f"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(backend.asnumpy(self.data), separator=", ", precision=4, prefix="tensor(")
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # --------------------------------------------------------------- leaving the graph
    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the data (from any device)."""
        if self.requires_grad:
            raise RuntimeError(
                "numpy(): the tensor requires grad; call .detach().numpy() to make clear the result is not tracked"
            )
        return backend.asnumpy(self.data)

    def item(self) -> Any:
        """The single value as a Python number (a host sync on the GPU)."""
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, got shape {tuple(self.shape)}")
        return self.data.item()

    def tolist(self) -> Any:
        return backend.asnumpy(self.data).tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor of shape {tuple(self.shape)} is ambiguous; use .any() or .all()"
            )
        return bool(self.item())

    def detach(self) -> Tensor:
        """The same data, cut from the graph (it shares the version counter, as in PyTorch)."""
        out = Tensor(self.data)
        out._version_counter = self.shared_version()
        return out

    def clone(self) -> Tensor:
        return Clone.apply(self)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind not in "fc":
            raise RuntimeError(
                f"requires_grad: only floating-point tensors can require gradients, but this tensor "
                f"of shape {tuple(self.shape)} has dtype {self.dtype}; convert it first with .float()"
            )
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use .detach() instead")
        self.requires_grad = bool(requires_grad)
        return self

    # ------------------------------------------------------------- devices and dtypes
    def to(self, *args: Any, dtype: DTypeLike = None, device: Any = None) -> Tensor:
        """``t.to("cuda")``, ``t.to(mg.float64)``, ``t.to(device, dtype)``; differentiable."""
        device, dtype = parse_to_args(args, device, dtype)
        out = self
        if dtype is not None and dtype != self.dtype:
            out = Cast.apply(out, dtype=dtype)
        if device is not None and device != self.device:
            out = ToDevice.apply(out, device=device)
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, index: int = 0) -> Tensor:
        return self.to(f"cuda:{index}")

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # ---------------------------------------------------------------------- autograd
    def backward(self, gradient: Any = None, retain_graph: bool = False, create_graph: bool = False) -> None:
        """Accumulate ∂self/∂leaf into every leaf's ``.grad``.

        ``gradient`` is ∂L/∂self; it may be left out when ``self`` holds a single value.
        The graph's saved tensors are freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"backward: this tensor of shape {tuple(self.shape)} does not require grad and has no "
                "grad_fn: none of the tensors it was computed from had requires_grad=True (or it was "
                "computed under no_grad)"
            )
        seed = autograd._seed_gradient(self, gradient, "backward")
        autograd.run_backward([self], [seed], retain_graph or create_graph, create_graph)

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor too (leaves keep theirs anyway)."""
        if self.grad_fn is None:
            return
        import weakref

        tensor_ref = weakref.ref(self)

        def store(grad: Tensor) -> None:
            tensor = tensor_ref()
            if tensor is not None:
                tensor.grad = grad.detach() if tensor.grad is None else tensor.grad + grad.detach()

        self.register_hook(store)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> _HookHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a new one."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not require grad")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if self.grad_fn.hooks is None:
                self.grad_fn.hooks = []
            hooks = self.grad_fn.hooks
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    # ------------------------------------------------------------------- arithmetic
    def _lift(self, value: Any) -> Tensor:
        """Turn a Python scalar into a tensor that does not change ``self``'s dtype."""
        if isinstance(value, Tensor):
            return value
        if isinstance(value, (bool, int, float, np.generic)):
            dtype = self.dtype
            if dtype.kind not in "fc" and isinstance(value, (float, np.floating)):
                dtype = np.dtype(backend.DEFAULT_DTYPE)
            elif dtype.kind == "b" and not isinstance(value, (bool, np.bool_)):
                dtype = np.dtype(np.int64)
            # On a GPU, asarray(value) would copy the number from the host (a transfer in
            # every step); scalar_array writes it on the device once and reuses it.
            return Tensor(backend.scalar_array(value, dtype, self.data))
        return Tensor(value, device=self.device)

    def __add__(self, other: Any) -> Tensor:
        return Add.apply(self, self._lift(other))

    def __radd__(self, other: Any) -> Tensor:
        return Add.apply(self._lift(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return Sub.apply(self, self._lift(other))

    def __rsub__(self, other: Any) -> Tensor:
        return Sub.apply(self._lift(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return Mul.apply(self, self._lift(other))

    def __rmul__(self, other: Any) -> Tensor:
        return Mul.apply(self._lift(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return Div.apply(self, self._lift(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return Div.apply(self._lift(other), self)

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __pow__(self, exponent: Any) -> Tensor:
        if isinstance(exponent, Tensor):
            return PowTensor.apply(self, exponent)
        return PowScalar.apply(self, exponent=exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return PowTensor.apply(self._lift(base), self)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, self._lift(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(self._lift(other), self)

    def add(self, other: Any) -> Tensor:
        return self + other

    def sub(self, other: Any) -> Tensor:
        return self - other

    def mul(self, other: Any) -> Tensor:
        return self * other

    def div(self, other: Any) -> Tensor:
        return self / other

    def pow(self, exponent: Any) -> Tensor:
        return self**exponent

    def matmul(self, other: Tensor) -> Tensor:
        return matmul(self, other)

    # Comparisons give boolean tensors and are not differentiable.
    def _compare(self, other: Any, op: Callable) -> Tensor:
        other = self._lift(other)
        if other.device != self.device:
            autograd._check_same_device("comparison", (self, other))
        return Tensor(op(self.data, other.data))

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a >= b)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a != b)

    def __invert__(self) -> Tensor:
        return Tensor(~self.data)

    def __and__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a | b)

    def eq(self, other: Any) -> Tensor:
        return self == other

    def any(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return Tensor(self.data.any(axis=normalize_dims(dim, self.ndim, "any"), keepdims=keepdim))

    def all(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return Tensor(self.data.all(axis=normalize_dims(dim, self.ndim, "all"), keepdims=keepdim))

    # --------------------------------------------------------- elementwise functions
    def exp(self) -> Tensor:
        return Exp.apply(self)

    def log(self) -> Tensor:
        return Log.apply(self)

    def sqrt(self) -> Tensor:
        return Sqrt.apply(self)

    def abs(self) -> Tensor:
        return Abs.apply(self)

    def __abs__(self) -> Tensor:
        return Abs.apply(self)

    def sin(self) -> Tensor:
        return Sin.apply(self)

    def cos(self) -> Tensor:
        return Cos.apply(self)

    def tanh(self) -> Tensor:
        return Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return Relu.apply(self)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return Clamp.apply(self, low=min, high=max)

    clip = clamp

    def sign(self) -> Tensor:
        return Tensor(self.xp.sign(self.data))

    def square(self) -> Tensor:
        return self * self

    def rsqrt(self) -> Tensor:
        return self.sqrt().reciprocal()

    def reciprocal(self) -> Tensor:
        return 1.0 / self

    def maximum(self, other: Any) -> Tensor:
        return maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        return minimum(self, other)

    # -------------------------------------------------------------------- reductions
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return Mean.apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """``max()`` -> the largest value; ``max(dim)`` -> ``(values, indices)`` as in PyTorch.

        Tie rule: when several elements share the maximum, the gradient is split equally
        between them (the subgradient PyTorch uses for ``amax``); ``indices`` reports the
        first of them.
        """
        values = Max.apply(self, dim=dim, keepdim=keepdim)
        if dim is None:
            return values
        return ValuesIndices(values, self.argmax(dim=dim, keepdim=keepdim))

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """min(x) = −max(−x); same tie rule as ``max``."""
        values = -Max.apply(-self, dim=dim, keepdim=keepdim)
        if dim is None:
            return values
        return ValuesIndices(values, self.argmin(dim=dim, keepdim=keepdim))

    def amax(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return Max.apply(self, dim=dim, keepdim=keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg_extreme("argmax", dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg_extreme("argmin", dim, keepdim)

    def _arg_extreme(self, op: str, dim: int | None, keepdim: bool) -> Tensor:
        """The index of the first largest (argmax) or smallest (argmin) element along ``dim``."""
        if self.data.size == 0:
            raise ValueError(f"{op}: cannot take the {op} of an empty tensor of shape {tuple(self.shape)}")
        data = self.data if self.ndim else self.data.reshape(1)  # a 0-d tensor: its one element
        axis = None if dim is None else normalize_dim(dim, self.ndim, op)
        keepdim = keepdim and self.ndim > 0
        find = data.argmax if op == "argmax" else data.argmin
        return Tensor(find(axis=axis, keepdims=keepdim))

    def var(
        self,
        dim: int | Sequence[int] | None = None,
        keepdim: bool = False,
        unbiased: bool | None = None,
        correction: int = 1,
    ) -> Tensor:
        """Var[x] = Σ(x − x̄)² / (N − correction); unbiased (N − 1) by default, as in PyTorch.

        With no degrees of freedom left (N − correction ≤ 0, e.g. one element and the
        unbiased estimate) the variance is undefined: the result is NaN, as in PyTorch.
        """
        if unbiased is not None:
            correction = 1 if unbiased else 0
        count = reduced_count(self.shape, dim, "var")
        centred = self - self.mean(dim=dim, keepdim=True)
        degrees_of_freedom = count - correction
        return (centred * centred).sum(dim=dim, keepdim=keepdim) / (
            degrees_of_freedom if degrees_of_freedom > 0 else float("nan")
        )

    def std(
        self,
        dim: int | Sequence[int] | None = None,
        keepdim: bool = False,
        unbiased: bool | None = None,
        correction: int = 1,
    ) -> Tensor:
        """√Var[x] (see ``var``): NaN when N − correction ≤ 0, as in PyTorch."""
        return self.var(dim=dim, keepdim=keepdim, unbiased=unbiased, correction=correction).sqrt()

    def logsumexp(self, dim: int | Sequence[int], keepdim: bool = False) -> Tensor:
        return LogSumExp.apply(self, dim=dim, keepdim=keepdim)

    def softmax(self, dim: int) -> Tensor:
        """softmax(x)_i = exp(x_i − logsumexp(x)), stable for large logits."""
        from minigen.ops.activation import softmax  # the one Softmax op, also behind F.softmax and mg.softmax

        return softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        from minigen.ops.activation import log_softmax  # the one LogSoftmax op, also behind F.log_softmax

        return log_softmax(self, dim)

    # -------------------------------------------------------------------- shape ops
    def reshape(self, *shape: Any) -> Tensor:
        shape = _shape_with_inference(shape, self.numel(), self.shape)
        if shape == self.shape:
            return self
        return Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        start = normalize_dim(start_dim, self.ndim, "flatten")
        end = normalize_dim(end_dim, self.ndim, "flatten")
        if self.ndim == 0:
            return self.reshape(1)
        if start > end:
            raise ValueError(
                f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                f"for a tensor of shape {tuple(self.shape)}"
            )
        middle = int(np.prod(self.shape[start : end + 1]))
        return self.reshape(self.shape[:start] + (middle,) + self.shape[end + 1 :])

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        """Split dim ``dim`` into ``sizes`` (one of them may be −1: inferred)."""
        dim = normalize_dim(dim, self.ndim, "unflatten")
        sizes = tuple(sizes)
        length = self.shape[dim] if self.ndim else 1
        valid = bool(sizes) and sizes.count(-1) <= 1
        valid = valid and all(isinstance(s, (int, np.integer)) and s >= -1 for s in sizes)
        known = int(np.prod([s for s in sizes if s != -1])) if valid else 0
        if -1 in sizes:
            valid = valid and known > 0 and length % known == 0
        else:
            valid = valid and known == length
        if not valid:
            raise ValueError(
                f"unflatten: sizes {sizes} do not split dim {dim} of size {length} (tensor of shape "
                f"{tuple(self.shape)}); their product must be {length}, with at most one -1 to infer"
            )
        sizes = tuple(length // known if s == -1 else int(s) for s in sizes)
        return self.reshape(self.shape[:dim] + sizes + self.shape[dim + 1 :])

    def squeeze(self, dim: int | Sequence[int] | None = None) -> Tensor:
        """Drop size-1 dims: all of them, or those of ``dim`` (others are left, as in PyTorch)."""
        dims = normalize_dims(dim, self.ndim, "squeeze")
        shape = tuple(s for i, s in enumerate(self.shape) if not (s == 1 and i in dims))
        return self if shape == self.shape else self.reshape(shape)

    def unsqueeze(self, dim: int) -> Tensor:
        dim = normalize_dim(dim, self.ndim, "unsqueeze", new_axis=True)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def permute(self, *dims: Any) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        axes = tuple(normalize_dim(d, self.ndim, "permute") for d in dims)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(
                f"permute: {tuple(dims)} is not a permutation of the {self.ndim} dims of shape {tuple(self.shape)}"
            )
        return Permute.apply(self, dims=axes)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        dim0 = normalize_dim(dim0, self.ndim, "transpose")
        dim1 = normalize_dim(dim1, self.ndim, "transpose")
        if self.ndim == 0:
            return self
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return Permute.apply(self, dims=tuple(dims))

    @property
    def T(self) -> Tensor:
        return Permute.apply(self, dims=tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def t(self) -> Tensor:
        return self.transpose(0, 1) if self.ndim == 2 else self

    def expand(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
        if shape == self.shape:
            return self
        return Expand.apply(self, shape=shape)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        return self.expand(tuple(shape))

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def sum_to(self, shape: Sequence[int]) -> Tensor:
        """Sum over broadcast axes so the result has ``shape`` (the 'unbroadcast' step)."""
        shape = tuple(shape)
        if shape == self.shape:
            return self
        return SumTo.apply(self, shape=shape)

    def split(self, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return chunk(self, chunks, dim)

    def __getitem__(self, key: Any) -> Tensor:
        return GetItem.apply(self, key=key)

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        return where(mask, self._lift(value), self)

    # ------------------------------------------------------------- in-place changes
    # Each one checks that autograd can allow it, changes ``data`` and bumps the version,
    # so a Function that saved this tensor (or a view of its memory) refuses to run its
    # backward on the changed values.
    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_in_place("in-place assignment t[...] = v", value)
        from minigen.ops.indexing import normalize_key

        value = self._in_place_operand("in-place assignment t[...] = v", value, whole=False)
        self.data[normalize_key(key, self)] = value
        self.bump_version()

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value: Any) -> Tensor:
        self._check_in_place("fill_", value)
        if isinstance(value, Tensor) and value.ndim != 0:
            raise ValueError(f"fill_: expects a number or a 0-d tensor, got a tensor of shape {tuple(value.shape)}")
        self.data[...] = self._in_place_operand("fill_", value)
        self.bump_version()
        return self

    def copy_(self, source: Any) -> Tensor:
        """Write ``source``'s values into this tensor (moved to its device and dtype)."""
        self._check_in_place("copy_", source)
        if isinstance(source, Tensor) and source.device != self.device:
            source = Tensor(backend.to_device(source.data, self.device))
        self.data[...] = self._in_place_operand("copy_", source, cast=True)
        self.bump_version()
        return self

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        """self ← self + alpha · other, in place."""
        self._check_in_place("add_", other)
        value = self._in_place_operand("add_", other)
        self.data += value if alpha == 1 else alpha * value
        self.bump_version()
        return self

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        """self ← self − alpha · other, in place."""
        self._check_in_place("sub_", other)
        value = self._in_place_operand("sub_", other)
        self.data -= value if alpha == 1 else alpha * value
        self.bump_version()
        return self

    def mul_(self, other: Any) -> Tensor:
        self._check_in_place("mul_", other)
        self.data *= self._in_place_operand("mul_", other)
        self.bump_version()
        return self

    def div_(self, other: Any) -> Tensor:
        self._check_in_place("div_", other)
        self.data /= self._in_place_operand("div_", other)
        self.bump_version()
        return self

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        self._check_in_place("clamp_")
        self.data[...] = self.xp.clip(self.data, min, max)
        self.bump_version()
        return self

    def _check_in_place(self, op: str, value: Any = None) -> None:
        """Refuse an in-place change that the graph could not follow, as PyTorch does."""
        if not autograd.is_grad_enabled():
            return
        if self.requires_grad and self.grad_fn is None:
            raise RuntimeError(
                f"{op}: a leaf tensor that requires grad (shape {tuple(self.shape)}) cannot be changed in place "
                "while the graph is recorded, as in PyTorch. To initialise or update it, do so under "
                "`with mg.no_grad():`, as optimizer.step() does; to compute with changed values, build a new "
                "tensor (t + v, mg.where(mask, v, t))."
            )
        if self.requires_grad:
            raise RuntimeError(
                f"{op}: this tensor (shape {tuple(self.shape)}) was computed by {self.grad_fn.name} and is part "
                "of the graph; minigen does not record in-place changes in the graph (PyTorch would rewrite "
                "its grad_fn). Use the out-of-place form instead: h = h + v, h = mg.where(mask, v, h)."
            )
        if isinstance(value, Tensor) and value.requires_grad:
            raise RuntimeError(
                f"{op}: the value (shape {tuple(value.shape)}) requires grad, but an in-place write is not "
                "recorded in the graph, so its gradient would be lost. Build a new tensor from it instead "
                "(mg.where, mg.cat, mg.stack), or write under mg.no_grad() if no gradient is wanted."
            )

    def _in_place_operand(self, op: str, value: Any, cast: bool = False, whole: bool = True) -> Any:
        """``value`` as an array on this tensor's device that may be written into (all of) it."""
        if not isinstance(value, Tensor):
            # A Python number, a list or a host array: CuPy wants host data converted first.
            return backend.assignable(value, self.data)
        if value.device != self.device:
            autograd._check_same_device(op, (self, value))
        if whole and (
            value.ndim > self.ndim or any(v not in (1, s) for v, s in zip(reversed(value.shape), reversed(self.shape)))
        ):
            raise ValueError(
                f"{op}: a value of shape {tuple(value.shape)} cannot be broadcast to this tensor's "
                f"shape {tuple(self.shape)}"
            )
        if value.dtype.kind in "fc" and self.dtype.kind not in "fc" and not cast:
            raise TypeError(
                f"{op}: cannot write {value.dtype} values into a tensor of dtype {self.dtype} in place; "
                "convert one of them first (.to(...))"
            )
        return value.data

    def new_zeros(self, *size: Any) -> Tensor:
        return Tensor(self.xp.zeros(_shape_from_args(size), dtype=self.dtype))

    def new_ones(self, *size: Any) -> Tensor:
        return Tensor(self.xp.ones(_shape_from_args(size), dtype=self.dtype))


def parse_to_args(args: tuple, device: Any = None, dtype: Any = None) -> tuple[Device | None, np.dtype | None]:
    """``to("cuda")``, ``to(mg.float64)``, ``to(device, dtype)``, ``to(tensor)`` -> (device, dtype).

    Shared by ``Tensor.to`` and ``Module.to``. A string is a device unless it is a full
    dtype name; anything that is neither is a ``ValueError`` listing what is valid.
    """
    if len(args) > 2:
        raise TypeError(f"to: expected at most a device and a dtype, got {len(args)} arguments {args!r}")
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, str) and arg not in DTYPE_NAMES:
            try:
                device = parse_device(arg, "to")
            except ValueError:
                raise ValueError(
                    f"to: {arg!r} is neither a device ({VALID_DEVICES}) nor a dtype "
                    f"(a dtype object such as mg.float32, or one of the names {', '.join(DTYPE_NAMES)})"
                ) from None
        else:
            dtype = arg
    return (
        parse_device(device, "to") if device is not None else None,
        parse_dtype(dtype, "to") if dtype is not None else None,
    )


class _HookHandle:
    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks = hooks
        self._hook = hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _shape_with_inference(shape: tuple, numel: int, old_shape: tuple) -> tuple[int, ...]:
    """Resolve one ``-1`` in a reshape target and check the element count."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if known == 0 or numel % known:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {old_shape} into {shape}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if int(np.prod(shape)) != numel:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {old_shape} ({numel} elements) into {shape}")
    return shape


from minigen.ops.arithmetic import Add, Div, Mul, Neg, PowScalar, PowTensor, Sub  # noqa: E402
from minigen.ops.elementwise import Abs, Clamp, Cos, Exp, Log, Relu, Sigmoid, Sin, Sqrt, Tanh, maximum, minimum, where  # noqa: E402  # noqa: E402
from minigen.ops.indexing import GetItem  # noqa: E402
from minigen.ops.join import chunk, split  # noqa: E402
from minigen.ops.matmul import matmul  # noqa: E402
from minigen.ops.reduction import LogSumExp, Max, Mean, Sum, reduced_count  # noqa: E402
from minigen.ops.shape import Clone, Expand, Permute, Reshape, SumTo  # noqa: E402
from minigen.ops.transfer import Cast, ToDevice  # noqa: E402
