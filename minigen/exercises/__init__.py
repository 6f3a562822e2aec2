"""Assignments: write the forward and/or backward of a ``Function``, then check it.

    python -m minigen.exercises list                       # the exercises
    python -m minigen.exercises start rope work/           # writes work/rope.py (the maths + stubs)
    python -m minigen.exercises check rope work/rope.py    # PASS/FAIL per check, with hints
    python -m minigen.exercises check rope work/rope.py --json   # for autograders
    python -m minigen.exercises check rope work/rope.py --format gradescope > results.json

Each exercise is one module in this package, readable on its own: the template text
the student receives, the engine's reference it is compared with, the hypothesis
strategy that generates inputs, and the topic's property checks. ``checker.py`` runs
them (see its docstring for the checks).
"""

from __future__ import annotations

from types import ModuleType

try:  # the checker generates its inputs with hypothesis
    import hypothesis  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "minigen.exercises needs hypothesis to generate test inputs: pip install hypothesis "
        "(or pip install -e '.[test]')"
    ) from error

from minigen.exercises import (  # noqa: E402
    attention,
    contrastive_loss,
    conv2d,
    cross_attention,
    cyclegan_losses,
    ddpm,
    layer_norm,
    matmul,
    max_pool,
    rope,
    sigmoid_tanh,
    softmax_cross_entropy,
    vae,
    vector_quantize,
)

# name -> exercise module, in lecture order.
EXERCISES: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        sigmoid_tanh,
        matmul,
        softmax_cross_entropy,
        conv2d,
        max_pool,
        layer_norm,
        attention,
        rope,
        vae,
        ddpm,
        cyclegan_losses,
        vector_quantize,
        contrastive_loss,
        cross_attention,
    )
}


def get(name: str) -> ModuleType:
    """The exercise module called ``name``; a clear error listing the names otherwise."""
    try:
        return EXERCISES[name]
    except KeyError:
        raise KeyError(f"no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}") from None
