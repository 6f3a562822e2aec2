"""Run a demo the way the demo tests do: import ``demos/<name>.py`` and call its ``main``.

Shared by the ``tests/test_demos_*.py`` files (the demos folder is not a package that
pytest puts on the path, so it is added here once).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

DEMOS = Path(__file__).resolve().parent.parent / "demos"


def import_demo(name: str) -> ModuleType:
    """The module ``demos/<name>.py``."""
    if str(DEMOS) not in sys.path:
        sys.path.insert(0, str(DEMOS))
    return importlib.import_module(name)


def run_demo(name: str, out: Path, *flags: str) -> dict:
    """``main(["--out", out, *flags])``; checks that metrics.json holds the returned metrics' time."""
    metrics = import_demo(name).main(["--out", str(out), *flags])
    assert json.loads((out / "metrics.json").read_text())["seconds"] == metrics["seconds"]
    return metrics
