"""The checker behind ``python -m minigen.exercises check NAME FILE``.

Writing a new exercise
----------------------
An exercise is one module in this package (``sigmoid_tanh.py`` is the simplest to read;
copy it) added to ``EXERCISES`` in ``__init__.py``. It declares, in plain module-level
names:

* ``NAME``, ``TITLE``, ``TOPIC``: what it is called and which lecture it belongs to;
* ``TEMPLATE``: the student file that ``start`` writes (the maths, the shapes, stubs
  that raise ``NotImplementedError("not implemented yet: ...")``);
* ``OPS``: one ``Op`` per ``Function`` class the student writes: its inputs (names of
  case arrays), which of them need a gradient, its keyword parameters, and the
  engine's reference implementation to compare against;
* ``cases()``: a hypothesis strategy of ``Case`` objects (small random inputs, values
  kept away from kinks and ties), and ``EXAMPLES``: hand-picked cases checked first;
* ``PROPERTIES``: topic-specific checks, plain functions ``f(student, case)`` whose
  docstring's first line says what holds and which raise ``CheckFailed(message,
  hints)`` when it does not (causal leakage for attention, one-hot routing for
  max-pool, ...); ``student.forward`` / ``student.vjp`` run the student's op and
  return host arrays;
* optionally the hints for the topic's typical mistakes:
  ``diagnose_forward(op, case, mine, want)`` and
  ``diagnose_backward(op, case, g, mine, want)`` return sentences naming the mistake
  when the student's result matches a known wrong formula (build the wrong formula in
  NumPy and compare with ``close``). When they recognise nothing, the generic hints
  of ``minigen.gradient_hints`` are shown (a constant factor, a sign, the pattern of
  the wrong elements, a transposed operand, an ignored upstream gradient, ...).

For every op the checker runs, on every case (stopping at the first failing one):

1. **forward**: the student's output against the reference (float64), that float32
   inputs give a float32 output, and that forward leaves its inputs unchanged;
2. **gradient shapes**: backward returns one gradient per input, each of its input's
   shape, and leaves the inputs and the incoming gradient unchanged;
3. **gradcheck**: ``mg.gradcheck`` in float64, whose per-element report and hints are shown;

then the properties, and finally the **GPU path**: the same ops on the stand-in GPU
device, which (like CuPy) refuses NumPy calls on device data. Every submission gets
the same list of checks (``check_names``), so every score is out of the same total:
a file that cannot be imported fails each of them.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from minigen import autograd, backend
from minigen.errors import GradientShapeError, SumToShapeError, find_in_chain
from minigen.gradcheck import gradcheck
from minigen.gradient_hints import constant_ratio, pattern_hints, ratio_hint, shape_hints
from minigen.tensor import Tensor

__all__ = [  # what exercise modules import from here
    "Case",
    "CheckFailed",
    "Op",
    "Student",
    "check_file",
    "check_module",
    "close",
    "constant_ratio",
    "shape_hints",
]

# Forward values are compared in float64: a correct formula agrees to rounding error.
FORWARD_RTOL = 1e-6
FORWARD_ATOL = 1e-8


# ------------------------------------------------------------------ describing exercises
@dataclass
class Case:
    """One input to check with: named host arrays (float64 or int) and non-tensor parameters."""

    arrays: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self, names: Sequence[str] | None = None) -> str:
        """``x shape (2, 3), stride=2``: what a student needs to reproduce the case.

        ``names`` limits it to one op's inputs and parameters.
        """
        parts = [f"{n} shape {tuple(a.shape)}" for n, a in self.arrays.items() if names is None or n in names]
        parts += [f"{n}={value!r}" for n, value in self.params.items() if names is None or n in names]
        return ", ".join(parts)

    def size(self) -> int:
        return sum(int(a.size) for a in self.arrays.values())

    def with_arrays(self, **arrays: np.ndarray) -> Case:
        """A copy with some arrays replaced (properties perturb inputs this way)."""
        return Case({**self.arrays, **arrays}, dict(self.params))


@dataclass(frozen=True)
class Op:
    """A ``Function`` the student writes, called as ``Name.apply(*inputs, **params)``.

    ``inputs`` name the case arrays passed to ``apply``, in order; ``differentiable`` those
    whose gradient backward must return (the others get ``None``); ``params`` the case
    parameters passed as keywords. ``reference(*tensors, **params)`` is the engine's version.
    """

    name: str
    inputs: tuple[str, ...]
    differentiable: tuple[str, ...]
    reference: Callable[..., Tensor]
    params: tuple[str, ...] = ()


class CheckFailed(AssertionError):
    """Raised by a property check: ``message`` says what went wrong, ``hints`` why."""

    def __init__(self, message: str, hints: Sequence[str] = (), details: str = "", case: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hints = list(hints)
        self.details = details  # a longer report, e.g. gradcheck's per-element table
        self.case = case  # when the check built its own input, that input (else the case's)


# ---------------------------------------------------------------------------- results
@dataclass
class CheckResult:
    """The outcome of one check (over all cases)."""

    name: str
    passed: bool
    summary: str = ""
    case: str | None = None  # the failing input, described
    hints: list[str] = field(default_factory=list)
    details: str = ""  # e.g. gradcheck's per-element table
    not_implemented: bool = False


@dataclass
class Report:
    """All checks of one student file."""

    exercise: str
    file: str
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def text(self) -> str:
        """The human-readable summary: one PASS/FAIL line per check, then what failed and why."""
        lines = [f"minigen exercise '{self.exercise}': checking {self.file}", ""]
        for c in self.checks:
            lines += check_lines(c)
        passed = sum(c.passed for c in self.checks)
        lines += ["", f"{passed}/{len(self.checks)} checks passed: {'PASS' if self.passed else 'FAIL'}"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable results (``--json``), for autograders."""
        return {
            "exercise": self.exercise,
            "file": self.file,
            "passed": self.passed,
            "score": sum(c.passed for c in self.checks),
            "total": len(self.checks),
            "checks": [
                {
                    "name": c.name,
                    "passed": c.passed,
                    "summary": c.summary,
                    "case": c.case,
                    "hints": c.hints,
                    "details": c.details,
                    "not_implemented": c.not_implemented,
                }
                for c in self.checks
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_gradescope(self) -> dict[str, Any]:
        """Gradescope's ``results.json``: one test per check, 1 point each, and the total score.

        Every submission of an exercise has the same checks (``check_names``), so every
        score is out of the same total.
        """
        passed = sum(c.passed for c in self.checks)
        return {
            "score": float(passed),
            "output": f"minigen exercise '{self.exercise}': {passed}/{len(self.checks)} checks passed",
            "tests": [
                {
                    "name": c.name,
                    "score": 1.0 if c.passed else 0.0,
                    "max_score": 1.0,
                    "output": "\n".join(line.strip() for line in check_lines(c)),
                }
                for c in self.checks
            ],
        }


def check_lines(c: CheckResult) -> list[str]:
    """One check as text: its PASS/FAIL line, then (if it failed) the input, the report, the hints."""
    lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.summary}"]
    if c.passed:
        return lines
    if c.case:
        lines.append(f"      on input: {c.case}")
    for line in c.details.splitlines():
        if not line.strip().startswith("hint: "):  # the hints are listed below
            lines.append(f"      | {line}")
    for hint in c.hints:
        lines.append(f"      hint: {hint}")
    return lines


# ------------------------------------------------------------------- running student code
class Student:
    """The student's module, with helpers to run its ops on a case.

    ``forward`` and ``vjp`` return host float64 arrays, so checks and properties can
    compare them with NumPy whatever device the ops ran on.
    """

    def __init__(self, module: ModuleType, exercise: ModuleType, device: str = "cpu") -> None:
        self.module = module
        self.exercise = exercise
        self.device = device
        self.ops = {op.name: op for op in exercise.OPS}

    def tensors(
        self, op: Op, case: Case, requires_grad: bool = False, dtype: Any = np.float64, device: Any = None
    ) -> list[Tensor]:
        """The op's inputs as Tensors; float arrays in ``dtype``, integer arrays unchanged."""
        out = []
        for name in op.inputs:
            array = case.arrays[name]
            if array.dtype.kind == "f":
                array = array.astype(dtype)
            t = Tensor(np.array(array), device=device or self.device)
            if requires_grad and name in op.differentiable:
                t.requires_grad_(True)
            out.append(t)
        return out

    def apply(self, op: Op | str, tensors: Sequence[Tensor], case: Case) -> Tensor:
        """``StudentClass.apply(*tensors, **params)``."""
        op = self.ops[op] if isinstance(op, str) else op
        cls = getattr(self.module, op.name)
        out = cls.apply(*tensors, **{p: case.params[p] for p in op.params})
        if isinstance(out.data, Tensor):
            raise CheckFailed(
                f"{op.name}.forward returned a Tensor; it must return an array",
                ["compute on the raw arrays (x.data, with x.xp) and return the array; Function.apply wraps it"],
            )
        return out

    def forward(self, op: Op | str, case: Case, dtype: Any = np.float64) -> np.ndarray:
        """The student's output (host array); raises ``CheckFailed`` if forward changed an input."""
        op = self.ops[op] if isinstance(op, str) else op
        tensors = self.tensors(op, case, dtype=dtype)
        before = _snapshot(tensors)
        with autograd.no_grad():
            out = self.apply(op, tensors, case)
        _check_unchanged(op, "forward", zip(op.inputs, tensors, before))
        return backend.asnumpy(out.data)

    def vjp(self, op: Op | str, case: Case, upstream: np.ndarray) -> dict[str, np.ndarray | None]:
        """What the student's backward returns for the upstream gradient g = ∂L/∂output.

        Calls ``backward`` directly (not through the engine), so a gradient of the wrong
        shape is seen as it is rather than as the engine's error.
        """
        op = self.ops[op] if isinstance(op, str) else op
        tensors = self.tensors(op, case, requires_grad=True)
        before = _snapshot(tensors)
        out = self.apply(op, tensors, case)
        _check_unchanged(op, "forward", zip(op.inputs, tensors, before))
        if out.grad_fn is None:
            raise CheckFailed(f"{op.name}: the output has no backward node (was forward run under no_grad?)")
        incoming = Tensor(backend.to_device(np.array(upstream), out.device))
        with autograd.no_grad():
            grads = out.grad_fn.backward(incoming)
        _check_unchanged(op, "backward", [*zip(op.inputs, tensors, before), ("grad", incoming, np.array(upstream))])
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) != len(op.inputs):
            raise CheckFailed(
                f"{op.name}.backward returned {len(grads)} gradient(s) but apply() has {len(op.inputs)} inputs "
                f"({', '.join(op.inputs)})",
                ["return one gradient per input of forward, in order, with None for inputs that need none"],
            )
        result: dict[str, np.ndarray | None] = {}
        for name, g in zip(op.inputs, grads):
            if g is None:
                result[name] = None
            elif isinstance(g, Tensor):
                result[name] = backend.asnumpy(g.data).astype(np.float64)
            else:
                raise CheckFailed(
                    f"{op.name}.backward returned a {type(g).__name__} for {name}; it must return Tensors",
                    ["wrap a computed array as Tensor(array), or compute with Tensor operations"],
                )
        return result

    def reference(self, op: Op | str, case: Case) -> np.ndarray:
        op = self.ops[op] if isinstance(op, str) else op
        with autograd.no_grad():
            out = op.reference(*self.tensors(op, case, device="cpu"), **{p: case.params[p] for p in op.params})
        return backend.asnumpy(out.data)

    def reference_vjp(self, op: Op | str, case: Case, upstream: np.ndarray) -> dict[str, np.ndarray]:
        """The engine's gradients for the same upstream gradient: what the student should return."""
        op = self.ops[op] if isinstance(op, str) else op
        tensors = self.tensors(op, case, requires_grad=True, device="cpu")
        out = op.reference(*tensors, **{p: case.params[p] for p in op.params})
        wanted = [t for name, t in zip(op.inputs, tensors) if name in op.differentiable]
        grads = autograd.grad(out, wanted, grad_outputs=Tensor(np.array(upstream)), allow_unused=True)
        return {
            name: (np.zeros(t.shape) if g is None else backend.asnumpy(g.data))
            for name, t, g in zip(op.differentiable, wanted, grads)
        }

    def upstream(self, op: Op | str, case: Case, seed: int = 1) -> np.ndarray:
        """A seeded random upstream gradient with the output's shape."""
        shape = self.reference(op, case).shape
        return np.random.default_rng(seed).standard_normal(shape)


