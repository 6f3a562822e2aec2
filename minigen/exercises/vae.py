"""Exercise 9: the VAE reparameterisation trick and the gradient of the KL term."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close, constant_ratio
from minigen.models.vae import kl_divergence, reparameterize
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "vae"
TITLE = "VAE: the reparameterisation trick and the KL gradient"
TOPIC = "variational autoencoders"

TEMPLATE = '''"""Exercise: the VAE reparameterisation trick and the KL term, forward and backward.

The maths
---------
The encoder outputs, per sample, a mean μ and a log-variance ℓ = log σ² (d values each).

Reparameterisation: a sample z ~ N(μ, σ²) written as a differentiable function of
(μ, ℓ) and outside noise ε ~ N(0, I) (given as an input, so checks are repeatable):

    σ = exp(ℓ / 2),     z = μ + σ ⊙ ε

    ∂L/∂μ = g,          ∂L/∂ℓ = g ⊙ ε ⊙ ∂σ/∂ℓ = g ⊙ ε ⊙ σ / 2        (g = ∂L/∂z)

Note the 1/2: the input is the LOG-VARIANCE ℓ, not σ. ε is noise, not a parameter:
return None for it.

KL term of the ELBO, KL(N(μ, σ²) ‖ N(0, I)), one value per sample (sum over the d dims):

    KL = −½ Σ_j (1 + ℓ_j − μ_j² − e^(ℓ_j))

    ∂KL/∂μ_j = μ_j,     ∂KL/∂ℓ_j = ½ (e^(ℓ_j) − 1)        (times the upstream g_n of sample n)

KL ≥ 0, with equality exactly at the prior, μ = 0 and ℓ = 0 (σ = 1).

Shapes
------
    mu, logvar, eps: (N, d)
    Reparameterize: z (N, d); backward returns (∂L/∂mu, ∂L/∂logvar, None)
    KLDivergence:   KL (N,);  backward returns (∂L/∂mu, ∂L/∂logvar); the upstream gradient
                    has shape (N,): reshape it to (N, 1) to broadcast over the d dims

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = mu.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
* backward(self, grad) receives the upstream gradient as a Tensor and returns one Tensor
  (or None) per input. Wrap arrays with Tensor(array).

Check your work:
    python -m minigen.exercises check vae THIS_FILE
"""

from minigen import Function, Tensor


class Reparameterize(Function):
    """z = μ + exp(ℓ/2) ⊙ ε;  ∂L/∂μ = g,  ∂L/∂ℓ = g ⊙ ε ⊙ exp(ℓ/2) / 2."""

    def forward(self, mu: Tensor, logvar: Tensor, eps: Tensor):
        raise NotImplementedError("not implemented yet: Reparameterize.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: Reparameterize.backward")


class KLDivergence(Function):
    """KL_n = −½ Σ_j (1 + ℓ − μ² − e^ℓ);  ∂/∂μ = g μ,  ∂/∂ℓ = g (e^ℓ − 1)/2."""

    def forward(self, mu: Tensor, logvar: Tensor):
        raise NotImplementedError("not implemented yet: KLDivergence.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: KLDivergence.backward")
'''


def reference_reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    return reparameterize(mu, logvar, eps)


def reference_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    return kl_divergence(mu, logvar)


OPS = (
    Op(
        "Reparameterize",
        inputs=("mu", "logvar", "eps"),
        differentiable=("mu", "logvar"),
        reference=reference_reparameterize,
    ),
    Op("KLDivergence", inputs=("mu", "logvar"), differentiable=("mu", "logvar"), reference=reference_kl),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """N = 1..3 samples of d = 1..4 latent dims; μ, log σ², ε in [−2, 2]."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    return Case({name: draw(arrays(shape, low=-2.0, high=2.0)) for name in ("mu", "logvar", "eps")})


_rng = np.random.default_rng(10)
EXAMPLES = [Case({name: _rng.uniform(-1.5, 1.5, (3, 4)) for name in ("mu", "logvar", "eps")})]


