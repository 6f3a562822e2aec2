"""Hypothesis strategies and helpers for property tests, shared by minigen's tests and students.

from minigen.testing import arrays, shapes, broadcastable_shapes, devices
"""

from minigen.testing.devices import available_devices, to_device_like
from minigen.testing.strategies import (
    arrays,
    away_from,
    broadcastable_shapes,
    distinct_arrays,
    matmul_shapes,
    noncontiguous,
    positive_arrays,
    shapes,
    tensors,
)
