"""Numerical gradient checking: does a backward pass agree with finite differences?

``gradcheck(fn, *inputs)`` compares, for every input that requires grad, the analytical
gradient (from ``backward``) of the scalar

    L(x) = Σ_k ⟨v_k, fn(x)_k⟩          (v_k: a seeded random "upstream gradient")

with the central difference

    ∂L/∂x_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε,

all in float64. When they disagree it prints what a student needs to find the bug:
how many elements are wrong and the worst of them, whether a mismatch sits on a kink
(where left and right slopes differ, so it is not a bug), and hints
(``minigen.gradient_hints``: a constant ratio means a factor or sign error, an all-zero
gradient means it never flowed, gradient where the output does not depend on the input
means a leak, errors only at odd indices or only for negative inputs name the pattern,
a gradient that matches the one computed with another input transposed means a
transposed operand, one that does not scale with g means the incoming g is ignored...).

Large inputs are checked along random directions u (vᵀJu against the difference
quotient along u) plus a sample of single elements. When a direction disagrees, the
wrong elements are localised by bisection: the elements are split into blocks, each
block is checked along a direction that lives on it, and the blocks that disagree are
split again, down to single elements.

``minigen.gradcheck`` is this module and, called, the function: ``mg.gradcheck(fn, x)``
runs ``gradcheck`` and ``import minigen.gradcheck as gc`` gives the module.
"""

from __future__ import annotations

import heapq
import math
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigen import autograd, backend
from minigen.errors import GradientShapeError, find_in_chain
from minigen.gradient_hints import IGNORES_UPSTREAM, gradient_hints, shape_hints, unbroadcast_hint
from minigen.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when a gradient check fails; the message is the full report."""


@dataclass
class InputReport:
    """What the check found for one input.

    ``checked`` says how (all elements, or random directions plus sampled and localised
    elements); ``n_checked`` elements were compared one by one and ``n_wrong`` of them
    disagree; ``worst`` lists the worst of those, worst first.
    """

    name: str
    shape: tuple[int, ...]
    passed: bool
    checked: str  # "all 12 elements" or "k random directions + m sampled elements (of n)"
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst: list[tuple] = field(default_factory=list)  # (index, analytical, numerical, abs, rel)
    kinks: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    n_checked: int = 0
    n_wrong: int = 0
    failed_directions: int = 0
    backward_error: str = ""


@dataclass
class GradcheckResult:
    """The outcome of ``gradcheck``: ``passed``, one ``InputReport`` per input, and the text report."""

    passed: bool
    inputs: list[InputReport]
    seed: int
    eps: float
    atol: float
    rtol: float
    report: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.report


# ---------------------------------------------------------------------------- helpers
def _is_module(obj: Any) -> bool:
    return hasattr(obj, "named_parameters") and callable(obj)


def _as_outputs(result: Any) -> list[Tensor]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    outs = [t for t in items if isinstance(t, Tensor) and t.dtype.kind == "f"]
    if not outs:
        raise TypeError(
            f"gradcheck: fn must return a floating-point Tensor (or a tuple of them), got {type(result).__name__}"
        )
    return outs


def _host(t: Any) -> np.ndarray:
    return backend.asnumpy(t.data if isinstance(t, Tensor) else t).astype(np.float64)


def _upstream(outs: list[Tensor], seed: int) -> list[Any]:
    """Seeded random upstream gradients v_k, one per output, on the outputs' devices."""
    rng = np.random.default_rng(seed + 7919)
    return [backend.to_device(rng.standard_normal(o.shape), o.device) for o in outs]