def _snapshot(tensors: Sequence[Tensor]) -> list[np.ndarray]:
    return [backend.asnumpy(t.data).copy() for t in tensors]


def _check_unchanged(op: Op, method: str, named: Any) -> None:
    """Raise ``CheckFailed`` if ``method`` changed one of the (name, tensor, copy before) in place."""
    for name, t, before in named:
        now = backend.asnumpy(t.data)
        if now.shape != before.shape or not np.array_equal(now, before, equal_nan=now.dtype.kind in "fc"):
            what = "the incoming gradient grad" if name == "grad" else f"its input {name}"
            raise CheckFailed(
                f"{op.name}.{method} changed {what} in place",
                [
                    f"{method} must not change {what} in place, because the caller (and other ops, and backward) "
                    f"still use it: compute into new arrays (y = {name}.data - m, not {name}.data -= m)"
                ],
            )


def load_student(path: str | Path) -> ModuleType:
    """Import a student file by path (not added to ``sys.modules``: each check reloads it)."""
    path = Path(path)
    name = f"minigen_student_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_counter = itertools.count()


def describe_error(error: BaseException, student_file: str | None) -> str:
    """``ValueError: ... (your file, line 12: `y = a @ b`)``: the error and where in the student's file.

    An error from forward is re-raised by ``Function.apply`` with the op's inputs added;
    the student's line is then in the traceback of the original (its ``__cause__``).
    """
    text = f"{type(error).__name__}: {error}"
    if student_file:
        mine = Path(student_file).resolve()
        current: BaseException | None = error
        seen: set[int] = set()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            frames = [f for f in traceback.extract_tb(current.__traceback__) if Path(f.filename).resolve() == mine]
            if frames:
                frame = frames[-1]
                return text + f" (your file, line {frame.lineno}: `{(frame.line or '').strip()}`)"
            current = current.__cause__ or current.__context__
    return text


