"""minigen vs PyTorch, side by side in one process, on the same float32 data.

    python benchmarks/run.py                 # full CPU suite, markdown table + JSON
    python benchmarks/run.py --quick         # a smaller, faster pass (CI runs this)
    python benchmarks/run.py --only conv     # rows whose name contains "conv"
    python benchmarks/run.py --device cuda   # on the GPU (synchronised timings)

Method: each case builds the same inputs for both libraries, checks that the results
agree (allclose, so a fast wrong answer cannot pass), runs a warm-up, then takes the
best of several timed repeats. PyTorch uses as many threads as NumPy's BLAS. GEMM-bound
rows also report the share of NumPy's large-GEMM peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minigen as mg  # noqa: E402
from benchmarks.cases import CASES, Case  # noqa: E402

try:
    import torch
except ImportError:  # PyTorch is optional: its columns are left empty
    torch = None


def blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info

        counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
        if counts:
            return counts[0]
    except ImportError:
        pass
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        mg.cuda.synchronize()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: str, repeats: int, min_seconds: float) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs (after one warm-up), in seconds."""
    fn()
    synchronize(device)
    best = float("inf")
    started = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - started > min_seconds:
            break
    return best


def gemm_peak_flops(device: str, n: int = 2048) -> float:
    """FLOP/s of one large float32 GEMM in the array library itself (the hardware limit here)."""
    xp = mg.backend.xp_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    seconds = best_time(lambda: a @ a, device, repeats=5, min_seconds=2.0)
    return 2 * n**3 / seconds


def run_case(case: Case, device: str, quick: bool) -> dict:
    row: dict = {"case": case.name, "level": case.level}
    mine, theirs, check = case.build(device, quick)
    repeats = 5 if quick else 15
    if check is not None:
        check()
    row["minigen_ms"] = best_time(mine, device, repeats, 1.0 if quick else 3.0) * 1e3
    if theirs is not None:
        row["torch_ms"] = best_time(theirs, device, repeats, 1.0 if quick else 3.0) * 1e3
        row["ratio"] = row["minigen_ms"] / row["torch_ms"]
    if case.flops is not None:
        row["gflops"] = case.flops(quick) / (row["minigen_ms"] / 1e3) / 1e9
    if case.target is not None:
        row["target"] = case.target
    return row


def markdown(rows: list[dict], peak: float) -> str:
    lines = [
        "| case | minigen (ms) | PyTorch (ms) | ratio | % of GEMM peak | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        torch_ms = f"{r['torch_ms']:.3f}" if "torch_ms" in r else "—"
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "—"
        peak_share = f"{100 * r['gflops'] * 1e9 / peak:.0f}%" if "gflops" in r else ""
        lines.append(f"| {r['case']} | {r['minigen_ms']:.3f} | {torch_ms} | {ratio} | {peak_share} | {r.get('target', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under 2 minutes)")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this text")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    args = parser.parse_args(argv)

    threads = blas_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    mg.manual_seed(0)
    peak = gemm_peak_flops(args.device, n=1024 if args.quick else 2048)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} BLAS threads"
    print(f"# minigen benchmarks on {args.device} ({machine})")
    print(f"NumPy/CuPy float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s; PyTorch: {torch.__version__ if torch else 'not installed'}\n")

    rows = []
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        try:
            row = run_case(case, args.device, args.quick)
        except Exception as error:  # a broken case must not hide the others
            row = {"case": case.name, "level": case.level, "error": f"{type(error).__name__}: {error}"}
            print(f"  {case.name}: FAILED: {row['error']}", file=sys.stderr)
            rows.append(row)
            continue
        rows.append(row)
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
        print(f"  {case.name}: {row['minigen_ms']:.3f} ms (ratio {ratio})", file=sys.stderr)

    good = [r for r in rows if "error" not in r]
    print(markdown(good, peak))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.device.replace(':', '_')}{'_quick' if args.quick else ''}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"device": args.device, "machine": machine, "gemm_peak_gflops": peak / 1e9, "rows": rows}, indent=2))
    os.replace(tmp, path)
    print(f"\nresults written to {path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