class _Objective:
    """L(x) = Σ_k ⟨v_k, fn(x)_k⟩, evaluated with the random state re-seeded each time.

    ``gradcheck`` saves the caller's random state before the first evaluation and puts
    it back after the last (``backend.get_rng_state`` / ``set_rng_state``).
    """

    def __init__(self, fn: Callable, args: list[Any], seed: int) -> None:
        self.fn = fn
        self.args = args
        self.seed = seed
        self.upstream: list[Any] | None = None

    def outputs(self) -> list[Tensor]:
        backend.manual_seed(self.seed)  # dropout masks and noise are the same each time
        return _as_outputs(self.fn(*self.args))

    def value(self) -> float:
        # Grad stays enabled: fn may itself call mg.grad (a gradient penalty, gradgradcheck).
        with autograd.enable_grad():
            outs = self.outputs()
        if self.upstream is None:
            self.upstream = _upstream(outs, self.seed)
        total = 0.0
        for o, v in zip(outs, self.upstream):
            total += float((o.data.astype(np.float64) * v).sum())
        return total

    def analytical(self, checked: list[Tensor], scale: float = 1.0) -> list[np.ndarray | None]:
        """∂L/∂x for each checked x, from backward (with the upstream gradients times ``scale``)."""
        with autograd.enable_grad():
            outs = self.outputs()
            if self.upstream is None:
                self.upstream = _upstream(outs, self.seed)
            pairs = [(o, Tensor((scale * v).astype(o.dtype))) for o, v in zip(outs, self.upstream) if o.requires_grad]
            if not pairs:
                return [None] * len(checked)
            grads = autograd.grad([o for o, _ in pairs], checked, grad_outputs=[v for _, v in pairs], allow_unused=True)
        return [None if g is None else _host(g) for g in grads]


def _central(objective: _Objective, flat: Any, i: int, eps: float) -> float:
    """(L(x + ε e_i) − L(x − ε e_i)) / 2ε."""
    original = float(flat[i])
    flat[i] = original + eps
    plus = objective.value()
    flat[i] = original - eps
    minus = objective.value()
    flat[i] = original
    return (plus - minus) / (2 * eps)


def _along(objective: _Objective, x: Tensor, original: Any, u_host: np.ndarray, eps: float) -> float:
    """(L(x + εu) − L(x − εu)) / 2ε: the numerical directional derivative along u."""
    u = backend.to_device(u_host.reshape(x.shape), x.device)
    x.data[...] = original + eps * u
    plus = objective.value()
    x.data[...] = original - eps * u
    minus = objective.value()
    x.data[...] = original
    return (plus - minus) / (2 * eps)


def _slopes(objective: _Objective, flat: Any, i: int, h: float) -> tuple[float, float, float]:
    """Left slope, right slope and central difference of L along element i."""
    original = float(flat[i])
    centre = objective.value()
    flat[i] = original + h
    plus = objective.value()
    flat[i] = original - h
    minus = objective.value()
    flat[i] = original
    return (centre - minus) / h, (plus - centre) / h, (plus - minus) / (2 * h)


def _kink_verdict(
    objective: _Objective, flat: Any, i: int, eps: float, analytical: float, tol: float
) -> tuple[str, bool] | None:
    """If the function has a kink at element i: (description, harmless?); else None.

    At a kink the left and right slopes differ by an amount that does not shrink with
    the step h (for a smooth function the gap is about h·f'' and shrinks with h).
    """
    h = max(eps * 1e3, 1e-4)
    left, right, _ = _slopes(objective, flat, i, h)
    gap = abs(right - left)
    if gap <= tol * 10:
        return None
    left_small, right_small, _ = _slopes(objective, flat, i, h / 10)
    if abs(right_small - left_small) < 0.5 * gap:
        return None  # the gap shrinks with h: curvature, not a kink
    low, high = min(left, right) - tol, max(left, right) + tol
    inside = low <= analytical <= high
    return (
        f"kink: left slope {left:.6g}, right slope {right:.6g}; analytical {analytical:.6g} "
        + ("lies between them, a valid subgradient: not a bug" if inside else "lies outside both: a bug")
    ), inside


def _ids_to_check(inputs: Sequence[Any]) -> set[int]:
    """The inputs to check: those with requires_grad, or else every floating-point tensor."""
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    flagged = [x for x in tensors if x.requires_grad]
    return {id(x) for x in (flagged or [x for x in tensors if x.dtype.kind == "f"])}


def _format_index(flat_index: int, shape: tuple[int, ...]) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat_index, shape))) if shape else "()"


