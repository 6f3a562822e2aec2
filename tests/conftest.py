"""Shared test setup: hypothesis profiles and the device fixture.

Every op test takes the ``device`` fixture, so it runs on the CPU, on the stand-in GPU
(which refuses NumPy calls on device data, as CuPy does) and on CUDA when present.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import minigen as mg
from minigen.testing import available_devices

# The device fixture is function-scoped but only names a device, so reusing it across
# hypothesis examples is safe.
_quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None, suppress_health_check=_quiet)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=_quiet)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=_quiet)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(params=available_devices())
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seeded() -> None:
    mg.manual_seed(0)
