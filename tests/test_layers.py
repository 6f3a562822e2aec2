"""Every layer: shapes, PyTorch as oracle (forward and backward, float64), init statistics,
gradcheck through modules, device placement, and a small MLP that overfits one batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import optim
from minigen.tensor import Tensor

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------ the oracle
def _torch_twin(ours: nn.Module, make_theirs: Callable) -> torch.nn.Module:
    """The PyTorch layer with our weights copied in (by state-dict name), both in float64."""
    theirs = make_theirs().double()
    ours.to(mg.float64)
    state = {k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)  # strict: the names and shapes must be PyTorch's
    return theirs


def _compare(ours: nn.Module, theirs: torch.nn.Module, x_host: np.ndarray, rtol: float = 1e-9) -> None:
    """Same output, same input gradient and same parameter gradients for a random upstream gradient."""
    floating = x_host.dtype.kind == "f"
    x = Tensor(x_host.copy(), requires_grad=floating)
    tx = torch.tensor(x_host.copy(), requires_grad=floating)
    out, tout = ours(x), theirs(tx)
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=rtol, atol=1e-12)
    upstream = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(Tensor(upstream))
    tout.backward(torch.tensor(upstream))
    if floating:
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=1e-12)
    their_grads = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(their_grads)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), their_grads[name].grad.numpy(), rtol=rtol, atol=1e-12, err_msg=name)


# (constructor, the same for PyTorch, input shape)
CASES = [
    (lambda m: m.Linear(4, 3), (5, 4)),
    (lambda m: m.Linear(4, 3, bias=False), (2, 5, 4)),
    (lambda m: m.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
    (lambda m: m.Conv2d(4, 6, (3, 2), dilation=2, groups=2, bias=False), (1, 4, 8, 7)),
    (lambda m: m.Conv2d(2, 3, 3, padding="same"), (2, 2, 5, 5)),
    (lambda m: m.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (2, 3, 4, 4)),
    (lambda m: m.ConvTranspose2d(4, 6, 2, stride=2, groups=2), (1, 4, 3, 3)),
    (lambda m: m.MaxPool2d(2), (2, 3, 6, 6)),
    (lambda m: m.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 7)),
    (lambda m: m.MaxPool2d(2, dilation=2, ceil_mode=True), (1, 2, 8, 7)),
    (lambda m: m.AvgPool2d(2), (2, 3, 6, 6)),
    (lambda m: m.AvgPool2d(3, stride=2, padding=1), (1, 2, 7, 7)),
    (lambda m: m.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), (1, 2, 6, 6)),
    (lambda m: m.Upsample(scale_factor=2, mode="nearest"), (2, 3, 4, 5)),
    (lambda m: m.Upsample(size=(5, 7), mode="bilinear", align_corners=False), (1, 2, 3, 4)),
    (lambda m: m.LayerNorm(5), (2, 3, 5)),
    (lambda m: m.LayerNorm([3, 5], elementwise_affine=False), (2, 3, 5)),
    (lambda m: m.GroupNorm(2, 4), (2, 4, 3, 3)),
    (lambda m: m.GroupNorm(3, 3, affine=False), (2, 3, 4)),
    (lambda m: m.ReLU(), (3, 7)),
    (lambda m: m.LeakyReLU(0.2), (3, 7)),
    (lambda m: m.GELU(), (3, 7)),
    (lambda m: m.GELU(approximate="tanh"), (3, 7)),
    (lambda m: m.SiLU(), (3, 7)),
    (lambda m: m.Sigmoid(), (3, 7)),
    (lambda m: m.Tanh(), (3, 7)),
    (lambda m: m.Softplus(beta=2.0, threshold=3.0), (3, 7)),
    (lambda m: m.Softmax(dim=1), (3, 7)),
    (lambda m: m.LogSoftmax(dim=-1), (3, 7)),
    (lambda m: m.Flatten(), (2, 3, 4, 5)),
    (lambda m: m.Flatten(0, 2), (2, 3, 4, 5)),
    (lambda m: m.Unflatten(1, (3, 4)), (2, 12, 5)),
    (lambda m: m.Identity(), (2, 3)),
]


@pytest.mark.parametrize("make, shape", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_layer_matches_pytorch(make, shape) -> None:
    ours = make(nn)
    theirs = _torch_twin(ours, lambda: make(torch.nn))
    x = np.random.default_rng(1).standard_normal(shape) * 2
    _compare(ours, theirs, x)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (6, 4)),
        ({}, (3, 4, 5)),
        ({"momentum": None}, (6, 4)),
        ({"affine": False, "momentum": 0.3}, (5, 4)),
        ({"track_running_stats": False}, (3, 4, 2)),
    ],
)
def test_batchnorm1d_matches_pytorch_in_training_and_eval(kwargs, shape) -> None:
    ours = nn.BatchNorm1d(4, **kwargs)
    theirs = _torch_twin(ours, lambda: torch.nn.BatchNorm1d(4, **kwargs))
    rng = np.random.default_rng(2)
    for _ in range(3):  # several batches: the running statistics accumulate
        _compare(ours, theirs, rng.standard_normal(shape) * 3 + 1)
    for name, t in ours.state_dict().items():
        np.testing.assert_allclose(t.numpy(), theirs.state_dict()[name].numpy(), rtol=1e-9, err_msg=name)
    ours.eval()
    theirs.eval()
    _compare(ours, theirs, rng.standard_normal(shape))


def test_batchnorm2d_matches_pytorch_and_counts_batches() -> None:
    ours = nn.BatchNorm2d(3, momentum=0.2)
    theirs = _torch_twin(ours, lambda: torch.nn.BatchNorm2d(3, momentum=0.2))
    rng = np.random.default_rng(3)
    for _ in range(2):
        _compare(ours, theirs, rng.standard_normal((4, 3, 5, 5)) + 2)
    assert ours.num_batches_tracked.item() == 2 and ours.num_batches_tracked.dtype == np.int64
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-9)
    ours.eval()
    theirs.eval()
    _compare(ours, theirs, rng.standard_normal((2, 3, 4, 4)))
    assert ours.num_batches_tracked.item() == 2  # eval mode does not count
    with pytest.raises(ValueError, match="expected a 4-D input"):
        ours(mg.randn(2, 3))
    with pytest.raises(ValueError, match="has 5 channels"):
        ours(mg.randn(2, 5, 3, 3))


def test_embedding_matches_pytorch_including_padding_row() -> None:
    ours = nn.Embedding(10, 4, padding_idx=1)
    np.testing.assert_array_equal(ours.weight.detach().numpy()[1], np.zeros(4))
    theirs = _torch_twin(ours, lambda: torch.nn.Embedding(10, 4, padding_idx=1))
    _compare(ours, theirs, np.array([[1, 3, 3], [9, 0, 1]]))
    assert not ours.weight.grad.numpy()[1].any()


def test_repr_matches_pytorch() -> None:
    def build(m):
        return m.Sequential(
            m.Conv2d(3, 8, 3, padding=1),
            m.ReLU(),
            m.MaxPool2d(2),
            m.AvgPool2d(2),
            m.Upsample(scale_factor=2),
            m.Linear(2, 3),
            m.Embedding(5, 2),
            m.GELU(),
            m.Flatten(),
        )

    assert repr(build(nn)) == repr(build(torch.nn))
    assert nn.functional is F


# ---------------------------------------------------------------------- initialisation
@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda m: m.Linear(300, 200), 300),
        (lambda m: m.Conv2d(16, 64, 3), 16 * 9),
        (lambda m: m.Conv2d(32, 64, 3, groups=4), 8 * 9),
        (lambda m: m.ConvTranspose2d(16, 64, 4), 64 * 16),  # PyTorch takes fan_in from weight.shape[1]
    ],
)
def test_default_init_matches_pytorch_bounds(make, fan_in: int) -> None:
    ours, theirs = make(nn), make(torch.nn)
    bound = 1 / math.sqrt(fan_in)
    for name, p in ours.named_parameters():
        values = p.detach().numpy()
        reference = dict(theirs.named_parameters())[name].detach().numpy()
        assert values.shape == reference.shape
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.9 * bound  # U(−b, b) fills the whole interval
        if values.size > 1000:  # std of U(−b, b) is b/√3, like PyTorch's draw
            assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            assert values.std() == pytest.approx(reference.std(), rel=0.05)
            assert abs(values.mean()) < 0.05 * bound


def test_init_functions_statistics() -> None:
    w = mg.empty(400, 300)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 300), rel=0.02)
    nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(2) * math.sqrt(3 / 400)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    nn.init.xavier_uniform_(w, gain=2.0)
    assert np.abs(w.numpy()).max() <= 2 * math.sqrt(6 / 700)
    assert w.numpy().std() == pytest.approx(2 * math.sqrt(2 / 700), rel=0.02)
    nn.init.xavier_normal_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 700), rel=0.02)
    nn.init.normal_(w, 3.0, 0.5)
    assert w.numpy().mean() == pytest.approx(3.0, abs=0.01) and w.numpy().std() == pytest.approx(0.5, rel=0.02)
    nn.init.uniform_(w, -2.0, 1.0)
    assert w.numpy().min() >= -2.0 and w.numpy().max() < 1.0
    nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert np.abs(w.numpy()).max() <= 0.5 and w.numpy().std() > 0.25
    nn.init.constant_(w, 0.25)
    assert (w.numpy() == 0.25).all()
    nn.init.zeros_(w)
    assert not w.numpy().any()
    nn.init.ones_(w)
    assert (w.numpy() == 1).all() and w.dtype == np.float32


def test_gain_and_fans_match_pytorch() -> None:
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    for slope in (None, 0.2, math.sqrt(5)):
        assert nn.init.calculate_gain("leaky_relu", slope) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope)
        )
    assert nn.init.calculate_gain("selu") == pytest.approx(torch.nn.init.calculate_gain("selu"))
    for shape in [(3, 4), (8, 3, 5, 5), (2, 6, 3)]:
        assert nn.init._calculate_fan_in_and_fan_out(mg.empty(shape)) == torch.nn.init._calculate_fan_in_and_fan_out(
            torch.empty(shape)
        )
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init._calculate_fan_in_and_fan_out(mg.empty(5))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swishy")


def test_seeded_init_is_identical_on_every_device(device: str) -> None:
    mg.manual_seed(123)
    on_cpu = nn.Sequential(nn.Linear(5, 4), nn.Conv2d(2, 3, 3), nn.Embedding(7, 3))
    mg.manual_seed(123)
    on_device = nn.Sequential(nn.Linear(5, 4, device=device), nn.Conv2d(2, 3, 3, device=device), nn.Embedding(7, 3))
    on_device.to(device)
    assert all(p.device == device for p in on_device.parameters())
    for (name, a), b in zip(on_cpu.state_dict().items(), on_device.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    mg.manual_seed(124)
    assert not np.array_equal(nn.Linear(5, 4).weight.detach().numpy(), on_cpu[0].weight.detach().numpy())


# --------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(3, 2), (4, 3)),
        (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, groups=1), (2, 2, 5, 5)),
        (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2), (1, 2, 3, 3)),
        (lambda: nn.LayerNorm(4), (3, 4)),
        (lambda: nn.GroupNorm(2, 4), (2, 4, 3)),
        (lambda: nn.BatchNorm2d(3), (4, 3, 2, 2)),
    ],
)
def test_gradcheck_through_module_parameters(make, shape) -> None:
    module = make()
    x = mg.randn(*shape, dtype=mg.float64)
    result = mg.gradcheck(module, x)
    checked = [r.name for r in result.inputs]
    assert checked == ["input 0"] + [f"parameter {name}" for name, _ in module.named_parameters()]
    assert all(p.dtype == np.float32 for p in module.parameters())  # gradcheck put them back


def test_gradcheck_catches_a_wrong_layer_gradient() -> None:
    class ScaledBackward(nn.Module):
        """A layer whose bias gradient is doubled: gradcheck must flag the bias."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            bias = self.lin.bias
            doubled = bias * 2 - bias.detach()  # value b, gradient 2·g
            return F.linear(x, self.lin.weight, doubled)

    result = mg.gradcheck(ScaledBackward(), mg.randn(4, 3, dtype=mg.float64), raise_exception=False)
    failed = [r.name for r in result.inputs if not r.passed]
    assert failed == ["parameter lin.bias"]


