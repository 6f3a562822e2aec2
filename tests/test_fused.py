"""The opt-in fused CUDA kernels (minigen/fused.py) against their unfused references.

Three layers of checks:

1. CPU and stand-in device, always: the switch and MINIGEN_FUSED work, and switching the
   kernels on changes nothing there, bit for bit. Any kernel reached from a non-CUDA
   array fails these tests (even where CuPy is installed).
2. CPU emulation, always: a small NumPy stand-in for ``cupy.ElementwiseKernel`` and
   ``cupy.ReductionKernel`` executes each kernel's own CUDA statements on NumPy arrays.
   That checks the Python side (argument order, broadcasting, in-place writes) and each
   kernel's arithmetic against its reference without a GPU. It is only an emulation: it
   cannot catch CUDA compile errors or differences of the GPU's math library.
3. CUDA, only with CuPy and a GPU (skipped otherwise): the real kernels against the
   reference, forward and backward, Adam after several steps, and gradcheck with the
   kernels on. ``benchmarks/gpu_check.sh`` runs these.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigen as mg
import minigen.nn.functional as F
from minigen import backend, fused, optim
from minigen.testing import arrays, shapes

OPS = ["gelu", "softmax", "layer_norm", "group_norm", "batch_norm"]
DTYPES = [np.float32, np.float64]
OPTIMIZERS = {
    "adam": lambda ps: optim.Adam(ps, lr=1e-2),
    "adam_l2": lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}
# The kernels that must have run for each op when the fused path is taken.
EXPECTED_KERNELS = {
    "gelu": {"minigen_gelu_forward", "minigen_gelu_backward"},
    "softmax": {"minigen_softmax_forward", "minigen_softmax_backward"},
    "layer_norm": {"minigen_normalize_backward"},
    "group_norm": {"minigen_normalize_backward"},
    "batch_norm": {"minigen_normalize_backward"},
}

needs_cuda = pytest.mark.skipif(
    not backend.cuda_is_available(),
    reason="needs CuPy and a CUDA GPU: the fused kernels only ever run on CUDA arrays",
)


# ------------------------------------------------------------------------------ cases
def spread(data: st.DataObject, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Values whose every normalised slice is spread out (σ well away from 0)."""
    x = data.draw(arrays(st.just(shape)))
    assume(x.std(axis=axes).min() > 0.3)
    return x


