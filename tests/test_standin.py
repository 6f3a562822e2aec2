"""The stand-in GPU refuses what CuPy 14 refuses (minigen/testing/standin.py).

Each test commits one deliberate violation and expects the stand-in to refuse it, so a
stand-in that lets the violation through fails the test. The allow-list itself
(minigen/testing/cupy_api.json) is checked against every ``xp.NAME`` that minigen's
source writes, so a call CuPy lacks fails here even on a path no other test runs.
"""

from __future__ import annotations

import ast
import json
import operator
import warnings
from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen import backend
from minigen.testing.standin import CUPY_API, StandInArray, _StandInUfunc, standin_xp

ROOT = Path(__file__).resolve().parent.parent
XP_OF = ("xp_of", "xp_for")  # backend.xp_of(a).zeros(...)


def on_standin(array) -> StandInArray:
    return backend.to_device(np.asarray(array), "standin")


# ---------------------------------------------------------------- the allow-list
def test_allow_list_is_cupy_14_read_from_the_wheel():
    assert CUPY_API["cupy_version"].startswith("14.")
    assert CUPY_API["wheel"].startswith("cupy_cuda13x-")
    cupy = CUPY_API["namespaces"]["cupy"]
    # A few things every reader of CuPy's docs knows: present with their keywords...
    assert cupy["exp"]["kind"] == "ufunc" and cupy["add"]["kind"] == "ufunc"
    assert cupy["sum"]["keywords"] == ["a", "axis", "dtype", "out", "keepdims"]
    assert set(CUPY_API["ufunc"]["__call__"]["keywords"]) >= {"out", "dtype"}
    assert {"at", "reduce"} <= set(CUPY_API["ufunc"])
    assert {"random", "standard_normal", "integers"} <= set(CUPY_API["random.Generator"])
    assert {"shape", "dtype", "astype", "get", "__nonzero__", "__len__"} <= set(CUPY_API["ndarray"])
    # ... and absent where CuPy has nothing.
    assert "permutation" not in CUPY_API["random.Generator"]
    assert "__index__" not in CUPY_API["ndarray"]
    assert "setflags" not in CUPY_API["ndarray"]
    assert "matvec" not in cupy  # a NumPy 2.2 ufunc CuPy 14 lacks
    assert json.loads((ROOT / "minigen/testing/cupy_api.json").read_text()) == CUPY_API