# ------------------------------------------------------------------------ on devices
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(4, 3), (2, 4)),
        (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 4, 4)),
        (lambda: nn.ConvTranspose2d(2, 3, 2, stride=2), (1, 2, 3, 3)),
        (lambda: nn.BatchNorm2d(2), (3, 2, 2, 2)),
        (lambda: nn.LayerNorm(4), (2, 4)),
        (lambda: nn.GroupNorm(1, 2), (2, 2, 3)),
        (lambda: nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(1), nn.Upsample(scale_factor=2)), (1, 2, 4, 4)),
    ],
)
def test_layers_run_on_every_device_with_the_same_result(make, shape, device: str) -> None:
    mg.manual_seed(5)
    reference = make()
    mg.manual_seed(5)
    moved = make().to(device)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    expected = reference(Tensor(x, requires_grad=True))
    out = moved(Tensor(x, device=device, requires_grad=True))
    assert out.device == device
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    expected.sum().backward()
    for (name, p), q in zip(moved.named_parameters(), reference.parameters()):
        assert p.grad.device == device
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    for a, b in zip(moved.buffers(), reference.buffers()):  # running statistics updated on the device
        assert a.device == device
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_dropout_trains_and_evaluates() -> None:
    layer = nn.Dropout(0.25)
    x = mg.ones(200, 100)
    y = layer(x).numpy()
    kept = y != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    layer.eval()
    assert layer(x) is x or np.array_equal(layer(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def test_shape_layers_and_errors() -> None:
    assert nn.Flatten()(mg.zeros(2, 3, 4)).shape == (2, 12)
    assert nn.Unflatten(-1, (2, 2))(mg.zeros(3, 4)).shape == (3, 2, 2)
    assert nn.Identity(54, unused="x")(mg.zeros(3)).shape == (3,)
    assert nn.Conv2d(3, 8, 5, stride=2)(mg.zeros(1, 3, 11, 11)).shape == (1, 8, 4, 4)
    assert nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)(mg.zeros(1, 8, 5, 5)).shape == (1, 3, 10, 10)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="dimension to normalise"):
        nn.Softmax()
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        nn.Upsample()


