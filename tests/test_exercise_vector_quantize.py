"""The vector_quantize exercise: the solution passes, and each typical mistake fails the right check
with the hint that names it (the wrong solutions are the correct one with the mistake edited in).
The first four are the mistakes issue 15 lists: β on the wrong term, the losses computed after the
straight-through substitution, no straight-through, argmax instead of argmin."""

from __future__ import annotations

from pathlib import Path

import pytest
from exercise_testing import assert_fails_with_hint, check_named, solution_with_mistakes

from minigen.exercises import EXERCISES, get
from minigen.exercises.__main__ import main
from minigen.exercises.checker import check_file

SOLUTION = Path(__file__).parent / "exercise_solutions" / "vector_quantize.py"
EXAMPLES = 5
EXERCISE = get("vector_quantize")

LOSS = "loss = CodebookLoss.apply(z_e, e) + beta * CommitmentLoss.apply(z_e, e)"
ST = "z_q = StraightThrough.apply(z_e, e)"

# (mistake, [(correct text, wrong text), ...], the check that must fail, a phrase of its hint)
# fmt: off
MISTAKES = [
    ("beta on the wrong term",
     [(LOSS, "loss = beta * CodebookLoss.apply(z_e, e) + CommitmentLoss.apply(z_e, e)")],
     "property: vector quantize matches the lecture", "β is on the wrong term"),
    ("losses computed after the straight-through substitution",
     [(f"{LOSS}\n    {ST}",
       f"{ST}\n    loss = CodebookLoss.apply(z_e, z_q) + beta * CommitmentLoss.apply(z_e, z_q)")],
     "property: vector quantize matches the lecture", "after the straight-through substitution"),
    ("no straight-through: z_q = e",
     [(ST, "z_q = e")],
     "property: vector quantize matches the lecture", "no straight-through"),
    ("no straight-through: the backward sends nothing to z_e",
     [("return grad, None", "return None, None")],
     "property: straight through passes the gradient unchanged", "the encoder gets no gradient"),
    ("argmax instead of argmin",
     [("return distances.argmin(dim=1)", "return distances.argmax(dim=1)")],
     "property: nearest code is the closest codebook entry", "argmin of the distances, not the argmax"),
    # further typical slips
    ("the ‖e‖² term dropped",
     [(" + codebook.square().sum(dim=1)", "")],
     "property: nearest code is the closest codebook entry", "you dropped ‖e_k‖²"),
    ("the codebook term trains the encoder too (no sg(z_e))",
     [("return None, Tensor(grad.data * 2.0 * diff / diff.size)",
       "d = Tensor(grad.data * 2.0 * diff / diff.size)\n        return -d, d")],
     "property: codebook term updates only the codes", "return None for z_e"),
    ("the commitment term moves the codes too (no sg(e))",
     [("return Tensor(grad.data * 2.0 * diff / diff.size), None",
       "d = Tensor(grad.data * 2.0 * diff / diff.size)\n        return d, -d")],
     "property: commitment term updates only the encoder", "return None for e"),
    ("straight-through also sends the gradient to e",
     [("return grad, None", "return grad, grad")],
     "property: straight through passes the gradient unchanged", "∂z_q/∂e = 0"),
    ("codebook-term gradient with the wrong sign",
     [("return None, Tensor(grad.data * 2.0 * diff / diff.size)",
       "return None, Tensor(-grad.data * 2.0 * diff / diff.size)")],
     "CodebookLoss gradcheck", "the sign is wrong"),
    ("commitment gradient without the 1/n of the mean",
     [("return Tensor(grad.data * 2.0 * diff / diff.size), None", "return Tensor(grad.data * 2.0 * diff), None")],
     "CommitmentLoss gradcheck", "1/n of the mean is missing"),
    ("summed instead of averaged",
     [("diff = z_e.data - e.data\n        self.saved = (diff,)\n        return (diff * diff).mean()",
       "diff = z_e.data - e.data\n        self.saved = (diff,)\n        return (diff * diff).sum()")],
     "CommitmentLoss forward", "MEAN over all n = M·D elements"),
    ("commitment term without β",
     [(LOSS, "loss = CodebookLoss.apply(z_e, e) + CommitmentLoss.apply(z_e, e)")],
     "property: vector quantize matches the lecture", "the commitment term has no β"),
]
# fmt: on


def with_mistakes(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    return solution_with_mistakes(tmp_path, "vector_quantize", edits)


def test_registered():
    assert EXERCISES["vector_quantize"] is EXERCISE
    assert list(EXERCISES).index("vector_quantize") > list(EXERCISES).index("cyclegan_losses")


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


def test_the_two_classic_bugs_keep_the_loss_value(tmp_path):
    """β on the wrong term and the losses after straight-through give the right VALUE: only the
    gradients show them, so the value check must pass and the gradient check must fail."""
    for edits in (MISTAKES[0][1], MISTAKES[1][1]):
        report = check_file(EXERCISE, with_mistakes(tmp_path, edits), max_examples=1)
        check = check_named(report, "property: vector quantize matches the lecture")
        assert "gradient" in check.summary and "loss is" not in check.summary, check.summary


def test_numpy_on_tensor_data_fails_on_the_gpu(tmp_path):
    edits = [("return e.data.copy()", "import numpy\n        return numpy.array(e.data)")]
    report = check_file(EXERCISE, with_mistakes(tmp_path, edits), max_examples=1)
    gpu = check_named(report, "property: vector quantize runs on the gpu")
    assert not gpu.passed
    assert check_named(report, "property: vector quantize matches the lecture").passed  # it works on the CPU


def test_template_stubs_say_not_implemented_yet(tmp_path, capsys):
    assert main(["start", "vector_quantize", str(tmp_path)]) == 0
    path = tmp_path / "vector_quantize.py"
    text = path.read_text()
    assert "The maths" in text and "Shapes" in text and "check vector_quantize" in text
    for name in ("StraightThrough", "CodebookLoss", "CommitmentLoss"):
        assert f"class {name}(Function)" in text
    report = check_file(EXERCISE, path, max_examples=1)
    assert not report.passed
    for check in report.checks[:-1]:  # the GPU path is skipped once the CPU fails
        assert not check.passed and check.not_implemented, check
        assert check.summary.startswith("not implemented yet"), check.summary
    assert "Traceback" not in report.text()
