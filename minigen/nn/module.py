"""``Module`` and ``Parameter``: the building blocks of every network.

A ``Module`` is a Python object whose attributes are registered as they are assigned:

* a ``Parameter`` (a learnable leaf tensor) goes into ``self._parameters``,
* another ``Module`` (a submodule) goes into ``self._modules``,
* a tensor passed to ``register_buffer`` (state that is not learned, such as
  BatchNorm's running mean) goes into ``self._buffers``.

These three ordered dictionaries are what ``parameters()``, ``state_dict()``, ``to()``
and ``train()`` walk over, recursively through the submodules. Names follow the
attribute path: a ``Linear`` stored as ``self.fc`` inside a ``Sequential`` at index 0
owns the parameter ``"0.fc.weight"``.

The names and behaviour follow PyTorch, so code ports both ways.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from minigen import backend
from minigen.backend import Device
from minigen.tensor import Tensor, parse_to_args

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A tensor that is a learnable parameter: a leaf with ``requires_grad=True``.

    Assigning one as a module attribute (``self.weight = Parameter(...)``) registers it,
    so it appears in ``parameters()`` and ``state_dict()``. ``Parameter(t)`` shares the
    data of the tensor ``t`` (no copy), as in PyTorch.
    """

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = backend.xp_for("cpu").zeros((0,), dtype=backend.DEFAULT_DTYPE)
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _moved(data: Any, device: Device | None, dtype: Any) -> Any:
    """``data`` on ``device`` and, if it is floating point, in ``dtype``."""
    if dtype is not None and data.dtype.kind == "f" and data.dtype != dtype:
        data = data.astype(dtype)
    if device is not None:
        data = backend.to_device(data, device)
    return data


class _ShapeMismatch(ValueError):
    """A state-dict value whose shape differs from the entry it would replace."""


def _loadable_array(value: Any, target: Tensor) -> Any:
    """``value`` as an array for ``target``: same shape, on its device, in its dtype.

    Raises ``_ShapeMismatch`` for a wrong shape and ``TypeError``/``ValueError`` for a
    value that would not survive the conversion (text, complex into real, a fractional
    or non-finite number into an integer buffer).
    """
    array = value.data if isinstance(value, Tensor) else value
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):  # a Python number or list
        array = backend.xp_for("cpu").asarray(array)
    if tuple(array.shape) != tuple(target.shape):
        raise _ShapeMismatch(f"checkpoint {tuple(array.shape)}, model {tuple(target.shape)}")
    source, wanted = array.dtype, target.dtype
    if source.kind not in "biufc":
        raise TypeError(f"dtype {source} is not numeric, the model's entry is {wanted}")
    if source.kind == "c" and wanted.kind != "c":
        raise TypeError(f"complex values ({source}) would lose their imaginary part in {wanted}")
    array = backend.to_device(array, target.device)
    if source.kind in "fc" and wanted.kind in "biu":
        xp = backend.xp_of(array)
        if array.size and not bool(xp.all(xp.isfinite(array) & (array == xp.round(array)))):
            raise ValueError(f"{source} values that are not whole numbers cannot be loaded into {wanted}")
    return array.astype(wanted, copy=False)


