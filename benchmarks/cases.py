"""The benchmark cases. Each builds a minigen step, the identical PyTorch step, and a check.

``build(device, quick)`` returns ``(minigen_fn, torch_fn_or_None, check_or_None)``.
The check runs once before timing and asserts that both libraries compute the same
thing (forward values and gradients), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import minigen as mg

try:
    import torch
except ImportError:
    torch = None

Built = tuple[Callable[[], object], Callable[[], object] | None, Callable[[], None] | None]


@dataclass
class Case:
    name: str
    level: str  # "op" or "model"
    build: Callable[[str, bool], Built]
    flops: Callable[[bool], float] | None = None
    target: str | None = None


def host(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def torch_device(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def assert_close(mine: mg.Tensor, theirs, rtol: float = 1e-3, atol: float = 1e-3) -> None:
    np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().cpu().numpy(), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------- engine
def tiny_op_chain(device: str, quick: bool) -> Built:
    """Per-op overhead: 200 alternating add/mul ops on 16 numbers, forward + backward.

    Reported per whole chain; divide by 200 for µs per op.
    """
    n_ops = 200
    data = host((16,))

    def mine():
        x = mg.tensor(data, device=device, requires_grad=True)
        y = x
        for i in range(n_ops):
            y = y * 1.001 if i % 2 else y + 0.5
        y.sum().backward()
        return x.grad

    def theirs():
        x = torch.tensor(data, device=torch_device(device), requires_grad=True)
        y = x
        for i in range(n_ops):
            y = y * 1.001 if i % 2 else y + 0.5
        y.sum().backward()
        return x.grad

    def check():
        assert_close(mine(), theirs())

    return mine, (theirs if torch else None), (check if torch else None)


def matmul_case(n: int) -> Callable[[str, bool], Built]:
    def build(device: str, quick: bool) -> Built:
        a, b, g = host((n, n), 1), host((n, n), 2), host((n, n), 3)
        ga = mg.tensor(g, device=device)

        def mine():
            x = mg.tensor(a, device=device, requires_grad=True)
            w = mg.tensor(b, device=device, requires_grad=True)
            (x @ w).backward(ga)
            return x.grad, w.grad

        tg = torch.tensor(g, device=torch_device(device)) if torch else None

        def theirs():
            x = torch.tensor(a, device=torch_device(device), requires_grad=True)
            w = torch.tensor(b, device=torch_device(device), requires_grad=True)
            (x @ w).backward(tg)
            return x.grad, w.grad

        def check():
            for m, t in zip(mine(), theirs()):
                assert_close(m, t, rtol=1e-3, atol=1e-2)

        return mine, (theirs if torch else None), (check if torch else None)

    return build


CASES: list[Case] = [
    Case("tiny-op chain ×200 (fwd+bwd)", "op", tiny_op_chain, target="≤ 2.0×"),
    Case("matmul 1024 (fwd+bwd)", "op", matmul_case(1024), flops=lambda q: 3 * 2 * 1024**3, target="≤ 1.2×, ≥ 90% peak"),
    Case("matmul 2048 (fwd+bwd)", "op", matmul_case(2048), flops=lambda q: 3 * 2 * 2048**3),
]
