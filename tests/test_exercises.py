"""Checking the checker: every exercise passes a correct solution and fails typical wrong
ones with the hint that names the mistake; the CLI behaves (list, start, check, --json).

The correct solutions live in tests/exercise_solutions/<name>.py. Each wrong solution is
that file with one typical mistake edited in (``MISTAKES``), so the mistake is visible
at a glance.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from exercise_testing import assert_fails_with_hint, check_named, solution_with_mistakes

from minigen.exercises import EXERCISES, get
from minigen.exercises.__main__ import main
from minigen.exercises.checker import check_file

SOLUTIONS = Path(__file__).parent / "exercise_solutions"
EXAMPLES = 5  # generated inputs per check, on top of each exercise's hand-picked EXAMPLES

# One typical mistake per row: the exercise, what the mistake is, the text of the correct
# solution it replaces, the wrong text, the check that must fail, and a phrase of the
# hint that must name the mistake.
# fmt: off
MISTAKES = [
    # 1. sigmoid and tanh
    ("sigmoid_tanh", "sign", "return grad * (1.0 - y * y)", "return grad * (y * y - 1.0)",
     "Tanh gradcheck", "sign error"),
    ("sigmoid_tanh", "x instead of y", "return grad * (1.0 - y * y)", "return grad * (1.0 - x * x)",
     "Tanh gradcheck", "OUTPUT y = tanh(x)"),
    ("sigmoid_tanh", "overflow", "y = 0.5 * (1.0 + x.xp.tanh(0.5 * x.data))", "y = 1.0 / (1.0 + x.xp.exp(-x.data))",
     "property: stable for large inputs", "never overflows"),
    # 2. matmul
    ("matmul", "missing unbroadcast", "grad_a = (grad @ b.mT).sum_to(a.shape)", "grad_a = grad @ b.mT",
     "MatMul gradient shapes", "missing unbroadcast"),
    ("matmul", "transposed", "grad_b = (a.mT @ grad).sum_to(b.shape)", "grad_b = (grad.mT @ a).sum_to(b.shape)",
     "MatMul gradient shapes", "transpose"),
    # 3. softmax and cross-entropy
    ("softmax_cross_entropy", "forgotten mean", "d /= n", "pass",
     "CrossEntropy gradcheck", "divide by N"),
    ("softmax_cross_entropy", "sign", "d /= n", "d /= -n",
     "CrossEntropy gradcheck", "opposite sign"),
    ("softmax_cross_entropy", "diagonal Jacobian", "return Tensor(s * (g - (g * s).sum(axis=-1, keepdims=True)))",
     "return Tensor(g * s * (1 - s))", "Softmax gradcheck", "only the diagonal"),
    ("softmax_cross_entropy", "no max shift", "e = xp.exp(x.data - x.data.max(axis=-1, keepdims=True))",
     "e = xp.exp(x.data)", "property: stable for large logits", "subtract each row's maximum"),
    # 4. conv2d backward
    ("conv2d", "= instead of +=", "dx_pad[window] += ", "dx_pad[window] = ",
     "Conv2d gradcheck", "accumulate"),
    ("conv2d", "= instead of += (property)", "dx_pad[window] += ", "dx_pad[window] = ",
     "property: every window sends gradient to its pixels", "accumulate with +="),
    ("conv2d", "flipped kernel", 'xp.einsum("nohw,oc->nchw", g, weight[:, :, i, j])',
     'xp.einsum("nohw,oc->nchw", g, weight[:, :, kh - 1 - i, kw - 1 - j])', "Conv2d gradcheck", "kernel flipped"),
    ("conv2d", "no sum over the batch", 'xp.einsum("nohw,nchw->oc", g, x_pad[window])',
     'xp.einsum("ohw,chw->oc", g[0], x_pad[window][0])', "Conv2d gradcheck", "first sample only"),
    # 5. max-pool backward
    ("max_pool", "= instead of +=", "dx[window] += ", "dx[window] = ",
     "MaxPool2d gradcheck", "accumulate with +="),
    ("max_pool", "spread evenly", "dx[window] += xp.where(argmax == i * k + j, g, 0.0)", "dx[window] += g / (k * k)",
     "property: gradient is routed one hot", "average-pool"),
    # 6. layer norm
    ("layer_norm", "mu and sigma constant", "grad_x = (ghat - mean_g - xhat * mean_gx) / sigma",
     "grad_x = ghat / sigma", "LayerNorm gradcheck", "treated μ and σ as constants"),
    ("layer_norm", "sums for means",
     "mean_g = ghat.mean(axis=-1, keepdims=True)\n        mean_gx = (ghat * xhat).mean(",
     "mean_g = ghat.sum(axis=-1, keepdims=True)\n        mean_gx = (ghat * xhat).sum(",
     "LayerNorm gradcheck", "divide them by D"),
    ("layer_norm", "gamma not summed", "grad_weight = (g * xhat).sum(axis=lead)", "grad_weight = g * xhat",
     "LayerNorm gradient shapes", "missing unbroadcast"),
    ("layer_norm", "unbiased variance", "var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)",
     "var = ((x.data - mu) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)",
     "LayerNorm forward", "unbiased variance"),
    # 7. causal attention
    ("attention", "missing 1/sqrt(d)", "grad_q = grad_s @ k / math.sqrt(d)", "grad_q = grad_s @ k",
     "CausalAttention gradcheck", "1/√d"),
    ("attention", "leak through the mask", "grad_v = a.swapaxes(-1, -2) @ g",
     "a = grad.xp.exp(q @ k.swapaxes(-1, -2) / math.sqrt(d))  # recomputed without the mask\n"
     "        a /= a.sum(axis=-1, keepdims=True)\n        grad_v = a.swapaxes(-1, -2) @ g",
     "property: no gradient leaks into the future", "masked attention weights"),
    ("attention", "transposed dS", "grad_k = grad_s.swapaxes(-1, -2) @ q / math.sqrt(d)",
     "grad_k = grad_s @ q / math.sqrt(d)", "CausalAttention gradcheck", "transpose of ∂L/∂S"),
    ("attention", "no mask", "scores = xp.where(mask, scores, -xp.inf)", "pass",
     "CausalAttention forward", "causal mask is missing"),
    # 8. RoPE
    ("rope", "same rotation in backward", "rotate(grad.data, cos, -sin)", "rotate(grad.data, cos, sin)",
     "property: backward undoes the rotation", "flip the sign of sin"),
    ("rope", "same rotation in backward (gradcheck)", "rotate(grad.data, cos, -sin)", "rotate(grad.data, cos, sin)",
     "Rope gradcheck", "applies R again"),
    ("rope", "rotate-half", "first, second = slice(0, None, 2), slice(1, None, 2)",
     "first, second = slice(0, data.shape[-1] // 2), slice(data.shape[-1] // 2, None)",
     "Rope forward", "rotate-half"),
    ("rope", "theta off by one", "xp.arange(d // 2, dtype=x.dtype)", "xp.arange(1, d // 2 + 1, dtype=x.dtype)",
     "Rope forward", "off by one"),
    # 9. VAE
    ("vae", "missing 1/2", "grad_logvar = grad.data * eps * sigma * 0.5", "grad_logvar = grad.data * eps * sigma",
     "Reparameterize gradcheck", "½ from the chain rule"),
    ("vae", "gradient for sigma", "grad_logvar = grad.data * eps * sigma * 0.5", "grad_logvar = grad.data * eps",
     "Reparameterize gradcheck", "∂σ/∂ℓ = σ/2"),
    ("vae", "KL sign", "grad_mu = g * mu", "grad_mu = -g * mu",
     "KLDivergence gradcheck", "sign"),
    # 10. DDPM
    ("ddpm", "forgotten mean", "grad.data * 2.0 * diff / diff.size", "grad.data * 2.0 * diff",
     "EpsilonLoss gradcheck", "MEAN"),
    ("ddpm", "factor 2", "grad.data * 2.0 * diff / diff.size", "grad.data * diff / diff.size",
     "EpsilonLoss gradcheck", "factor 2"),
    ("ddpm", "swapped coefficients", "return signal * x0.data + spread * noise.data",
     "return spread * x0.data + signal * noise.data", "QSample forward", "swapped"),
    ("ddpm", "variance, not scale", "signal, spread = xp.sqrt(alpha_bar), xp.sqrt(1.0 - alpha_bar)",
     "signal, spread = alpha_bar, 1.0 - alpha_bar", "property: variance is preserved", "square roots"),
    # What the checker used to miss (issue 12 §6): each now fails, with a hint naming the mistake.
    ("softmax_cross_entropy", "input changed in place", "e = xp.exp(x.data - x.data.max(axis=-1, keepdims=True))",
     "x.data -= x.data.max(axis=-1, keepdims=True)\n        e = xp.exp(x.data)", "Softmax forward", "in place"),
    ("attention", "no max subtraction", "e = xp.exp(scores - scores.max(axis=-1, keepdims=True))",
     "e = xp.exp(scores)", "property: stable for large scores", "subtract each row's maximum score"),
    ("sigmoid_tanh", "upstream g dropped", "return grad * y * (1.0 - y)", "return y * (1.0 - y)",
     "Sigmoid gradcheck", "ignores the incoming g"),
    ("sigmoid_tanh", "wrong branch for negative inputs", "return grad * (1.0 - y * y)",
     "return grad * Tensor(x.xp.where(x.data < 0, 1.0 + y.data * y.data, 1.0 - y.data * y.data))",
     "Tanh gradcheck", "where the input is negative"),
    ("rope", "sign slip on odd indices", "return Tensor(rotate(grad.data, cos, -sin))",
     "g = grad.data\n        out = g.copy()\n        out[..., 0::2] = g[..., 0::2] * cos + g[..., 1::2] * sin\n"
     "        out[..., 1::2] = g[..., 0::2] * sin + g[..., 1::2] * cos  # the sign of sin slipped\n"
     "        return Tensor(out)", "Rope gradcheck", "the odd indices"),
    ("rope", "positions ignored", "xp.asarray(positions, dtype=x.dtype)[:, None]",
     "xp.arange(x.shape[-2], dtype=x.dtype)[:, None]", "Rope forward", "the positions are ignored"),
    ("ddpm", "timestep off by one", "alpha_bars.data[t.data]", "alpha_bars.data[t.data - 1]",
     "QSample forward", "off by one"),
    ("ddpm", "first sample's t for the batch", "alpha_bars.data[t.data]", "alpha_bars.data[t.data[0]]",
     "QSample forward", "first sample's t"),
    # 11. CycleGAN objectives (issue 14): the four mistakes the issue lists, then the L1 backward
    ("cyclegan_losses", "cycle in one direction only",
     "cycle = L1Loss.apply(F(fake_y), x) + L1Loss.apply(G(fake_x), y)", "cycle = L1Loss.apply(F(fake_y), x)",
     "property: generator objective matches the lecture", "one direction only"),
    ("cyclegan_losses", "identity term missing", "return gan + lambda_cyc * cycle + lambda_id * identity",
     "return gan + lambda_cyc * cycle", "property: generator objective matches the lecture",
     "identity term is missing"),
    ("cyclegan_losses", "fake not detached for D", "fake_x, fake_y = fake_x.detach(), fake_y.detach()", "pass",
     "property: discriminator step leaves G and F alone", "detach the fakes"),
    ("cyclegan_losses", "L2 for L1 (cycle)", "cycle = L1Loss.apply(F(fake_y), x) + L1Loss.apply(G(fake_x), y)",
     "cycle = ((F(fake_y) - x) ** 2).mean() + ((G(fake_x) - y) ** 2).mean()",
     "property: generator objective matches the lecture", "squared (L2) error where the lecture says L1"),
    ("cyclegan_losses", "L2 for L1 (L1Loss)", "return output.xp.abs(diff).mean()", "return (diff**2).mean()",
     "L1Loss forward", "SQUARED error (L2) where the lecture says L1"),
    ("cyclegan_losses", "L1 backward without 1/n", "d = grad.data * grad.xp.sign(diff) / diff.size",
     "d = grad.data * grad.xp.sign(diff)", "L1Loss gradcheck", "1/n of the mean is missing"),
    ("cyclegan_losses", "generator fakes detached before D", "gan = lsgan(D_B(fake_y), 1.0)",
     "gan = lsgan(D_B(fake_y.detach()), 1.0)", "property: generator gradients reach G and F",
     "adversarial terms send no gradient"),
]

# Mistakes whose hint used to mislead: the right hint must appear and the old, wrong one must not.
# (exercise, mistake, old text, wrong text, failing check, right hint, the misleading phrase)
MISLEADING_BEFORE = [
    ("conv2d", "cropped [:H] instead of [p:p+H]", "dx = dx_pad[:, :, p : p + h, p : p + w]",
     "dx = dx_pad[:, :, :h, :w]", "Conv2d gradcheck", "dx_pad[:, :, p:p+H, p:p+W]", "accumulate"),
    ("conv2d", "cropped [:H] (property)", "dx = dx_pad[:, :, p : p + h, p : p + w]",
     "dx = dx_pad[:, :, :h, :w]", "property: every window sends gradient to its pixels", "p = 1 pixels",
     "accumulate"),
    ("layer_norm", "G instead of γ⊙G", "ghat = g * weight", "ghat = g",
     "LayerNorm gradcheck", "ĝ = γ ⊙ G", "through μ and σ"),
    ("layer_norm", "G instead of γ⊙G (property)", "ghat = g * weight", "ghat = g",
     "property: gradient ignores shift and scale of a row", "ĝ = γ ⊙ G", "through μ and σ"),
    ("attention", "softmax backward summed over the wrong axis",
     "grad_s = a * (grad_a - (grad_a * a).sum(axis=-1, keepdims=True))",
     "grad_s = a * (grad_a - (grad_a * a).sum(axis=-2, keepdims=True))",
     "CausalAttention gradcheck", "sums over the wrong axis", "causal"),
    ("ddpm", "ᾱ·g instead of √ᾱ·g", "return Tensor(signal * grad.data),", "return Tensor(signal**2 * grad.data),",
     "QSample gradcheck", "not ᾱ_t", "no gradient"),
]
# fmt: on


def solution(name: str) -> str:
    return (SOLUTIONS / f"{name}.py").read_text()


def with_mistake(tmp_path: Path, name: str, old: str, new: str) -> Path:
    return solution_with_mistakes(tmp_path, name, [(old, new)])


@pytest.mark.parametrize("name", list(EXERCISES))
def test_correct_solution_passes(name):
    report = check_file(get(name), SOLUTIONS / f"{name}.py", max_examples=EXAMPLES)
    assert report.passed, report.text()
    names = [c.name for c in report.checks]
    # forward, gradient shapes and gradcheck for every op; the properties; the GPU path
    assert len(names) == 3 * len(get(name).OPS) + len(get(name).PROPERTIES) + 1
    assert "GPU path (stand-in device)" in names


@pytest.mark.parametrize(
    ("name", "mistake", "old", "new", "failing", "hint"), MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES]
)
def test_typical_mistake_fails_with_the_right_hint(tmp_path, name, mistake, old, new, failing, hint):
    report = check_file(get(name), with_mistake(tmp_path, name, old, new), max_examples=EXAMPLES)
    assert_fails_with_hint(report, failing, hint)


@pytest.mark.parametrize(
    ("name", "mistake", "old", "new", "failing", "hint", "misleading"),
    MISLEADING_BEFORE,
    ids=[f"{m[0]}: {m[1]}" for m in MISLEADING_BEFORE],
)
def test_formerly_misleading_hint_now_names_the_mistake(tmp_path, name, mistake, old, new, failing, hint, misleading):
    report = check_file(get(name), with_mistake(tmp_path, name, old, new), max_examples=EXAMPLES)
    check = check_named(report, failing)
    assert not check.passed, report.text()
    assert any(hint in h for h in check.hints), f"expected a hint with {hint!r}:\n{report.text()}"
    assert not any(misleading in h for h in check.hints), f"misleading hint {misleading!r}:\n{report.text()}"


def _mistakes_in_own_test_file(name: str) -> int:
    """Later exercises keep their typical mistakes in tests/test_exercise_<name>.py."""
    path = Path(__file__).parent / f"test_exercise_{name}.py"
    if not path.exists():
        return 0
    spec = importlib.util.spec_from_file_location(f"_mistakes_of_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return len(module.MISTAKES)


def test_every_exercise_has_at_least_two_typical_mistakes():
    counts = {name: sum(m[0] == name for m in MISTAKES) + _mistakes_in_own_test_file(name) for name in EXERCISES}
    assert all(n >= 2 for n in counts.values()), counts


@pytest.mark.parametrize("name", list(EXERCISES))
def test_template_stubs_say_not_implemented_yet(tmp_path, name, capsys):
    assert main(["start", name, str(tmp_path)]) == 0
    path = tmp_path / f"{name}.py"
    text = path.read_text()
    assert "The maths" in text and "Shapes" in text and f"check {name}" in text
    for op in get(name).OPS:
        assert f"class {op.name}(Function)" in text
    report = check_file(get(name), path, max_examples=1)
    assert not report.passed
    for check in report.checks[:-1]:  # the GPU path is skipped once the CPU fails
        if check.name.endswith("forward") and check.passed:  # only where the template gives the forward
            given = text.split(f"class {check.name.split()[0]}(")[1].split("def backward")[0]
            assert "NotImplementedError" not in given
            continue
        assert not check.passed and check.not_implemented, check
        assert check.summary.startswith("not implemented yet"), check.summary
    assert "Traceback" not in report.text()


def test_gradcheck_failure_shows_the_per_element_report(tmp_path):
    _, _, old, new, failing, _ = MISTAKES[0]
    report = check_file(get("sigmoid_tanh"), with_mistake(tmp_path, "sigmoid_tanh", old, new), max_examples=1)
    check = check_named(report, failing)
    assert "index" in check.details and "analytical" in check.details and "numerical" in check.details
    assert "seed=" in check.details
    assert check.case and "x shape" in check.case


def test_numpy_on_tensor_data_fails_the_gpu_path(tmp_path):
    source = "import numpy as np\n" + solution("sigmoid_tanh").replace("x.xp.tanh(x.data)", "np.tanh(x.data)")
    path = tmp_path / "sigmoid_tanh.py"
    path.write_text(source)
    report = check_file(get("sigmoid_tanh"), path, max_examples=1)
    gpu = check_named(report, "GPU path (stand-in device)")
    assert not gpu.passed and any("x.xp" in h for h in gpu.hints)
    assert check_named(report, "Tanh forward").passed  # it works on the CPU


def test_float64_constant_fails_the_float32_check(tmp_path):
    source = solution("sigmoid_tanh").replace("x.xp.tanh(0.5 * x.data)", "x.xp.tanh(x.xp.float64(0.5) * x.data)")
    path = tmp_path / "sigmoid_tanh.py"
    path.write_text(source)
    check = check_named(check_file(get("sigmoid_tanh"), path, max_examples=1), "Sigmoid forward")
    assert not check.passed and "float32" in check.summary


def test_a_student_error_names_the_line_of_the_student_file(tmp_path):
    path = with_mistake(tmp_path, "sigmoid_tanh", "return grad * (1.0 - y * y)", "return grad * (1.0 - y * z)")
    check = check_named(check_file(get("sigmoid_tanh"), path, max_examples=1), "Tanh gradient shapes")
    assert not check.passed
    assert "NameError" in check.summary and "your file, line" in check.summary and "y * z" in check.summary


def test_broken_and_incomplete_files_fail_cleanly(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    report = check_file(get("rope"), broken)
    assert not report.passed and "could not be imported" in report.checks[0].summary
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    report = check_file(get("rope"), empty)
    assert not report.passed and "Rope" in report.checks[0].summary
    assert not check_file(get("rope"), tmp_path / "missing.py").passed


# ------------------------------------------------------------------------------ the CLI
def test_cli_list_names_every_exercise(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in EXERCISES:
        assert name in out
    assert len(EXERCISES) == 14


def test_cli_start_never_overwrites_without_force(tmp_path, capsys):
    assert main(["start", "rope", str(tmp_path / "work")]) == 0
    path = tmp_path / "work" / "rope.py"
    path.write_text("my work")
    assert main(["start", "rope", str(tmp_path / "work")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_text() == "my work"
    assert main(["start", "rope", str(tmp_path / "work"), "--force"]) == 0
    assert path.read_text() == get("rope").TEMPLATE


def test_cli_check_exit_status_and_json(tmp_path, capsys):
    good = SOLUTIONS / "vae.py"
    assert main(["check", "vae", str(good), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out
    bad = with_mistake(tmp_path, "vae", "grad_mu = g * mu", "grad_mu = -g * mu")
    assert main(["check", "vae", str(bad), "--examples", "1", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["exercise"] == "vae" and result["passed"] is False
    assert result["score"] < result["total"] == len(result["checks"])
    failed = [c for c in result["checks"] if not c["passed"]]
    assert failed[0]["name"] == "KLDivergence gradcheck" and failed[0]["hints"]


def test_cli_unknown_exercise(capsys):
    assert main(["start", "no_such_thing", "."]) == 2
    assert "rope" in capsys.readouterr().err


# ------------------------------------------------------------- wording and scoring (issue 12 §6)
def test_forward_errors_quote_the_line_of_the_student_file(tmp_path):
    # The engine re-raises a forward error with the op's inputs added; the student's line must survive.
    path = with_mistake(
        tmp_path, "attention", "scores = q.data @ k.data.swapaxes(-1, -2) / math.sqrt(d)", "scores = q.data @ k.data"
    )
    check = check_named(check_file(get("attention"), path, max_examples=1), "CausalAttention forward")
    assert not check.passed
    assert "your file, line" in check.summary and "q.data @ k.data" in check.summary, check.summary


def test_layer_norm_scaling_failure_prints_the_scaling_figure(tmp_path):
    path = with_mistake(tmp_path, "layer_norm", "ghat = g * weight", "ghat = g")
    check = check_named(
        check_file(get("layer_norm"), path, max_examples=1), "property: gradient ignores shift and scale of a row"
    )
    assert not check.passed
    assert "scaled" in check.summary and "Σ_i ∂L/∂x_i (x_i − μ) =" in check.summary, check.summary
    assert "should be 0" not in check.summary  # the shift sum (≈ 0 here) is not what failed


def test_backward_that_changes_the_incoming_gradient_fails(tmp_path):
    path = with_mistake(
        tmp_path, "vae", "g = grad.data.reshape(-1, 1)", "grad.data *= 1.0001\n        g = grad.data.reshape(-1, 1)"
    )
    check = check_named(check_file(get("vae"), path, max_examples=1), "KLDivergence gradient shapes")
    assert not check.passed and "changed the incoming gradient grad in place" in check.summary


def test_passing_checks_say_the_inputs_were_left_unchanged():
    report = check_file(get("sigmoid_tanh"), SOLUTIONS / "sigmoid_tanh.py", max_examples=1)
    assert "leaves its inputs unchanged" in check_named(report, "Sigmoid forward").summary
    assert "inputs and incoming gradient unchanged" in check_named(report, "Sigmoid gradient shapes").summary


@pytest.mark.parametrize("content", ["def f(:\n", "x = 1\n", None], ids=["syntax error", "no classes", "missing"])
def test_every_submission_is_scored_out_of_the_same_total(tmp_path, content):
    good = check_file(get("rope"), SOLUTIONS / "rope.py", max_examples=1)
    path = tmp_path / "rope.py"
    if content is not None:
        path.write_text(content)
    bad = check_file(get("rope"), path, max_examples=1)
    assert [c.name for c in bad.checks] == [c.name for c in good.checks]
    assert not any(c.passed for c in bad.checks)
    assert bad.to_dict()["total"] == good.to_dict()["total"] == len(good.checks)


def test_cli_gradescope_format(tmp_path, capsys):
    bad = with_mistake(tmp_path, "vae", "grad_mu = g * mu", "grad_mu = -g * mu")
    assert main(["check", "vae", str(bad), "--examples", "1", "--format", "gradescope"]) == 1
    results = json.loads(capsys.readouterr().out)
    names = [c.name for c in check_file(get("vae"), bad, max_examples=1).checks]
    assert [t["name"] for t in results["tests"]] == names
    assert all(set(t) == {"name", "score", "max_score", "output"} for t in results["tests"])
    assert all(t["max_score"] == 1.0 and t["score"] in (0.0, 1.0) for t in results["tests"])
    assert results["score"] == sum(t["score"] for t in results["tests"]) < len(names)
    failed = [t for t in results["tests"] if t["score"] == 0.0]
    assert failed[0]["name"] == "KLDivergence gradcheck" and "hint: ∂KL/∂μ = +μ" in failed[0]["output"]

    broken = tmp_path / "broken.py"
    broken.write_text("class KLDivergence(:\n")
    assert main(["check", "vae", str(broken), "--format", "gradescope"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert results["score"] == 0.0 and len(results["tests"]) == len(names)
    assert "could not be imported" in results["tests"][0]["output"]


def test_cli_json_flag_is_the_json_format(tmp_path, capsys):
    good = SOLUTIONS / "vae.py"
    assert main(["check", "vae", str(good), "--examples", "1", "--json"]) == 0
    flag = json.loads(capsys.readouterr().out)
    assert main(["check", "vae", str(good), "--examples", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == flag
    assert set(flag) == {"exercise", "file", "passed", "score", "total", "checks"}