def error_hints(error: BaseException) -> list[str]:
    """Hints for errors the student's code typically runs into."""
    text = str(error)
    if "standin device" in text or "StandInArray" in text:
        return [
            "your code calls NumPy on tensor data, which fails on a GPU (CuPy arrays): use the array "
            "module of the data, xp = x.xp (or grad.xp), and write xp.exp(...), xp.zeros(...), ..."
        ]
    sum_to = find_in_chain(error, SumToShapeError)
    if sum_to is not None and sum_to.shape is not None and sum_to.target is not None:
        return shape_hints(sum_to.shape, sum_to.target) or [
            f"the gradient has shape {sum_to.shape}, which cannot be summed to the input's shape {sum_to.target}"
        ]
    wrong_shape = find_in_chain(error, GradientShapeError)
    if wrong_shape is not None and wrong_shape.shape is not None and wrong_shape.expected is not None:
        return shape_hints(wrong_shape.shape, wrong_shape.expected)
    if "could not be broadcast" in text or "cannot be multiplied" in text or "mismatch in its core dimension" in text:
        return ["check the shapes of your intermediate results against the shapes in the exercise's docstring"]
    return []


def close(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Same shape and values to float64 rounding (for recognising typical mistakes)."""
    return a is not None and b is not None and a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-9))


def output_hints(mine: np.ndarray, want: np.ndarray, wrong: np.ndarray, inputs: Sequence[np.ndarray]) -> list[str]:
    """Generic hints for a wrong forward output: a constant factor, or the pattern of the wrong elements."""
    c = constant_ratio(mine, want)
    said = ratio_hint(c, "your output", "the expected one") if c is not None else None
    if said:
        return [said]
    same_shape = [a for a in inputs if a.shape == wrong.shape and a.dtype.kind == "f"]
    return pattern_hints(wrong, same_shape[0] if same_shape else None)


# --------------------------------------------------------------------------- the checks
def generate_cases(exercise: ModuleType, max_examples: int, seed: int | None) -> list[Case]:
    """``EXAMPLES``, then up to ``max_examples`` hypothesis-generated cases, smallest first.

    Hypothesis is only asked to *generate* (no shrinking, no database), derandomized
    unless a ``seed`` is given, so a check is reproducible.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    found: list[Case] = []

    @settings(
        max_examples=max(max_examples, 1),
        phases=[Phase.generate],
        database=None,
        derandomize=seed is None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(exercise.cases())
    def collect(case: Case) -> None:
        found.append(case)

    if seed is not None:
        collect = hypothesis_seed(seed)(collect)
    if max_examples > 0:
        collect()
    found.sort(key=Case.size)
    return list(exercise.EXAMPLES) + found[:max_examples]


class _Runner:
    """Runs the checks of one exercise on one student file and collects the results."""

    def __init__(self, exercise: ModuleType, student: Student, cases: list[Case], path: str) -> None:
        self.exercise = exercise
        self.student = student
        self.cases = cases
        self.path = path

    def run_over_cases(
        self, name: str, check: Callable[[Case], None], what: str, names: Sequence[str] | None = None
    ) -> CheckResult:
        """Run ``check`` on each case until one fails; turn errors into friendly results.

        ``check`` returns None or raises ``CheckFailed``. Any other exception comes from
        the student's code and is reported with its line in the student's file. ``names``
        limits the description of a failing case to one op's inputs.
        """
        for case in self.cases:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # overflow etc. are judged by the checks themselves
                    check(case)
            except NotImplementedError as error:
                text = str(error)
                if "not implemented yet" not in text:  # e.g. Function's own "must define forward"
                    text = f"not implemented yet: {text}" if text else "not implemented yet"
                return CheckResult(name, False, text, not_implemented=True)
            except CheckFailed as failure:
                described = failure.case or case.describe(names)
                return CheckResult(name, False, failure.message, described, failure.hints, failure.details)
            except Exception as error:  # the student's code raised: say what and where
                return CheckResult(
                    name, False, describe_error(error, self.path), case.describe(names), error_hints(error)
                )
        return CheckResult(name, True, f"{what.rstrip('.')} ({len(self.cases)} inputs)")

    # ---------------------------------------------------------------- per op
    def forward(self, op: Op) -> CheckResult:
        diagnose = getattr(self.exercise, "diagnose_forward", None)

        def check(case: Case) -> None:
            mine = self.student.forward(op, case)
            want = self.student.reference(op, case)
            if mine.shape != want.shape:
                raise CheckFailed(f"output shape {mine.shape}, expected {want.shape}")
            if not np.all(np.isfinite(mine)) and np.all(np.isfinite(want)):
                raise CheckFailed(
                    "the output contains NaN or Inf", diagnose(op.name, case, mine, want) if diagnose else []
                )
            if not np.allclose(mine, want, rtol=FORWARD_RTOL, atol=FORWARD_ATOL):
                error = np.abs(mine - want)
                where = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
                index = tuple(int(i) for i in where)
                wrong = ~np.isclose(mine, want, rtol=FORWARD_RTOL, atol=FORWARD_ATOL)
                hints = diagnose(op.name, case, mine, want) if diagnose else []
                raise CheckFailed(
                    f"output differs from the reference at {int(wrong.sum())} of {wrong.size} elements: max abs "
                    f"error {float(error.max()):.3g} at index {index} (yours {float(mine[where]):.6g}, expected "
                    f"{float(want[where]):.6g})",
                    hints or output_hints(mine, want, wrong, [case.arrays[name] for name in op.inputs]),
                )
            if any(a.dtype.kind == "f" for a in case.arrays.values()):
                single = self.student.forward(op, case, dtype=np.float32)
                if single.dtype != np.float32:
                    raise CheckFailed(
                        f"float32 inputs give a {single.dtype} output; it should stay float32",
                        [
                            "a float64 array or NumPy float64 constant upcasts the result: build constants "
                            "with dtype=x.dtype, or use Python floats (which never upcast)"
                        ],
                    )
            return None

        return self.run_over_cases(
            f"{op.name} forward", check, "matches the reference, leaves its inputs unchanged", op.inputs + op.params
        )

    def gradient_shapes(self, op: Op) -> CheckResult:
        def check(case: Case) -> None:
            grads = self.student.vjp(op, case, self.student.upstream(op, case))
            for name in op.differentiable:
                g = grads[name]
                expected = tuple(case.arrays[name].shape)
                if g is None:
                    raise CheckFailed(
                        f"backward returned None for {name}, which needs a gradient",
                        ["return the gradient for every differentiable input, in the order of forward's inputs"],
                    )
                if tuple(g.shape) != expected:
                    raise CheckFailed(
                        f"the gradient for {name} has shape {tuple(g.shape)}, but {name} has shape {expected}",
                        shape_hints(tuple(g.shape), expected),
                    )
            return None

        return self.run_over_cases(
            f"{op.name} gradient shapes",
            check,
            "one gradient per input, right shapes, inputs and incoming gradient unchanged",
            op.inputs + op.params,
        )

    def gradcheck(self, op: Op) -> CheckResult:
        diagnose = getattr(self.exercise, "diagnose_backward", None)
        student_cls = getattr(self.student.module, op.name)

        def check(case: Case) -> None:
            params = {p: case.params[p] for p in op.params}

            def student_op(*tensors: Tensor) -> Tensor:
                return student_cls.apply(*tensors, **params)

            student_op.__name__ = op.name
            tensors = self.student.tensors(op, case, requires_grad=True)
            result = gradcheck(student_op, *tensors, raise_exception=False)
            if result.passed:
                return
            hints: list[str] = []
            if diagnose is not None:  # the exercise names the typical mistake, if it recognises one
                upstream = self.student.upstream(op, case)
                hints = diagnose(
                    op.name,
                    case,
                    upstream,
                    self.student.vjp(op, case, upstream),
                    self.student.reference_vjp(op, case, upstream),
                )
            if not hints:  # gradcheck's generic hints, unless the exercise named the mistake itself
                hints = [hint for r in result.inputs for hint in r.hints]
            hints = list(dict.fromkeys(hints))  # two inputs often get the same hint
            checked = [name for name in op.inputs if name in op.differentiable]  # gradcheck's order
            failing = [name for name, r in zip(checked, result.inputs) if not r.passed]
            report = result.report
            for position, name in enumerate(op.inputs):  # gradcheck numbers the inputs; name them
                report = report.replace(f"  input {position} shape", f"  {name} (input {position}) shape")
            raise CheckFailed(f"backward disagrees with finite differences for {', '.join(failing)}", hints, report)

        result = self.run_over_cases(f"{op.name} gradcheck", check, "", op.inputs + op.params)
        if result.passed:
            result.summary = f"gradients match finite differences in float64 ({len(self.cases)} inputs)"
        return result

    # ----------------------------------------------------------- properties and devices
    def property(self, prop: Callable[[Student, Case], None]) -> CheckResult:
        doc = (prop.__doc__ or "").strip().splitlines()
        return self.run_over_cases(
            property_name(prop), lambda case: prop(self.student, case), doc[0] if doc else "holds"
        )

    def gpu_path(self) -> CheckResult:
        """Forward and backward on the stand-in GPU must run and agree with the CPU."""
        gpu = Student(self.student.module, self.exercise, device="standin")
        first = [self.cases[0]]

        name = GPU_PATH
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                on_cpu = [
                    (
                        op,
                        self.student.forward(op, first[0]),
                        self.student.vjp(op, first[0], self.student.upstream(op, first[0])),
                    )
                    for op in self.exercise.OPS
                ]
        except Exception:  # the other checks report it
            return CheckResult(name, False, "skipped: forward or backward fails on the CPU already")

        def check(case: Case) -> None:
            for op, cpu_out, cpu_grads in on_cpu:
                upstream = self.student.upstream(op, case)
                gpu_out, gpu_grads = gpu.forward(op, case), gpu.vjp(op, case, upstream)
                same = np.allclose(cpu_out, gpu_out) and all(
                    (cpu_grads[k] is None) == (gpu_grads[k] is None)
                    and (cpu_grads[k] is None or np.allclose(cpu_grads[k], gpu_grads[k]))
                    for k in cpu_grads
                )
                if not same:
                    raise CheckFailed(f"{op.name} gives different results on the stand-in GPU than on the CPU")
            return None

        runner = _Runner(self.exercise, gpu, first, self.path)
        result = runner.run_over_cases(name, check, "forward and backward run")
        if result.passed:
            result.summary = "forward and backward also run on the stand-in GPU (no NumPy calls on tensor data)"
        return result


GPU_PATH = "GPU path (stand-in device)"


def property_name(prop: Callable[..., None]) -> str:
    return "property: " + prop.__name__.replace("_", " ")


def check_names(exercise: ModuleType) -> list[str]:
    """The checks every submission of ``exercise`` gets, in order: the same list for all."""
    names = []
    for op in exercise.OPS:
        names += [f"{op.name} forward", f"{op.name} gradient shapes", f"{op.name} gradcheck"]
    names += [property_name(prop) for prop in exercise.PROPERTIES]
    return names + [GPU_PATH]


def failing_every_check(exercise: ModuleType, path: str, summary: str, hints: Sequence[str] = ()) -> Report:
    """A report in which every check fails for one reason (the file is missing, broken, incomplete).

    The first check carries the reason and its hints; the others refer to it, so the
    score is 0 out of the same total as for every other submission.
    """
    names = check_names(exercise)
    checks = [CheckResult(names[0], False, summary, hints=list(hints))]
    checks += [
        CheckResult(name, False, f"not run: {summary.split(':')[0]} (see the first check)") for name in names[1:]
    ]
    return Report(exercise.NAME, path, checks)


def check_module(
    exercise: ModuleType,
    module: ModuleType,
    path: str = "<module>",
    max_examples: int = 10,
    seed: int | None = None,
    device: str = "cpu",
) -> Report:
    """Run every check of ``exercise`` on an already-imported student module."""
    student = Student(module, exercise, device)
    missing = [op.name for op in exercise.OPS if not isinstance(getattr(module, op.name, None), type)]
    if missing:
        return failing_every_check(
            exercise,
            path,
            f"your file must define the class(es) {', '.join(missing)}",
            [f"start from the template: python -m minigen.exercises start {exercise.NAME} DIR"],
        )
    runner = _Runner(exercise, student, generate_cases(exercise, max_examples, seed), path)
    checks = []
    for op in exercise.OPS:
        checks.append(runner.forward(op))
        shapes = runner.gradient_shapes(op)
        checks.append(shapes)
        if shapes.passed or shapes.not_implemented:
            checks.append(runner.gradcheck(op))
        else:
            checks.append(
                CheckResult(f"{op.name} gradcheck", False, "skipped: fix the gradient shapes first", hints=[])
            )
    for prop in exercise.PROPERTIES:
        checks.append(runner.property(prop))
    checks.append(runner.gpu_path())
    return Report(exercise.NAME, path, checks)


def check_file(
    exercise: ModuleType, path: str | Path, max_examples: int = 10, seed: int | None = None, device: str = "cpu"
) -> Report:
    """Import the student's file and run every check; a file that fails to import fails every check."""
    path = str(path)
    if not Path(path).is_file():
        return failing_every_check(exercise, path, f"no such file: {path}")
    try:
        module = load_student(path)
    except Exception as error:
        return failing_every_check(exercise, path, "your file could not be imported: " + describe_error(error, path))
    return check_module(exercise, module, path, max_examples, seed, device)