def draw_case(data: st.DataObject, name: str):
    """(fn, host arrays) for one op on hypothesis-drawn shapes; fn maps tensors to the output."""
    if name == "gelu":
        return F.gelu, [data.draw(arrays(shapes(max_side=5)))]
    if name == "softmax":
        x = data.draw(arrays(shapes(max_side=5)))
        dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
        return (lambda t: F.softmax(t, dim=dim)), [x]
    affine = data.draw(st.sampled_from(["", "w", "b", "wb"]))
    if name == "layer_norm":
        shape = data.draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
        k = data.draw(st.integers(1, min(2, len(shape))))
        normalized = shape[len(shape) - k :]
        x = spread(data, shape, tuple(range(len(shape) - k, len(shape))))

        def norm(t, *wb):
            w = wb[0] if "w" in affine else None
            b = wb[-1] if "b" in affine else None
            return F.layer_norm(t, normalized, w, b)

        channels = normalized
    elif name == "group_norm":
        groups = data.draw(st.sampled_from([1, 2, 4]))
        n = data.draw(st.integers(1, 2))
        spatial = tuple(data.draw(st.lists(st.integers(2, 3), max_size=2)))
        x = data.draw(arrays(st.just((n, 4) + spatial)))
        assume(x.reshape(n, groups, -1).std(axis=2).min() > 0.3 or x.size // (n * groups) == 1)

        def norm(t, *wb):
            w = wb[0] if "w" in affine else None
            b = wb[-1] if "b" in affine else None
            return F.group_norm(t, groups, w, b)

        channels = (4,)
    else:  # batch_norm, training: the batch statistics are passed into Normalize
        spatial = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
        n = data.draw(st.integers(2, 3))
        x = spread(data, (n, 3) + spatial, (0,) + tuple(range(2, 2 + len(spatial))))

        def norm(t, *wb):
            w = wb[0] if "w" in affine else None
            b = wb[-1] if "b" in affine else None
            return F.batch_norm(t, None, None, w, b, training=True)

        channels = (3,)
    params = []
    if "w" in affine:
        params.append(data.draw(arrays(st.just(channels), low=0.5, high=2.0)))
    if "b" in affine:
        params.append(data.draw(arrays(st.just(channels))))
    return norm, [x] + params


def forward_backward(fn, host_arrays, device: str, dtype) -> list[np.ndarray]:
    """The output and every input's gradient (for a fixed random upstream gradient), on the host."""
    inputs = [mg.Tensor(a.astype(dtype), device=device, requires_grad=True) for a in host_arrays]
    y = fn(*inputs)
    upstream = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    y.backward(mg.Tensor(upstream, device=device))
    return [y.detach().numpy()] + [t.grad.numpy() for t in inputs]


def adam_run(make, param_shapes, device: str, dtype, steps: int = 5) -> list[np.ndarray]:
    """Parameters and both moment buffers after ``steps`` steps with seeded random gradients."""
    rng = np.random.default_rng(0)
    params = [mg.Tensor(rng.standard_normal(s).astype(dtype), device=device, requires_grad=True) for s in param_shapes]
    opt = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = mg.Tensor(rng.standard_normal(p.shape).astype(dtype), device=device)
        opt.step()
    moments = [opt.state[p][key].numpy() for p in params for key in ("exp_avg", "exp_avg_sq")]
    return [p.detach().numpy() for p in params] + moments


def assert_close(got: np.ndarray, expected: np.ndarray, dtype) -> None:
    """rtol 1e-5 in float32, 1e-12 in float64, relative to the array's scale (min 1): the
    normalisation backward subtracts nearly equal terms, so small entries carry the
    rounding of large ones."""
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def fused_against_reference(run, dtype, launched: list[str], expected_kernels: set[str]) -> None:
    """Run ``run()`` with the kernels off, then on; the results must agree and the kernels must have run."""
    with fused.enabled(False):
        reference = run()
    assert not launched, f"fused kernels ran while switched off: {launched}"
    with fused.enabled(True):
        result = run()
    missing = expected_kernels - set(launched)
    assert not missing, f"the fused path did not run {sorted(missing)} (launched: {sorted(set(launched))})"
    assert len(result) == len(reference)
    for got, expected in zip(result, reference):
        assert got.dtype == expected.dtype
        assert_close(got, expected, dtype)


# ------------------------------------------------------------------------ the switch
@pytest.fixture(autouse=True)
def _switch_restored():
    """Every test leaves the switch as it found it."""
    previous = fused.is_enabled()
    yield
    fused.enable(previous)


def test_switch_is_off_by_default_and_can_be_flipped():
    if not os.environ.get("MINIGEN_FUSED"):
        assert fused.is_enabled() is False
    previous = fused.enable(True)
    assert fused.is_enabled() is True
    assert fused.enable(previous) is True
    with fused.enabled():
        assert fused.is_enabled()
        with fused.enabled(False):
            assert not fused.is_enabled()
        assert fused.is_enabled()
    assert fused.is_enabled() is previous


def test_environment_variable():
    for value in ("1", "true", "YES", " on "):
        assert fused._flag_from_environment(value) is True
    for value in (None, "", "0", "false", "no", "off"):
        assert fused._flag_from_environment(value) is False
    code = "import minigen; print(minigen.fused.is_enabled())"
    for value, expected in (("1", "True"), ("0", "False")):
        env = {**os.environ, "MINIGEN_FUSED": value}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected


def test_applies_only_to_cuda_arrays_of_one_float_dtype():
    host = np.zeros(3, dtype=np.float32)
    standin = mg.zeros(3, device="standin").data
    assert not fused.applies(host)  # switched off
    with fused.enabled():
        assert not fused.applies(host)
        assert not fused.applies(standin)
        assert not fused.applies(host, host)


# ----------------------------------------------------- switching on changes nothing off CUDA
@pytest.fixture
def no_kernels(monkeypatch):
    """Any attempt to build or fetch a fused kernel fails the test."""

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"fused kernel {name} reached with non-CUDA arrays")

    monkeypatch.setattr(fused, "_elementwise", refuse)
    monkeypatch.setattr(fused, "_reduction", refuse)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", ["cpu", "standin"])
