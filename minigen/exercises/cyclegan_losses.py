"""Exercise 11: the CycleGAN objectives (adversarial + cycle + identity, and the discriminators')."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

import minigen as mg
import minigen.nn as nn
from minigen import autograd
from minigen.exercises.checker import Case, CheckFailed, Op, Student, close, constant_ratio
from minigen.models import cyclegan
from minigen.ops.loss import l1_loss
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "cyclegan_losses"
TITLE = "CycleGAN: the generator objective (adversarial + cycle + identity) and the discriminator objective"
TOPIC = "image-to-image translation"

TEMPLATE = '''"""Exercise: the CycleGAN objectives, and the L1 loss they are built from.

The maths
---------
Two generators translate between domains A and B, G: A → B and F: B → A; two
discriminators score images, D_A for domain A and D_B for domain B. They output an
unbounded score map (least-squares GAN, "LSGAN": real is 1, fake is 0).

The L1 loss between two images, the mean absolute difference over its n elements:

    L1(a, b) = (1/n) Σ |a_i − b_i|
    ∂L1/∂a = g · sign(a − b) / n,      ∂L1/∂b = −g · sign(a − b) / n      (g: the upstream scalar)

The generators' objective, for a batch x of domain A and a batch y of domain B:

    L_G = L_GAN(G, D_B) + L_GAN(F, D_A) + λ_cyc · L_cyc + λ_id · L_id

    L_GAN(G, D_B) = mean (D_B(G(x)) − 1)²          L_GAN(F, D_A) = mean (D_A(F(y)) − 1)²
    L_cyc = L1(F(G(x)), x) + L1(G(F(y)), y)       cycle consistency, BOTH directions
    L_id  = L1(G(y), y)    + L1(F(x), x)          identity: G leaves a B alone, F an A

with λ_cyc = 10 and λ_id = 0.5 · λ_cyc by default (use the arguments you are given).

The discriminators' objective, given fakes fake_y = G(x) and fake_x = F(y) made by
the generators (they still carry the generators' graph!):

    L_D = ½ [mean (D_A(x) − 1)² + mean D_A(fake_x)²] + ½ [mean (D_B(y) − 1)² + mean D_B(fake_y)²]

The discriminator step must not change G or F: no gradient of L_D may reach them.

Shapes
------
    L1Loss:          output, target (any shape, the same)  ->  a scalar (shape ());
                     backward returns (∂L/∂output, ∂L/∂target)
    x, y, fake_x, fake_y: (N, C, H, W) images; G, F, D_A, D_B: callables (minigen Modules)
    generator_objective / discriminator_objective: return a scalar Tensor

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = output.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
* backward(self, grad) receives the upstream gradient as a Tensor and returns one Tensor
  (or None) per input. Wrap arrays with Tensor(array).
The two objectives are plain functions of Tensors: write them with Tensor operations
(a - b, a * a, .mean(), ...), and use L1Loss.apply(a, b) for every L1 term. Autograd
builds their backward for you.

Check your work:
    python -m minigen.exercises check cyclegan_losses THIS_FILE
"""

from minigen import Function, Tensor


class L1Loss(Function):
    """L = mean |a − b|;  ∂L/∂a = g · sign(a − b) / n,  ∂L/∂b = −g · sign(a − b) / n."""

    def forward(self, output: Tensor, target: Tensor):
        raise NotImplementedError("not implemented yet: L1Loss.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: L1Loss.backward")


def generator_objective(G, F, D_A, D_B, x, y, lambda_cyc=10.0, lambda_id=5.0):
    """L_G = L_GAN(G, D_B) + L_GAN(F, D_A) + λ_cyc · L_cyc + λ_id · L_id (a scalar Tensor)."""
    raise NotImplementedError("not implemented yet: generator_objective")


def discriminator_objective(D_A, D_B, x, y, fake_x, fake_y):
    """L_D = ½[(D_A(x) − 1)² + D_A(fake_x)²] + ½[(D_B(y) − 1)² + D_B(fake_y)²], means over the maps."""
    raise NotImplementedError("not implemented yet: discriminator_objective")
'''


# ------------------------------------------------------------------------ references
def reference_l1(output: Tensor, target: Tensor) -> Tensor:
    return l1_loss(output, target)


OPS = (Op("L1Loss", inputs=("output", "target"), differentiable=("output", "target"), reference=reference_l1),)


# ----------------------------------------------------------------------------- inputs
IMAGE_SHAPE = (2, 1, 4, 4)  # the batches x and y the objectives are checked on


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """L1: output and target of 1-4 dims with |output − target| in [0.1, 1.5] (away from
    the kink at 0); objectives: images x, y in [−1, 1], networks from ``seed``, λ_cyc."""
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple))
    target = draw(arrays(shape, low=-1.0, high=1.0))
    gap = draw(arrays(shape, low=0.1, high=1.5))
    signs = draw(arrays(shape, low=-1.0, high=1.0).map(lambda a: np.where(a < 0, -1.0, 1.0)))
    images = {name: draw(arrays(IMAGE_SHAPE, low=-1.0, high=1.0)) for name in ("x", "y")}
    params = {"seed": draw(st.integers(0, 2**16)), "lambda_cyc": draw(st.sampled_from([10.0, 4.0]))}
    return Case({"output": target + signs * gap, "target": target, **images}, params)


_rng = np.random.default_rng(11)
EXAMPLES = [
    Case(
        {
            "output": np.array([[0.5, -0.3, 1.2], [0.0, 0.9, -1.1]]),
            "target": np.array([[0.1, 0.4, 0.2], [-0.6, 1.3, -0.2]]),
            "x": _rng.uniform(-1, 1, IMAGE_SHAPE),
            "y": _rng.uniform(-1, 1, IMAGE_SHAPE),
        },
        {"seed": 7, "lambda_cyc": 10.0},
    )
]


# --------------------------------------------------------------- the networks checked with
class _Translator(nn.Module):
    """A tiny generator for the checks: tanh(Conv3×3(x))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).tanh()


