"""Optimisers' load_state_dict checks a state dict against the parameters at once, all or nothing.

(``Module.load_state_dict`` is tested in test_module.py, ``mg.save``/``mg.load`` in
test_serialization.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen import optim
from minigen.tensor import Tensor


def _trained(make_optimizer, model: nn.Module):
    optimizer = make_optimizer(model.parameters())
    for _ in range(2):
        model.zero_grad()
        model(mg.ones(5, model.weight.shape[1], device=model.weight.device)).sum().backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize(
    ("make_optimizer", "key"),
    [
        (lambda params: optim.SGD(params, lr=0.1, momentum=0.9), "momentum_buffer"),
        (lambda params: optim.Adam(params, lr=0.1), "exp_avg"),
        (lambda params: optim.AdamW(params, lr=0.1, weight_decay=0.1), "exp_avg"),
    ],
)
def test_a_state_for_other_shapes_is_refused_at_load_not_at_step(make_optimizer, key, device: str) -> None:
    saved = _trained(make_optimizer, nn.Linear(3, 2).to(device)).state_dict()
    other = nn.Linear(4, 2).to(device)  # the same number of parameters, another weight shape
    optimizer = make_optimizer(other.parameters())
    optimizer.param_groups[0]["lr"] = 0.25
    with pytest.raises(
        ValueError,
        match=f"nothing was loaded(.|\\n)*parameter 0 has shape \\(2, 4\\) but its state '{key}' has shape \\(2, 3\\)",
    ):
        optimizer.load_state_dict(saved)
    assert optimizer.state == {} and optimizer.param_groups[0]["lr"] == 0.25  # untouched
    optimizer.load_state_dict(_trained(make_optimizer, nn.Linear(4, 2).to(device)).state_dict())  # a fitting one loads
    assert optimizer.state[other.weight][key].shape == (2, 4)
    assert optimizer.state[other.weight][key].device == device


def test_state_for_a_parameter_the_optimiser_does_not_have_is_refused() -> None:
    model = nn.Linear(3, 2)
    saved = _trained(lambda p: optim.Adam(p, lr=0.1), model).state_dict()
    saved["state"][7] = saved["state"][0]
    optimizer = optim.Adam(nn.Linear(3, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="state for parameter 7, but the groups hold parameters 0..1"):
        optimizer.load_state_dict(saved)
    assert optimizer.state == {}
    with pytest.raises(ValueError, match="expected the dict from optimizer.state_dict\\(\\)"):
        optimizer.load_state_dict({"state": {}})


def test_loaded_arrays_become_tensors_on_the_parameters_device(device: str) -> None:
    weight = Tensor(np.ones((2, 2), np.float32), device=device, requires_grad=True)
    optimizer = optim.SGD([weight], lr=0.1, momentum=0.5)
    saved = {"state": {0: {"momentum_buffer": np.full((2, 2), 3.0)}}, "param_groups": [{"params": [0], "lr": 0.2}]}
    optimizer.load_state_dict(saved)
    buffer = optimizer.state[weight]["momentum_buffer"]
    assert isinstance(buffer, Tensor) and buffer.device == device and buffer.dtype == np.float32
    weight.grad = Tensor(np.zeros((2, 2), np.float32), device=device)
    optimizer.step()  # θ −= 0.2 · (0.5 · 3)
    np.testing.assert_allclose(weight.detach().numpy(), np.full((2, 2), 1 - 0.2 * 1.5), rtol=1e-6)
