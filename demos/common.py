"""What every demo shares: the command line, the output folder, and the metrics file.

Every demo takes the same flags:

    --device cpu|cuda   where to train (``--device cuda`` is the only change for a GPU)
    --quick             a much shorter run, for smoke tests
    --seed N            repeatable runs
    --out DIR           where PNGs and metrics.json go (default: runs/<demo name>)

No phase of a demo passes silently: training and sampling loops show a tqdm bar, and
every other step that can take more than a moment (rendering the data, training the
judging classifier, computing metrics, writing pictures) runs inside ``status``, which
says what is happening and how long it took.

Every flag is checked before any work starts: numbers by the argparse ``type=``
functions below (``positive_int`` for steps and epochs ...), and the places a demo
writes to (``--out``, and ``--save`` for a demo that has it) by trying them, so a typo
never costs a training run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from tqdm.auto import tqdm  # noqa: E402

import minigen as mg  # noqa: E402
from minigen.serialization import check_writable  # noqa: E402
from minigen.utils import atomic_write  # noqa: E402


# ------------------------------------------------------- argument types (argparse type=)
def _number(text: str, kind: type, minimum: int) -> int | float:
    """``text`` as an int or a finite float, at least ``minimum``; argparse shows the error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {text}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1: step counts, epochs, sizes."""
    return _number(text, int, 1)


def non_negative_int(text: str) -> int:
    """An int >= 0: seeds."""
    return _number(text, int, 0)


def non_negative_float(text: str) -> float:
    """A finite float >= 0: penalty weights, guidance scales."""
    return _number(text, float, 0)


def existing_file(text: str) -> Path:
    """A file that exists: --load."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return Path(text)


def _writable_folder(folder: Path) -> str | None:
    """Create ``folder`` if needed and try writing a file in it; None if that works, else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        return f"{str(folder)!r} is a file, not a folder"
    except OSError as error:
        return f"cannot write into {str(folder)!r}: {error.strerror or error}"
    return None


def demo_arguments(name: str, description: str, argv: list[str] | None = None, extra: Any = None) -> argparse.Namespace:
    """Parse the shared flags (plus any added by ``extra(parser)``), seed, and make the output folder.

    Bad flags, and an ``--out`` folder that cannot be written, stop the demo here with
    argparse's usage message (exit status 2), before any data is made or model trained.
    """
    parser = argparse.ArgumentParser(prog=f"demos/{name}.py", description=description)
    parser.add_argument("--device", default="cpu", type=mg.arguments.parse_device_argument, help="cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="a short run for smoke tests")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed, 0 or more (default: 0)")
    parser.add_argument("--out", default=None, help=f"output folder (default: runs/{name})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not mg.cuda.is_available():
        parser.error("--device cuda needs CuPy and an NVIDIA GPU (pip install minigen[gpu])")
    args.out = Path(args.out or Path("runs") / name)
    problem = _writable_folder(args.out)  # before any training: the results must have somewhere to go
    if problem is not None:
        parser.error(f"--out: {problem}")
    if getattr(args, "save", None) is not None:  # a demo's --save checkpoint, checked after --out exists
        try:
            check_writable(args.save)
        except OSError as error:
            parser.error(f"--save: {str(error).removeprefix('save: ')}")
    mg.manual_seed(args.seed)
    args.started = time.perf_counter()
    return args


# ------------------------------------------------------------------ what the demo is doing
@contextlib.contextmanager
def status(what: str) -> Iterator[None]:
    """Print ``what`` the demo starts doing, then how long it took, e.g.

    rendering 12000 training and 2000 test digits ...
      done in 2.3 s
    """
    print(f"{what} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)


def steps_bar(description: str) -> Callable[[Iterable[Any]], Iterable[Any]]:
    """A ``progress=`` argument for the samplers: their steps with a tqdm bar named ``description``."""
    return lambda steps: tqdm(steps, desc=description, unit="step")


def write_metrics(args: argparse.Namespace, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json (atomically) with the run's settings and wall time, print a summary."""
    metrics = dict(metrics)
    metrics.setdefault("device", args.device)
    metrics.setdefault("seed", args.seed)
    metrics.setdefault("quick", args.quick)
    metrics["seconds"] = round(time.perf_counter() - args.started, 2)
    with atomic_write(Path(args.out) / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=float))
    print(json.dumps(metrics, indent=2, default=float))
    print(f"pictures and metrics in {args.out}/")
    return metrics
