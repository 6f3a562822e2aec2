"""docs/tour.md cannot go stale: its Python snippets run, and its links point at real code.

The ```python blocks are executed in order in one shared namespace, as a reader would
run them. Every link into the source must name an existing file, and a link whose text
is a `name` must point at a file that defines it (``def name`` or ``class name``; for
``Class.method`` the method).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour.md"
TEXT = TOUR.read_text(encoding="utf-8")


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", TEXT, flags=re.S | re.M):
        blocks.append((TEXT.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


def test_the_snippets_run_in_order():
    blocks = python_blocks()
    assert len(blocks) >= 15
    namespace: dict = {"__name__": "tour"}
    for line, code in blocks:
        try:
            with np.errstate(divide="raise", over="raise", invalid="raise"):  # no silent NaN/Inf
                exec(compile(code, f"{TOUR.name}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the snippet at docs/tour.md line {line} failed: {error!r}\n{code}") from error


def test_links_point_at_files_and_definitions():
    links = re.findall(r"\[`?([^\]`]+)`?\]\((\.\./[^)#]+)\)", TEXT)
    assert len(links) >= 40
    for text, target in links:
        path = (TOUR.parent / target).resolve()
        assert path.exists(), f"docs/tour.md links to a missing file: {target}"
        name = text.split(".")[-1]
        if path.suffix == ".py" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", text) and "/" not in text:
            source = path.read_text(encoding="utf-8")
            defined = re.search(rf"^\s*(def|class) {re.escape(name)}\b", source, flags=re.M)
            assert defined, f"docs/tour.md: `{text}` is not defined in {target}"


def test_every_lecture_equation_links_to_its_code():
    for equation, target in [
        ("R_{Θ,m}", "../minigen/ops/rope.py"),
        ("causal mask M", "../minigen/ops/attention.py"),
        ("ELBO", "../minigen/models/vae.py"),
        ("q(x_t | x_0)", "../minigen/models/diffusion.py"),
        ("DDPM training loss", "../minigen/models/diffusion.py"),
    ]:
        assert equation in TEXT, equation
        section = TEXT[TEXT.index(equation) :][:600]
        assert target in section, f"{equation} should link to {target} nearby"