class _Critic(nn.Module):
    """A tiny patch discriminator for the checks: a map of scores, Conv2×2(x) (3×3 for a 4×4 image)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _networks(case: Case, device: str = "cpu") -> dict[str, nn.Module]:
    """G, F, D_A, D_B in float64 with weights drawn from the case's seed."""
    rng = np.random.default_rng(case.params["seed"])
    channels = case.arrays["x"].shape[1]
    nets = {"G": _Translator(channels), "F": _Translator(channels), "D_A": _Critic(channels), "D_B": _Critic(channels)}
    for net in nets.values():
        for p in net.parameters():
            p.data = rng.normal(0.0, 0.6, p.shape)
        net.to(device)
    return nets


def _images(case: Case, device: str = "cpu") -> tuple[Tensor, Tensor]:
    return mg.tensor(case.arrays["x"], device=device), mg.tensor(case.arrays["y"], device=device)


def _student_function(student: Student, name: str) -> Callable[..., Tensor]:
    function = getattr(student.module, name, None)
    if not callable(function):
        raise CheckFailed(
            f"your file must define the function {name}",
            [f"start from the template: python -m minigen.exercises start {NAME} DIR"],
        )
    return function


def _scalar(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != ():
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckFailed(
            f"{name} must return a scalar Tensor (shape ()), got {shape}",
            ["take the mean over all elements of each squared or absolute error, then add the terms"],
        )
    return value


def _lambdas(case: Case) -> tuple[float, float]:
    lambda_cyc = case.params["lambda_cyc"]
    return lambda_cyc, 0.5 * lambda_cyc


def _mean_abs(a: Tensor, b: Tensor) -> float:
    return float(np.abs(a.numpy() - b.numpy()).mean())


def _mean_square(a: Tensor, b: Tensor) -> float:
    return float(((a.numpy() - b.numpy()) ** 2).mean())


def _generator_parts(nets: dict[str, nn.Module], x: Tensor, y: Tensor) -> dict[str, float]:
    """Every term of L_G (and the wrong versions students write), as host numbers."""
    G, F, D_A, D_B = nets["G"], nets["F"], nets["D_A"], nets["D_B"]
    with autograd.no_grad():
        fake_y, fake_x = G(x), F(y)
        score_b, score_a = D_B(fake_y).numpy(), D_A(fake_x).numpy()
        pairs = {"cyc_a": (F(fake_y), x), "cyc_b": (G(fake_x), y), "id_g": (G(y), y), "id_f": (F(x), x)}
        parts = {name: _mean_abs(a, b) for name, (a, b) in pairs.items()}
        parts.update({f"{name}_l2": _mean_square(a, b) for name, (a, b) in pairs.items()})
    parts["gan"] = float(((score_b - 1) ** 2).mean() + ((score_a - 1) ** 2).mean())
    parts["gan_zero_target"] = float((score_b**2).mean() + (score_a**2).mean())
    softplus = np.logaddexp(0.0, -score_b).mean() + np.logaddexp(0.0, -score_a).mean()  # −log σ(s)
    parts["gan_bce"] = float(softplus)
    return parts


def _generator_variants(parts: dict[str, float], lambda_cyc: float, lambda_id: float) -> dict[str, float]:
    """L_G as the lecture writes it ("correct") and as typical mistakes make it, by hint."""
    p = parts
    cycle, identity = p["cyc_a"] + p["cyc_b"], p["id_g"] + p["id_f"]
    base = p["gan"] + lambda_cyc * cycle + lambda_id * identity
    l2 = "you wrote a squared (L2) error where the lecture says L1: the {} term is the mean ABSOLUTE difference"
    fixed = p["gan"] + 10.0 * cycle + 5.0 * identity  # the default weights, whatever was asked
    variants = {
        "correct": base,
        "the cycle term goes in one direction only: you have F(G(x)) ≈ x (A → B → A) but not G(F(y)) ≈ y "
        "(B → A → B); L_cyc needs both": base - lambda_cyc * p["cyc_b"],
        "the cycle term goes in one direction only: you have G(F(y)) ≈ y (B → A → B) but not F(G(x)) ≈ x "
        "(A → B → A); L_cyc needs both": base - lambda_cyc * p["cyc_a"],
        "the cycle term is missing: add λ_cyc (‖F(G(x)) − x‖₁ + ‖G(F(y)) − y‖₁)": base - lambda_cyc * cycle,
        "the identity term is missing: add λ_id (‖G(y) − y‖₁ + ‖F(x) − x‖₁), which keeps G from changing an "
        "image that is already in B (and F one in A)": base - lambda_id * identity,
        "the identity term has only one of its two halves: L_id = ‖G(y) − y‖₁ + ‖F(x) − x‖₁ (you left out "
        "‖F(x) − x‖₁)": base - lambda_id * p["id_f"],
        "the identity term has only one of its two halves: L_id = ‖G(y) − y‖₁ + ‖F(x) − x‖₁ (you left out "
        "‖G(y) − y‖₁)": base - lambda_id * p["id_g"],
        "the identity term is weighted by λ_cyc: its weight is λ_id (0.5 · λ_cyc by default; use the argument)": base
        + (lambda_cyc - lambda_id) * identity,
        l2.format("cycle"): base + lambda_cyc * (p["cyc_a_l2"] + p["cyc_b_l2"] - cycle),
        l2.format("identity"): base + lambda_id * (p["id_g_l2"] + p["id_f_l2"] - identity),
        l2.format("cycle and the identity"): base
        + lambda_cyc * (p["cyc_a_l2"] + p["cyc_b_l2"] - cycle)
        + lambda_id * (p["id_g_l2"] + p["id_f_l2"] - identity),
        "the adversarial terms are least squares towards the REAL score 1: (D_B(G(x)) − 1)² and "
        "(D_A(F(y)) − 1)², not D(…)²": base - p["gan"] + p["gan_zero_target"],
        "the adversarial terms are the LSGAN ones, (D(…) − 1)², not the log loss −log σ(D(…))": base
        - p["gan"]
        + p["gan_bce"],
    }
    if (lambda_cyc, lambda_id) != (10.0, 5.0):
        variants[
            "you used λ_cyc = 10 and λ_id = 5 whatever the arguments say: weight the terms by the "
            "arguments lambda_cyc and lambda_id"
        ] = fixed
    return variants


def _discriminator_parts(nets: dict[str, nn.Module], x: Tensor, y: Tensor) -> tuple[dict[str, float], Tensor, Tensor]:
    """The discriminators' scores on real images and on G(x), F(y); returns the fakes too (no graph)."""
    with autograd.no_grad():
        fake_y, fake_x = nets["G"](x), nets["F"](y)
        real_a, fake_a = nets["D_A"](x).numpy(), nets["D_A"](fake_x).numpy()
        real_b, fake_b = nets["D_B"](y).numpy(), nets["D_B"](fake_y).numpy()
    parts = {
        "a": float(((real_a - 1) ** 2).mean() + (fake_a**2).mean()),
        "b": float(((real_b - 1) ** 2).mean() + (fake_b**2).mean()),
        "a_swapped": float((real_a**2).mean() + ((fake_a - 1) ** 2).mean()),
        "b_swapped": float((real_b**2).mean() + ((fake_b - 1) ** 2).mean()),
    }
    return parts, fake_x, fake_y


def _diagnose(mine: float, variants: dict[str, float]) -> list[str]:
    return [hint for hint, value in variants.items() if hint != "correct" and np.isclose(mine, value, rtol=1e-9)]


# ------------------------------------------------------------------------- properties
def generator_objective_matches_the_lecture(student: Student, case: Case) -> None:
    """L_G = L_GAN(G) + L_GAN(F) + λ_cyc L_cyc + λ_id L_id, the value of the lecture's formula."""
    objective = _student_function(student, "generator_objective")
    nets, (x, y) = _networks(case), _images(case)
    lambda_cyc, lambda_id = _lambdas(case)
    with autograd.no_grad():
        mine = _scalar(
            objective(nets["G"], nets["F"], nets["D_A"], nets["D_B"], x, y, lambda_cyc=lambda_cyc, lambda_id=lambda_id),
            "generator_objective",
        )
    variants = _generator_variants(_generator_parts(nets, x, y), lambda_cyc, lambda_id)
    value = float(mine.numpy())
    if not np.isclose(value, variants["correct"], rtol=1e-9, atol=1e-12):
        hints = _diagnose(value, variants)
        ratio = value / variants["correct"] if variants["correct"] else float("nan")
        if not hints and np.isclose(ratio, 2.0):
            hints = ["your objective is twice the lecture's: every term is a mean, and each appears once"]
        raise CheckFailed(
            f"generator_objective gives {value:.10g}, the lecture's L_G is {variants['correct']:.10g} "
            f"(λ_cyc = {lambda_cyc:g}, λ_id = {lambda_id:g})",
            hints
            or [
                "compare each of the six terms with the formula in the template: two LSGAN terms, two "
                "cycle L1 terms and two identity L1 terms"
            ],
        )


def _without_adversarial_gradient(
    G: nn.Module,
    F: nn.Module,
    D_A: nn.Module,
    D_B: nn.Module,
    x: Tensor,
    y: Tensor,
    lambda_cyc: float,
    lambda_id: float,
) -> Tensor:
    """L_G with the fakes detached before D: the value is right, but D sends G and F nothing."""
    gan = cyclegan.lsgan_generator_loss(D_B(G(x).detach())) + cyclegan.lsgan_generator_loss(D_A(F(y).detach()))
    cycle = cyclegan.cycle_loss(x, F(G(x)), y, G(F(y)))
    return gan + lambda_cyc * cycle + lambda_id * cyclegan.identity_loss(x, F(x), y, G(y))


def generator_gradients_reach_G_and_F(student: Student, case: Case) -> None:
    """∂L_G/∂θ_G and ∂L_G/∂θ_F agree with the lecture's objective (the cycle terms train both G and F)."""
    objective = _student_function(student, "generator_objective")
    lambda_cyc, lambda_id = _lambdas(case)
    grads, values = {}, {}
    functions = (
        ("yours", objective),
        ("lecture", cyclegan.generator_objective),
        ("detached", _without_adversarial_gradient),
    )
    for who, fn in functions:
        nets, (x, y) = _networks(case), _images(case)
        loss = _scalar(
            fn(nets["G"], nets["F"], nets["D_A"], nets["D_B"], x, y, lambda_cyc=lambda_cyc, lambda_id=lambda_id),
            "generator_objective",
        )
        loss.backward()
        values[who] = float(loss.detach().numpy())
        grads[who] = {
            f"{net}.{name}": (np.zeros(p.shape) if p.grad is None else p.grad.numpy())
            for net in ("G", "F")
            for name, p in nets[net].named_parameters()
        }
    for name, want in grads["lecture"].items():
        got = grads["yours"][name]
        if close(got, want):
            continue
        net = name.split(".")[0]
        if not np.isclose(values["yours"], values["lecture"], rtol=1e-9, atol=1e-12):
            hint = "the objective's value already differs from the lecture's: fix that first (see the check above)"
        elif not np.any(got):
            hint = (
                f"no gradient reaches {net}: every term that uses {net}'s output must stay in the graph (no "
                ".detach(), .data or .numpy() inside the generator objective)"
            )
        elif close(got, grads["detached"][name]):
            hint = (
                "the adversarial terms send no gradient to the generators: G(x) and F(y) must not be detached "
                "before D_B and D_A in the generator objective (G learns only through ∂D_B(G(x))/∂G(x))"
            )
        elif (c := constant_ratio(got, want)) is not None:
            hint = f"{net}'s gradient is {c:.4g} times the lecture's: check the weights λ and your L1Loss's 1/n"
        else:
            hint = (
                "the gradient differs though the graph reaches the networks: check the L1Loss backward "
                "(g · sign(a − b) / n) and that each term is computed as in the template"
            )
        raise CheckFailed(f"the gradient of generator_objective for {name} differs from the lecture's", [hint])


def discriminator_objective_matches_the_lecture(student: Student, case: Case) -> None:
    """L_D = ½[(D_A(x) − 1)² + D_A(F(y))²] + ½[(D_B(y) − 1)² + D_B(G(x))²], the lecture's value."""
    objective = _student_function(student, "discriminator_objective")
    nets, (x, y) = _networks(case), _images(case)
    parts, fake_x, fake_y = _discriminator_parts(nets, x, y)
    with autograd.no_grad():
        mine = float(_scalar(objective(nets["D_A"], nets["D_B"], x, y, fake_x, fake_y), "discriminator").numpy())
    want = 0.5 * (parts["a"] + parts["b"])
    if np.isclose(mine, want, rtol=1e-9, atol=1e-12):
        return
    variants = {
        "the ½ is missing: each discriminator's loss is ½[(D(real) − 1)² + D(fake)²]": parts["a"] + parts["b"],
        "the ½ of D_A's loss is missing: each discriminator's loss is ½[(D(real) − 1)² + D(fake)²]": parts["a"]
        + 0.5 * parts["b"],
        "the ½ of D_B's loss is missing: each discriminator's loss is ½[(D(real) − 1)² + D(fake)²]": 0.5 * parts["a"]
        + parts["b"],
        "real and fake are swapped: real images are scored towards 1 and fakes towards 0": 0.5
        * (parts["a_swapped"] + parts["b_swapped"]),
        "only D_B is trained: L_D adds D_A's loss on (x, F(y)) and D_B's on (y, G(x))": 0.5 * parts["b"],
        "only D_A is trained: L_D adds D_A's loss on (x, F(y)) and D_B's on (y, G(x))": 0.5 * parts["a"],
    }
    raise CheckFailed(
        f"discriminator_objective gives {mine:.10g}, the lecture's L_D is {want:.10g}",
        _diagnose(mine, variants) or ["D_A judges domain A (x real, fake_x = F(y) fake), D_B judges domain B"],
    )


def discriminator_step_leaves_G_and_F_alone(student: Student, case: Case) -> None:
    """Backward of L_D on fakes that still carry G's and F's graph gives G and F no gradient."""
    objective = _student_function(student, "discriminator_objective")
    nets, (x, y) = _networks(case), _images(case)
    fake_y, fake_x = nets["G"](x), nets["F"](y)  # with the generators' graph, as in a training step
    loss = _scalar(objective(nets["D_A"], nets["D_B"], x, y, fake_x, fake_y), "discriminator_objective")
    loss.backward()
    leaked = [
        f"{net}.{name}"
        for net in ("G", "F")
        for name, p in nets[net].named_parameters()
        if p.grad is not None and np.any(p.grad.numpy())
    ]
    if leaked:
        raise CheckFailed(
            f"the discriminator objective sends gradient into the generators ({', '.join(leaked)})",
            [
                "detach the fakes inside discriminator_objective (fake_x.detach(), fake_y.detach()): they still "
                "carry G's and F's graph, and without detach the D step's gradient leaks into the generators "
                "(training them to help D)"
            ],
        )
    untrained = [net for net in ("D_A", "D_B") if all(p.grad is None for p in nets[net].parameters())]
    if untrained:
        raise CheckFailed(
            f"the discriminator objective gives no gradient to {', '.join(untrained)}",
            ["score the real and the fake images with the discriminators themselves (no detach of D's outputs)"],
        )


def objectives_run_on_the_gpu(student: Student, case: Case) -> None:
    """Both objectives run on the stand-in GPU (no NumPy on tensor data) and agree with the CPU."""
    lambda_cyc, lambda_id = _lambdas(case)
    values = []
    for device in ("cpu", "standin"):
        nets, (x, y) = _networks(case, device), _images(case, device)
        with autograd.no_grad():
            g = _student_function(student, "generator_objective")(
                nets["G"], nets["F"], nets["D_A"], nets["D_B"], x, y, lambda_cyc=lambda_cyc, lambda_id=lambda_id
            )
            fake_y, fake_x = nets["G"](x), nets["F"](y)
            d = _student_function(student, "discriminator_objective")(nets["D_A"], nets["D_B"], x, y, fake_x, fake_y)
        values.append([float(_scalar(g, "generator_objective").numpy()), float(_scalar(d, "discriminator").numpy())])
    if not np.allclose(values[0], values[1], rtol=1e-9):
        raise CheckFailed(f"the objectives give {values[1]} on the stand-in GPU but {values[0]} on the CPU")


PROPERTIES = (
    generator_objective_matches_the_lecture,
    generator_gradients_reach_G_and_F,
    discriminator_objective_matches_the_lecture,
    discriminator_step_leaves_G_and_F_alone,
    objectives_run_on_the_gpu,
)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    diff = case.arrays["output"] - case.arrays["target"]
    if close(mine, np.mean(diff**2)):
        return ["you computed the mean SQUARED error (L2) where the lecture says L1: mean |a − b|"]
    if close(mine, np.sum(np.abs(diff))):
        return ["you summed |a − b|: the L1 loss is the MEAN, divide by the number of elements"]
    if close(mine, np.mean(diff)) or close(mine, -np.mean(diff)):
        return ["the absolute value is missing: L1 = mean |a − b|"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    diff = case.arrays["output"] - case.arrays["target"]
    n = diff.size
    got = mine["output"]
    if close(got, g * 2.0 * diff / n):
        return ["you returned the gradient of the squared error, 2(a − b)/n: for L1 it is sign(a − b)/n"]
    if close(got, want["output"]) and (mine["target"] is None or close(mine["target"], want["target"])):
        return ["your backward is L1's gradient, so it is the forward that is wrong (see L1Loss forward)"]
    if close(got, g * np.sign(diff)):
        return ["the 1/n of the mean is missing: ∂L/∂a = g · sign(a − b) / n"]
    if mine["target"] is not None and close(mine["target"], want["output"]):
        return ["∂L/∂target has the wrong sign: it is −g · sign(a − b) / n, minus ∂L/∂output"]
    return []