@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_switch_changes_nothing_off_cuda(no_kernels, name, device, dtype, data):
    fn, host_arrays = draw_case(data, name)
    with fused.enabled(False):
        reference = forward_backward(fn, host_arrays, device, dtype)
    with fused.enabled(True):
        result = forward_backward(fn, host_arrays, device, dtype)
    for got, expected in zip(result, reference):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("device", ["cpu", "standin"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_switch_changes_no_optimizer_step_off_cuda(no_kernels, opt, device):
    param_shapes = [(3, 4), (5,), (2, 3, 2)]
    for dtype in DTYPES:
        with fused.enabled(False):
            reference = adam_run(OPTIMIZERS[opt], param_shapes, device, dtype)
        with fused.enabled(True):
            result = adam_run(OPTIMIZERS[opt], param_shapes, device, dtype)
        for got, expected in zip(result, reference):
            np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------- CPU emulation
# Just enough of cupy.ElementwiseKernel / ReductionKernel to run minigen's kernels on
# NumPy arrays: the generic type T is the arrays' common dtype (scalars are cast to it),
# all arrays broadcast to one shape, given outputs must have that shape, and each CUDA
# statement "[T] name = expression;" or "if (condition) name = expression;" runs once,
# vectorised over all elements (the kernels have no cross-element dependences).
_EMULATED_LAUNCHES: list[str] = []


def _emulated_cdf(x: np.ndarray) -> np.ndarray:
    return (0.5 * np.vectorize(math.erfc)(-x.astype(np.float64) / math.sqrt(2.0))).astype(x.dtype)


def _emulated_pdf(x: np.ndarray) -> np.ndarray:
    return (np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)).astype(x.dtype)


_C_FUNCTIONS = {"exp": np.exp, "sqrt": np.sqrt, "minigen_cdf": _emulated_cdf, "minigen_pdf": _emulated_pdf}


def _param_names(params: str) -> list[str]:
    names = []
    for param in params.split(","):
        type_name, name = param.split()
        assert type_name == "T", f"the emulation knows only the generic type T, got {param!r}"
        names.append(name)
    return names


def _bind(names: list[str], values: tuple) -> tuple[dict, np.dtype, tuple[int, ...]]:
    """Variables for the kernel body: arrays broadcast to one shape, scalars cast to T."""
    array_values = [v for v in values if isinstance(v, np.ndarray)]
    dtypes = {a.dtype for a in array_values}
    if len(dtypes) != 1:
        raise TypeError(f"Type is mismatched: {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    shape = np.broadcast_shapes(*(a.shape for a in array_values))
    env = {
        name: np.broadcast_to(v, shape) if isinstance(v, np.ndarray) else dtype.type(v)
        for name, v in zip(names, values)
    }
    return env, dtype, shape


def _run_statements(code: str, env: dict) -> None:
    for statement in code.split(";"):
        statement = " ".join(statement.split())
        if not statement:
            continue
        condition = None
        match = re.fullmatch(r"if \((.+?)\) (.+)", statement)
        if match:
            condition, statement = match.groups()
        name, expression = (s.strip() for s in re.sub(r"^T ", "", statement).split("=", 1))
        if condition is None or eval(condition, {"__builtins__": {}}, env):
            env[name] = eval(expression, {"__builtins__": {}, **_C_FUNCTIONS}, env)


class EmulatedElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name, preamble=""):
        self.ins, self.outs = _param_names(in_params), _param_names(out_params)
        self.operation, self.name = operation, name

    def __call__(self, *args):
        assert len(args) in (len(self.ins), len(self.ins) + len(self.outs)), f"{self.name}: wrong number of arguments"
        _EMULATED_LAUNCHES.append(self.name)
        env, dtype, shape = _bind(self.ins + self.outs, args)
        outputs = list(args[len(self.ins) :])
        for out in outputs:
            if out.shape != shape:
                raise ValueError(f"{self.name}: Out shape is mismatched")
        if not outputs:
            outputs = [np.empty(shape, dtype) for _ in self.outs]
        env.update({name: out.copy() for name, out in zip(self.outs, outputs)})  # outputs are read-write
        _run_statements(self.operation, env)
        for name, out in zip(self.outs, outputs):
            out[...] = env[name]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class EmulatedReductionKernel:
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name):
        assert (out_params, reduce_expr, post_map_expr, identity) == ("T total", "a + b", "total = a", "0")
        self.ins, self.map_expr, self.name = _param_names(in_params), map_expr, name

    def __call__(self, *args, axis, keepdims):
        assert len(args) == len(self.ins), f"{self.name}: wrong number of arguments"
        _EMULATED_LAUNCHES.append(self.name)
        env, dtype, _ = _bind(self.ins, args)
        mapped = eval(self.map_expr, {"__builtins__": {}, **_C_FUNCTIONS}, env)
        return mapped.sum(axis=axis, keepdims=keepdims, dtype=dtype)


