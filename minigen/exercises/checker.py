"""The checker behind ``python -m minigen.exercises check NAME FILE``.

An exercise is one module in this package (``sigmoid_tanh.py`` is the simplest to read).
It describes, in plain module-level names:

* ``NAME``, ``TITLE``, ``TOPIC``: what it is called and which lecture it belongs to;
* ``TEMPLATE``: the student file that ``start`` writes (the maths, the shapes, stubs);
* ``OPS``: one ``Op`` per ``Function`` class the student writes, with the engine's
  reference implementation to compare against;
* ``cases()``: a hypothesis strategy of ``Case`` objects (small random inputs), and
  ``EXAMPLES``: hand-picked cases that are always checked first;
* ``PROPERTIES``: topic-specific checks, plain functions ``f(student, case)`` that raise
  ``CheckFailed`` (causal leakage for attention, one-hot routing for max-pool, ...);
* optionally ``diagnose_forward`` / ``diagnose_backward``: hints that recognise the
  typical mistakes of that topic by comparing with the reference.

For every op the checker runs, on every case (stopping at the first failing one):

1. **forward**: the student's output against the reference (float64), and that float32
   inputs give a float32 output;
2. **gradient shapes**: backward returns one gradient per input, each of its input's shape;
3. **gradcheck**: ``mg.gradcheck`` in float64, whose per-element report and hints are shown;

then the properties, and finally the **GPU path**: the same ops on the stand-in GPU
device, which (like CuPy) refuses NumPy calls on device data.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from minigen import autograd, backend
from minigen.gradcheck import gradcheck
from minigen.tensor import Tensor

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
            lines.append(f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.summary}")
            if c.passed:
                continue
            if c.case:
                lines.append(f"      on input: {c.case}")
            for line in c.details.splitlines():
                if not line.strip().startswith("hint: "):  # the hints are listed below
                    lines.append(f"      | {line}")
            for hint in c.hints:
                lines.append(f"      hint: {hint}")
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
        op = self.ops[op] if isinstance(op, str) else op
        with autograd.no_grad():
            out = self.apply(op, self.tensors(op, case, dtype=dtype), case)
        return backend.asnumpy(out.data)

    def vjp(self, op: Op | str, case: Case, upstream: np.ndarray) -> dict[str, np.ndarray | None]:
        """What the student's backward returns for the upstream gradient g = ∂L/∂output.

        Calls ``backward`` directly (not through the engine), so a gradient of the wrong
        shape is seen as it is rather than as the engine's error.
        """
        op = self.ops[op] if isinstance(op, str) else op
        tensors = self.tensors(op, case, requires_grad=True)
        out = self.apply(op, tensors, case)
        if out.grad_fn is None:
            raise CheckFailed(f"{op.name}: the output has no backward node (was forward run under no_grad?)")
        with autograd.no_grad():
            grads = out.grad_fn.backward(Tensor(backend.to_device(np.array(upstream), out.device)))
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
    """``ValueError: ... (your file, line 12: `y = a @ b`)``: the error and where in the student's file."""
    text = f"{type(error).__name__}: {error}"
    if student_file:
        mine = Path(student_file).resolve()
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == mine]
        if frames:
            frame = frames[-1]
            text += f" (your file, line {frame.lineno}: `{(frame.line or '').strip()}`)"
    return text


def error_hints(error: BaseException) -> list[str]:
    """Hints for errors the student's code typically runs into."""
    text = str(error)
    if "standin device" in text or "StandInArray" in text:
        return [
            "your code calls NumPy on tensor data, which fails on a GPU (CuPy arrays): use the array "
            "module of the data, xp = x.xp (or grad.xp), and write xp.exp(...), xp.zeros(...), ..."
        ]
    found = re.search(r"sum_to: shape (\([0-9, ]*\)) does not broadcast from (\([0-9, ]*\))", text)
    if found:
        returned, expected = (tuple(int(v) for v in re.findall(r"\d+", group)) for group in found.groups())
        return shape_hints(returned, expected) or [
            f"the gradient has shape {returned}, which cannot be summed to the input's shape {expected}"
        ]
    if "could not be broadcast" in text or "cannot be multiplied" in text:
        return ["check the shapes of your intermediate results against the shapes in the exercise's docstring"]
    return []


def shape_hints(returned: tuple[int, ...], expected: tuple[int, ...]) -> list[str]:
    """Why a gradient may have the wrong shape."""
    hints = []
    try:
        broadcast = np.broadcast_shapes(returned, expected)
    except ValueError:
        broadcast = None
    if broadcast == tuple(returned) and tuple(returned) != tuple(expected):
        hints.append(
            "a missing unbroadcast: the input was broadcast in forward, so its gradient must be summed "
            f"over the broadcast axes back to {tuple(expected)} (grad.sum_to(shape))"
        )
    elif sorted(returned) == sorted(expected) and len(returned) == len(expected):
        hints.append("the axes are in the wrong order: a transpose is missing or extra")
    return hints


def constant_ratio(student: np.ndarray, reference: np.ndarray) -> float | None:
    """c when student = c × reference everywhere (a factor or sign mistake), else None."""
    significant = np.abs(reference) > 1e-6 * max(float(np.abs(reference).max(initial=0.0)), 1e-12)
    if significant.sum() < 1 or student.shape != reference.shape:
        return None
    ratios = student[significant] / reference[significant]
    c = float(np.median(ratios))
    if np.allclose(student, c * reference, rtol=1e-6, atol=1e-9):
        return c
    return None


def close(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Same shape and values to float64 rounding (for recognising typical mistakes)."""
    return a is not None and b is not None and a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-9))


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
                hints = diagnose(op.name, case, mine, want) if diagnose else []
                raise CheckFailed(
                    f"output differs from the reference: max abs error {float(error.max()):.3g} at index {index} "
                    f"(yours {float(mine[where]):.6g}, expected {float(want[where]):.6g})",
                    hints,
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

        return self.run_over_cases(f"{op.name} forward", check, "matches the reference", op.inputs + op.params)

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
            f"{op.name} gradient shapes", check, "one gradient per input, right shapes", op.inputs + op.params
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
            # gradcheck's own hints stay in its report (the details) and are listed after the exercise's.
            hints += [
                line.strip()[len("hint: ") :]
                for line in result.report.splitlines()
                if line.strip().startswith("hint: ")
            ]
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
        name = "property: " + prop.__name__.replace("_", " ")
        return self.run_over_cases(name, lambda case: prop(self.student, case), doc[0] if doc else "holds")

    def gpu_path(self) -> CheckResult:
        """Forward and backward on the stand-in GPU must run and agree with the CPU."""
        gpu = Student(self.student.module, self.exercise, device="standin")
        first = [self.cases[0]]

        name = "GPU path (stand-in device)"
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
        return Report(
            exercise.NAME,
            path,
            [
                CheckResult(
                    "file",
                    False,
                    f"your file must define the class(es) {', '.join(missing)}",
                    hints=[f"start from the template: python -m minigen.exercises start {exercise.NAME} DIR"],
                )
            ],
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
    """Import the student's file and run every check; a file that fails to import is one FAIL."""
    path = str(path)
    if not Path(path).is_file():
        return Report(exercise.NAME, path, [CheckResult("file", False, f"no such file: {path}")])
    try:
        module = load_student(path)
    except Exception as error:
        return Report(
            exercise.NAME,
            path,
            [CheckResult("file", False, "your file could not be imported: " + describe_error(error, path))],
        )
    return check_module(exercise, module, path, max_examples, seed, device)