# ------------------------------------------------------------------------ the checks
def gradcheck(
    fn: Callable,
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    raise_exception: bool = True,
    max_elements: int = 2048,
    n_directions: int = 8,
    n_sampled: int = 64,
    verbose: bool = False,
) -> GradcheckResult:
    """Check ``fn``'s analytical gradients against central differences, in float64.

    ``fn`` takes ``inputs`` (Tensors, or anything else passed through unchanged) and
    returns a Tensor or a tuple of Tensors; it may be an ``nn.Module``, whose parameters
    are then checked too. Inputs with ``requires_grad=True`` are checked (if none is
    marked, every floating-point tensor input is). Inputs are copied to float64, the
    random state is re-seeded with ``seed`` before every evaluation (and the caller's
    random state is restored afterwards), and a seeded random upstream gradient
    weights the outputs.

    Inputs with more than ``max_elements`` elements are checked along ``n_directions``
    random directions plus ``n_sampled`` random elements; when a direction disagrees,
    the wrong elements are localised by bisection and reported by index.

    Returns a ``GradcheckResult``; raises ``GradcheckError`` with the report on failure
    unless ``raise_exception=False``.
    """
    to_check_ids = _ids_to_check(inputs)

    args: list[Any] = []
    checked: list[Tensor] = []
    names: list[str] = []
    for position, x in enumerate(inputs):
        if isinstance(x, Tensor) and id(x) in to_check_ids:
            copy = Tensor(x.data.astype(np.float64, order="C", copy=True), requires_grad=True)
            args.append(copy)
            checked.append(copy)
            names.append(f"input {position}")
        elif isinstance(x, Tensor) and x.dtype.kind == "f":
            args.append(Tensor(x.data.astype(np.float64, order="C", copy=True)))
        else:
            args.append(x)

    restore: list[tuple[Tensor, Any, bool]] = []
    if _is_module(fn):  # check the parameters too, in float64, and put them back afterwards
        for name, p in fn.named_parameters():
            restore.append((p, p.data, p.requires_grad))
            p.data = p.data.astype(np.float64, order="C", copy=True)
            p.requires_grad = True
            checked.append(p)
            names.append(f"parameter {name}")
        for buffer in fn.buffers() if hasattr(fn, "buffers") else []:  # e.g. batch-norm running stats
            if isinstance(buffer, Tensor) and buffer.dtype.kind == "f":
                restore.append((buffer, buffer.data, buffer.requires_grad))
                buffer.data = buffer.data.astype(np.float64, order="C", copy=True)
    if not checked:
        raise ValueError(
            "gradcheck: no floating-point tensor input to check (mark the ones to check with requires_grad=True)"
        )

    random_state = backend.get_rng_state()  # fn's evaluations re-seed; the caller's stream is put back
    try:
        objective = _Objective(fn, args, seed)
        reports = _check_all(objective, checked, names, eps, atol, rtol, seed, max_elements, n_directions, n_sampled)
    finally:
        backend.set_rng_state(random_state)
        for p, data, requires_grad in restore:
            p.data = data
            p.requires_grad = requires_grad

    passed = all(r.passed for r in reports)
    result = GradcheckResult(passed, reports, seed, eps, atol, rtol)
    result.report = _render(result, getattr(fn, "__name__", type(fn).__name__))
    if verbose:
        print(result.report)
    if not passed and raise_exception:
        raise GradcheckError(result.report)
    return result


def _check_all(
    objective: _Objective,
    checked: list[Tensor],
    names: list[str],
    eps: float,
    atol: float,
    rtol: float,
    seed: int,
    max_elements: int,
    n_directions: int,
    n_sampled: int,
) -> list[InputReport]:
    try:
        analytical_grads = objective.analytical(checked)
    except RuntimeError as error:  # backward itself failed: say why, compare nothing
        return [_backward_failed(name, x, error) for x, name in zip(checked, names)]

    rng = np.random.default_rng(seed)
    reports = []
    for x, name, analytical in zip(checked, names, analytical_grads):
        report = _check_input(
            objective, x, name, analytical, eps, atol, rtol, rng, max_elements, n_directions, n_sampled
        )
        reports.append(report)

    failed = [k for k, r in enumerate(reports) if not r.passed and analytical_grads[k] is not None]
    if failed:  # the checks that need more evaluations, only for what failed
        doubled = objective.analytical(checked, scale=2.0)
        for k in failed:
            a, a2 = analytical_grads[k], doubled[k]
            if a2 is not None and np.any(np.abs(a) > atol) and np.allclose(a2, a, rtol=1e-9, atol=1e-12):
                reports[k].hints.insert(0, IGNORES_UPSTREAM)
            elif int(checked[k].data.size) <= min(max_elements, 512):  # 2 evaluations per element and candidate
                reports[k].hints += _transposed_layout_hints(objective, checked, k, names, a, eps, atol, rtol)
    return reports


