"""minigen vs PyTorch, side by side in one process, on the same float32 data.

    python benchmarks/run.py                          # full CPU suite, markdown table + JSON
    python benchmarks/run.py --quick                  # a smaller, faster pass (CI runs this)
    python benchmarks/run.py --only conv              # rows whose name contains "conv"
    python benchmarks/run.py --only "matmul 2048,conv2d"  # several rows, in the suite's order
    python benchmarks/run.py --threads 1 --clock cpu  # steady ratios on a busy machine
    python benchmarks/run.py --rounds 3               # the suite 3 times, best time per row
    python benchmarks/run.py --device cuda            # on the GPU (synchronised timings)
    python benchmarks/run.py --device cuda --fused    # ... with the opt-in fused kernels (minigen.fused)

Method: each case builds the same inputs for both libraries, checks that the results
agree (so a fast wrong answer cannot pass), then times each library in turn: one
warm-up call, then the best of several timed calls. PyTorch uses as many threads as
NumPy's BLAS. GEMM-bound rows also report the share of NumPy's large-GEMM peak
measured in the same run. See benchmarks/README.md.
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


def limit_threads(threads: int) -> None:
    """Use ``threads`` threads in NumPy's BLAS (and so in the GEMM peak) and in PyTorch."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if torch is not None:
        torch.set_num_threads(threads)


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


def best_time(fn: Callable[[], object], device: str, repeats: int, max_seconds: float) -> float:
    """Best wall time of ``fn`` over up to ``repeats`` runs (after one warm-up), in seconds."""
    return best_times([fn], device, repeats, max_seconds)[0]


# The clock the timed calls are measured with: wall time by default; with ``--clock cpu``
# the CPU time of this thread, which leaves out the time the process waits while other
# processes run (on a busy machine that wait dominates any call longer than a few ms).
# It counts all the work only when both libraries compute on this one thread (--threads 1).
clock = time.perf_counter


def best_times(fns: list[Callable[[], object]], device: str, repeats: int, max_seconds: float) -> list[float]:
    """Best wall time of each of ``fns`` in seconds, one function after the other.

    Each function gets its own warm-up call, then up to ``repeats`` timed calls (at least
    3, and no more once ``max_seconds`` have passed). The functions are timed in blocks,
    not in alternation: after a call, NumPy's BLAS and PyTorch's OpenMP threads keep
    spinning for a while, and the other library's next call would pay for that. The
    warm-up call absorbs it.
    """
    best = []
    for fn in fns:
        fn()
        synchronize(device)
        fastest = float("inf")
        started = time.perf_counter()
        for i in range(repeats):
            t0 = clock()
            fn()
            synchronize(device)
            fastest = min(fastest, clock() - t0)
            if i >= 2 and time.perf_counter() - started > max_seconds:
                break
        best.append(fastest)
    return best


def gemm_peak_flops(device: str, n: int = 2048) -> float:
    """FLOP/s of one large float32 GEMM in the array library itself (the hardware limit here)."""
    xp = mg.backend.xp_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    seconds = best_time(lambda: a @ a, device, repeats=5, max_seconds=2.0)
    return 2 * n**3 / seconds


def resident_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # the kernel reports kB
    raise OSError(f"/proc/self/status has no {field}")


def rss_can_be_measured() -> bool:
    """Whether ``peak_rss_extra_mib`` works here: Linux with glibc, and a peak RSS that
    can be reset (``/proc/self/clear_refs``, Linux 4.0+)."""
    try:
        import ctypes

        if not hasattr(ctypes.CDLL("libc.so.6"), "malloc_trim"):
            return False
        resident_mib("VmHWM")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except (OSError, AttributeError):
        return False


def peak_rss_extra_mib(fn: Callable[[], object]) -> float:
    """How far one call of ``fn`` raises the process's resident memory, in MiB.

    The same measure for both libraries, since PyTorch's CPU allocations are invisible to
    Python's tracemalloc. Before the call, freed memory still held by the C allocator is
    handed back to the OS (``malloc_trim``), so memory the call needs shows up as new
    resident pages, and the peak RSS is reset (writing 5 to ``/proc/self/clear_refs``).
    The figure is then VmHWM (peak RSS) − VmRSS before. It counts pages actually touched,
    and memory that the call frees and reuses counts once: the call's working set.
    """
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = resident_mib("VmRSS")
    fn()
    return resident_mib("VmHWM") - before


