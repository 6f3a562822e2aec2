"""The sliding-window geometry that convolution and pooling share (minigen/ops/geometry.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.geometry import add_batch_axis, int_pair, outputs_inside_input, strided_slice


@given(
    tap=st.integers(0, 4),
    stride=st.integers(1, 3),
    pad=st.integers(-2, 3),
    dilation=st.integers(1, 3),
    n_in=st.integers(1, 8),
    n_out=st.integers(1, 8),
)
def test_outputs_inside_input_is_the_set_of_reads_inside(tap, stride, pad, dilation, n_in, n_out):
    """Output o reads o·s + tap·d − p: [first, stop) are exactly the o whose read is in [0, n_in),
    and the strided slice from ``start`` lists those reads in order."""
    first, stop, start = outputs_inside_input(tap, stride, pad, dilation, n_in, n_out)
    inside = [o for o in range(n_out) if 0 <= o * stride + tap * dilation - pad < n_in]
    assert list(range(first, stop)) == inside
    if inside:
        reads = list(range(n_in + 10))[strided_slice(start, stride, stop - first)]
        assert reads == [o * stride + tap * dilation - pad for o in inside]


def test_int_pair_and_batch_axis():
    assert int_pair(3, "stride", "op") == (3, 3) and int_pair((1, 2), "stride", "op") == (1, 2)
    for bad in (True, (1, 2, 3), 1.5, "2"):
        with pytest.raises(TypeError, match="op: stride must be an int or a pair of ints"):
            int_pair(bad, "stride", "op")
    x, added = add_batch_axis(mg.zeros(3, 4, 5))
    assert added and x.shape == (1, 3, 4, 5)
    x, added = add_batch_axis(mg.zeros(2, 3, 4, 5))
    assert not added and x.shape == (2, 3, 4, 5)