# ---------------------------------------------------------------------- training works
def test_mlp_overfits_one_batch() -> None:
    mg.manual_seed(0)
    x = mg.randn(32, 10)
    y = mg.randint(0, 4, (32,))
    model = nn.Sequential(nn.Linear(10, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 4))
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    assert first > 1.0 and loss.item() < 0.02
    assert (model(x).argmax(dim=1).numpy() == y.numpy()).all()


def test_loss_modules_match_functional():
    import minigen.nn.functional as F

    logits, target = mg.randn(5, 4), mg.tensor([0, 3, 1, 1, 2])
    assert (
        nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target).item()
        == F.cross_entropy(logits, target, label_smoothing=0.1).item()
    )
    x, y = mg.randn(6), mg.rand(6)
    assert nn.BCEWithLogitsLoss()(x, y).item() == F.binary_cross_entropy_with_logits(x, y).item()
    assert nn.MSELoss(reduction="sum")(x, y).item() == F.mse_loss(x, y, reduction="sum").item()
    assert nn.L1Loss()(x, y).item() == F.l1_loss(x, y).item()


def test_zero_sized_layers_as_pytorch(device: str) -> None:
    """nn.Linear(0, 3) is a valid layer (no inputs: y = b, and b starts at 0 since its bound
    1/√fan_in has fan_in 0), as in PyTorch; a convolution kernel with no taps is refused."""
    layer = nn.Linear(0, 3).to(device)
    assert layer.weight.shape == (3, 0)
    np.testing.assert_array_equal(layer.bias.detach().numpy(), np.zeros(3))
    y = layer(mg.zeros(2, 0, device=device))
    np.testing.assert_array_equal(y.detach().numpy(), np.zeros((2, 3)))
    y.sum().backward()
    np.testing.assert_array_equal(layer.bias.grad.numpy(), np.full(3, 2.0))
    assert layer.weight.grad.shape == (3, 0)
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be positive, got \(0, 0\)"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: kernel_size must be positive, got \(3, 0\)"):
        nn.ConvTranspose2d(3, 4, (3, 0))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # PyTorch's own note on its init
def test_zero_sized_linear_matches_pytorch() -> None:
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Linear(0, 3), torch.nn.Linear(0, 3)
    np.testing.assert_array_equal(ours.bias.detach().numpy(), theirs.bias.detach().numpy())
    x = np.zeros((4, 0), dtype=np.float32)
    np.testing.assert_array_equal(ours(mg.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy())
