"""benchmarks/cupy_probe.py and benchmarks/gpu_check.sh work before the first GPU does.

Both are written to run on a GPU machine lent for minutes, with nothing to install. Here,
without a GPU, the probe runs its checks on the stand-in device (``--dry-run``: this
tests the script, not CuPy), and the GPU check must report every CUDA step as skipped
and finish well inside a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigen import backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from test_fused import emulated_cuda  # noqa: E402, F401  (the fixture: NumPy emulations of CuPy's kernels)

from benchmarks import cupy_probe  # noqa: E402

no_gpu = pytest.mark.skipif(backend.cuda_is_available(), reason="with a GPU the probe runs for real (gpu_check.sh)")


def test_probe_dry_run_passes_every_check_and_measures_three_choices(tmp_path, capsys):
    assert cupy_probe.main(["--dry-run", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "probe.json").read_text())
    statuses = [r["status"] for r in results]
    assert statuses.count("FAIL") == 0 and statuses.count("PASS") >= 20
    measured = [r["check"] for r in results if r["status"] == "MEASURE"]
    assert len(measured) == 3 and any("einsum" in m for m in measured)
    printed = capsys.readouterr().out
    assert "PASS add.at boolean key float16" in printed and "probe: " in printed


def test_probe_reports_a_failing_check(monkeypatch, capsys):
    def broken() -> None:
        raise AssertionError("deliberately wrong")

    cupy_probe.RESULTS.clear()
    cupy_probe.check("a check that fails", broken)
    assert cupy_probe.RESULTS[-1]["status"] == "FAIL"
    assert "FAIL a check that fails: AssertionError: deliberately wrong" in capsys.readouterr().out


@no_gpu
def test_probe_without_a_gpu_says_skipped(capsys):
    assert cupy_probe.main([]) == 0
    assert "skipped: no GPU" in capsys.readouterr().out


@no_gpu
def test_gpu_check_on_a_cpu_machine_skips_every_cuda_step_quickly(tmp_path):
    log_dir = tmp_path / "gc"
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(log_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (log_dir / "summary.md").read_text()
    for step in ("probe", "fused-tests", "cuda-tests", "bench"):
        assert f"| {step} | skipped: no GPU |" in summary, summary
    assert "| preflight | ok |" in summary
    assert (log_dir / "preflight.log").read_text().count("cuda available: False") == 1


def test_probe_fused_kernel_checks_pass_on_the_emulated_kernels(emulated_cuda, capsys):  # noqa: F811
    """The probe's fused checks call each kernel right: run on test_fused's NumPy emulation of CuPy's kernels."""
    cupy_probe.RESULTS.clear()
    cupy_probe.fused_kernels(np)  # NumPy plays cupy (asarray, zeros); NumPy arrays count as CUDA arrays
    assert [r["status"] for r in cupy_probe.RESULTS] == ["PASS"] * 8, capsys.readouterr().out
    assert {"minigen_gelu_forward", "minigen_adam_step", "minigen_normalize_backward"} <= set(emulated_cuda)
