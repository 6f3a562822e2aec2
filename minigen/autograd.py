"""Reverse-mode automatic differentiation.

Every differentiable op is a ``Function`` with ``forward`` and ``backward`` side by side.
Calling ``SomeOp.apply(x, y)`` runs ``forward`` on the inputs and, when a gradient will
be needed, keeps the node in the output's ``grad_fn``. The nodes form a graph that points
from each output back to the nodes (or leaf tensors) that produced its inputs.

``loss.backward()`` walks that graph in reverse topological order. For each node it
calls ``node.backward(grad_output)``, which returns one gradient per input (the
vector-Jacobian product ∂L/∂input = ∂L/∂output · ∂output/∂input), and passes each one on.

Backward formulas are written with minigen's own differentiable ops. With
``create_graph=True`` they are recorded like any forward computation, so gradients of
gradients work (WGAN-GP, ``gradgradcheck``). With ``create_graph=False`` backward runs
under ``no_grad`` and records nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import perf_counter as _perf_counter
from typing import TYPE_CHECKING, Any

from minigen.errors import GradientShapeError, GraphFreedError

if TYPE_CHECKING:
    from minigen.tensor import Tensor


# ------------------------------------------------------------------ grad-recording mode
class _GradMode(threading.local):
    """Whether ops record the graph, kept per thread as in PyTorch: ``no_grad`` in one
    thread never switches recording off in another, and every new thread starts with it on."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


@contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    previous = _grad_mode.enabled
    _grad_mode.enabled = bool(mode)
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad() -> Any:
    """Context manager: ops inside record no graph (inference, optimiser steps)."""
    return set_grad_enabled(False)


def enable_grad() -> Any:
    """Context manager: record the graph again, even inside ``no_grad``."""
    return set_grad_enabled(True)


# ------------------------------------------------------------------- version counters
# The change clock: how many in-place changes have been made so far, to any tensor. It
# orders events: a node remembers the clock at its forward pass, and a saved tensor was
# changed after that pass exactly when its latest change came at a later clock time.
_change_clock = 0


class Version:
    """How many times a tensor's memory was changed in place, and when.

    Every in-place op (``t[...] = v``, ``fill_``, ``zero_``, ``add_`` ..., an optimiser's
    update) calls ``bump()``. A view (reshape, permute, expand, basic indexing, detach)
    shares its base's ``Version`` object, because a change through either changes both.

    A ``Function`` remembers the change clock at its forward pass. Its backward looks
    at what it saved only if the clock has moved since (nothing changed otherwise, the
    usual case, which so costs one comparison), and refuses to run if a saved tensor's
    latest change came later: its gradient would be computed from the changed values.
    """

    __slots__ = ("count", "change_times")

    def __init__(self) -> None:
        self.count = 0
        self.change_times: list[int] = []  # the clock at the latest changes (enough to name old counts)

    def bump(self) -> None:
        global _change_clock
        _change_clock += 1
        self.count += 1
        self.change_times.append(_change_clock)
        if len(self.change_times) > 64:  # an optimised parameter changes every step: keep the recent ones
            del self.change_times[:32]

    def changed_since(self, clock: int) -> bool:
        return bool(self.change_times) and self.change_times[-1] > clock

    def count_at(self, clock: int) -> int | None:
        """The count at that clock time (None if it lies before the changes kept)."""
        later = sum(1 for time in self.change_times if time > clock)
        if later == len(self.change_times) and self.count > later:
            return None
        return self.count - later


_FREED = object()  # marks a node whose saved tensors were released after backward

# Observers see every op as it runs: minigen.debug's trace() and detect_anomaly() add
# themselves here. Each is called as observer(phase, op_name, node, inputs, output,
# seconds) with phase "forward" or "backward". Empty (the normal case) costs one check.
observers: list[Any] = []


