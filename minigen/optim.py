"""Optimisers (SGD, Adam, AdamW), gradient clipping, learning-rate schedules and EMA weights.

An optimiser holds references to the parameters and, on ``step()``, updates each one
in place from its ``.grad``: ``p.data -= lr · update``. The Parameter objects never
change, so the model and the optimiser stay connected. Each update bumps the
parameter's version (``p.bump_version()``), so a backward() through a graph built
before the step raises instead of computing a gradient from the new weights. Updates work on the raw arrays
with the array's own module (NumPy or CuPy), outside the autograd graph, and never read
a value back to the host, so a GPU training step runs without synchronising.

Parameters can be split into groups with their own settings, as in PyTorch::

    opt = mg.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                          {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)

Gradient arrays may be shared between parameters (autograd passes the same gradient to
both inputs of an addition), so nothing here modifies a ``.grad`` array in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from minigen import backend, fused
from minigen.tensor import Tensor

ParamsLike = Iterable[Tensor] | Iterable[dict[str, Any]]


# --------------------------------------------------------------------------- Optimizer
class Optimizer:
    """Base class: keeps ``param_groups`` (a list of dicts) and per-parameter ``state``."""

    def __init__(self, params: ParamsLike, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}  # keyed by the parameter itself
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, not a single Tensor: wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters with its own settings (missing ones come from the defaults)."""
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: can only optimise leaf tensors (shape {tuple(p.shape)})")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one parameter group")
        full_group = {**self.defaults, **group, "params": params}
        self.param_groups.append(full_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``p.grad = None`` (or fresh zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = Tensor(p.grad.xp.zeros_like(p.grad.data))

    def step(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

        Parameters are referred to by their position across all groups, as in PyTorch,
        so the state can be loaded into an optimiser built for a fresh copy of the model.
        """
        index_of = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                index_of[id(p)] = len(index_of)
                indices.append(index_of[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index_of[id(p)]] = {
                        k: (Tensor(v.data.copy()) if isinstance(v, Tensor) else v) for k, v in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore settings and per-parameter state; tensors move to each parameter's device.

        Everything is checked before anything changes: the number of groups and of
        parameters in each, the parameter indices, and the shape of every state tensor
        (momentum buffers, Adam's moments) against its parameter. A state dict saved for
        another model raises here, naming the parameter, not at the next ``step()``,
        and leaves the optimiser as it was.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{where}: expected the dict from optimizer.state_dict(), with 'state' and 'param_groups'; got {found}"
            )
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)
        ):
            raise ValueError(
                f"{where}: the saved parameter groups "
                f"{[len(g['params']) for g in groups]} do not match this optimiser's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        params_by_index = {}
        for saved, mine in zip(groups, self.param_groups):
            for index, p in zip(saved["params"], mine["params"]):
                params_by_index[int(index)] = p

        new_state: dict[Tensor, dict[str, Any]] = {}
        problems = []
        for index, saved_state in state_dict["state"].items():
            p = params_by_index.get(int(index))
            if p is None:
                problems.append(
                    f"state for parameter {index}, but the groups hold parameters 0..{len(params_by_index) - 1}"
                )
                continue
            new_state[p] = {}
            for key, value in saved_state.items():
                if isinstance(value, Tensor) or (hasattr(value, "shape") and hasattr(value, "dtype")):
                    data = value.data if isinstance(value, Tensor) else value
                    if tuple(data.shape) != tuple(p.shape):
                        problems.append(
                            f"parameter {index} has shape {tuple(p.shape)} but its state {key!r} has shape "
                            f"{tuple(data.shape)}"
                        )
                        continue
                    data = backend.to_device(data, p.device)
                    # Floating-point state follows the parameter's dtype.
                    value = Tensor(data.astype(p.dtype) if data.dtype.kind == "f" else data.copy())
                new_state[p][key] = value
        if problems:
            raise ValueError(
                f"{where}: the saved state does not fit this optimiser's parameters (nothing was loaded):\n  "
                + "\n  ".join(problems)
            )

        for saved, mine in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    mine[key] = tuple(value) if isinstance(value, list) else value
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


def _check_hyper(name: str, value: float, low: float = 0.0) -> None:
    if not value >= low:
        raise ValueError(f"invalid {name}: {value} (must be >= {low})")


# --------------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov and weight decay.

    With g_t = ∇L(θ_{t−1}) + λ θ_{t−1} (weight decay λ):
        b_t = μ b_{t−1} + (1 − τ) g_t            (b_1 = g_1; μ momentum, τ dampening)
        d_t = g_t + μ b_t  (Nesterov)   or   d_t = b_t   (or g_t without momentum)
        θ_t = θ_{t−1} − η d_t
    """

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        _check_hyper("learning rate", lr)
        _check_hyper("momentum", momentum)
        _check_hyper("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, "nesterov": nesterov})

    def step(self) -> None:
        for group in self.param_groups:
            lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.data
                if wd != 0:
                    d = d + wd * p.data  # a new array: the gradient itself stays untouched
                if mu != 0:
                    state = self.state.setdefault(p, {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = Tensor(d.copy())
                    else:
                        buf = state["momentum_buffer"].data
                        buf *= mu
                        buf += (1 - tau) * d
                    buf = state["momentum_buffer"].data
                    d = d + mu * buf if group["nesterov"] else buf
                p.data -= lr * d
                p.bump_version()


# -------------------------------------------------------------------------------- Adam
class Adam(Optimizer):
    """Adam (Kingma & Ba): per-parameter steps scaled by running gradient moments.

    g_t = ∇L(θ_{t−1}) + λ θ_{t−1}                    (L2 weight decay λ, coupled)
    m_t = β₁ m_{t−1} + (1 − β₁) g_t                  (first moment)
    v_t = β₂ v_{t−1} + (1 − β₂) g_t²                 (second moment)
    θ_t = θ_{t−1} − η · (m_t / (1 − β₁ᵗ)) / (√(v_t / (1 − β₂ᵗ)) + ε)
    """

    decoupled_weight_decay = False  # AdamW sets True: how weight decay enters the update

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check_hyper("learning rate", lr)
        _check_hyper("eps", eps)
        _check_hyper("weight_decay", weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must lie in [0, 1)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = Tensor(p.xp.zeros_like(p.data))
                    state["exp_avg_sq"] = Tensor(p.xp.zeros_like(p.data))
                state["step"] += 1  # a Python int: bias corrections need no device read
                m, v = state["exp_avg"].data, state["exp_avg_sq"].data
                if fused.applies(p.data, p.grad.data, m, v):  # opt-in: the lines below as one CUDA kernel
                    fused.adam_step(
                        p.data,
                        p.grad.data,
                        m,
                        v,
                        lr=lr,
                        betas=(beta1, beta2),
                        eps=eps,
                        weight_decay=wd,
                        decoupled=self.decoupled_weight_decay,
                        step=state["step"],
                    )
                    p.bump_version()
                    continue
                g = p.grad.data
                if wd != 0 and self.decoupled_weight_decay:
                    p.data *= 1 - lr * wd  # AdamW: shrink θ directly, outside the moments
                elif wd != 0:
                    g = g + wd * p.data  # Adam: L2 penalty folded into the gradient
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * (g * g)
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denominator = p.xp.sqrt(v)
                denominator /= math.sqrt(bias_correction2)
                denominator += eps
                p.data -= (lr / bias_correction1) * m / denominator
                p.bump_version()


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter):

        θ ← θ (1 − η λ), then the Adam step on the plain gradient.

    Unlike Adam's L2 term, the decay is not rescaled by the moments, so every weight
    shrinks at the same rate.
    """

    decoupled_weight_decay = True

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ----------------------------------------------------------------------- clipping
def _with_grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Rescale the gradients so their joint norm is at most ``max_norm``; return the norm before.

    ‖g‖ = (Σ_p Σ_i |g_{p,i}|^q)^{1/q}  over all parameters (q = ``norm_type``; ∞ = max |g|),
    and every gradient is multiplied by min(1, max_norm / (‖g‖ + 1e-6)). The factor is
    computed on the device, so no value is read back to the host.
    """
    params = _with_grads(parameters)
    if not params:
        return Tensor(backend.xp_for("cpu").zeros((), dtype=backend.DEFAULT_DTYPE))
    xp = params[0].grad.xp
    if math.isinf(norm_type):
        total = xp.max(xp.stack([xp.max(xp.abs(p.grad.data)) for p in params]))
    elif norm_type == 2.0:
        total = xp.sqrt(sum(xp.sum(p.grad.data * p.grad.data) for p in params))
    else:
        total = sum(xp.sum(xp.abs(p.grad.data) ** norm_type) for p in params) ** (1.0 / norm_type)
    factor = xp.minimum(max_norm / (total + 1e-6), 1.0).astype(params[0].grad.dtype)
    for p in params:
        # A new array rather than ``*=``: the gradient may be shared with another parameter.
        p.grad = Tensor(p.grad.data * factor)
    return Tensor(total)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element to [−clip_value, clip_value]."""
    for p in _with_grads(parameters):
        p.grad = Tensor(p.grad.xp.clip(p.grad.data, -clip_value, clip_value))


# -------------------------------------------------------------------- LR schedules
class LRScheduler:
    """Sets each group's ``lr`` from a closed form of the step count t.

    ``t`` (``last_epoch``) starts at 0 when the scheduler is built, and each ``step()``
    adds one; subclasses define ``lr_at(t, base_lr)``. Call ``scheduler.step()`` after
    ``optimizer.step()``.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()  # sets the learning rate for t = last_epoch + 1 (0 for a new scheduler)

    def lr_at(self, t: int, base_lr: float) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define lr_at(t, base_lr)")

    def group_lr(self, t: int, group_index: int) -> float:
        """The learning rate of one parameter group at step t (LambdaLR has one λ per group)."""
        return self.lr_at(t, self.base_lrs[group_index])

    def _set_lrs(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.group_lr(self.last_epoch, i)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        self._set_lrs()

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the latest ``step()``, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self._set_lrs()


class LambdaLR(LRScheduler):
    """lr_t = base_lr · λ(t), with one λ for all groups or one per group."""

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        count = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * count
        if len(self.lr_lambdas) != count:
            raise ValueError(f"LambdaLR: {len(self.lr_lambdas)} lambdas for {count} parameter groups")
        super().__init__(optimizer, last_epoch)

    def group_lr(self, t: int, group_index: int) -> float:
        return self.base_lrs[group_index] * self.lr_lambdas[group_index](t)


class StepLR(LRScheduler):
    """lr_t = base_lr · γ^⌊t / step_size⌋."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr_t = η_min + (base_lr − η_min) · (1 + cos(π t / T_max)) / 2.

    It falls from base_lr at t = 0 to η_min at t = T_max (and, like PyTorch's, rises
    again afterwards: the cosine is periodic).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """PyTorch's LinearLR: the factor goes linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` steps, then stays: lr_t = base_lr · (s + (e − s) · min(t, T) / T)."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        progress = min(t, self.total_iters) / self.total_iters if self.total_iters > 0 else 1.0
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class LinearWarmup(LRScheduler):
    """Linear warmup to base_lr, then constant: lr_t = base_lr · min(1, (t + 1) / W).

    The first step already uses base_lr / W (not 0), and step W − 1 reaches base_lr.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        if t < self.warmup_steps:
            return base_lr * (t + 1) / self.warmup_steps
        return base_lr


class WarmupCosineLR(LRScheduler):
    """Linear warmup for W steps, then cosine decay to η_min at step T (the transformer recipe).

    t < W:       lr_t = base_lr · (t + 1) / W
    W ≤ t ≤ T:   lr_t = η_min + (base_lr − η_min) · (1 + cos(π (t − W) / (T − W))) / 2
    t > T:       lr_t = η_min
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"WarmupCosineLR: need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        if t < self.warmup_steps:
            return base_lr * (t + 1) / self.warmup_steps
        progress = min(t - self.warmup_steps, self.total_steps - self.warmup_steps)
        cosine = (1 + math.cos(math.pi * progress / (self.total_steps - self.warmup_steps))) / 2
        return self.eta_min + (base_lr - self.eta_min) * cosine


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0) -> WarmupCosineLR:
    """Linear warmup then cosine decay: a ``WarmupCosineLR`` scheduler."""
    return WarmupCosineLR(optimizer, warmup_steps, total_steps, eta_min)


# ------------------------------------------------------------------------------- EMA
class EMA:
    """An exponential moving average of a model's parameters, θ̄ ← d·θ̄ + (1 − d)·θ.

    After n updates with parameters θ_1, …, θ_n, starting from θ̄_0 (the weights at
    construction), a constant decay d gives the closed form

        θ̄_n = dⁿ θ̄_0 + (1 − d) Σ_{k=1..n} d^{n−k} θ_k,

    an average over roughly the last 1/(1 − d) steps. Sampling with θ̄ instead of the
    last θ averages out the noise of the final SGD steps: diffusion models are almost
    always sampled this way, and GANs, whose generator never settles at a point, draw
    cleaner samples from it too (Yazıcı et al. 2019).

    With ``warmup=True`` the n-th update uses d_n = min(d, (1 + n)/(10 + n)) instead, so
    that early on, when the weights still change fast, the average forgets the random
    initial weights quickly (θ̄_n = Π_k d_k θ̄_0 + Σ_k (1 − d_k) Π_{j>k} d_j θ_k).

    Only parameters are averaged; buffers (batch-norm statistics) are the model's own.
    Updates happen in place on the parameters' device, with no host sync::

        ema = EMA(model, decay=0.999)
        ...  # after each optimiser step:
        ema.update(model)
        with ema.average_parameters(model):  # θ̄ inside, the trained θ restored after
            samples = sample(model)
    """

    def __init__(self, model: Any, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {name: Tensor(p.data.copy()) for name, p in model.named_parameters()}

    @staticmethod
    def blend_(average: Tensor, value: Tensor, decay: float) -> None:
        """θ̄ ← d·θ̄ + (1 − d)·θ for one tensor, in place on its array (outside the graph)."""
        average.data *= decay
        average.data += (1.0 - decay) * value.data

    def current_decay(self) -> float:
        """The d of the next update: ``decay``, or its warm-up value min(d, (1 + n)/(10 + n))."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def update(self, model: Any) -> None:
        """θ̄ ← d·θ̄ + (1 − d)·θ for every parameter (call after each optimiser step)."""
        d = self.current_decay()
        for name, p in model.named_parameters():
            self.blend_(self.shadow[name], p, d)
        self.num_updates += 1

    def copy_to(self, model: Any) -> None:
        """Overwrite the model's parameters with the averages."""
        for name, p in model.named_parameters():
            p.data[...] = self.shadow[name].data
            p.bump_version()  # a graph built with the old weights must not backpropagate through the new

    @contextmanager
    def average_parameters(self, model: Any) -> Iterator[Any]:
        """``with ema.average_parameters(model): sample(model, ...)``: the EMA weights inside,
        the trained weights restored afterwards."""
        saved = {name: p.data.copy() for name, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            for name, p in model.named_parameters():
                p.data[...] = saved[name]
                p.bump_version()

    def state_dict(self) -> dict[str, Tensor]:
        return {name: Tensor(t.data.copy()) for name, t in self.shadow.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for name, t in state.items():
            self.shadow[name].data[...] = backend.to_device(t.data, self.shadow[name].device)