def _xp_names_in_source() -> dict[str, list[str]]:
    """Every ``xp.NAME`` / ``x.xp.NAME`` / ``xp.linalg.NAME`` written in minigen, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "minigen").rglob("*.py")):
        if "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            namespace = "cupy"
            if isinstance(base, ast.Attribute) and base.attr in ("linalg", "fft", "random"):
                namespace, base = f"cupy.{base.attr}", base.value
            is_xp = (
                (isinstance(base, ast.Name) and base.id == "xp")
                or (isinstance(base, ast.Attribute) and base.attr == "xp")  # x.xp.exp
                or (isinstance(base, ast.Call) and getattr(base.func, "attr", getattr(base.func, "id", "")) in XP_OF)
            )
            if is_xp and node.attr not in ("linalg", "fft", "random"):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(f"{namespace}.{node.attr}", []).append(where)
    return found


def test_every_xp_call_in_minigen_exists_in_cupy():
    used = _xp_names_in_source()
    assert len(used) > 30  # the scan sees the code (xp.exp, xp.where, xp.linalg.norm, ...)
    missing = {
        name: places
        for name, places in used.items()
        if name.rsplit(".", 1)[1] not in CUPY_API["namespaces"][name.rsplit(".", 1)[0]]
    }
    assert not missing, f"not in CuPy {CUPY_API['cupy_version']}: {missing}"


def test_a_name_cupy_lacks_is_refused():
    x = on_standin([1.0, 2.0])
    with pytest.raises(AttributeError, match="cupy.matvec is not part of CuPy 14"):
        standin_xp.matvec  # noqa: B018  (NumPy has it, CuPy does not)
    with pytest.raises(AttributeError, match="cupy.ndarray.setflags"):
        x.setflags(write=False)
    with pytest.raises(AttributeError, match="cupy.ufunc.identity"):
        standin_xp.add.identity  # noqa: B018
    assert standin_xp.exp(x).shape == (2,)  # what CuPy has still works
    assert standin_xp.newaxis is None and standin_xp.float32 is np.float32 and standin_xp.inf == np.inf
    with pytest.raises(AttributeError, match="exists in CuPy 14.* the stand-in GPU does not imitate"):
        standin_xp.fuse  # noqa: B018  (CuPy-only: NumPy has nothing to run it with)


def test_a_keyword_cupy_lacks_is_refused():
    x = on_standin([1.0, 2.0])
    with pytest.raises(TypeError, match="xp.sum\\(\\) got the keyword argument 'where'"):
        standin_xp.sum(x, where=x > 1)
    with pytest.raises(TypeError, match="ndarray.max\\(\\) got the keyword argument 'initial'"):
        x.max(initial=0.0)
    with pytest.raises(TypeError, match="xp.exp\\(\\) got the keyword argument 'order'"):
        standin_xp.exp(x, order="K")
    with pytest.raises(TypeError, match="ndarray.take\\(\\) got the keyword argument 'mode'"):
        x.take(on_standin(np.array([0])), mode="clip")
    with pytest.raises(TypeError, match="Generator.random\\(\\) got the keyword argument 'seed'"):
        standin_xp.random.default_rng(0).random(3, seed=1)
    assert float(x.sum(axis=0, keepdims=True)[0]) == 3.0  # CuPy's own keywords pass


# ------------------------------------------------------------- CuPy's refusals
def test_lists_are_refused_in_ufuncs_operators_and_slice_assignment():
    x = on_standin([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="Python list in xp.maximum"):
        standin_xp.maximum(x, [0.0, 5.0, 0.0])
    with pytest.raises(TypeError, match="Python list in \\+"):
        x + [1.0, 1.0, 1.0]
    with pytest.raises(TypeError, match="Python tuple in item assignment"):
        x[:2] = (7.0, 8.0)
    with pytest.raises(TypeError, match="Python list in item assignment"):
        x[:2] = [7.0, 8.0]
    # Lists of arrays where CuPy takes sequences, and lists as index keys, stay allowed.
    assert standin_xp.concatenate([x, x]).shape == (6,)
    assert x[[0, 2]].shape == (2,)


def test_device_integers_have_no_index():
    n = on_standin(np.int64(2))
    with pytest.raises(TypeError):
        operator.index(n)
    with pytest.raises(TypeError):
        range(n)
    with pytest.raises(TypeError):
        ["a", "b", "c"][n]
    assert int(n) == 2  # int() is an explicit read, as on CuPy


def test_out_of_bounds_integer_indices_wrap_as_on_cupy():
    x = on_standin(np.arange(10.0, 15.0))  # [10, 11, 12, 13, 14]
    index = on_standin(np.array([5, 7, -6, 1]))  # 5 -> 0, 7 -> 2, -6 -> 4
    np.testing.assert_array_equal(backend.asnumpy(x[index]), [10, 12, 14, 11])
    np.testing.assert_array_equal(backend.asnumpy(x.take(index)), [10, 12, 14, 11])
    np.testing.assert_array_equal(backend.asnumpy(standin_xp.take(x, index)), [10, 12, 14, 11])
    grid = on_standin(np.arange(6.0).reshape(2, 3))
    rows, cols = on_standin(np.array([2, 0])), on_standin(np.array([4, -1]))
    np.testing.assert_array_equal(backend.asnumpy(grid[rows, cols]), [1.0, 2.0])  # (0, 1), (0, 2)
    np.testing.assert_array_equal(backend.asnumpy(grid[..., on_standin(np.array([3]))]), [[0.0], [3.0]])
    target = on_standin(np.zeros(3))
    target[on_standin(np.array([3, 4]))] = 1.0  # writes 0 and 1
    standin_xp.add.at(target, on_standin(np.array([5, 5])), 2.0)  # accumulates into 2, twice
    np.testing.assert_array_equal(backend.asnumpy(target), [1.0, 1.0, 4.0])
    with pytest.raises(IndexError):  # a Python integer is still checked, on CuPy too
        x[5]
    host = np.arange(5.0)  # the CPU keeps NumPy's error
    with pytest.raises(IndexError):
        host[np.array([5])]


def test_bool_of_an_empty_array_warns_and_is_false_as_on_cupy():
    empty = on_standin(np.zeros(0))
    with pytest.warns(DeprecationWarning, match="truth value of an empty array"):
        assert bool(empty) is False
    with pytest.raises(ValueError):  # more than one element: ambiguous, as everywhere
        bool(on_standin(np.ones(2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(on_standin(np.ones(1)))


def test_random_numbers_come_through_cupys_generator_api():
    gen = standin_xp.random.default_rng(7)
    draws = gen.random((2, 3), dtype=np.float32)
    assert isinstance(draws, StandInArray) and draws.dtype == np.float32
    assert isinstance(gen.standard_normal(4, dtype=np.float64), StandInArray)
    assert isinstance(gen.integers(0, 5, size=3, dtype=np.int64), StandInArray)
    for missing in ("permutation", "shuffle", "choice"):
        with pytest.raises(AttributeError, match=f"Generator.{missing}"):
            getattr(gen, missing)
    with pytest.raises(AttributeError, match="cupy.random.rand"):
        standin_xp.random.rand  # noqa: B018  (the legacy API: minigen draws through default_rng)
    # The numbers are the CPU's (PCG64, same seed), so CPU and stand-in runs agree draw for draw.
    np.testing.assert_array_equal(backend.asnumpy(draws), np.random.default_rng(7).random((2, 3), dtype=np.float32))


def test_randperm_on_the_standin_takes_the_no_permutation_path():
    """With CuPy's Generator (no permutation) randperm sorts uniform draws: exercised here, not only on a GPU."""
    mg.manual_seed(11)
    perm = mg.randperm(20, device="standin").numpy()
    expected = np.random.default_rng(11).random(20, dtype=np.float64).argsort()
    np.testing.assert_array_equal(perm, expected)
    mg.manual_seed(11)
    assert not np.array_equal(mg.randperm(20).numpy(), perm)  # the CPU has permutation() and uses it


# ----------------------------------------------------- the extra strictness, on purpose
def test_numpy_functions_on_device_data_are_refused():
    x = on_standin([1.0, 2.0])
    with pytest.raises(TypeError, match="numpy.sum called on device data"):
        np.sum(x)
    with pytest.raises(TypeError):
        np.exp(x)


def test_writing_into_a_broadcast_view_is_refused():
    x = on_standin(np.zeros(3))
    view = standin_xp.broadcast_to(x, (2, 3))
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1.0


def test_ufunc_at_refuses_host_arrays_and_lists():
    target = on_standin(np.zeros(3))
    with pytest.raises(TypeError, match="mix a device array with a NumPy array"):
        standin_xp.add.at(target, np.array([0]), 1.0)
    with pytest.raises(TypeError, match="Python list"):
        standin_xp.add.at(target, on_standin(np.array([0, 1])), [1.0, 2.0])
    assert isinstance(standin_xp.add, _StandInUfunc)