def peak_extra_mib(fn: Callable[[], object], device: str, library: str) -> float | None:
    """Peak memory one call of ``fn`` allocates on top of what was in use before it, in MiB,
    or None where it cannot be measured.

    * on the CPU, both libraries: the rise of the resident set (``peak_rss_extra_mib``),
      the lower of two calls (where the allocator places blocks varies a little); where
      that cannot be read (not Linux/glibc), minigen via ``tracemalloc``, which sees
      NumPy's buffers, and PyTorch not at all;
    * minigen on CUDA: a CuPy memory hook adding up the pool's mallocs and frees;
    * PyTorch on CUDA: ``torch.cuda.max_memory_allocated``.
    """
    if device == "cpu" and rss_can_be_measured():
        return min(peak_rss_extra_mib(fn), peak_rss_extra_mib(fn))
    if library == "torch":
        if not device.startswith("cuda") or torch is None or not torch.cuda.is_available():
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if device == "cpu":
        import tracemalloc

        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1] / 2**20  # only what was allocated since start
        finally:
            tracemalloc.stop()
    if device.startswith("cuda"):
        import cupy

        class PeakHook(cupy.cuda.MemoryHook):
            name = "minigen_benchmark_peak"

            def __init__(self) -> None:
                self.in_use = self.peak = 0

            def malloc_postprocess(self, **kwargs) -> None:
                self.in_use += kwargs["mem_size"]
                self.peak = max(self.peak, self.in_use)

            def free_postprocess(self, **kwargs) -> None:
                self.in_use -= kwargs["mem_size"]

        hook = PeakHook()
        with hook:
            fn()
            synchronize(device)
        return hook.peak / 2**20
    return None


def run_case(case: Case, device: str, quick: bool) -> dict:
    row: dict = {"case": case.name, "level": case.level}
    mine, theirs, check = case.build(device, quick)
    repeats = case.repeats[1 if quick else 0] if case.repeats else (5 if quick else 15)
    max_seconds = 1.0 if quick else 5.0
    if check is not None:
        check()
    fns = [mine] if theirs is None else [mine, theirs]
    times = best_times(fns, device, repeats, max_seconds)
    row["minigen_ms"] = times[0] * 1e3
    if theirs is not None:
        row["torch_ms"] = times[1] * 1e3
        row["ratio"] = row["minigen_ms"] / row["torch_ms"]
    if case.flops is not None:
        row["gflops"] = case.flops(quick) / (row["minigen_ms"] / 1e3) / 1e9
    for library, fn in zip(("minigen", "torch"), fns):  # after the timing: the measuring slows the call
        try:
            row[f"{library}_peak_mib"] = peak_extra_mib(fn, device, library)
        except Exception as error:  # a memory probe must never cost the row its timings
            print(
                f"  {case.name}: {library} peak memory not measured ({type(error).__name__}: {error})", file=sys.stderr
            )
    if case.target is not None:
        row["target"] = case.target
        if "ratio" in row:
            row["met"] = row["ratio"] <= case.target_ratio
    return row


def best_of(previous: dict | None, row: dict, case: Case, quick: bool) -> dict:
    """Merge one more round of a case into its row: each library keeps its best time.

    Rounds go through the whole suite in turn, so a few seconds of interference from
    elsewhere on the machine slow down one round of a row, not all of them.
    """
    if previous is None:
        row["rounds"] = 1
        return row
    merged = dict(previous, rounds=previous["rounds"] + 1, seconds=previous["seconds"] + row["seconds"])
    merged["minigen_ms"] = min(previous["minigen_ms"], row["minigen_ms"])
    for key in ("minigen_peak_mib", "torch_peak_mib"):  # allocation is deterministic: the latest will do
        if row.get(key) is not None:
            merged[key] = row[key]
    if "torch_ms" in row:
        merged["torch_ms"] = min(previous["torch_ms"], row["torch_ms"])
        merged["ratio"] = merged["minigen_ms"] / merged["torch_ms"]
        if case.target is not None:
            merged["met"] = merged["ratio"] <= case.target_ratio
    if case.flops is not None:
        merged["gflops"] = case.flops(quick) / (merged["minigen_ms"] / 1e3) / 1e9
    return merged


