"""Watching the engine work: ``trace()`` and ``detect_anomaly()``.

Both are context managers built on one hook: ``minigen.autograd.observers``. While a
context is open, the engine calls its observer after every op's forward
(``Function.apply``) and after every node's backward (the backward walk), with the op's
name, its inputs and outputs, and the time it took. Outside the contexts the list is
empty and costs one check per op.

    with mg.trace():                    # print every forward op, then every backward op
        loss = model(x).square().mean()
        loss.backward()

    with mg.detect_anomaly():           # stop at the first op that produces NaN or Inf
        loss = model(x).log().mean()
        loss.backward()

Timings on a GPU measure the time to *launch* an op (CuPy runs asynchronously), not
the time the GPU spends on it; on the CPU they are the op's real cost.

``detect_anomaly`` also catches an overflow that the output hides: float16 x² overflows
to ∞ already at |x| ≈ 256, and 1/√∞ = 0 then turns a normalisation's output into
zeros, all finite. On the CPU, NumPy reports every overflow (and every invalid
operation such as ∞ − ∞) inside an op, and the op that had one is named. CuPy reports
none, so on a GPU only NaN/Inf in the outputs are caught.
"""

from __future__ import annotations

import linecache
import sys
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minigen import autograd
from minigen.tensor import Tensor

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


# ----------------------------------------------------------------------------- helpers
def _shape(t: Any) -> str:
    if t is None:
        return "None"
    shape = tuple(t.shape)
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _describe(tensors: Any) -> str:
    """``(2, 3) float32 on cpu, (3,) float32 on cpu``."""
    return ", ".join("None" if t is None else f"{_shape(t)} {t.dtype} on {t.device}" for t in tensors)


def _inside_backward() -> Any:
    """The node whose backward is running right now, or None.

    Backward formulas are written in minigen ops, so their ops reach the observers too;
    this tells them apart from the forward pass by looking for the engine's
    ``_call_backward`` frame on the call stack (cheap enough for a debugging tool).
    """
    frame = sys._getframe(2)
    target = autograd._call_backward.__code__
    depth = 0
    while frame is not None and depth < 40:
        if frame.f_code is target:
            return frame.f_locals.get("node")
        frame = frame.f_back
        depth += 1
    return None


def _inside_op() -> bool:
    """Whether an op's forward or backward is running: ``Function.apply`` or the engine's
    ``_call_backward`` is on the call stack (looked up only when NumPy reports an error)."""
    targets = (autograd.Function.apply.__func__.__code__, autograd._call_backward.__code__)
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code in targets:
            return True
        frame = frame.f_back
    return False