def _backward_failed(name: str, x: Tensor, error: RuntimeError) -> InputReport:
    report = InputReport(name, tuple(x.shape), False, "nothing (backward raised)")
    report.backward_error = str(error)
    report.hints.append(f"backward raised: {error}")
    shape_error = find_in_chain(error, GradientShapeError)
    if shape_error is not None:
        if shape_error.shape is not None and shape_error.expected is not None:
            report.hints += shape_hints(shape_error.shape, shape_error.expected)
        else:
            report.hints.append(unbroadcast_hint(tuple(x.shape)))
    return report


def _check_input(
    objective: _Objective,
    x: Tensor,
    name: str,
    analytical: np.ndarray | None,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    max_elements: int,
    n_directions: int,
    n_sampled: int,
) -> InputReport:
    """Compare one input's analytical gradient with the numerical one."""
    size = int(x.data.size)
    report = InputReport(name, tuple(x.shape), True, f"all {size} elements")
    no_gradient = analytical is None
    analytical = np.zeros(x.shape) if no_gradient else analytical
    flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input
    if size <= max_elements:
        indices = np.arange(size)
    else:
        sampled = rng.choice(size, size=n_sampled, replace=False)
        disagreeing = _check_directions(objective, x, analytical, eps, atol, rtol, rng, n_directions)
        localised = _localise(objective, x, analytical, eps, atol, rtol, rng) if disagreeing else []
        indices = np.union1d(sampled, np.asarray(localised, dtype=np.int64))
        report.checked = f"{n_directions} random directions + {n_sampled} sampled elements" + (
            f" + {len(localised)} localised by bisection" if localised else ""
        )
        report.checked += f" (of {size})"
        if disagreeing:
            report.passed = False
            report.failed_directions = len(disagreeing)
            k, predicted, numerical_k = disagreeing[0]
            report.hints.append(
                f"{len(disagreeing)} of {n_directions} random directions u disagree (direction {k}: "
                f"⟨analytical gradient, u⟩ = {predicted:.6g} but the difference quotient along u is "
                f"{numerical_k:.6g})"
                + ("" if localised else "; bisection found no single wrong element (the error is spread thinly)")
            )

    numerical = np.array([_central(objective, flat, int(i), eps) for i in indices])
    picked = analytical.reshape(-1)[indices]
    abs_err = np.abs(picked - numerical)
    rel_err = abs_err / np.maximum(np.abs(numerical), 1e-12)
    bad = abs_err > atol + rtol * np.abs(numerical)

    for k in np.flatnonzero(bad):
        verdict = _kink_verdict(
            objective, flat, int(indices[k]), eps, float(picked[k]), atol + rtol * abs(numerical[k])
        )
        if verdict is not None:
            text, harmless = verdict
            report.kinks.append(f"at {_format_index(int(indices[k]), x.shape)}: {text}")
            if harmless:
                bad[k] = False

    report.n_checked = len(indices)
    report.n_wrong = int(bad.sum())
    report.max_abs_error = float(abs_err.max(initial=0.0))
    report.max_rel_error = float(rel_err.max(initial=0.0))
    worst = np.argsort(-abs_err, kind="stable")[:8]
    report.worst = [
        (
            _format_index(int(indices[k]), x.shape),
            float(picked[k]),
            float(numerical[k]),
            float(abs_err[k]),
            float(rel_err[k]),
        )
        for k in worst
        if bad[k]
    ]
    if bad.any():
        report.passed = False
        if no_gradient:
            report.hints.append(
                "no gradient reached this input at all (None): check that it is used to compute the "
                "output, that backward returns a gradient for it, and that nothing detached it"
            )
        else:
            values = _host(x).reshape(-1)[indices]
            if size <= max_elements:  # whole arrays: the hints can name axes
                picked, numerical, bad, values = (a.reshape(x.shape) for a in (picked, numerical, bad, values))
            report.hints += gradient_hints(picked, numerical, bad, atol, rtol, values)
    return report