@pytest.fixture
def emulated_cuda(monkeypatch):
    """NumPy arrays count as CUDA arrays and ``import cupy`` gives the emulated kernels."""
    fake_cupy = types.ModuleType("cupy")
    fake_cupy.ElementwiseKernel = EmulatedElementwiseKernel
    fake_cupy.ReductionKernel = EmulatedReductionKernel
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(fused, "_kernels", {})
    monkeypatch.setattr(backend, "is_cuda_array", lambda a: isinstance(a, np.ndarray))
    _EMULATED_LAUNCHES.clear()
    return _EMULATED_LAUNCHES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_emulated_kernels_match_reference(emulated_cuda, name, dtype, data):
    fn, host_arrays = draw_case(data, name)
    emulated_cuda.clear()
    fused_against_reference(
        lambda: forward_backward(fn, host_arrays, "cpu", dtype), dtype, emulated_cuda, EXPECTED_KERNELS[name]
    )


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@given(param_shapes=st.lists(shapes(max_side=5), min_size=1, max_size=3))
def test_emulated_adam_step_is_the_reference_bit_for_bit(emulated_cuda, opt, param_shapes):
    # Same operations in the same order, each rounded to T as NumPy does: identical.
    # (On a GPU the compiler may fuse a·b + c into one rounding, hence a tolerance there.)
    for dtype in DTYPES:
        emulated_cuda.clear()
        with fused.enabled(False):
            reference = adam_run(OPTIMIZERS[opt], param_shapes, "cpu", dtype)
        with fused.enabled(True):
            result = adam_run(OPTIMIZERS[opt], param_shapes, "cpu", dtype)
        assert emulated_cuda and set(emulated_cuda) == {"minigen_adam_step"}
        for got, expected in zip(result, reference):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_emulated_kernels_pass_gradcheck(emulated_cuda, name, data):
    fn, host_arrays = draw_case(data, name)
    emulated_cuda.clear()
    with fused.enabled(True):
        mg.gradcheck(fn, *(mg.Tensor(a, requires_grad=True) for a in host_arrays))
    assert EXPECTED_KERNELS[name] <= set(emulated_cuda)


# ----------------------------------------------------------------------------- CUDA
@pytest.fixture
def launched(monkeypatch):
    """The names of the fused kernels fetched (that is, launched) during the test."""
    names: list[str] = []
    elementwise, reduction = fused._elementwise, fused._reduction

    def logged_elementwise(name, *args, **kwargs):
        names.append(name)
        return elementwise(name, *args, **kwargs)

    def logged_reduction(name, *args, **kwargs):
        names.append(name)
        return reduction(name, *args, **kwargs)

    monkeypatch.setattr(fused, "_elementwise", logged_elementwise)
    monkeypatch.setattr(fused, "_reduction", logged_reduction)
    return names


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_cuda_kernels_match_reference(launched, name, dtype, data):
    fn, host_arrays = draw_case(data, name)
    launched.clear()
    fused_against_reference(
        lambda: forward_backward(fn, host_arrays, "cuda", dtype), dtype, launched, EXPECTED_KERNELS[name]
    )


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@given(param_shapes=st.lists(shapes(max_side=5), min_size=1, max_size=3))
def test_cuda_adam_step_matches_reference(launched, opt, dtype, param_shapes):
    launched.clear()
    fused_against_reference(
        lambda: adam_run(OPTIMIZERS[opt], param_shapes, "cuda", dtype), dtype, launched, {"minigen_adam_step"}
    )


@needs_cuda
@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_cuda_kernels_pass_gradcheck(launched, name, data):
    fn, host_arrays = draw_case(data, name)
    launched.clear()
    with fused.enabled(True):
        mg.gradcheck(fn, *(mg.Tensor(a, device="cuda", requires_grad=True) for a in host_arrays))
    assert EXPECTED_KERNELS[name] <= set(launched)
