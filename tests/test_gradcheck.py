"""gradcheck must pass correct backward passes and fail broken ones with the right hint."""

from __future__ import annotations

import numpy as np
import pytest

import minigen as mg


def make_op(backward_rule):
    """A custom Function computing a ⊙ b (b broadcast) whose backward is ``backward_rule``."""

    class Student(mg.Function):
        def forward(self, a, b):
            self.saved = (a, b)
            return a.data * b.data

        def backward(self, grad):
            a, b = self.saved
            return backward_rule(grad, a, b)

    return Student


def inputs():
    mg.manual_seed(1)
    return mg.randn(3, 4, requires_grad=True), mg.randn(4, requires_grad=True)


def run(rule):
    op = make_op(rule)
    return mg.gradcheck(lambda a, b: op.apply(a, b), *inputs(), raise_exception=False)


def test_correct_backward_passes():
    result = run(lambda g, a, b: ((g * b), (g * a).sum_to(b.shape)))
    assert result.passed and "PASSED" in result.report


def test_wrong_sign_is_diagnosed():
    result = run(lambda g, a, b: (-(g * b), (g * a).sum_to(b.shape)))
    assert not result.passed
    assert not result.inputs[0].passed and result.inputs[1].passed
    assert "sign error" in result.report


def test_factor_of_two_is_diagnosed():
    result = run(lambda g, a, b: (2 * g * b, (g * a).sum_to(b.shape)))
    assert "factor of 2" in result.report


def test_missing_unbroadcast_is_diagnosed():
    result = run(lambda g, a, b: (g * b, g * a))
    assert not result.passed
    assert "missing unbroadcast" in result.report


def test_zero_gradient_is_diagnosed():
    result = run(lambda g, a, b: (g * b * 0, (g * a).sum_to(b.shape)))
    assert "never flowed" in result.report


def test_transposed_gradient_is_diagnosed():
    class StudentMatMul(mg.Function):
        def forward(self, a, b):
            self.saved = (a, b)
            return a.data @ b.data

        def backward(self, grad):
            a, b = self.saved
            return (grad @ b.mT).mT, a.mT @ grad  # the first is transposed (square shapes)

    mg.manual_seed(0)
    a, b = mg.randn(3, 3, requires_grad=True), mg.randn(3, 3, requires_grad=True)
    result = mg.gradcheck(lambda x, y: StudentMatMul.apply(x, y), a, b, raise_exception=False)
    assert not result.inputs[0].passed and result.inputs[1].passed
    assert "transposed" in result.report


def test_leak_into_positions_that_do_not_matter_is_diagnosed():
    class LeakyCausalSum(mg.Function):
        """Forward: cumulative sums over the first 2 of 4 positions; backward leaks to all."""

        def forward(self, x):
            return x.data[:2] * 1.0

        def backward(self, grad):
            return mg.cat([grad, grad])

    x = mg.randn(4, requires_grad=True)
    result = mg.gradcheck(lambda t: LeakyCausalSum.apply(t), x, raise_exception=False)
    assert "leak" in result.report and "mask" in result.report


def test_failure_raises_with_table_seed_and_tolerances():
    op = make_op(lambda g, a, b: (-(g * b), (g * a).sum_to(b.shape)))
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(lambda a, b: op.apply(a, b), *inputs(), seed=5)
    report = str(info.value)
    assert "analytical" in report and "numerical" in report and "abs error" in report
    assert "seed=5" in report and "atol=" in report and "rtol=" in report


def test_kink_is_not_reported_as_a_bug():
    x = mg.tensor([0.0, 1.5, -2.0], dtype=mg.float64, requires_grad=True)
    result = mg.gradcheck(lambda t: t.relu() * 3, x, raise_exception=False)
    assert result.passed
    assert "kink" in result.report and "not a bug" in result.report


def test_wrong_gradient_at_a_kink_is_still_a_bug():
    class BadRelu(mg.Function):
        def forward(self, x):
            self.saved = x.data > 0
            return x.xp.maximum(x.data, 0)

        def backward(self, grad):
            return grad * 5.0  # outside both one-sided slopes (0 and 1)

    x = mg.tensor([0.0, 1.0], dtype=mg.float64, requires_grad=True)
    result = mg.gradcheck(lambda t: BadRelu.apply(t), x, raise_exception=False)
    assert not result.passed and "lies outside both" in result.report


