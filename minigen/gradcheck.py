"""Numerical gradient checking: does a backward pass agree with finite differences?

``gradcheck(fn, *inputs)`` compares, for every input that requires grad, the analytical
gradient (from ``backward``) of the scalar

    L(x) = Σ_k ⟨v_k, fn(x)_k⟩          (v_k: a seeded random "upstream gradient")

with the central difference

    ∂L/∂x_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε,

all in float64. When they disagree it prints what a student needs to find the bug:
the worst elements, whether a mismatch sits on a kink (where left and right slopes
differ, so it is not a bug), and hints (a constant ratio means a factor or sign error,
an all-zero gradient means it never flowed, numerically-zero positions that receive
gradient mean a leak, e.g. through a causal mask, a transposed gradient...).

Large inputs are checked along random directions u (vᵀJu against the difference
quotient along u) plus a sample of single elements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigen import autograd, backend
from minigen.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when a gradient check fails; the message is the full report."""


@dataclass
class InputReport:
    """What the check found for one input."""

    name: str
    shape: tuple[int, ...]
    passed: bool
    checked: str  # "all elements" or "k directions + m sampled elements"
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst: list[tuple] = field(default_factory=list)  # (index, analytical, numerical, abs, rel)
    kinks: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


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
    """L(x) = Σ_k ⟨v_k, fn(x)_k⟩, evaluated with the random state fixed each time."""

    def __init__(self, fn: Callable, args: list[Any], seed: int) -> None:
        self.fn = fn
        self.args = args
        self.seed = seed
        self.upstream: list[Any] | None = None

    def outputs(self) -> list[Tensor]:
        backend_state = (backend._seed, dict(backend._generators))
        backend.manual_seed(self.seed)  # dropout masks and noise are the same each time
        try:
            return _as_outputs(self.fn(*self.args))
        finally:
            backend._seed, saved_generators = backend_state
            backend._generators.clear()
            backend._generators.update(saved_generators)

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

    def analytical(self, checked: list[Tensor]) -> list[np.ndarray | None]:
        with autograd.enable_grad():
            outs = self.outputs()
            if self.upstream is None:
                self.upstream = _upstream(outs, self.seed)
            pairs = [(o, Tensor(v.astype(o.dtype))) for o, v in zip(outs, self.upstream) if o.requires_grad]
            if not pairs:
                return [None] * len(checked)
            grads = autograd.grad([o for o, _ in pairs], checked, grad_outputs=[v for _, v in pairs], allow_unused=True)
        return [None if g is None else _host(g) for g in grads]


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