def _user_call_site() -> str | None:
    """``file.py:42: y = x.log()``: the first frame outside the minigen package."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
            line = linecache.getline(filename, frame.f_lineno).strip()
            return f"{filename}:{frame.f_lineno}" + (f": {line}" if line else "")
        frame = frame.f_back
    return None


# ------------------------------------------------------------------------------- trace
@dataclass
class OpRecord:
    """One observed op: forward or backward, with its shapes and timing."""

    phase: str  # "forward" or "backward"
    op: str
    inputs: str  # shapes, dtypes and devices of the inputs (for backward: the incoming gradient)
    outputs: str  # the output (for backward: the gradients sent to the inputs)
    seconds: float
    inside: str | None = None  # the node whose backward ran this op, if any


@dataclass
class Trace:
    """What ``trace()`` saw: ``records`` in order, and ``summary()`` of the slowest ops."""

    records: list[OpRecord] = field(default_factory=list)
    top: int = 5

    def summary(self) -> str:
        """Counts and total times per phase, then the slowest ops (total time per op and phase).

        Ops run inside a backward formula are counted separately: their time is already
        part of the time of the backward node that ran them.
        """
        if not self.records:
            return "trace: no ops ran"
        forward = [r for r in self.records if r.phase == "forward" and r.inside is None]
        backward = [r for r in self.records if r.phase == "backward"]
        inner = [r for r in self.records if r.inside is not None]
        lines = [
            f"trace: {len(forward)} forward op(s) in {sum(r.seconds for r in forward) * 1e3:.3f} ms, "
            f"{len(backward)} backward node(s) in {sum(r.seconds for r in backward) * 1e3:.3f} ms"
            + (f" (running {len(inner)} op(s) inside)" if inner else "")
        ]
        totals: dict[tuple[str, str], list[float]] = {}
        for r in forward + backward:
            totals.setdefault((r.phase, r.op), []).append(r.seconds)
        ranked = sorted(totals.items(), key=lambda item: -sum(item[1]))[: self.top]
        lines.append(f"slowest ops (total time per op and phase, top {len(ranked)}):")
        for (phase, op), times in ranked:
            lines.append(
                f"  {phase:<9}{op:<22}{len(times):>5} call(s) {sum(times) * 1e3:>10.3f} ms "
                f"(max {max(times) * 1e3:.3f} ms)"
            )
        return "\n".join(lines)


def _format(record: OpRecord) -> str:
    ms = f"{record.seconds * 1e3:9.3f} ms"
    if record.inside is not None:  # an op run by a backward formula: indented under it
        return f"{'':<10}  · {record.op:<18} {record.inputs} -> {record.outputs}  {ms}  (in {record.inside}.backward)"
    if record.phase == "forward":
        return f"{'forward':<10}{record.op:<20} {record.inputs} -> {record.outputs}  {ms}"
    return f"{'backward':<10}{record.op:<20} grad {record.inputs} -> {record.outputs}  {ms}"


@contextmanager
def trace(file: str | Path | TextIO | None = None, summary: bool = True, top: int = 5) -> Iterator[Trace]:
    """Print each forward op and each backward op as it runs, with shapes, dtypes, devices
    and timings; at the end, a summary of the slowest ops.

    * ``file``: where to write: ``None`` for standard output, a path (the file is
      overwritten), or an open text stream such as ``sys.stderr``.
    * ``summary``: print the summary at the end; ``top``: how many ops it lists.

    Ops that a backward formula runs (backward is written in minigen ops) are shown
    indented, with the node whose backward ran them. The context yields a ``Trace``
    whose ``records`` and ``summary()`` can also be used in code.
    """
    own = isinstance(file, (str, Path))
    stream: TextIO = open(file, "w", encoding="utf-8") if own else (file or sys.stdout)  # noqa: SIM115
    result = Trace(top=top)
    # Ops of a backward formula run inside the node's timed backward: their lines wait
    # here and are printed after the node's own line, so printing does not inflate its time.
    pending: list[OpRecord] = []

    def observe(phase: str, op: str, node: Any, inputs: Any, output: Any, seconds: float) -> None:
        outputs = output if isinstance(output, tuple) else (output,)
        record = OpRecord(phase, op, _describe(inputs), _describe(outputs), seconds, None)
        if phase == "forward":
            inside = _inside_backward()
            record.inside = None if inside is None else inside.name
        result.records.append(record)
        if record.inside is not None:
            pending.append(record)
            return
        print(_format(record), file=stream)
        if phase == "backward":
            for inner in pending:
                print(_format(inner), file=stream)
            pending.clear()

    autograd.observers.append(observe)
    try:
        yield result
    finally:
        autograd.observers.remove(observe)
        for inner in pending:
            print(_format(inner), file=stream)
        if summary:
            print(result.summary(), file=stream)
        if own:
            stream.close()
        else:
            stream.flush()


# ---------------------------------------------------------------------- detect_anomaly
def _all_finite(t: Any) -> bool:
    """True for non-float tensors and for float tensors without NaN/Inf (one host read)."""
    if not isinstance(t, Tensor) or t.dtype.kind not in "fc":
        return True
    return bool(t.xp.isfinite(t.data).all())


def _bad_count(t: Tensor) -> str:
    xp = t.xp
    nan = int(xp.isnan(t.data).sum())
    inf = int(xp.isinf(t.data).sum())
    parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} Inf"] if inf else [])
    return " and ".join(parts) + f" of {t.data.size} values"


@contextmanager
def detect_anomaly(check_forward: bool = True, check_backward: bool = True) -> Iterator[None]:
    """Raise a ``RuntimeError`` at the first op whose forward or backward produces NaN or Inf.

    The error names the op, the phase (forward or backward), the shapes, dtypes and
    devices involved and, for a backward, the line of your code that ran the op's
    forward. When an op's *inputs* already hold NaN/Inf, it says they came from outside
    (the data, the parameters, or the upstream gradient you passed).

    An op whose outputs are finite but which overflowed inside (an intermediate became
    ±∞ or NaN, e.g. the variance of float16 values) is reported too, on the CPU, where
    NumPy tells when that happens.

    Every check reads one bool back from the device, so this slows training down: use
    it to find a bug, not in normal runs.
    """
    call_sites: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    float_errors: list[str] = []  # what NumPy reported inside the op that is running
    outside = np.geterr()  # what NumPy did before: code outside the ops still gets that

    def on_float_error(kind: str, flag: int) -> None:
        if _inside_op():
            float_errors.append(kind)
            return
        action = outside["over" if kind == "overflow" else "invalid"]
        if action == "raise":
            raise FloatingPointError(f"{kind} encountered")
        if action != "ignore":
            warnings.warn(f"{kind} encountered", RuntimeWarning, stacklevel=3)

    def check_float_errors(phase: str, op: str, inputs: Any, outputs: Any, inside: Any) -> None:
        """Raise when NumPy reported an overflow inside the op that just ran (its outputs are
        finite: non-finite ones get the more specific errors)."""
        if not float_errors:
            return
        kind = float_errors[0]
        float_errors.clear()
        where = f"the backward of {inside.name}, in the {op} it computes" if inside is not None else f"{op} ({phase})"
        site = _user_call_site() if phase == "forward" and inside is None else None
        raise RuntimeError(
            f"detect_anomaly: {where} hit a floating-point {kind} inside, although its output is finite: an "
            f"intermediate value left its dtype's range (float16 ends at 65504, float32 at 3.4e38) and the "
            f"result is likely wrong (e.g. 1/√∞ = 0) [inputs: {_describe(inputs)}; outputs: {_describe(outputs)}]"
            + (f"\n  called at {site}" if site else "")
        )

    def observe(phase: str, op: str, node: Any, inputs: Any, output: Any, seconds: float) -> None:
        if phase == "forward":
            inside = _inside_backward()
            if _all_finite(output) and ((inside is None and check_forward) or (inside is not None and check_backward)):
                check_float_errors(phase, op, inputs, (output,), inside)
            float_errors.clear()
            if inside is None and check_backward and getattr(node, "parents", None) is not None:
                site = _user_call_site()  # remembered, to say where a failing backward's op came from
                if site is not None:
                    call_sites[node] = site
            if _all_finite(output):
                return
            culprit = [t for t in inputs if not _all_finite(t)]
            if inside is not None:  # an op of a backward formula
                if not check_backward or culprit:
                    return  # a non-finite incoming gradient is reported by the node's own check
                site = call_sites.get(inside)
                origin = f"\n  its forward was called at {site}" if site else ""
                raise RuntimeError(
                    f"detect_anomaly: the backward of {inside.name} produced {_bad_count(output)} (in the {op} "
                    f"it computes, output shape {_shape(output)}) [inputs: {_describe(inputs)}]{origin}"
                )
            if not check_forward:
                return
            where = _user_call_site()
            at = f"\n  called at {where}" if where else ""
            if culprit:
                raise RuntimeError(
                    f"detect_anomaly: an input of {op} (forward) already contains NaN/Inf "
                    f"({_bad_count(culprit[0])}, shape {_shape(culprit[0])}); it came from outside the "
                    f"recorded ops, e.g. the data or the parameters [inputs: {_describe(inputs)}]{at}"
                )
            raise RuntimeError(
                f"detect_anomaly: the forward of {op} produced {_bad_count(output)} "
                f"in its output of shape {_shape(output)} [inputs: {_describe(inputs)}]{at}"
            )
        if not check_backward:
            return
        grads = [g for g in output if isinstance(g, Tensor)]
        bad = [g for g in grads if not _all_finite(g)]
        if not bad:
            check_float_errors(phase, op, inputs, grads, None)
            return
        float_errors.clear()
        site = call_sites.get(node) if node is not None else None
        origin = f"\n  its forward was called at {site}" if site else ""
        incoming = inputs[0]
        if not _all_finite(incoming):
            raise RuntimeError(
                f"detect_anomaly: the gradient arriving at {op} (backward) already contains NaN/Inf "
                f"({_bad_count(incoming)}, shape {_shape(incoming)}); it came from the upstream gradient "
                f"passed to backward(){origin}"
            )
        raise RuntimeError(
            f"detect_anomaly: the backward of {op} produced {_bad_count(bad[0])} in a gradient of shape "
            f"{_shape(bad[0])} [incoming gradient: {_describe(inputs)}; gradients out: {_describe(output)}]"
            f"{origin}"
        )

    autograd.observers.append(observe)
    try:
        with np.errstate(over="call", invalid="call", call=on_float_error):
            yield
    finally:
        autograd.observers.remove(observe)
