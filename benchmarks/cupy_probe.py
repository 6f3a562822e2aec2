"""One PASS/FAIL line per CuPy API that minigen relies on, run on the GPU against NumPy.

    PYTHONPATH=. python3 benchmarks/cupy_probe.py [--out DIR]

Written before minigen ever ran on a GPU, from a static audit of CuPy 14: it checks the
APIs most likely to break first, each in a few milliseconds, so the first minutes on a
GPU confirm the backend instead of discovering failures one test at a time.

* ``add.at`` (the scatter-add of every indexing and embedding backward) with duplicate,
  tuple and boolean keys, in float16, float32 and float64;
* CuPy's random ``Generator`` from a large seed: float32 draws, int64 integers;
* each fused kernel (minigen/fused.py) in float32 and float64 against its reference;
* one conv and one GPT training step on CUDA against the CPU, from host-made inputs;
* the stand-in device's imitation of CuPy (minigen/testing/standin.py): out-of-range
  indices wrap, lists and host arrays are refused, no ``__index__``, ``bool()`` of an
  empty array, no ``Generator.permutation``; a FAIL here means the stand-in is wrong;
* the audit's fixes on the real device: NaN loss for an out-of-range target, host data
  assigned into a device tensor, float16 ``rand``, shared device scalars.

Three choices the audit left to a measurement on the GPU print a MEASURE line with the
numbers and what they decide:

* ``einsum("abcd,abcd->b")`` (normalisation's ``sum_of_products``) against a multiply
  and sum;
* creating CuPy's generator (``manual_seed`` then a draw: gradcheck reseeds for every
  evaluation) against drawing from an existing one;
* ``Tensor._lift``'s 0-d array per Python number: shared (``backend.scalar_array``) against
  a fresh ``full()`` per use.

Without a GPU it prints "skipped: no GPU" and exits 0. Exit code 1 if any check failed.
``--dry-run`` runs the same checks on the stand-in device instead (no GPU, no fused
kernels, no meaningful timings): it only tests this script.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minigen as mg  # noqa: E402
import minigen.nn.functional as F  # noqa: E402
from minigen import backend, fused  # noqa: E402

RESULTS: list[dict[str, Any]] = []
DEVICE = "cuda"  # "standin" with --dry-run


def check(name: str, fn: Callable[[], str | None]) -> None:
    """Run one check; print PASS (with what it saw) or FAIL (with the error)."""
    start = time.perf_counter()
    try:
        detail = fn() or ""
        status = "PASS"
    except Exception as error:  # every failure is reported, none stops the probe
        status, detail = "FAIL", f"{type(error).__name__}: {error}".replace("\n", " ")[:400]
        traceback.print_exc(file=sys.stderr)
    seconds = time.perf_counter() - start
    RESULTS.append({"check": name, "status": status, "detail": detail, "seconds": round(seconds, 3)})
    print(f"{status} {name}" + (f": {detail}" if detail else ""), flush=True)


def measure(name: str, numbers: dict[str, float], decision: str) -> None:
    RESULTS.append({"check": name, "status": "MEASURE", "numbers": numbers, "decision": decision})
    shown = ", ".join(f"{key} {value:.4g}" for key, value in numbers.items())
    print(f"MEASURE {name}: {shown} -> {decision}", flush=True)


def close(actual: Any, expected: np.ndarray, dtype: Any, what: str) -> None:
    tolerance = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-11}[np.dtype(dtype).type]
    np.testing.assert_allclose(backend.asnumpy(actual), expected, rtol=tolerance, atol=tolerance, err_msg=what)


def best_of(fn: Callable[[], Any], repeats: int = 20) -> float:
    """Best wall time of fn() in microseconds, synchronised (after one warm-up call)."""
    fn()
    mg.cuda.synchronize()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        mg.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def raises(fn: Callable[[], Any]) -> str | None:
    """The exception type fn() raises, or None."""
    try:
        fn()
    except Exception as error:
        return type(error).__name__
    return None


# --------------------------------------------------------------------- the checks
def add_at(cp: Any) -> None:
    rng = np.random.default_rng(0)
    keys = {
        "duplicate": np.array([0, 3, 0, 0, 5, 3]),
        "tuple": (np.array([0, 1, 1, 0, 1]), np.array([2, 2, 2, 0, 2])),
        "boolean": rng.random((6, 3)) > 0.4,
    }
    for dtype in (np.float16, np.float32, np.float64):
        for kind, key in keys.items():

            def one(dtype=dtype, key=key, kind=kind) -> str:
                values = rng.normal(size=np.zeros((6, 3))[key].shape).astype(dtype)
                expected = np.zeros((6, 3), dtype=dtype)
                np.add.at(expected, key, values)
                device_key = tuple(cp.asarray(k) for k in key) if isinstance(key, tuple) else cp.asarray(key)
                direct = cp.zeros((6, 3), dtype=dtype)
                cp.add.at(direct, device_key, cp.asarray(values))
                close(direct, expected, dtype, f"cupy.add.at, {kind} key")
                via_backend = cp.zeros((6, 3), dtype=dtype)
                backend.scatter_add(via_backend, device_key, cp.asarray(values))
                close(via_backend, expected, dtype, f"backend.scatter_add, {kind} key")
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # cupyx.scatter_add warned on every call
                    backend.scatter_add(via_backend, device_key, cp.asarray(values))
                return ""

            check(f"add.at {kind} key {np.dtype(dtype).name}", one)


def generator(cp: Any) -> None:
    def large_seed() -> str:
        seed = 2**127 + 12345  # as large as np.random.SeedSequence().entropy (used without manual_seed)
        gen = cp.random.default_rng(seed)
        u = gen.random((1000, 100), dtype=np.float32)
        n = gen.standard_normal((1000, 100), dtype=np.float32)
        k = gen.integers(0, 10, size=(1000,), dtype=np.int64)
        assert u.dtype == np.float32 and n.dtype == np.float32 and k.dtype == np.int64, (u.dtype, n.dtype, k.dtype)
        u_host, n_host, k_host = (backend.asnumpy(a) for a in (u, n, k))
        assert 0 <= u_host.min() and u_host.max() < 1 and abs(u_host.mean() - 0.5) < 0.01
        assert abs(n_host.mean()) < 0.01 and abs(n_host.std() - 1) < 0.01
        assert k_host.min() >= 0 and k_host.max() <= 9 and len(set(k_host.tolist())) == 10
        again = backend.asnumpy(cp.random.default_rng(seed).random((1000, 100), dtype=np.float32))
        np.testing.assert_array_equal(again, u_host)
        return f"mean {u_host.mean():.4f}, std {n_host.std():.4f}, has permutation: {hasattr(gen, 'permutation')}"

    def through_minigen() -> str:
        mg.manual_seed(2**40 + 7)
        first = mg.randn(5, device=DEVICE).numpy()
        mg.manual_seed(2**40 + 7)
        np.testing.assert_array_equal(mg.randn(5, device=DEVICE).numpy(), first)
        perm = mg.randperm(100, device=DEVICE).numpy()
        assert sorted(perm.tolist()) == list(range(100))
        ints = mg.randint(0, 7, (50,), device=DEVICE)
        assert ints.dtype == np.int64
        return "manual_seed repeats; randperm is a permutation; randint int64"

    check("Generator from a large seed: float32 draws, int64 integers", large_seed)
    check("minigen randomness on cuda (manual_seed, randperm, randint)", through_minigen)


def fused_kernels(cp: Any) -> None:
    """Each kernel in minigen/fused.py against the reference path computed by minigen on the CPU."""
    for dtype in (np.float32, np.float64):
        fused_kernels_in(cp, dtype)


def fused_kernels_in(cp: Any, dtype: Any) -> None:
    rng = np.random.default_rng(1)
    name = np.dtype(dtype).name
    x = rng.normal(size=(4, 6, 8)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    gamma = rng.uniform(0.5, 2, size=(8,)).astype(dtype)
    beta = rng.normal(size=(8,)).astype(dtype)

    def reference(fn: Callable, *params: np.ndarray) -> tuple[np.ndarray, ...]:
        """fn's output and ∂(Σ g ⊙ fn)/∂(x, params) on the CPU, the fused switch off."""
        tensors = [mg.tensor(a, requires_grad=True) for a in (x, *params)]
        out = fn(*tensors)
        out.backward(mg.tensor(g))
        return (out.detach().numpy(), *(t.grad.numpy() for t in tensors))

    def gelu() -> str:
        y, dx = reference(F.gelu)
        close(fused.gelu_forward(cp.asarray(x)), y, dtype, "gelu forward")
        close(fused.gelu_backward(cp.asarray(x), cp.asarray(g)), dx, dtype, "gelu backward")
        return ""

    def softmax() -> str:
        s, dx = reference(lambda t: F.softmax(t, dim=-1))
        s_dev = fused.softmax_forward(cp.asarray(x), (2,))
        close(s_dev, s, dtype, "softmax forward")
        close(fused.softmax_backward(s_dev, cp.asarray(g), (2,)), dx, dtype, "softmax backward")
        return ""

    def normalize() -> str:
        eps = 1e-5
        for affine in (False, True):
            params = (gamma, beta) if affine else ()
            y, dx, *_ = reference(lambda t, *wb: F.layer_norm(t, (8,), *wb, eps=eps), *params)
            weight = cp.asarray(gamma) if affine else None
            bias = cp.asarray(beta) if affine else None
            xhat, y_dev, rstd = fused.normalize_forward(cp.asarray(x), (2,), eps, weight, bias)
            close(y_dev, y, dtype, f"normalize forward (affine={affine})")
            close(fused.normalize_backward(cp.asarray(g), xhat, rstd, weight, (2,)), dx, dtype, "backward")
        return ""

    def adam() -> str:
        for decoupled in (False, True):
            param = mg.nn.Parameter(mg.tensor(x.copy()))
            opt = (mg.optim.AdamW if decoupled else mg.optim.Adam)([param], lr=1e-2, weight_decay=0.1)
            p_dev, m_dev, v_dev = cp.asarray(x), cp.zeros(x.shape, dtype=dtype), cp.zeros(x.shape, dtype=dtype)
            for step in (1, 2, 3):
                param.grad = mg.tensor(g * step)
                opt.step()
                fused.adam_step(
                    p_dev, cp.asarray(g * step), m_dev, v_dev, lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                    weight_decay=0.1, decoupled=decoupled, step=step,
                )  # fmt: skip
            close(p_dev, param.detach().numpy(), dtype, f"adam (decoupled={decoupled}) after 3 steps")
        return ""

    check(f"fused gelu forward/backward {name}", gelu)
    check(f"fused softmax forward/backward {name}", softmax)
    check(f"fused normalize forward/backward {name}", normalize)
    check(f"fused adam/adamw step {name}", adam)


