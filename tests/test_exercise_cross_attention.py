"""The cross_attention exercise: the checker passes the reference solution and fails each typical
mistake of the issue with the hint that names it (as tests/test_exercises.py does for the others).

The wrong solutions are tests/exercise_solutions/cross_attention.py with one mistake edited in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from exercise_testing import assert_fails_with_hint, solution_with_mistakes

from minigen.exercises import cross_attention
from minigen.exercises.__main__ import main
from minigen.exercises.checker import check_file, check_names

SOLUTION = Path(__file__).parent / "exercise_solutions" / "cross_attention.py"
EXAMPLES = 5

# (mistake, the text of the correct solution it replaces, the wrong text, the check that
# must fail, a phrase of the hint that must name the mistake)
# fmt: off
MISTAKES = [
    ("K taken from x", "k = context.data @ w_k.data.T", "k = x.data @ w_k.data.T",
     "CrossAttention forward", "K is computed from x"),
    ("V taken from x", "v = context.data @ w_v.data.T", "v = x.data @ w_v.data.T",
     "CrossAttention forward", "V is computed from x"),
    ("K taken from x (M ≠ N)", "k = context.data @ w_k.data.T", "k = x.data @ w_k.data.T",
     "property: works when m differs from n", "K and V from the context"),
    ("mask along the wrong axis", "key_padding_mask.data[:, None, :]", "key_padding_mask.data[:, :, None]",
     "CrossAttention forward", "wrong axis"),
    ("mask along the wrong axis, finite −∞",
     "scores = xp.where(key_padding_mask.data[:, None, :], -xp.inf, scores)",
     "scores = xp.where(key_padding_mask.data[:, :, None], -1e9, scores)",
     "CrossAttention forward", "wrong axis"),
    ("mask inverted", "xp.where(key_padding_mask.data[:, None, :], -xp.inf, scores)",
     "xp.where(~key_padding_mask.data[:, None, :], -xp.inf, scores)", "CrossAttention forward", "inverted"),
    ("missing 1/√d (forward)", "scores = q @ k.swapaxes(-1, -2) / math.sqrt(d)", "scores = q @ k.swapaxes(-1, -2)",
     "CrossAttention forward", "not divided by √d"),
    ("missing 1/√d (backward)", "grad_q = grad_s @ k / math.sqrt(d)", "grad_q = grad_s @ k",
     "CrossAttention gradcheck", "1/√d"),
    ("gradient flowing into padded tokens", "grad_v = a.swapaxes(-1, -2) @ g",
     "s = q @ k.swapaxes(-1, -2) / math.sqrt(d)  # recomputed without the mask\n"
     "        a = grad.xp.exp(s - s.max(axis=-1, keepdims=True))\n"
     "        a /= a.sum(axis=-1, keepdims=True)\n        grad_v = a.swapaxes(-1, -2) @ g",
     "property: no gradient reaches padded tokens", "masked attention weights A"),
    ("gradient flowing into padded tokens (gradcheck)", "grad_v = a.swapaxes(-1, -2) @ g",
     "s = q @ k.swapaxes(-1, -2) / math.sqrt(d)  # recomputed without the mask\n"
     "        a = grad.xp.exp(s - s.max(axis=-1, keepdims=True))\n"
     "        a /= a.sum(axis=-1, keepdims=True)\n        grad_v = a.swapaxes(-1, -2) @ g",
     "CrossAttention gradcheck", "gradient flows into padded tokens"),
    ("one path of the context's gradient", "grad_c = grad_k @ w_k + grad_v @ w_v", "grad_c = grad_v @ w_v",
     "CrossAttention gradcheck", "feeds both K and V"),
]
# fmt: on


def with_mistake(tmp_path: Path, old: str, new: str) -> Path:
    return solution_with_mistakes(tmp_path, "cross_attention", [(old, new)])


def test_correct_solution_passes():
    report = check_file(cross_attention, SOLUTION, max_examples=EXAMPLES)
    assert report.passed, report.text()
    assert [c.name for c in report.checks] == check_names(cross_attention)


@pytest.mark.parametrize(("mistake", "old", "new", "failing", "hint"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_typical_mistake_fails_with_the_right_hint(tmp_path, mistake, old, new, failing, hint):
    report = check_file(cross_attention, with_mistake(tmp_path, old, new), max_examples=EXAMPLES)
    assert_fails_with_hint(report, failing, hint)


def test_template_is_the_maths_and_stubs(tmp_path, capsys):
    assert main(["start", "cross_attention", str(tmp_path)]) == 0
    text = (tmp_path / "cross_attention.py").read_text()
    assert "The maths" in text and "Shapes" in text and "check cross_attention" in text
    assert "class CrossAttention(Function)" in text
    report = check_file(cross_attention, tmp_path / "cross_attention.py", max_examples=1)
    assert not report.passed
    assert all(c.not_implemented for c in report.checks[:3]), report.text()
    assert "Traceback" not in report.text()