def _check_directions(
    objective: _Objective,
    x: Tensor,
    analytical: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    n_directions: int,
) -> list[tuple[int, float, float]]:
    """Compare vᵀJu = ⟨∂L/∂x, u⟩ with (L(x + εu) − L(x − εu)) / 2ε for random u.

    Returns the directions that disagree: (k, predicted, numerical).
    """
    original = x.data.copy()
    disagreeing = []
    for k in range(n_directions):
        predicted, numerical, error = _compare_along(
            objective, x, original, analytical, rng.standard_normal(x.shape), eps, atol, rtol
        )
        if error is not None:
            disagreeing.append((k, predicted, numerical))
    return disagreeing


def _compare_along(
    objective: _Objective,
    x: Tensor,
    original: Any,
    analytical: np.ndarray,
    u: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
) -> tuple[float, float, float | None]:
    """⟨∂L/∂x, u⟩, the difference quotient along u, and their difference if it is beyond tolerance.

    The tolerance grows with √(number of elements u moves): each contributes its own
    rounding and truncation error.
    """
    numerical = _along(objective, x, original, u, eps)
    predicted = float((analytical.reshape(-1) * u.reshape(-1)).sum())
    error = abs(predicted - numerical)
    tolerance = atol * math.sqrt(np.count_nonzero(u)) + rtol * abs(numerical)
    return predicted, numerical, (error if error > tolerance else None)


def _localise(
    objective: _Objective,
    x: Tensor,
    analytical: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    limit: int = 8,
    budget: int = 256,
) -> list[int]:
    """Find up to ``limit`` wrong elements by bisection (at most ``budget`` block checks).

    A block B of elements is checked along a direction u that is a random ±1 on B and 0
    elsewhere: ⟨∂L/∂x, u⟩ against the difference quotient along u. A block that
    disagrees is split in two and both halves are checked, the worst block first, until
    single elements are left: about 2·log₂(n) checks per wrong element.
    """
    original = x.data.copy()
    size = analytical.size

    def disagreement(block: np.ndarray) -> float | None:
        u = np.zeros(size)
        u[block] = rng.choice((-1.0, 1.0), size=len(block))
        return _compare_along(objective, x, original, analytical, u, eps, atol, rtol)[2]

    found: list[int] = []
    queue: list[tuple[float, int, np.ndarray]] = [(-math.inf, 0, np.arange(size))]
    checks = 0
    while queue and len(found) < limit and checks < budget:
        _, _, block = heapq.heappop(queue)
        if len(block) == 1:
            found.append(int(block[0]))
            continue
        for half in np.array_split(block, 2):
            checks += 1
            error = disagreement(half)
            if error is not None:
                heapq.heappush(queue, (-error, checks, half))
    return found


def _transposed_layout_hints(
    objective: _Objective,
    checked: list[Tensor],
    k: int,
    names: list[str],
    analytical: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
) -> list[str]:
    """Does ∂L/∂x match the numerical gradient computed with another input transposed?

    Then backward used that input where its transpose belongs (``g @ B`` for ``g @ Bᵀ``).
    Only square (last two axes) inputs can be swapped without changing any shape.
    """
    x = checked[k]
    others = [(names[j], t) for j, t in enumerate(checked) if j != k]
    others += [(f"input {position}", t) for position, t in enumerate(objective.args) if isinstance(t, Tensor)]
    seen = {id(x)}
    flat = x.data.reshape(-1)
    hints = []
    for other_name, other in others:
        if id(other) in seen or other.ndim < 2 or other.shape[-1] != other.shape[-2] or other.shape[-1] < 2:
            continue
        seen.add(id(other))
        original = other.data.copy()
        other.data[...] = other.xp.swapaxes(original, -1, -2)
        try:
            numerical = np.array([_central(objective, flat, i, eps) for i in range(flat.size)]).reshape(x.shape)
        finally:
            other.data[...] = original
        if np.allclose(analytical, numerical, rtol=rtol, atol=atol):
            hints.append(
                f"the analytical gradient of {names[k]} equals the numerical one computed with {other_name} "
                "transposed: backward uses that input where its transpose belongs, or the other way round "
                "(e.g. g @ B instead of g @ Bᵀ)"
            )
    return hints