# -------------------------------------------------------------------------- Function
class Function:
    """One differentiable op: ``forward`` computes the value, ``backward`` the gradient.

    Subclasses write::

        def forward(self, *inputs: Tensor, **params) -> array     # on raw arrays
        def backward(self, grad: Tensor) -> Tensor | tuple        # in minigen ops

    ``forward`` receives Tensors, computes on their ``.data`` arrays and may store what
    backward needs in ``self.saved`` (tensors, arrays or shapes). ``backward`` gets the
    gradient of the output and returns one gradient per input (or ``None`` for inputs that
    need none: see ``self.needs_grad``).

    Save inputs as Tensors (not their ``.data``) and the output as the array forward
    returned: backward then refuses to run if one of them was changed in place after
    the forward pass (see ``Version``).
    """

    __slots__ = ("parents", "needs_grad", "saved", "clock", "output_versions", "out_shape", "hooks", "__weakref__")

    # True for ops whose output is a view of their first input's memory (reshape,
    # permute, expand; basic indexing sets it per call): the output then shares the
    # input's version counter, since an in-place change through either changes both.
    output_is_view = False

    def forward(self, *inputs: Any, **params: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, grad: Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define backward")

    @property
    def name(self) -> str:
        return type(self).__name__

    def output_tensor(self, data: Any) -> Tensor:
        """The op's output as a Tensor again, for backward formulas that use it.

        Saving the output array and re-wrapping it here (with this node as its
        ``grad_fn``) avoids a reference cycle node -> output -> node, while still letting
        ``create_graph=True`` differentiate through it.
        """
        out = Tensor(data)
        if _grad_mode.enabled:
            out.requires_grad = True
            out.grad_fn = self
        return out

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        """Run the op forward and, if any input needs a gradient, record the node."""
        node = cls()
        requires_grad = _grad_mode.enabled and any(t.requires_grad for t in inputs)
        if len(inputs) > 1:
            _check_same_device(cls.__name__, inputs)
        node.needs_grad = tuple(t.requires_grad for t in inputs) if requires_grad else None
        node.saved = None
        started = _perf_counter() if observers else 0.0
        try:
            data = node.forward(*inputs, **params)
        except (ValueError, TypeError, IndexError) as error:
            raise type(error)(f"{cls.__name__}: {error} [inputs: {_describe(inputs)}]") from error
        if isinstance(data, _np.generic):  # NumPy turns 0-d results into scalars
            data = _np.asarray(data)
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        out.grad_fn = None
        out._hooks = None
        out.requires_grad = False
        out._version_counter = inputs[0].shared_version() if node.output_is_view else None
        if requires_grad and data.dtype.kind in "fc":
            node.parents = tuple(
                t.grad_fn if t.grad_fn is not None else (t if t.requires_grad else None) for t in inputs
            )
            node.out_shape = data.shape
            node.hooks = None
            node.clock = _change_clock
            node.output_versions = ()
            out.requires_grad = True
            out.grad_fn = node
        if observers:
            for observer in observers:
                observer("forward", cls.__name__, node, inputs, out, _perf_counter() - started)
        return out

    def remember_output_version(self, output: Tensor) -> None:
        """``output`` (a tensor this node produced) just got its version counter: if forward
        saved its array, changes to it must be checked too."""
        if any(item is output.data for item in _saved_items(self.saved)):
            self.output_versions += (output._version_counter,)

    def __repr__(self) -> str:
        return f"<{self.name} backward node>"


def _saved_items(saved: Any) -> list:
    """What a node saved, with nested tuples (e.g. a ``(weight, bias)`` pair) opened."""
    items = list(saved) if type(saved) is tuple or type(saved) is list else [saved]
    for item in list(items):
        if type(item) is tuple or type(item) is list:
            items.extend(item)
    return items


def _check_saved_versions(node: Function) -> None:
    """Something was changed in place since ``node``'s forward pass: refuse to compute a
    gradient if it was one of the tensors the node saved (or its saved output)."""
    changed = [
        (t, t._version_counter)
        for t in _saved_items(node.saved)
        if isinstance(t, Tensor) and t._version_counter is not None and t._version_counter.changed_since(node.clock)
    ]
    changed += [(None, version) for version in node.output_versions if version.changed_since(node.clock)]
    if not changed:
        node.clock = _change_clock  # all it saved is as it was up to now: no need to look again
        return
    tensor, version = changed[0]
    if tensor is None:
        which = f"its output (shape {tuple(node.out_shape)})"
    else:
        positions = [
            str(i)
            for i, parent in enumerate(node.parents)
            if parent is tensor or (parent is not None and parent is tensor.grad_fn)
        ]
        where = f"its input {' and '.join(positions)}" if positions else "one of its inputs that needs no gradient"
        which = f"{where} (shape {tuple(tensor.shape)}, {tensor.dtype})"
    saved = version.count_at(node.clock)
    raise RuntimeError(
        f"{node.name}.backward: {which} was changed in place after {node.name} saved it for the "
        f"gradient: it is now at version {version.count}, but was at version "
        f"{saved if saved is not None else f'{version.count - len(version.change_times)} or less'} when saved. "
        "The gradient would be computed from the changed values and be wrong. Fix: call backward() "
        "before changing it (e.g. loss.backward() before optimizer.step(); in a GAN, backpropagate "
        "G's loss before stepping D), or run the forward pass again after the change."
    )


def _run_hooks(hooks: list, grad: Tensor) -> Tensor:
    """Call each hook on the gradient; a hook may return a replacement of the same shape."""
    for hook in hooks:
        result = hook(grad)
        if result is None:
            continue
        if not isinstance(result, Tensor) or result.shape != grad.shape or result.device != grad.device:
            name = getattr(hook, "__qualname__", None) or repr(hook)
            got = (
                f"a gradient of shape {tuple(result.shape)} on {result.device}"
                if isinstance(result, Tensor)
                else f"a {type(result).__name__}"
            )
            raise RuntimeError(
                f"hook {name!r} returned {got} for a gradient of shape {tuple(grad.shape)} on {grad.device}; "
                "a hook must return None or a Tensor of the same shape and device (the gradient it replaces)"
            )
        grad = result
    return grad


def _describe(inputs: Sequence[Tensor]) -> str:
    return ", ".join(f"shape {tuple(t.shape)} {t.dtype} on {t.device}" for t in inputs)


def _check_same_device(op: str, inputs: Sequence[Tensor]) -> None:
    first = inputs[0].data.__class__
    if all(t.data.__class__ is first for t in inputs) and first is _np.ndarray:
        return  # the common case: all on the CPU
    devices = [t.device for t in inputs]
    if any(d != devices[0] for d in devices):
        raise RuntimeError(
            f"{op}: expected all tensors on the same device, but got tensors on {' and '.join(dict.fromkeys(devices))} "
            f"[inputs: {_describe(inputs)}]; move them with .to(device)"
        )


# ------------------------------------------------------------------- the backward walk
def _count_consumers(roots: list[Function]) -> dict[Function, int]:
    """How many nodes reachable from ``roots`` consume each node's output.

    A node may run its backward only once all its consumers have sent their gradient
    (Kahn's topological order). The search is iterative, so a 10,000-op chain is fine.
    """
    consumers: dict[Function, int] = {}
    stack = list(roots)
    seen = set(roots)
    while stack:
        node = stack.pop()
        for parent in node.parents:
            if parent is None or isinstance(parent, Tensor):
                continue
            consumers[parent] = consumers.get(parent, 0) + 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return consumers


def _call_backward(node: Function, grad: Tensor, retain_graph: bool, captured: Any, wanted: Any) -> tuple:
    """Run one node's hooks and backward; free its saved tensors unless retained."""
    if node.hooks:
        grad = _run_hooks(node.hooks, grad)
    if captured is not None and id(node) in wanted:
        captured[wanted[id(node)]] = grad
    if node.saved is _FREED:
        raise GraphFreedError(
            f"{node.name}: trying to backward through the graph a second time, but its saved "
            "tensors were freed after the first backward. Pass retain_graph=True to the first "
            "backward() (or minigen.grad) if you need to go through it again.",
            op=node.name,
        )
    if node.clock != _change_clock:  # something changed in place since the forward pass
        _check_saved_versions(node)
    started = _perf_counter() if observers else 0.0
    grads = node.backward(grad)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if observers:
        for observer in observers:
            observer("backward", node.name, node, (grad,), grads, _perf_counter() - started)
    if len(grads) != len(node.parents):
        raise RuntimeError(
            f"{node.name}.backward returned {len(grads)} gradients, but the op has {len(node.parents)} inputs"
        )
    if not retain_graph:
        node.saved = _FREED
    return grads


def run_backward(
    outputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor],
    retain_graph: bool,
    create_graph: bool,
    inputs: Sequence[Tensor] | None = None,
) -> list[Tensor | None] | None:
    """Propagate ``grad_outputs`` from ``outputs`` back through the graph.

    With ``inputs=None`` gradients accumulate into the ``.grad`` of leaf tensors
    (``Tensor.backward``). Otherwise the gradients of ``inputs`` are returned and no
    ``.grad`` is touched (``minigen.grad``).
    """
    captured: dict[int, Any] | None = None
    wanted: dict[int, int] | None = None
    if inputs is not None:
        captured, wanted = {}, {}
        for i, t in enumerate(inputs):
            wanted[id(t.grad_fn) if t.grad_fn is not None else id(t)] = i

    pending: dict[Function, Tensor] = {}
    roots = []
    with set_grad_enabled(create_graph):
        for out, g in zip(outputs, grad_outputs):
            if out.grad_fn is None:  # a leaf: its gradient is the seed itself
                _deliver_to_leaf(out, g, create_graph, captured, wanted)
                continue
            node = out.grad_fn
            pending[node] = pending[node] + g if node in pending else g
            if node not in roots:
                roots.append(node)

        consumers = _count_consumers(roots)
        ready = [node for node in roots if consumers.get(node, 0) == 0]
        while ready:
            node = ready.pop()
            grad = pending.pop(node, None)
            grads = _call_backward(node, grad, retain_graph, captured, wanted) if grad is not None else None
            for index, parent in enumerate(node.parents):
                if parent is None:
                    continue
                g = grads[index] if grads is not None else None
                if g is not None:
                    _check_grad_shape(node, index, parent, g)
                if isinstance(parent, Tensor):  # a leaf (Tensor or nn.Parameter)
                    if g is not None:
                        _deliver_to_leaf(parent, g, create_graph, captured, wanted)
                    continue
                if g is not None:
                    pending[parent] = pending[parent] + g if parent in pending else g
                # Counted even when no gradient arrived, so the parent still runs once
                # every consumer is done.
                consumers[parent] -= 1
                if consumers[parent] == 0:
                    ready.append(parent)
    if captured is None:
        return None
    return [captured.get(i) for i in range(len(inputs))]


