"""trace() prints every forward and backward op; detect_anomaly() names the op that made a NaN/Inf."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

import minigen as mg
from minigen import autograd
from minigen.debug import detect_anomaly, trace


def small_graph(device: str = "cpu"):
    x = mg.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], device=device, requires_grad=True)
    w = mg.tensor([0.5, -1.0, 2.0], device=device, requires_grad=True)
    return x, w


# ------------------------------------------------------------------------------- trace
def test_trace_prints_forward_then_backward_with_shapes_and_devices(device):
    x, w = small_graph(device)
    out = io.StringIO()
    with trace(out) as seen:
        loss = (x * w).tanh().sum()
        loss.backward()
    text = out.getvalue()
    lines = text.splitlines()
    first_backward = next(i for i, line in enumerate(lines) if line.startswith("backward"))
    forward_ops = [line.split()[1] for line in lines[:first_backward] if line.startswith("forward")]
    backward_ops = [line.split()[1] for line in lines if line.startswith("backward")]
    assert forward_ops == ["Mul", "Tanh", "Sum"]
    assert backward_ops == ["Sum", "Tanh", "Mul"]  # reverse order
    assert f"(2, 3) float32 on {mg.tensor(0.0, device=device).device}" in text and "(3,)" in text
    assert "ms" in lines[0]
    # the ops that backward formulas run are shown indented, with the node that ran them
    assert any("(in Tanh.backward)" in line and line.startswith(" ") for line in lines)
    assert "slowest ops" in text and "3 forward op(s)" in text and "3 backward node(s)" in text
    assert [r.op for r in seen.records if r.phase == "backward"] == ["Sum", "Tanh", "Mul"]
    assert all(r.seconds >= 0 for r in seen.records)
    assert autograd.observers == []


def test_trace_summary_ranks_the_slowest_ops():
    with trace(io.StringIO(), top=2) as seen:
        a = mg.randn(64, 64, requires_grad=True)
        (a @ a).sum().backward()
    ranked = seen.summary().splitlines()[2:]
    assert len(ranked) == 2
    times = [float(re.search(r"call\(s\)\s+([0-9.]+) ms", line).group(1)) for line in ranked]
    assert times == sorted(times, reverse=True)
    # the top entry is the op (and phase) with the largest total time among the records
    totals = {}
    for r in seen.records:
        if r.inside is None:
            totals[(r.phase, r.op)] = totals.get((r.phase, r.op), 0.0) + r.seconds
    phase, op = max(totals, key=totals.get)
    assert ranked[0].split()[:2] == [phase, op]


def test_trace_writes_to_a_file(tmp_path):
    x, w = small_graph()
    path = tmp_path / "trace.txt"
    with trace(path, summary=False):
        (x * w).sum()
    text = path.read_text()
    assert text.splitlines()[0].startswith("forward   Mul") and "slowest" not in text


def test_trace_removes_its_observer_when_the_body_raises():
    with pytest.raises(ValueError, match="reshape"), trace(io.StringIO()):
        mg.zeros(2, 3).reshape(4)
    assert autograd.observers == []


# ---------------------------------------------------------------------- detect_anomaly
def test_anomaly_in_forward_names_the_op_phase_and_shapes(device):
    x = mg.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    with np.errstate(invalid="ignore"), detect_anomaly():
        y = x * 2.0  # fine
        with pytest.raises(RuntimeError) as error:
            y.log()
    message = str(error.value)
    assert "forward of Log" in message and "NaN" in message and "(3,)" in message
    assert "test_debug.py" in message  # the line of the user's code
    assert autograd.observers == []


def test_anomaly_in_backward_names_the_op_and_where_its_forward_ran(device):
    x = mg.tensor([0.0, 1.0, 4.0], device=device, requires_grad=True)
    with np.errstate(divide="ignore"), detect_anomaly():
        loss = x.sqrt().sum()  # finite: sqrt(0) = 0
        with pytest.raises(RuntimeError) as error:
            loss.backward()  # 1 / (2 sqrt(0)) = inf
    message = str(error.value)
    assert "backward of Sqrt" in message and "Inf" in message
    assert "its forward was called at" in message and "x.sqrt()" in message


def test_anomaly_in_a_custom_backward():
    class Broken(mg.Function):
        def forward(self, x):
            return x.data * 2

        def backward(self, grad):
            return grad * float("nan")

    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with detect_anomaly():
        y = Broken.apply(x).sum()
        with pytest.raises(RuntimeError, match="backward of Broken"):
            y.backward()


def test_anomaly_from_outside_data_says_so():
    x = mg.tensor([1.0, float("nan")], requires_grad=True)
    with detect_anomaly(), pytest.raises(RuntimeError, match="already contains NaN"):
        _ = x * 2.0
    with detect_anomaly():
        y = (mg.tensor([1.0, 2.0], requires_grad=True) * 3.0).sum()
        with pytest.raises(RuntimeError, match="upstream gradient"):
            y.backward(mg.tensor(float("inf")))


def test_finite_computation_runs_unchanged_under_detect_anomaly():
    x, w = small_graph()
    with detect_anomaly():
        loss = (x * w).tanh().sum()
        loss.backward()
    expected = (1 - np.tanh(x.detach().numpy() * w.detach().numpy()) ** 2) * w.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


def test_check_forward_can_be_switched_off():
    x = mg.tensor([-1.0], requires_grad=True)
    with np.errstate(invalid="ignore"), detect_anomaly(check_forward=False):
        y = x.log()
    assert np.isnan(y.detach().numpy()).all()


# --------------------------------------------------------- overflow hidden by the output
class HalfStandardize(mg.Function):
    """A hand-written standardisation that keeps float16 throughout: (x − μ)² overflows to
    ∞ for |x − μ| > 256, and (x − μ)/√∞ = 0 then hides it in a finite output."""

    def forward(self, x):
        centred = x.data - x.data.mean()
        return centred / np.sqrt((centred * centred).mean() + 1e-5)

    def backward(self, grad):
        return grad


HALF = [[300.0, -300.0, 0.0, 1.0]]


def test_anomaly_flags_an_overflow_that_the_output_hides():
    x = mg.tensor(HALF, dtype="float16", requires_grad=True)
    with np.errstate(over="ignore"):
        assert np.all(HalfStandardize.apply(x).detach().numpy() == 0)  # silent without detect_anomaly
    with detect_anomaly(), pytest.raises(RuntimeError) as error:
        HalfStandardize.apply(x)
    message = str(error.value)
    assert "HalfStandardize (forward)" in message and "overflow" in message and "float16" in message
    assert "called at" in message and "HalfStandardize.apply(x)" in message


def test_anomaly_flags_an_overflow_inside_a_raw_array_backward():
    class HalfNormalizedGradient(mg.Function):
        def forward(self, x):
            self.saved = x
            return x.data.copy()

        def backward(self, grad):
            d = self.saved.data
            return mg.Tensor(d / np.sqrt((d * d).sum()))  # Σ d² overflows float16: every gradient 0

    x = mg.tensor(HALF, dtype="float16", requires_grad=True)
    with detect_anomaly():
        y = HalfNormalizedGradient.apply(x).sum()
        with pytest.raises(RuntimeError, match=r"HalfNormalizedGradient \(backward\) hit a floating-point overflow"):
            y.backward()


def test_float16_layer_norm_runs_clean_under_detect_anomaly():
    """minigen's own normalisation computes half inputs in float32: nothing overflows."""
    x = mg.tensor(HALF, dtype="float16", requires_grad=True)
    with detect_anomaly():
        y = mg.nn.functional.layer_norm(x, 4)
        (y * mg.tensor([[1.0, 2.0, 3.0, 4.0]], dtype="float16")).sum().backward()
    np.testing.assert_allclose(y.detach().numpy().astype(np.float32), [[1.413, -1.415, -0.00118, 0.00354]], atol=2e-3)
    assert np.all(np.isfinite(x.grad.numpy()))


def test_an_overflow_outside_any_op_is_not_blamed_on_the_next_op():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with detect_anomaly():
        with np.errstate(over="ignore"):
            np.float16(300) * np.float16(300)  # the user's own NumPy code
        with pytest.warns(RuntimeWarning, match="overflow"):  # NumPy's usual warning, outside the ops
            huge = np.float32(3e38) * np.float32(10)
        y = (x * 2.0).sum()
        y.backward()
    assert np.isinf(huge)
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