def _header(r: InputReport) -> str:
    errors = f"max abs error {r.max_abs_error:.3g}, max rel error {r.max_rel_error:.3g}"
    if r.passed:
        return f"  {r.name} shape {r.shape}: ok ({r.checked}; {errors})"
    if r.backward_error:
        return f"  {r.name} shape {r.shape}: MISMATCH: backward raised an error, so nothing was compared"
    if r.worst:
        index, a, n, _, _ = r.worst[0]
        return (
            f"  {r.name} shape {r.shape}: MISMATCH: {r.n_wrong} of {r.n_checked} checked elements wrong, "
            f"the worst at {index} (analytical {a:.6g}, numerical {n:.6g}); checked {r.checked}; {errors}"
        )
    return (
        f"  {r.name} shape {r.shape}: MISMATCH: {r.failed_directions} random direction(s) disagree, "
        f"no single checked element is wrong; checked {r.checked}; {errors}"
    )


def _render(result: GradcheckResult, fn_name: str) -> str:
    lines = [f"gradcheck of {fn_name}: {'PASSED' if result.passed else 'FAILED'}"]
    for r in result.inputs:
        lines.append(_header(r))
        if r.worst:
            lines.append(f"    {'index':<16}{'analytical':>14}{'numerical':>14}{'abs error':>12}{'rel error':>12}")
            for index, a, n, abs_err, rel_err in r.worst:
                lines.append(f"    {index:<16}{a:>14.6g}{n:>14.6g}{abs_err:>12.3g}{rel_err:>12.3g}")
        for k in r.kinks:
            lines.append(f"    {k}")
        for h in r.hints:
            lines.append(f"    hint: {h}")
    lines.append(
        f"  seed={result.seed}, eps={result.eps:g}, atol={result.atol:g}, rtol={result.rtol:g} "
        "(float64; pass the same seed to reproduce)"
    )
    return "\n".join(lines)


def gradgradcheck(
    fn: Callable,
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    raise_exception: bool = True,
    max_elements: int = 512,
    verbose: bool = False,
) -> GradcheckResult:
    """Check second derivatives: gradcheck of x ↦ ∂⟨v, fn(x)⟩/∂x, built with ``create_graph=True``."""
    to_check = _ids_to_check(inputs)
    positions = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and id(x) in to_check]
    state: dict[str, Any] = {}

    def first_derivative(*args: Any) -> tuple[Tensor, ...]:
        xs = [args[i] for i in positions]
        with autograd.enable_grad():
            outs = _as_outputs(fn(*args))
            if "upstream" not in state:
                state["upstream"] = _upstream(outs, seed + 1)
            pairs = [(o, Tensor(v)) for o, v in zip(outs, state["upstream"]) if o.requires_grad]
            if not pairs:
                return tuple(Tensor(x.xp.zeros(x.shape)) for x in xs)
            grads = autograd.grad(
                [o for o, _ in pairs], xs, grad_outputs=[v for _, v in pairs], create_graph=True, allow_unused=True
            )
        return tuple(Tensor(x.xp.zeros(x.shape)) if g is None else g for x, g in zip(xs, grads))

    first_derivative.__name__ = f"gradient of {getattr(fn, '__name__', type(fn).__name__)}"
    inputs = tuple(x.detach().requires_grad_() if isinstance(x, Tensor) and id(x) in to_check else x for x in inputs)
    return gradcheck(
        first_derivative,
        *inputs,
        eps=eps,
        atol=atol,
        rtol=rtol,
        seed=seed,
        raise_exception=raise_exception,
        max_elements=max_elements,
        verbose=verbose,
    )


class _CallableModule(types.ModuleType):
    """This module, callable as its main function: ``mg.gradcheck(fn, *inputs)``.

    ``minigen.gradcheck`` must be two things: the function PyTorch users call by that
    name, and this module (``import minigen.gradcheck as gc`` gives the module, with
    ``gradgradcheck``, ``GradcheckResult``, ...). A module whose class defines
    ``__call__`` is both, so neither shadows the other.
    """

    def __call__(self, fn: Callable, *inputs: Any, **options: Any) -> GradcheckResult:
        return gradcheck(fn, *inputs, **options)


sys.modules[__name__].__class__ = _CallableModule