def _check_grad_shape(node: Function, index: int, parent: Any, g: Tensor) -> None:
    expected = parent.shape if isinstance(parent, Tensor) else parent.out_shape
    if g.shape != expected:
        raise GradientShapeError(
            f"{node.name}.backward returned a gradient of shape {tuple(g.shape)} for input {index}, "
            f"whose shape is {tuple(expected)}. A gradient must have its input's shape: if the input "
            "was broadcast in forward, sum the gradient back over the broadcast axes (grad.sum_to(shape)).",
            op=node.name,
            index=index,
            shape=tuple(g.shape),
            expected=tuple(expected),
        )


def _deliver_to_leaf(leaf: Tensor, g: Tensor, create_graph: bool, captured: Any, wanted: Any) -> None:
    if leaf._hooks:
        g = _run_hooks(leaf._hooks, g)
    if captured is not None:
        index = wanted.get(id(leaf))
        if index is not None:
            captured[index] = captured[index] + g if index in captured else g
        return
    if g.dtype != leaf.dtype:
        g = g.to(leaf.dtype)
    if leaf.grad is not None:
        leaf.grad = leaf.grad + (g if create_graph else g.detach())
    elif create_graph:
        leaf.grad = g
    else:
        # A fresh, writable array owned by this leaf: the incoming gradient may be a
        # read-only broadcast view or shared with another leaf, and optimisers and
        # clipping are allowed to update .grad in place.
        leaf.grad = Tensor(g.data.copy())


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Tensor | Sequence[Tensor | None] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned (not accumulated).

    ``grad_outputs`` weights each output (the "vector" in the vector-Jacobian product);
    it may be omitted for scalar outputs. With ``create_graph=True`` the returned
    gradients are themselves differentiable.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: got {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError(
                f"grad: an input of shape {tuple(t.shape)} does not require grad; create it with requires_grad=True"
            )
    seeds = [_seed_gradient(out, g, "grad") for out, g in zip(outputs, grad_outputs)]
    outs = [out for out in outputs if out.requires_grad]
    seeds = [s for out, s in zip(outputs, seeds) if out.requires_grad]
    if retain_graph is None:
        retain_graph = create_graph
    result = run_backward(outs, seeds, retain_graph, create_graph, inputs=inputs)
    for t, g in zip(inputs, result):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: an input of shape {tuple(t.shape)} was not used to compute the outputs "
                "(its gradient would be None); pass allow_unused=True if that is intended"
            )
    return tuple(result)


def _seed_gradient(output: Tensor, gradient: Any, op: str) -> Tensor:
    """The starting gradient ∂L/∂output: 1 for a scalar, else it must be given."""
    if gradient is None:
        if output.data.size != 1:
            raise RuntimeError(
                f"{op}: the output has shape {tuple(output.shape)}, not a single value, so its gradient "
                "is ambiguous; pass gradient=... (a tensor of the same shape), or reduce it first, e.g. "
                "out.sum().backward()"
            )
        return Tensor(output.xp.ones_like(output.data))
    if not isinstance(gradient, Tensor):
        gradient = Tensor(output.xp.asarray(gradient, dtype=output.dtype))
    if gradient.shape != output.shape:
        raise RuntimeError(
            f"{op}: gradient has shape {tuple(gradient.shape)} but the output has shape {tuple(output.shape)}"
        )
    if gradient.device != output.device:
        raise RuntimeError(f"{op}: gradient is on {gradient.device} but the output is on {output.device}")
    return gradient


import numpy as _np  # noqa: E402  (kept at the bottom: minigen.tensor imports this module)

from minigen.tensor import Tensor  # noqa: E402