def markdown(rows: list[dict], peak: float) -> str:
    lines = [
        "| case | minigen (ms) | PyTorch (ms) | ratio | % of GEMM peak | peak MiB minigen / PyTorch | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | FAILED: {r['error']} | | | | | |")
            continue
        memory = " / ".join(
            "—" if r.get(key) is None else f"{r[key]:.1f}" for key in ("minigen_peak_mib", "torch_peak_mib")
        )
        torch_ms = f"{r['torch_ms']:.3f}" if "torch_ms" in r else "—"
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "—"
        peak_share = f"{100 * r['gflops'] * 1e9 / peak:.0f}%" if "gflops" in r else ""
        target = r.get("target", "")
        if "met" in r:
            target += " ✓" if r["met"] else " ✗"
        lines.append(
            f"| {r['case']} | {r['minigen_ms']:.3f} | {torch_ms} | {ratio} | {peak_share} | {memory} | {target} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under 2 minutes)")
    parser.add_argument(
        "--only",
        default=None,
        help="run only cases whose name contains this text (several: comma-separated, run in the suite's order)",
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for both libraries (default: as many as NumPy's BLAS uses); on a busy machine "
        "--threads 1 gives steadier ratios",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time with the wall clock (default) or this thread's CPU time (needs --threads 1; "
        "for busy machines, where waiting for the CPU would dominate the wall time)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole suite this many times and keep each library's best time per row "
        "(steadier on a machine shared with others)",
    )
    parser.add_argument(
        "--malloc",
        choices=["reuse", "default"],
        default="reuse",
        help="reuse: keep freed blocks in the process (minigen.backend.reuse_freed_memory; both libraries, "
        "since it is process-wide), so that no row's time depends on what the C allocator did before it; "
        "default: glibc as it comes",
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="switch on minigen's opt-in fused CUDA kernels (minigen.fused; they only act on --device cuda)",
    )
    args = parser.parse_args(argv)

    global clock
    if args.clock == "cpu":
        if args.threads != 1 or args.device != "cpu":
            parser.error("--clock cpu needs --threads 1 and --device cpu: it counts the calling thread's CPU time only")
        clock = time.thread_time
    if args.threads is not None:
        limit_threads(args.threads)
    if args.malloc == "reuse":
        mg.backend.reuse_freed_memory()
    if args.fused:
        mg.fused.enable(True)
    fused = mg.fused.is_enabled()  # also on with MINIGEN_FUSED=1: say so in the results
    if torch is not None:  # true float32 on both sides: PyTorch's cuDNN would otherwise use TF32 on a GPU
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    threads = blas_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    mg.manual_seed(0)
    peak = gemm_peak_flops(args.device, n=1024 if args.quick else 2048)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} BLAS threads"
    machine += f", {args.clock} clock, {args.malloc} malloc"
    if args.rounds > 1:
        machine += f", best of {args.rounds} rounds"
    if fused:
        machine += ", fused kernels on"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# minigen benchmarks on {args.device} ({machine})")
    if load is not None:  # other processes on the machine make every timing noisier
        print(f"Load average before the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if load[0] > (os.cpu_count() or 1) and args.clock == "wall":
            print(
                "Warning: the machine is busier than it has cores; wall-clock ratios will be noisy "
                "(try --threads 1 --clock cpu)"
            )
    if args.device == "cpu":
        memory_method = "resident set (RSS), both libraries" if rss_can_be_measured() else "tracemalloc, minigen only"
    else:
        memory_method = "CuPy memory hook / torch.cuda.max_memory_allocated"
    torch_version = torch.__version__ if torch else "not installed"
    print(f"NumPy/CuPy float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s; PyTorch: {torch_version}")
    print(f"Peak memory: {memory_method}\n")

    wanted = [text.strip() for text in args.only.split(",")] if args.only else []
    cases = [case for case in CASES if not wanted or any(text in case.name for text in wanted)]
    rows: dict[str, dict] = {}
    for round_number in range(1, args.rounds + 1):
        for case in cases:
            if "error" in rows.get(case.name, {}):
                continue
            started = time.perf_counter()
            try:
                row = run_case(case, args.device, args.quick)
                row["seconds"] = time.perf_counter() - started
            except Exception as error:  # a broken case must not hide the others
                row = {"case": case.name, "level": case.level, "error": f"{type(error).__name__}: {error}"}
                print(f"  {case.name}: FAILED: {row['error']}", file=sys.stderr)
                rows[case.name] = row
                continue
            theirs = f", PyTorch {row['torch_ms']:.3f} ms, ratio {row['ratio']:.2f}x" if "ratio" in row else ""
            print(
                f"  [{round_number}/{args.rounds}] {case.name}: minigen {row['minigen_ms']:.3f} ms{theirs} "
                f"[{row['seconds']:.1f} s]",
                file=sys.stderr,
            )
            rows[case.name] = best_of(rows.get(case.name), row, case, args.quick)
    rows = list(rows.values())

    print(markdown(rows, peak))
    if load is not None:
        after = os.getloadavg()
        print(f"\nLoad average after the run (1/5/15 min): {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.device.replace(':', '_')}{'_fused' if fused else ''}{'_quick' if args.quick else ''}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(
            {
                "device": args.device,
                "quick": args.quick,
                "fused": fused,
                "machine": machine,
                "load_average": load,
                "gemm_peak_gflops": peak / 1e9,
                "peak_memory": memory_method,
                "rows": rows,
            },
            indent=2,
        )
    )
    os.replace(tmp, path)
    print(f"\nresults written to {path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