def test_inputs_are_checked_in_float64_and_left_untouched():
    x = mg.randn(4, requires_grad=True)
    before = x.numpy() if not x.requires_grad else x.detach().numpy()
    seen = []
    mg.gradcheck(lambda t: seen.append(t.dtype) or t.sin(), x)
    assert set(seen) == {np.dtype(np.float64)}
    np.testing.assert_array_equal(x.detach().numpy(), before)
    assert x.dtype == np.float32


def test_random_state_is_fixed_for_every_evaluation():
    # noise drawn inside fn is the same in every evaluation, so the check passes
    x = mg.randn(5, requires_grad=True)
    assert mg.gradcheck(lambda t: t * mg.randn(5, dtype=mg.float64), x).passed


def test_large_inputs_use_random_directions_and_catch_errors():
    x = mg.randn(3000, requires_grad=True)
    good = mg.gradcheck(lambda t: (t * t).sum(), x, max_elements=100, n_sampled=10)
    assert good.passed and "random directions" in good.inputs[0].checked
    op = make_op(lambda g, a, b: (1.01 * g * b, (g * a).sum_to(b.shape)))
    bad = mg.gradcheck(
        lambda t: op.apply(t, mg.ones(1, dtype=mg.float64)), x, max_elements=100, n_sampled=10, raise_exception=False
    )
    assert not bad.passed and "direction" in bad.report


def test_gradgradcheck_catches_a_wrong_second_derivative():
    class BadSquare(mg.Function):
        """Forward x²; first derivative right (2x) but built from a constant, so d²/dx² = 0 is wrong."""

        def forward(self, x):
            self.saved = x
            return x.data**2

        def backward(self, grad):
            return grad * mg.Tensor(2 * self.saved.data)

    x = mg.randn(3, requires_grad=True)
    assert mg.gradcheck(lambda t: BadSquare.apply(t), x).passed
    result = mg.gradgradcheck(lambda t: BadSquare.apply(t), x, raise_exception=False)
    assert not result.passed and "no gradient reached this input" in result.report
    assert mg.gradgradcheck(lambda t: t**2, x).passed


# ------------------------------------------------ naming the bug (issue 11 §5, issue 12 §6)
def test_transposed_operand_in_matmul_backward_is_diagnosed():
    class GTimesB(mg.Function):
        """A @ B whose backward writes g @ B where g @ Bᵀ belongs (possible when B is square)."""

        def forward(self, a, b):
            self.saved = (a, b)
            return a.data @ b.data

        def backward(self, grad):
            a, b = self.saved
            return grad @ b, a.mT @ grad

    mg.manual_seed(0)
    a, b = mg.randn(2, 3, requires_grad=True), mg.randn(3, 3, requires_grad=True)
    result = mg.gradcheck(lambda x, y: GTimesB.apply(x, y), a, b, raise_exception=False)
    assert not result.inputs[0].passed and result.inputs[1].passed
    assert any("computed with input 1 transposed" in h and "g @ Bᵀ" in h for h in result.inputs[0].hints)


def test_one_wrong_element_of_a_large_input_is_localised_and_named():
    class OneWrong(mg.Function):
        """2x, whose backward is right except at element 1234."""

        def forward(self, x):
            return x.data * 2.0

        def backward(self, grad):
            g = grad.data * 2.0
            g[1234] += 0.5
            return mg.Tensor(g)

    mg.manual_seed(3)
    result = mg.gradcheck(lambda t: OneWrong.apply(t), mg.randn(3000, requires_grad=True), raise_exception=False)
    report = result.inputs[0]
    assert not result.passed and "random directions" in report.checked and "localised" in report.checked
    assert report.worst[0][0] == "(1234,)" and report.n_wrong == 1
    assert abs(report.max_abs_error - 0.5) < 1e-6
    header = result.report.splitlines()[1]
    assert "1 of" in header and "the worst at (1234,)" in header


