"""Error messages a user can act on: they name the op, the shapes, dtypes and devices."""

from __future__ import annotations

import pytest

import minigen as mg


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"Add: .*\(2, 3\).*\(4,\)"):
        mg.ones(2, 3) + mg.ones(4)


def test_matmul_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) cannot be multiplied"):
        mg.ones(2, 3) @ mg.ones(4, 5)


def test_mixing_devices_names_both_devices():
    with pytest.raises(RuntimeError, match=r"Mul: expected all tensors on the same device.*standin and cpu"):
        mg.ones(3, device="standin") * mg.ones(3)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match=r"only floating-point tensors can require gradients.*int64"):
        mg.tensor([1, 2, 3], requires_grad=True)


def test_backward_on_non_scalar_without_gradient():
    x = mg.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"backward: the output has shape \(2, 3\).*gradient="):
        (x * 2).backward()


def test_backward_on_tensor_without_graph():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.ones(3).sum().backward()


def test_reduction_dim_out_of_range():
    with pytest.raises(IndexError, match="sum: dim 2 is out of range"):
        mg.ones(2, 3).sum(dim=2)


def test_reshape_to_wrong_size():
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        mg.ones(2, 3).reshape(4, 2)


def test_in_place_assignment_on_grad_tensor_is_refused():
    x = mg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place assignment"):
        x[0] = 5.0


def test_bad_device_string():
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        mg.ones(2, device="gpu")


def test_cuda_without_gpu_explains_how_to_get_it():
    if mg.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA is not available.*CuPy"):
        mg.ones(2).to("cuda")


def test_numpy_on_tensor_requiring_grad_says_detach():
    with pytest.raises(RuntimeError, match="detach"):
        mg.ones(2, requires_grad=True).numpy()


def test_wrong_shaped_gradient_from_custom_backward_is_caught():
    class ForgetsUnbroadcast(mg.Function):
        def forward(self, a, b):
            return a.data + b.data

        def backward(self, grad):
            return grad, grad

    a, b = mg.ones(2, 3, requires_grad=True), mg.ones(3, requires_grad=True)
    with pytest.raises(
        RuntimeError, match=r"ForgetsUnbroadcast.backward returned a gradient of shape \(2, 3\).*\(3,\).*sum_to"
    ):
        ForgetsUnbroadcast.apply(a, b).sum().backward()
