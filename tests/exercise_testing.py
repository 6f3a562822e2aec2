"""What the exercise tests share: a reference solution with a typical mistake put in, and
the assertion that the checker fails it with the right hint.

Used by ``tests/test_exercises.py`` and the later exercises' own ``test_exercise_<name>.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SOLUTIONS = Path(__file__).parent / "exercise_solutions"


def solution_with_mistakes(tmp_path: Path, name: str, edits: Sequence[tuple[str, str]]) -> Path:
    """The reference solution of exercise ``name`` with each ``old`` replaced by ``new``, as a file."""
    source = (SOLUTIONS / f"{name}.py").read_text()
    for old, new in edits:
        assert source.count(old) == 1, f"the correct {name} solution must contain {old!r} exactly once"
        source = source.replace(old, new)
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


def check_named(report, name: str):
    """The check called ``name`` in a checker report."""
    found = [c for c in report.checks if c.name == name]
    assert found, f"no check named {name!r}; checks: {[c.name for c in report.checks]}"
    return found[0]


def assert_fails_with_hint(report, failing: str, hint: str) -> None:
    """The report fails, its check ``failing`` fails, and one of that check's hints says ``hint``."""
    assert not report.passed
    check = check_named(report, failing)
    assert not check.passed, report.text()
    assert any(hint in h for h in check.hints), f"expected a hint with {hint!r}:\n{report.text()}"
    assert hint in report.text()