class Module:
    """Base class of all layers and models: subclasses set attributes in ``__init__``
    and compute the output in ``forward``; ``module(x)`` calls ``forward(x)``."""

    training: bool

    def __init__(self) -> None:
        # object.__setattr__ skips our registering __setattr__ (the dicts do not exist yet).
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ registration
    def _check_initialised(self, name: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called: "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            self._check_initialised(name)
            self._forget(name, keep=self._parameters)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._check_initialised(name)
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to parameter {name!r} of {type(self).__name__}: "
                    "wrap it in nn.Parameter(...) (or assign None)"
                )
            self._parameters[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer {name!r} of {type(self).__name__} must be a Tensor or None")
            self._buffers[name] = value
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to submodule {name!r} (a Module or None)")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: dict) -> None:
        """Remove ``name`` from every registry but ``keep`` before (re-)registering it there.

        Re-assigning in the same registry keeps the entry's position, so replacing
        ``seq[1]`` does not move it to the end.
        """
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: registered parameters, buffers and
        # submodules live in the three dictionaries, not in the instance __dict__.
        registries = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in registries and name in registries[registry]:
                return registries[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or ``None``, e.g. a disabled bias) under ``name``."""
        self._check_initialised(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be an nn.Parameter or None, got {type(param).__name__}")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is not learned (e.g. running statistics).

        Buffers move with ``to(device)``; persistent ones are saved in ``state_dict()``.
        """
        self._check_initialised(name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        self._forget(name, keep=self._buffers)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` as a submodule called ``name``."""
        self._check_initialised(name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for this module and every submodule, depth first.

        A module reachable by two paths is yielded once (unless ``remove_duplicate=False``).
        The walk uses an explicit stack, so it never hits Python's recursion limit.
        """
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))  # reversed: the first child is visited first

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs: each module's own in registration order, then its
        submodules'. A parameter shared by two modules is yielded once."""
        seen: set[int] = set()
        owners = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in owners:
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        owners = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in owners:
            for name, b in module._buffers.items():
                if b is not None and id(b) not in seen:
                    seen.add(id(b))
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of scalar parameters (only those with requires_grad if asked)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def get_submodule(self, target: str) -> Module:
        """The submodule at the dotted path ``target`` (``""`` is this module)."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})")
            module = child
        return module

    # ------------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active, batch statistics) here and in every submodule."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking of every parameter on or off (e.g. to freeze a part)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the accumulated gradients: ``p.grad = None`` (or zeros)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                # A fresh array: gradients may share memory with other tensors' gradients.
                p.grad = Tensor(p.grad.xp.zeros_like(p.grad.data))

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every submodule (children first) and then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------- devices and dtypes
    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> Module:
        """Move parameters and buffers in place: ``to("cuda")``, ``to(mg.float64)``, ``to(device, dtype)``.

        The Parameter objects stay the same (only their ``.data`` and ``.grad`` change),
        so an optimiser built before the move still holds them. A dtype applies to
        floating-point tensors only (an integer step counter stays an integer).
        """
        device, dtype = parse_to_args(args, device, dtype)
        for p in self.parameters():
            p.data = _moved(p.data, device, dtype)
            if p.grad is not None:
                p.grad = Tensor(_moved(p.grad.data, device, dtype))
        for b in self.buffers():
            b.data = _moved(b.data, device, dtype)
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, index: int = 0) -> Module:
        return self.to(f"cuda:{index}")

    def float(self) -> Module:
        return self.to(dtype=backend.DEFAULT_DTYPE)

    def double(self) -> Module:
        return self.to(dtype="float64")

    # ------------------------------------------------------------ saving / loading
    def state_dict(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """Name -> tensor for every parameter and persistent buffer.

        Order: each module's parameters, then its buffers, then its submodules' entries
        (PyTorch's order). The tensors are detached but share memory with the module,
        so save or copy them before changing the module if you need a snapshot.
        """
        return OrderedDict((name, t.detach()) for name, t in self._state_entries(prefix).items())

    def _state_entries(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """Name -> the live tensor (parameter or persistent buffer) that ``state_dict`` reports."""
        entries: OrderedDict[str, Tensor] = OrderedDict()
        # A module shared by two paths is listed under both names, as in PyTorch.
        for module_name, module in self.named_modules(prefix, remove_duplicate=False):
            dot = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    entries[dot + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    entries[dot + name] = b
        return entries

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy the values of ``state_dict`` into this module's parameters and buffers.

        Values may be Tensors or arrays on any device; each is copied onto the device and
        into the dtype of the tensor it replaces. With ``strict=True`` missing and
        unexpected keys are errors; a shape mismatch, or a value that cannot become the
        entry's dtype, is always an error. Loading is all-or-nothing: every entry is
        checked and converted first, all problems are reported together in one error,
        and nothing is changed when there is one. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_state_dict: expected a dict of name -> tensor (from state_dict() or mg.load), "
                f"got {type(state_dict).__name__}"
            )
        entries = self._state_entries()
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        mis_shaped, unusable = [], []
        converted = {}  # key -> the array to copy in, on the entry's device and in its dtype
        for key, target in entries.items():
            if key not in state_dict:
                continue
            try:
                converted[key] = _loadable_array(state_dict[key], target)
            except _ShapeMismatch as error:
                mis_shaped.append(f"{key}: {error}")
            except (TypeError, ValueError, OverflowError) as error:
                unusable.append(f"{key}: {error}")

        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mis_shaped:
            problems.append("shape mismatches: " + "; ".join(mis_shaped))
        if unusable:
            problems.append("unusable values: " + "; ".join(unusable))
        if problems:
            raise RuntimeError(
                f"load_state_dict: the state dict does not fit {type(self).__name__} (nothing was loaded):\n  "
                + "\n  ".join(problems)
            )

        # Only now, with every entry checked and converted, is anything overwritten.
        for key, array in converted.items():
            # Copy into the existing array: the Parameter keeps its identity and memory,
            # and the module never aliases the caller's state dict.
            entries[key].data[...] = array
            entries[key].bump_version()  # as copy_(): a graph that saved the old values refuses to backpropagate
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """The layer's settings shown inside ``Name(...)``; subclasses override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        children = [(name, child) for name, child in self._modules.items() if child is not None]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = extra.split("\n") if extra else []
        for name, child in children:
            child_lines = repr(child).split("\n")
            lines.append(f"({name}): " + "\n  ".join(child_lines))
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))