def test_ignored_upstream_gradient_is_diagnosed():
    class SquareWithoutG(mg.Function):
        def forward(self, x):
            self.saved = x.data
            return x.data**2

        def backward(self, grad):
            return mg.Tensor(2.0 * self.saved)  # ∂y/∂x, but not times grad

    result = mg.gradcheck(lambda t: SquareWithoutG.apply(t), mg.randn(4, requires_grad=True), raise_exception=False)
    assert "ignores the incoming g" in result.report


def test_wrong_branch_for_negative_inputs_is_diagnosed():
    class BadAbs(mg.Function):
        def forward(self, x):
            self.saved = x.data
            return np.abs(x.data)

        def backward(self, grad):
            return grad * mg.Tensor(np.ones_like(self.saved))  # the slope is −1 for x < 0

    x = mg.tensor([[-1.5, 0.5, 2.0], [1.0, -0.7, -2.2]], dtype=mg.float64, requires_grad=True)
    result = mg.gradcheck(lambda t: BadAbs.apply(t), x, raise_exception=False)
    assert "wrong exactly where the input is negative" in result.report


def test_errors_at_odd_indices_are_named():
    class SlipOnOdd(mg.Function):
        def forward(self, x):
            return x.data * 3.0

        def backward(self, grad):
            g = grad.data * 3.0
            g[..., 1::2] *= -1.0
            return mg.Tensor(g)

    result = mg.gradcheck(lambda t: SlipOnOdd.apply(t), mg.randn(3, 6, requires_grad=True), raise_exception=False)
    assert "the odd indices (1, 3, 5, …) along the last axis" in result.report


def test_the_header_says_how_many_elements_are_wrong():
    op = make_op(lambda g, a, b: (g * b, 3 * (g * a).sum_to(b.shape)))
    result = mg.gradcheck(lambda a, b: op.apply(a, b), *inputs(), raise_exception=False)
    lines = result.report.splitlines()
    assert "input 0 shape (3, 4): ok (all 12 elements" in lines[1]
    assert "input 1 shape (4,): MISMATCH: 4 of 4 checked elements wrong, the worst at" in result.report
    assert result.inputs[1].n_wrong == 4 and result.inputs[1].n_checked == 4


def test_a_gradient_of_the_wrong_shape_is_explained_by_its_exception_type():
    from minigen.errors import GradientShapeError

    op = make_op(lambda g, a, b: (g * b, g * a))  # the broadcast b gets a (3, 4) gradient
    with pytest.raises(GradientShapeError) as info:
        op.apply(*inputs()).sum().backward()
    assert info.value.shape == (3, 4) and info.value.expected == (4,) and isinstance(info.value, RuntimeError)
    result = run(lambda g, a, b: (g * b, g * a))
    assert any("missing unbroadcast" in h and "(4,)" in h for h in result.inputs[1].hints)


# ------------------------------------------------------------ the module and the random state
def test_import_gives_the_module_and_calling_it_runs_the_check():
    import minigen.gradcheck as gc

    assert gc.__name__ == "minigen.gradcheck" and gc is mg.gradcheck
    assert gc.gradgradcheck is mg.gradgradcheck and gc.GradcheckResult is mg.GradcheckResult
    x = mg.randn(3, requires_grad=True)
    assert mg.gradcheck(lambda t: t.sin(), x).passed and gc.gradcheck(lambda t: t.sin(), x).passed
    assert not hasattr(gc, "check_gradients")  # the dead alias is gone


def test_rng_state_round_trip_and_gradcheck_leaves_the_callers_stream_alone():
    from minigen import backend

    mg.manual_seed(11)
    state = backend.get_rng_state()
    first = mg.randn(5).numpy()
    backend.set_rng_state(state)
    np.testing.assert_array_equal(mg.randn(5).numpy(), first)
    backend.set_rng_state(state)  # the snapshot stays reusable
    np.testing.assert_array_equal(mg.randn(5).numpy(), first)

    mg.manual_seed(11)
    mg.gradcheck(lambda t: t * mg.randn(3, dtype=mg.float64), mg.randn(3, requires_grad=True))
    after_check = mg.randn(5).numpy()
    mg.manual_seed(11)
    mg.randn(3)  # the same draws as above, without the check in between
    np.testing.assert_array_equal(mg.randn(5).numpy(), after_check)