def training_steps(cp: Any) -> None:
    """One step of a conv net and of a GPT on CUDA against the same step on the CPU."""
    from minigen.models import cnn, gpt

    def compare(build: Callable[[], mg.nn.Module], inputs: tuple[np.ndarray, ...], loss_fn: Callable) -> str:
        results = []
        for device in ("cpu", DEVICE):
            mg.manual_seed(0)
            model = build().to(device)  # initialised on the host, so both start from the same weights
            optimizer = mg.optim.Adam(model.parameters(), lr=1e-3)
            loss = loss_fn(model, *(mg.tensor(a, device=device) for a in inputs))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            params = {name: p.detach().numpy() for name, p in model.named_parameters()}
            results.append((loss.item(), params))
        (cpu_loss, cpu_params), (gpu_loss, gpu_params) = results
        assert math.isclose(cpu_loss, gpu_loss, rel_tol=1e-4), (cpu_loss, gpu_loss)
        for name, value in cpu_params.items():
            np.testing.assert_allclose(gpu_params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        return f"loss cpu {cpu_loss:.6f} cuda {gpu_loss:.6f}, {len(cpu_params)} parameters agree"

    rng = np.random.default_rng(2)
    images, labels = rng.random((8, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, size=8)
    tokens = rng.integers(0, 13, size=(4, 8))

    def conv() -> str:
        return compare(
            lambda: cnn.LeNet(num_classes=10, image_size=12, widths=(4, 8)),
            (images, labels),
            lambda model, x, y: F.cross_entropy(model(x), y),
        )

    def gpt_step() -> str:
        return compare(
            lambda: gpt.GPT(vocab_size=13, block_size=8, n_layers=2, n_heads=2, d_model=32),
            (tokens,),
            lambda model, idx: F.cross_entropy(model(idx[:, :-1]).reshape(-1, 13), idx[:, 1:].reshape(-1)),
        )

    check("conv net training step: cuda against cpu", conv)
    check("GPT training step: cuda against cpu", gpt_step)

    def gpt_fused() -> str:
        with fused.enabled():
            return gpt_step()

    check("GPT training step with the fused kernels on: cuda against cpu", gpt_fused)


def standin_fidelity(cp: Any) -> None:
    """What minigen/testing/standin.py imitates, on real CuPy. A FAIL: fix the stand-in (and its tests)."""

    def wrap() -> str:
        x = cp.arange(10.0, 15.0)
        seen = {
            "x[idx]": backend.asnumpy(x[cp.asarray([5, 7, -6])]).tolist(),
            "x.take": backend.asnumpy(x.take(cp.asarray([5, 7, -6]))).tolist(),
            "cupy.take": backend.asnumpy(cp.take(x, cp.asarray([5, 7, -6]))).tolist(),
        }
        for what, values in seen.items():
            assert values == [10.0, 12.0, 14.0], f"{what}: {values} (the stand-in wraps to [10, 12, 14])"
        target = cp.zeros(3)
        target[cp.asarray([3, 4])] = 1.0
        cp.add.at(target, cp.asarray([5, 5]), 2.0)
        assert backend.asnumpy(target).tolist() == [1.0, 1.0, 4.0], backend.asnumpy(target).tolist()
        return "getitem, take, setitem and add.at wrap out-of-range indices"

    def refusals() -> str:
        x = cp.ones(3)
        found = {
            "list in a ufunc": raises(lambda: cp.maximum(x, [0.0, 5.0, 0.0])),
            "list in an operator": raises(lambda: x + [1.0, 1.0, 1.0]),
            "list into a slice": raises(lambda: x.__setitem__(slice(0, 2), [7.0, 8.0])),
            "host array into a slice": raises(lambda: x.__setitem__(slice(0, 2), np.array([7.0, 8.0]))),
            "operator.index": raises(lambda: operator.index(cp.asarray(2))),
            "np.asarray": raises(lambda: np.asarray(x)),
            "a Python int out of range": raises(lambda: x[5]),
        }
        allowed = [what for what, error in found.items() if error is None]
        assert not allowed, f"CuPy allows what the stand-in refuses: {allowed}"
        return ", ".join(f"{what}: {error}" for what, error in found.items())

    def empty_bool() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = bool(cp.zeros(0))
        kinds = [w.category.__name__ for w in caught]
        assert value is False and "DeprecationWarning" in kinds, (value, kinds)
        return "DeprecationWarning, False"

    def generator_api() -> str:
        gen = cp.random.default_rng(0)
        missing = [name for name in ("permutation", "shuffle", "choice") if hasattr(gen, name)]
        assert not missing, f"CuPy's Generator has {missing}: the stand-in hides them"
        return "no permutation, shuffle or choice"

    check("stand-in fidelity: out-of-range indices wrap", wrap)
    check("stand-in fidelity: lists, host arrays, __index__ refused", refusals)
    check("stand-in fidelity: bool() of an empty array", empty_bool)
    check("stand-in fidelity: Generator API", generator_api)


def audit_fixes(cp: Any) -> None:
    def nan_loss() -> str:
        logits = mg.randn(4, 3, device=DEVICE, requires_grad=True)
        loss = F.cross_entropy(logits, mg.tensor([0, 2, 7, 1], device=DEVICE))
        loss.backward()
        assert loss.dtype == np.float32 and math.isnan(loss.item()), (loss.dtype, loss.item())
        ok = F.cross_entropy(mg.tensor(np.eye(3, dtype=np.float32), device=DEVICE), mg.tensor([0, 1, 2], device=DEVICE))
        assert not math.isnan(ok.item())
        rows = F.embedding(mg.tensor([1, 9], device=DEVICE), mg.randn(5, 2, device=DEVICE)).numpy()
        assert np.isnan(rows).all(axis=1).tolist() == [False, True]
        return "out-of-range target: NaN float32 loss; out-of-range id: NaN row"

    def assignment() -> str:
        t = mg.zeros(2, 3, device=DEVICE)
        t[0] = [1.0, 2.0, 3.0]
        t[1, 1:] = np.array([5.0, 6.0])
        t[1, 0] = 4.0
        np.testing.assert_array_equal(t.numpy(), [[1, 2, 3], [4, 5, 6]])
        return ""

    def rand_float16() -> str:
        u = mg.rand(100000, dtype=mg.float16, device=DEVICE)
        assert u.dtype == np.float16 and float(u.max().item()) < 1, (u.dtype, u.max().item())
        return f"max {float(u.max().item())}"

    def shared_scalars() -> str:
        t = mg.ones(3, device=DEVICE)
        a, b = (backend.scalar_array(0.5, np.float32, t.data) for _ in range(2))
        assert a is b and (t * 0.5).dtype == np.float32
        assert cp.where(t.data > 0, np.float32(np.nan), t.data).dtype == np.float32  # the NaN-loss where
        return ""

    check("audit: NaN loss / embedding rows for out-of-range ids on cuda", nan_loss)
    check("audit: host data assigned into a cuda tensor", assignment)
    check("audit: rand float16 on cuda stays below 1", rand_float16)
    check("audit: shared device scalars, float32 where with a NaN scalar", shared_scalars)


# ------------------------------------------------------------------ the measurements
def measure_einsum(cp: Any) -> None:
    rows = {}
    for shape in ((32, 64, 32, 32), (128, 256, 8, 8), (8, 32, 64, 64)):
        a = cp.asarray(np.random.default_rng(3).normal(size=shape).astype(np.float32))
        b = cp.asarray(np.random.default_rng(4).normal(size=shape).astype(np.float32))
        with_einsum = best_of(lambda a=a, b=b: cp.einsum("abcd,abcd->b", a, b))
        multiply_sum = best_of(lambda a=a, b=b: (a * b).sum(axis=(0, 2, 3)))
        np.testing.assert_allclose(
            backend.asnumpy(cp.einsum("abcd,abcd->b", a, b)), backend.asnumpy((a * b).sum(axis=(0, 2, 3))), rtol=1e-3
        )
        label = "x".join(map(str, shape))
        rows[f"einsum_us_{label}"] = with_einsum
        rows[f"multiply_sum_us_{label}"] = multiply_sum
    ratios = [rows[k] / rows[k.replace("einsum", "multiply_sum")] for k in rows if k.startswith("einsum")]
    faster = min(ratios) > 1.1
    decision = (
        "multiply-sum is faster on this GPU for every shape: make ops/normalization.sum_of_products use "
        "(a * b).sum(axes) on CUDA arrays"
        if faster
        else "einsum is not slower on this GPU: keep sum_of_products as it is"
    )
    measure("einsum('abcd,abcd->b') vs (a*b).sum((0,2,3)), float32", rows, decision)


def measure_generator(cp: Any) -> None:
    seed = 1234
    create = best_of(lambda: cp.random.default_rng(seed).random(8, dtype=np.float32), repeats=10)
    gen = cp.random.default_rng(seed)
    draw = best_of(lambda: gen.random(8, dtype=np.float32))

    def reseed_and_draw() -> None:  # what gradcheck does for every function evaluation
        mg.manual_seed(0)
        mg.randn(8, device=DEVICE)

    reseed = best_of(reseed_and_draw, repeats=10)
    decision = (
        "creating a generator costs under 1 ms: manual_seed may keep making a new one"
        if create < 1000
        else "creating a generator is expensive: cache CuPy generators per seed and reset their state "
        "(backend.generator / set_rng_state)"
    )
    measure(
        "CuPy generator creation vs draw",
        {"create_and_draw_us": create, "draw_us": draw, "manual_seed_then_randn_us": reseed},
        decision,
    )


def measure_scalars(cp: Any) -> None:
    t = mg.ones(1024, device=DEVICE)
    shared = best_of(lambda: t * 0.5, repeats=200)
    limit = backend._MAX_DEVICE_SCALARS
    backend._MAX_DEVICE_SCALARS = 0  # the table is emptied on every use: a fresh full() each time
    try:
        fresh = best_of(lambda: t * 0.5, repeats=200)
    finally:
        backend._MAX_DEVICE_SCALARS = limit
    full_alone = best_of(lambda: cp.full((), 0.5, dtype=np.float32), repeats=200)
    saving = fresh - shared
    decision = (
        f"sharing saves {saving:.1f} us per scalar op ({saving / fresh:.0%}): keep backend.scalar_array's table"
        if saving > 2 and saving / fresh > 0.05
        else "a fresh full() is negligible here: backend.scalar_array's table could go"
    )
    measure(
        "t * 0.5 with shared vs fresh 0-d arrays (1024 float32)",
        {"shared_us": shared, "fresh_full_us": fresh, "full_alone_us": full_alone},
        decision,
    )


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for probe.json")
    parser.add_argument("--dry-run", action="store_true", help="on the stand-in device: tests this script only")
    args = parser.parse_args(argv)
    RESULTS.clear()
    checks = [add_at, generator, fused_kernels, training_steps, standin_fidelity, audit_fixes]
    if args.dry_run:
        DEVICE = "standin"
        cp = backend.xp_for(DEVICE)
        checks.remove(fused_kernels)  # CuPy kernels: nothing to run them on
        print("dry run on the stand-in device: checks this script, not CuPy")
    elif not mg.cuda.is_available():
        print("skipped: no GPU (minigen.cuda.is_available() is False)")
        return 0
    else:
        DEVICE = "cuda"
        cp = backend._cupy
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        print(f"CuPy {cp.__version__}, NumPy {np.__version__}, device {name}")
    for group in checks:
        group(cp)
    for group in (measure_einsum, measure_generator, measure_scalars):
        try:
            group(cp)
        except Exception as error:
            RESULTS.append({"check": group.__name__, "status": "FAIL", "detail": repr(error)[:400]})
            print(f"FAIL {group.__name__}: {error!r}"[:500], flush=True)
    failed = [r["check"] for r in RESULTS if r["status"] == "FAIL"]
    passed = sum(r["status"] == "PASS" for r in RESULTS)
    print(f"probe: {passed} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "probe.json").write_text(json.dumps(RESULTS, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