# ------------------------------------------------------------------------- properties
def z_is_mean_plus_scaled_noise(student: Student, case: Case) -> None:
    """z − μ = σ ε exactly, and ∂z/∂μ = 1: the noise is outside the path of the gradient."""
    mu, logvar, eps = case.arrays["mu"], case.arrays["logvar"], case.arrays["eps"]
    z = student.forward("Reparameterize", case)
    if not np.allclose(z - mu, np.exp(0.5 * logvar) * eps, atol=1e-12):
        hints = []
        if np.allclose(z - mu, np.exp(logvar) * eps, atol=1e-12):
            hints.append("you scaled ε by exp(ℓ) = σ², the variance; use the standard deviation σ = exp(ℓ/2)")
        elif np.allclose(z - mu, logvar * eps, atol=1e-12):
            hints.append("you scaled ε by ℓ = log σ² itself; σ = exp(ℓ/2)")
        raise CheckFailed("z − μ ≠ exp(ℓ/2) ⊙ ε", hints)
    g = student.upstream("Reparameterize", case)
    grads = student.vjp("Reparameterize", case, g)
    if grads["mu"] is not None and grads["mu"].shape == mu.shape and not np.allclose(grads["mu"], g):
        raise CheckFailed("∂L/∂μ must be exactly g: z = μ + (something independent of μ)")


def kl_vanishes_only_at_the_prior(student: Student, case: Case) -> None:
    """KL ≥ 0; KL = 0 and its gradient = 0 at μ = 0, log σ² = 0."""
    mu = case.arrays["mu"]
    kl = student.forward("KLDivergence", case)
    if np.any(kl < -1e-12):
        raise CheckFailed(f"KL must be ≥ 0, got {kl.tolist()}", ["check the sign: KL = −½ Σ (1 + ℓ − μ² − e^ℓ)"])
    prior = case.with_arrays(mu=np.zeros_like(mu), logvar=np.zeros_like(mu))
    at_prior = student.forward("KLDivergence", prior)
    if not np.allclose(at_prior, 0.0, atol=1e-12):
        raise CheckFailed(f"KL of the prior itself (μ = 0, ℓ = 0) must be 0, got {at_prior.tolist()}")
    grads = student.vjp("KLDivergence", prior, np.ones(mu.shape[0]))
    for name in ("mu", "logvar"):
        d = grads[name]
        if d is not None and d.shape == mu.shape and not np.allclose(d, 0.0, atol=1e-12):
            raise CheckFailed(
                f"at the prior (its minimum) ∂KL/∂{name} must be 0, got {d.tolist()}",
                ["∂KL/∂μ = μ and ∂KL/∂ℓ = ½(e^ℓ − 1) both vanish at μ = 0, ℓ = 0"],
            )


PROPERTIES = (z_is_mean_plus_scaled_noise, kl_vanishes_only_at_the_prior)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    if op == "KLDivergence" and close(mine, -want):
        return ["your KL has the wrong sign: KL = −½ Σ (1 + ℓ − μ² − e^ℓ) is ≥ 0"]
    if op == "KLDivergence" and close(mine, 2 * want):
        return ["the factor ½ of the KL is missing"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    logvar, eps = case.arrays["logvar"], case.arrays["eps"]
    hints = []
    if op == "Reparameterize":
        if close(mine["logvar"], g * eps):
            hints.append(
                "you returned ∂L/∂σ = g ⊙ ε, but the input is ℓ = log σ²: multiply by ∂σ/∂ℓ = σ/2 (∂L/∂ℓ = g ⊙ ε ⊙ σ/2)"
            )
        elif mine["logvar"] is not None and (c := constant_ratio(mine["logvar"], want["logvar"])) is not None:
            if abs(c - 2) < 1e-6:
                hints.append("∂σ/∂ℓ = ∂exp(ℓ/2)/∂ℓ = σ/2: the ½ from the chain rule is missing")
    if op == "KLDivergence":
        n = g.reshape(-1, 1)
        if close(mine["logvar"], n * (np.exp(logvar) - 1.0)):
            hints.append("∂KL/∂ℓ = ½(e^ℓ − 1): the ½ is missing")
        if mine["mu"] is not None and mine["mu"].shape == want["mu"].shape and close(mine["mu"], -want["mu"]):
            hints.append("∂KL/∂μ = +μ (times g): the sign is wrong")
    return hints
