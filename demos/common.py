"""What every demo shares: the command line, the output folder, and the metrics file.

Every demo takes the same flags:

    --device cpu|cuda   where to train (``--device cuda`` is the only change for a GPU)
    --quick             a much shorter run, for smoke tests
    --seed N            repeatable runs
    --out DIR           where PNGs and metrics.json go (default: runs/<demo name>)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import minigen as mg  # noqa: E402


def demo_arguments(name: str, description: str, argv: list[str] | None = None, extra: Any = None) -> argparse.Namespace:
    """Parse the shared flags (plus any added by ``extra(parser)``), seed, and make the output folder."""
    parser = argparse.ArgumentParser(prog=f"demos/{name}.py", description=description)
    parser.add_argument("--device", default="cpu", type=mg.arguments.parse_device_argument, help="cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="a short run for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help=f"output folder (default: runs/{name})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not mg.cuda.is_available():
        parser.error("--device cuda needs CuPy and an NVIDIA GPU (pip install minigen[gpu])")
    args.out = Path(args.out or Path("runs") / name)
    args.out.mkdir(parents=True, exist_ok=True)
    mg.manual_seed(args.seed)
    args.started = time.perf_counter()
    return args


def write_metrics(args: argparse.Namespace, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json (atomically) with the run's settings and wall time, print a summary."""
    metrics = dict(metrics)
    metrics.setdefault("device", args.device)
    metrics.setdefault("seed", args.seed)
    metrics.setdefault("quick", args.quick)
    metrics["seconds"] = round(time.perf_counter() - args.started, 2)
    path = Path(args.out) / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, path)
    print(json.dumps(metrics, indent=2, default=float))
    print(f"pictures and metrics in {args.out}/")
    return metrics