def _hints(analytical: np.ndarray, numerical: np.ndarray, bad: np.ndarray, atol: float, rtol: float) -> list[str]:
    """Diagnose the typical mistakes from the pattern of errors."""
    hints = []
    scale = max(float(np.abs(numerical).max(initial=0.0)), atol)
    if np.all(analytical == 0) and np.any(np.abs(numerical) > atol):
        return [
            "the analytical gradient is all zero but the numerical one is not: the gradient never "
            "flowed (backward returns zeros, or the graph was cut by .detach() / .data / a NumPy call)"
        ]
    significant = np.abs(numerical) > 1e-3 * scale
    if significant.sum() >= 2:
        ratios = analytical[significant] / numerical[significant]
        mean_ratio = float(ratios.mean())
        if abs(mean_ratio - 1) > 1e-3 and np.allclose(ratios, mean_ratio, rtol=1e-3, atol=1e-6):
            if abs(mean_ratio + 1) < 1e-3:
                hints.append("analytical = −1 × numerical everywhere: a sign error")
            elif abs(mean_ratio - 2) < 1e-3 or abs(mean_ratio - 0.5) < 1e-3:
                hints.append(f"analytical = {mean_ratio:.4g} × numerical everywhere: a factor of 2 is missing or extra")
            else:
                hints.append(
                    f"analytical = {mean_ratio:.6g} × numerical everywhere: a constant factor is wrong "
                    "(e.g. a missing 1/N of a mean, 1/√d of attention, or a scale in the forward)"
                )
    if analytical.ndim >= 2 and analytical.shape[-1] == analytical.shape[-2] and analytical.shape[-1] > 1:
        transposed = np.swapaxes(analytical, -1, -2)
        if np.allclose(transposed, numerical, rtol=rtol, atol=atol) and not np.allclose(
            analytical, numerical, rtol=rtol, atol=atol
        ):
            hints.append(
                "the analytical gradient equals the numerical one transposed: "
                "a transpose is missing or extra (e.g. G Bᵀ vs Bᵀ G)"
            )
    numerically_zero = np.abs(numerical) <= atol
    leaks = bad & numerically_zero & (np.abs(analytical) > atol)
    if leaks.any() and not numerically_zero.all():
        hints.append(
            f"{int(leaks.sum())} element(s) get gradient although the output does not depend on them "
            "(numerical gradient 0): a leak, e.g. through masked / future positions of a causal mask, "
            "or into values that were clipped or zeroed in forward"
        )
    missed = bad & ~numerically_zero & (np.abs(analytical) <= atol)
    if missed.any() and not (np.abs(analytical) <= atol).all():
        hints.append(
            f"{int(missed.sum())} element(s) get no gradient although the output depends on them: "
            "a path is missing from backward"
        )
    return hints


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
    random state is re-seeded with ``seed`` before every evaluation, and a seeded random
    upstream gradient weights the outputs.

    Inputs with more than ``max_elements`` elements are checked along ``n_directions``
    random directions plus ``n_sampled`` random elements.

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

    try:
        objective = _Objective(fn, args, seed)
        reports = _check_all(objective, checked, names, eps, atol, rtol, seed, max_elements, n_directions, n_sampled)
    finally:
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
        backward_error = None
    except RuntimeError as error:
        analytical_grads = [None] * len(checked)
        backward_error = error

    rng = np.random.default_rng(seed)
    reports = []
    for x, name, analytical in zip(checked, names, analytical_grads):
        report = InputReport(name, tuple(x.shape), True, "all elements")
        if backward_error is not None:
            report.passed = False
            report.hints.append(f"backward raised: {backward_error}")
            if "sum the gradient back" in str(backward_error):
                report.hints.append(
                    "a missing unbroadcast: the input was broadcast in forward, so its gradient "
                    "must be summed over the broadcast axes"
                )
            reports.append(report)
            continue
        no_gradient = analytical is None
        analytical = np.zeros(x.shape) if no_gradient else analytical
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input
        size = int(x.data.size)
        if size <= max_elements:
            indices = np.arange(size)
        else:
            indices = np.sort(rng.choice(size, size=n_sampled, replace=False))
            report.checked = f"{n_directions} random directions + {n_sampled} sampled elements (of {size})"
            _check_directions(objective, x, analytical, eps, atol, rtol, rng, n_directions, report)

        numerical = np.zeros(len(indices))
        for k, i in enumerate(indices):
            numerical[k] = _slopes_central(objective, flat, int(i), eps)
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

        report.max_abs_error = max(report.max_abs_error, float(abs_err.max(initial=0.0)))
        report.max_rel_error = max(report.max_rel_error, float(rel_err.max(initial=0.0)))
        worst = np.argsort(-abs_err)[:8]
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
            elif size <= max_elements:
                report.hints += _hints(
                    picked.reshape(x.shape), numerical.reshape(x.shape), bad.reshape(x.shape), atol, rtol
                )
            else:
                report.hints += _hints(picked, numerical, bad, atol, rtol)
        reports.append(report)
    return reports


def _slopes_central(objective: _Objective, flat: Any, i: int, eps: float) -> float:
    original = float(flat[i])
    flat[i] = original + eps
    plus = objective.value()
    flat[i] = original - eps
    minus = objective.value()
    flat[i] = original
    return (plus - minus) / (2 * eps)


def _check_directions(
    objective: _Objective,
    x: Tensor,
    analytical: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
    rng: np.random.Generator,
    n_directions: int,
    report: InputReport,
) -> None:
    """Compare vᵀJu = ⟨∂L/∂x, u⟩ with (L(x + εu) − L(x − εu)) / 2ε for random u."""
    original = x.data.copy()
    for k in range(n_directions):
        u_host = rng.standard_normal(x.shape)
        u = backend.to_device(u_host, x.device)
        x.data[...] = original + eps * u
        plus = objective.value()
        x.data[...] = original - eps * u
        minus = objective.value()
        x.data[...] = original
        numerical = (plus - minus) / (2 * eps)
        predicted = float((analytical * u_host).sum())
        error = abs(predicted - numerical)
        if error > atol * math.sqrt(u_host.size) + rtol * abs(numerical):
            report.passed = False
            report.hints.append(
                f"direction {k}: ⟨analytical gradient, u⟩ = {predicted:.6g} but the difference "
                f"quotient along u is {numerical:.6g}"
            )


def _render(result: GradcheckResult, fn_name: str) -> str:
    lines = [f"gradcheck of {fn_name}: {'PASSED' if result.passed else 'FAILED'}"]
    for r in result.inputs:
        status = "ok" if r.passed else "MISMATCH"
        lines.append(
            f"  {r.name} shape {r.shape}: {status} ({r.checked}; max abs error {r.max_abs_error:.3g}, "
            f"max rel error {r.max_rel_error:.3g})"
        )
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


def check_gradients(fn: Callable, inputs: Sequence[Any], **kwargs: Any) -> GradcheckResult:
    """``gradcheck(fn, *inputs)`` without raising: handy in notebooks."""
    return gradcheck(fn, *inputs, raise_exception=False, **kwargs)
