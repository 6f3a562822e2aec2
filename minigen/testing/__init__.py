"""Hypothesis strategies and helpers for property tests, shared by minigen's tests and students.

from minigen.testing import arrays, shapes, broadcastable_shapes, devices
from minigen.testing import forbid_host_reads   # a GPU training step must not read values back
from minigen.testing import cpu_random_numbers_on_every_device   # compare a device run with a CPU run
"""

from minigen.testing.devices import (
    HostReadError,
    HostUploads,
    available_devices,
    check_shared_numbers,
    count_host_uploads,
    cpu_random_numbers_on_every_device,
    forbid_host_reads,
    to_device_like,
)
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
