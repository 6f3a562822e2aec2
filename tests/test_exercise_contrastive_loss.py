"""The contrastive_loss exercise: the solution passes, and each typical mistake fails the right check
with the hint that names it (the wrong solutions are the correct one with the mistake edited in)."""

from __future__ import annotations

from pathlib import Path

import pytest
from exercise_testing import assert_fails_with_hint, solution_with_mistakes

from minigen.exercises import EXERCISES, get
from minigen.exercises.__main__ import main
from minigen.exercises.checker import check_file

SOLUTION = Path(__file__).parent / "exercise_solutions" / "contrastive_loss.py"
EXAMPLES = 5
EXERCISE = get("contrastive_loss")

# (mistake, [(correct text, wrong text), ...], the check that must fail, a phrase of its hint)
# fmt: off
MISTAKES = [
    ("one direction only (forward)",
     [("return 0.5 * (loss_rows + loss_cols)", "return loss_rows")],
     "ContrastiveLoss forward", "one direction only"),
    ("one direction only (property)",
     [("return 0.5 * (loss_rows + loss_cols)", "return loss_rows")],
     "property: loss is symmetric in images and texts", "average the image → text cross-entropy"),
    ("one direction only (backward)",
     [("g = grad.data / (2 * b) * ((p - eye) + (q - eye))", "g = grad.data / b * (p - eye)")],
     "ContrastiveLoss gradcheck", "one direction only"),
    ("no L2 normalisation",
     [("u, v = x / x_norm, y / y_norm", "u, v = x, y")],
     "ContrastiveLoss forward", "no L2 normalisation"),
    ("no L2 normalisation (property)",
     [("u, v = x / x_norm, y / y_norm", "u, v = x, y")],
     "property: loss ignores the length of the features", "normalise each row first"),
    ("temperature after the softmax: s times the loss",
     [("logits = s * (u @ v.T)", "logits = u @ v.T"),
      ("return 0.5 * (loss_rows + loss_cols)", "return s * 0.5 * (loss_rows + loss_cols)")],
     "ContrastiveLoss forward", "temperature is applied after the softmax"),
    ("temperature after the softmax: s times the probabilities",
     [("logits = s * (u @ v.T)", "logits = u @ v.T"),
      ("loss_rows = -xp.log(p[rows, labels]).mean()", "loss_rows = -xp.log(s * p[rows, labels]).mean()"),
      ("loss_cols = -xp.log(q[labels, rows]).mean()", "loss_cols = -xp.log(s * q[labels, rows]).mean()")],
     "ContrastiveLoss forward", "temperature is applied after the softmax"),
    ("temperature after the softmax (property)",
     [("logits = s * (u @ v.T)", "logits = u @ v.T"),
      ("return 0.5 * (loss_rows + loss_cols)", "return s * 0.5 * (loss_rows + loss_cols)")],
     "property: chance level is log batch", "temperature is applied after the softmax"),
    ("t instead of e^t",
     [("s = xp.exp(logit_scale.data)", "s = logit_scale.data")],
     "ContrastiveLoss forward", "multiply the similarities by s = e^t"),
    ("labels off by one",
     [("labels = rows", "labels = (rows + 1) % len(rows)")],
     "ContrastiveLoss forward", "labels are off by one"),
    ("labels off by one (property)",
     [("labels = rows", "labels = (rows + 1) % len(rows)")],
     "property: matched pairs give a small loss", "labels are off by one"),
    ("normalisation backward without its projection",
     [("grad_x = (grad_u - u * (u * grad_u).sum(axis=1, keepdims=True)) / x_norm", "grad_x = grad_u / x_norm")],
     "ContrastiveLoss gradcheck", "missing its projection"),
    ("logit-scale gradient without e^t",
     [("grad_t = (g * logits).sum()", "grad_t = (g * (u @ v.T)).sum()")],
     "ContrastiveLoss gradcheck", "missing the factor e^t"),
]
# fmt: on


def with_mistakes(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    return solution_with_mistakes(tmp_path, "contrastive_loss", edits)


def test_registered_in_lecture_order():
    assert EXERCISES["contrastive_loss"] is EXERCISE
    assert list(EXERCISES).index("contrastive_loss") > list(EXERCISES).index("cyclegan_losses")


def test_correct_solution_passes():
    report = check_file(EXERCISE, SOLUTION, max_examples=EXAMPLES)
    assert report.passed, report.text()
    names = [c.name for c in report.checks]
    assert len(names) == 3 * len(EXERCISE.OPS) + len(EXERCISE.PROPERTIES) + 1
    assert "GPU path (stand-in device)" in names


@pytest.mark.parametrize(("mistake", "edits", "failing", "hint"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_typical_mistake_fails_with_the_right_hint(tmp_path, mistake, edits, failing, hint):
    report = check_file(EXERCISE, with_mistakes(tmp_path, edits), max_examples=EXAMPLES)
    assert_fails_with_hint(report, failing, hint)


def test_template_stubs_say_not_implemented_yet(tmp_path, capsys):
    assert main(["start", "contrastive_loss", str(tmp_path)]) == 0
    path = tmp_path / "contrastive_loss.py"
    text = path.read_text()
    assert "The maths" in text and "Shapes" in text and "check contrastive_loss" in text
    assert "class ContrastiveLoss(Function)" in text
    report = check_file(EXERCISE, path, max_examples=1)
    assert not report.passed
    for check in report.checks[:-1]:  # the GPU path is skipped once the CPU fails
        assert not check.passed and check.not_implemented, check
    assert "Traceback" not in report.text()
