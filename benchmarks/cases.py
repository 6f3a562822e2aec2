"""The benchmark cases. Each builds a minigen step, the identical PyTorch step, and a check.

``build(device, quick)`` returns ``(minigen_fn, torch_fn_or_None, check_or_None)``.
The check runs once before timing and asserts that both libraries compute the same
thing (forward values and gradients), so a fast wrong answer cannot pass.

Two kinds of rows:

* **op** rows time one op's forward and backward. The inputs are leaf tensors created
  once (only their ``.grad`` is reset per call), and backward is seeded with a fixed
  random upstream gradient of the output's shape, so both libraries do the full work.
* **model** rows time one training step of a demo model: forward, loss, backward and
  the optimiser's step. The PyTorch model is a twin from ``benchmarks/torch_twins.py``
  with minigen's initial weights copied in by ``state_dict`` name, and both see the
  same batch (and the same noise, where the step draws any).

``quick`` (CI) shrinks every case, usually the batch, so the whole suite runs in well
under two minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import minigen as mg
import minigen.nn.functional as F
from minigen.ops.attention import scaled_dot_product_attention
from minigen.ops.rope import apply_rope, rope_cos_sin

try:
    import torch
    import torch.nn.functional as TF
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks import torch_twins as twins
except ImportError:  # PyTorch is optional: the minigen column is still measured
    torch = None

Built = tuple[Callable[[], object], Callable[[], object] | None, Callable[[], None] | None]


@dataclass
class Case:
    name: str
    level: str  # "op" or "model"
    build: Callable[[str, bool], Built]
    flops: Callable[[bool], float] | None = None  # of one timed call (quick or not), for "% of GEMM peak"
    target: str | None = None  # e.g. "≤ 2.0×": the ratio minigen/PyTorch to stay under
    repeats: tuple[int, int] | None = None  # timed rounds (full, quick); default (15, 5)

    @property
    def target_ratio(self) -> float:
        """The number in ``target`` ("≤ 2.0×" -> 2.0)."""
        return float(self.target.split("≤")[1].split("×")[0])


# ------------------------------------------------------------------------ helpers
def host(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Standard-normal float32 data (times ``scale``), the same for both libraries."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def host_labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n).astype(np.int64)


def torch_device(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def has_torch(device: str) -> bool:
    """Whether PyTorch can run the twin on ``device`` (a CPU-only PyTorch cannot on a GPU)."""
    return torch is not None and (torch_device(device) == "cpu" or torch.cuda.is_available())


def as_numpy(t) -> np.ndarray:
    """A host array from a minigen or a PyTorch tensor."""
    if isinstance(t, mg.Tensor):
        return t.detach().numpy()
    return t.detach().cpu().numpy()


def assert_close(what: str, mine, theirs, tol: float = 1e-4, floor: float = 1e-6) -> None:
    """max |mine − theirs| ≤ tol · max |theirs| + floor: the error relative to the result's scale.

    Relative to the largest entry, not elementwise, because float32 sums over thousands
    of terms (convolutions, attention) leave small entries with large relative errors.
    The absolute ``floor`` is for gradients that are zero in exact arithmetic (a bias
    followed by batch norm), where both libraries return rounding noise.
    """
    a, b = as_numpy(mine), as_numpy(theirs)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: minigen shape {a.shape}, PyTorch shape {b.shape}")
    scale = float(np.abs(b).max()) if b.size else 0.0
    error = float(np.abs(a - b).max()) if b.size else 0.0
    if not error <= tol * scale + floor:  # also catches NaN
        raise AssertionError(f"{what}: minigen and PyTorch differ by {error:.3g} (scale {scale:.3g}, tol {tol:g})")


def fwd_bwd(
    device: str,
    arrays: Sequence[np.ndarray],
    mine_op: Callable[..., mg.Tensor],
    torch_op: Callable[..., object],
    tol: float = 1e-4,
) -> Built:
    """Forward and backward of one op on the leaves ``arrays`` (every one needs a gradient).

    ``mine_op(*tensors)`` and ``torch_op(*tensors)`` compute the op's output in each
    library. Backward is seeded with a fixed random gradient of the output's shape. The
    check compares the output and every input's gradient.
    """
    xs = [mg.tensor(a, device=device, requires_grad=True) for a in arrays]
    with mg.no_grad():
        out_shape = tuple(mine_op(*xs).shape)
    upstream = host(out_shape, seed=99)
    g = mg.tensor(upstream, device=device)

    def mine():
        for x in xs:
            x.grad = None
        y = mine_op(*xs)
        y.backward(g)
        return y

    if not has_torch(device):
        return mine, None, None
    dev = torch_device(device)
    ts = [torch.tensor(a, device=dev, requires_grad=True) for a in arrays]
    tg = torch.tensor(upstream, device=dev)

    def theirs():
        for t in ts:
            t.grad = None
        y = torch_op(*ts)
        y.backward(tg)
        return y

    def check():
        assert_close("output", mine(), theirs(), tol)
        for i, (x, t) in enumerate(zip(xs, ts)):
            assert_close(f"gradient of input {i}", x.grad, t.grad, tol)

    return mine, theirs, check


def training_pair(
    pairs: Sequence[tuple[object, object]],
    mine: Callable[[], dict],
    theirs: Callable[[], dict],
    tol: float = 2e-3,
) -> Built:
    """A model row's (mine, theirs, check) from two training steps that return their losses.

    ``pairs`` lists (minigen model, PyTorch twin) whose gradients the check compares, by
    parameter name, after one step of each from the same weights; the returned losses
    (a dict name -> scalar tensor) are compared too.
    """

    def check():
        losses_mine, losses_theirs = mine(), theirs()
        for name in losses_mine:
            assert_close(f"loss {name}", losses_mine[name], losses_theirs[name], 1e-4)
        for model, twin in pairs:
            grads_theirs = {name: p.grad for name, p in twin.named_parameters()}
            for name, p in model.named_parameters():
                if p.grad is None or grads_theirs.get(name) is None:
                    if (p.grad is None) != (grads_theirs.get(name) is None):
                        raise AssertionError(f"{name}: a gradient in one library only")
                    continue
                assert_close(f"gradient of {name}", p.grad, grads_theirs[name], tol)

    return mine, theirs, check


def twin_of(model, twin):
    """The PyTorch twin with ``model``'s weights, on ``model``'s device."""
    twins.copy_weights(model, twin)
    return twin.to(torch_device(str(model_device(model))))


def model_device(model) -> str:
    return next(iter(model.parameters())).device


# ------------------------------------------------------------------------- engine
def tiny_op_chain(device: str, quick: bool) -> Built:
    """Per-op overhead: 200 alternating add/mul ops on 16 numbers, forward + backward.

    Reported per whole chain; divide by 200 for µs per op.
    """
    n_ops = 200

    def chain(x):
        y = x
        for i in range(n_ops):
            y = y * 1.001 if i % 2 else y + 0.5
        return y

    return fwd_bwd(device, [host((16,))], chain, chain)


def matmul_case(n_full: int) -> Callable[[str, bool], Built]:
    """(n × n) @ (n × n), forward and backward; n/2 in quick mode."""

    def build(device: str, quick: bool) -> Built:
        n = n_full // 2 if quick else n_full
        return fwd_bwd(device, [host((n, n), 1), host((n, n), 2)], lambda a, b: a @ b, lambda a, b: a @ b)

    return build


# ------------------------------------------------------------------ convolutions
def conv_batch(quick: bool) -> int:
    return 8 if quick else 32


def conv2d_3x3(device: str, quick: bool) -> Built:
    """conv2d, 3×3 kernel, padding 1: x (N, 64, 32, 32) -> (N, 64, 32, 32), with bias."""
    arrays = [host((conv_batch(quick), 64, 32, 32), 1), host((64, 64, 3, 3), 2, 1 / 24), host((64,), 3)]
    return fwd_bwd(
        device,
        arrays,
        lambda x, w, b: F.conv2d(x, w, b, padding=1),
        lambda x, w, b: TF.conv2d(x, w, b, padding=1),
    )


def conv2d_flops(quick: bool) -> float:
    # forward, ∂x and ∂W: three products of 2·N·H·W·C_out·C_in·k² FLOPs each
    return 3 * 2 * conv_batch(quick) * 32 * 32 * 64 * 64 * 9


def convt_batch(quick: bool) -> int:
    return 16 if quick else 64


def conv_transpose2d_k4s2(device: str, quick: bool) -> Built:
    """conv_transpose2d, 4×4 kernel, stride 2, padding 1: x (N, 128, 8, 8) -> (N, 64, 16, 16)."""
    arrays = [host((convt_batch(quick), 128, 8, 8), 1), host((128, 64, 4, 4), 2, 1 / 32), host((64,), 3)]
    return fwd_bwd(
        device,
        arrays,
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1),
        lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2, padding=1),
    )


def conv_transpose2d_flops(quick: bool) -> float:
    return 3 * 2 * convt_batch(quick) * 8 * 8 * 128 * 64 * 16


# ----------------------------------------------------------------------- pooling
def max_pool2d_2x2(device: str, quick: bool) -> Built:
    """max_pool2d, 2×2 windows, stride 2: x (N, 64, 32, 32) -> (N, 64, 16, 16)."""
    x = host((conv_batch(quick), 64, 32, 32), 1)  # continuous values: no ties in a window
    return fwd_bwd(device, [x], lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), tol=1e-6)


def avg_pool2d_2x2(device: str, quick: bool) -> Built:
    """avg_pool2d, 2×2 windows, stride 2: x (N, 64, 32, 32) -> (N, 64, 16, 16)."""
    x = host((conv_batch(quick), 64, 32, 32), 1)
    return fwd_bwd(device, [x], lambda x: F.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2), tol=1e-6)


# ------------------------------------------------------------ rowwise / elementwise
def rows(quick: bool) -> int:
    return 1024 if quick else 4096


def layer_norm_768(device: str, quick: bool) -> Built:
    """layer_norm over the last axis of x (rows, 768), with weight and bias."""
    arrays = [host((rows(quick), 768), 1), 1.0 + host((768,), 2, 0.1), host((768,), 3, 0.1)]
    return fwd_bwd(
        device,
        arrays,
        lambda x, w, b: F.layer_norm(x, (768,), w, b),
        lambda x, w, b: TF.layer_norm(x, (768,), w, b),
        tol=1e-5,
    )


def softmax_768(device: str, quick: bool) -> Built:
    """softmax over the last axis of x (rows, 768)."""
    x = host((rows(quick), 768), 1, 2.0)
    return fwd_bwd(device, [x], lambda x: F.softmax(x, dim=-1), lambda x: TF.softmax(x, dim=-1), tol=1e-5)


def gelu_768(device: str, quick: bool) -> Built:
    """Exact GELU x·Φ(x) on x (rows, 768)."""
    x = host((rows(quick), 768), 1, 2.0)
    return fwd_bwd(device, [x], F.gelu, TF.gelu, tol=1e-5)  # tight: the tanh approximation would fail


# ----------------------------------------------------------------------- attention
def attention_case(T: int, full: tuple[int, int], quick: tuple[int, int]) -> Callable[[str, bool], Built]:
    """Causal softmax(QKᵀ/√d + M)V with q, k, v (B, H, T, 64), against PyTorch's math path.

    The math path (``SDPBackend.MATH``) materialises the T×T weights like minigen does;
    PyTorch's default CPU kernel is a fused flash attention, a different algorithm.
    """

    def build(device: str, is_quick: bool) -> Built:
        B, H = quick if is_quick else full
        arrays = [host((B, H, T, 64), seed) for seed in (1, 2, 3)]

        def theirs(q, k, v):
            with sdpa_kernel(SDPBackend.MATH):
                return TF.scaled_dot_product_attention(q, k, v, is_causal=True)

        return fwd_bwd(device, arrays, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True), theirs)

    return build


def attention_flops(T: int, full: tuple[int, int], quick: tuple[int, int]) -> Callable[[bool], float]:
    def flops(is_quick: bool) -> float:
        B, H = quick if is_quick else full
        return 3 * 2 * (2 * B * H * T * T * 64)  # QKᵀ and AV, forward plus two products each backward

    return flops


def rope_8x8x256x64(device: str, quick: bool) -> Built:
    """RoPE (adjacent pairs) on x (B, 8, 256, 64) with precomputed cos/sin, as models use it."""
    B = 2 if quick else 8
    cos, sin = rope_cos_sin(256, 64, device=device)
    mine = lambda x: apply_rope(x, cos, sin)  # noqa: E731
    if not has_torch(device):
        return fwd_bwd(device, [host((B, 8, 256, 64), 1)], mine, None)
    tcos, tsin = twins.rope_cos_sin(256, 64, device=torch_device(device))
    return fwd_bwd(device, [host((B, 8, 256, 64), 1)], mine, lambda x: twins.rope_adjacent(x, tcos, tsin), tol=1e-5)


# --------------------------------------------------------------------------- models
def classifier_step(model, make_twin: Callable[[], object], lr: float, device: str, quick: bool) -> Built:
    """One Adam step on cross-entropy for a 16×16 digit classifier, minigen and its twin."""
    batch = 32 if quick else 128
    model = model.to(device)
    opt = mg.optim.Adam(model.parameters(), lr=lr)
    images, labels = host((batch, 1, 16, 16), 1), host_labels(batch, 10)
    x, y = mg.tensor(images, device=device), mg.tensor(labels, device=device)

    def mine():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, make_twin())
    topt = torch.optim.Adam(twin.parameters(), lr=lr)
    tx, ty = torch.tensor(images, device=torch_device(device)), torch.tensor(labels, device=torch_device(device))

    def theirs():
        loss = TF.cross_entropy(twin(tx), ty)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


def cnn_lenet(device: str, quick: bool) -> Built:
    """LeNet on 16×16 digits: Adam step on cross-entropy, batch 128."""
    from minigen.models.cnn import LeNet

    mg.manual_seed(0)
    model = LeNet(num_classes=10, image_size=16)
    return classifier_step(model, lambda: twins.LeNet(num_classes=10, image_size=16), 2e-3, device, quick)


def vit_digits(device: str, quick: bool) -> Built:
    """ViT (16×16 images, 4×4 patches, d 64, 4 blocks, 4 heads): Adam step, batch 128."""
    from minigen.models.vit import ViT

    config = dict(image_size=16, patch_size=4, in_channels=1, num_classes=10, d_model=64, n_layers=4, n_heads=4)
    mg.manual_seed(0)
    model = ViT(**config)
    return classifier_step(model, lambda: twins.ViT(**config), 1e-3, device, quick)


def gpt_chars(device: str, quick: bool) -> Built:
    """The char-level GPT of demos/gpt_chars.py (V 65, T 64, d 96, 3 blocks, 4 heads), no
    dropout: AdamW step on next-token cross-entropy, batch 32."""
    from minigen.models.gpt import GPT

    batch = 8 if quick else 32
    config = dict(vocab_size=65, block_size=64, n_layers=3, n_heads=4, d_model=96)
    mg.manual_seed(0)
    model = GPT(**config).to(device)
    opt = mg.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    ids = host_labels(batch * 65, 65).reshape(batch, 65)
    x, y = mg.tensor(ids[:, :-1], device=device), mg.tensor(ids[:, 1:], device=device)

    def mine():
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.GPT(**config))
    topt = torch.optim.AdamW(twin.parameters(), lr=2e-3, weight_decay=0.1)
    dev = torch_device(device)
    tx, ty = torch.tensor(ids[:, :-1], device=dev), torch.tensor(ids[:, 1:], device=dev)

    def theirs():
        loss = twin.loss(tx, ty)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


def dcgan_digits(device: str, quick: bool) -> Built:
    """The conditional DCGAN of demos/dcgan_digits.py (16×16, latent 32, width 32, 10
    classes): one discriminator step and one generator step, Adam(2e-4, β₁ 0.5), batch 64."""
    from minigen.models.gan import DCGANDiscriminator, DCGANGenerator, discriminator_step, generator_step

    batch = 16 if quick else 64
    mg.manual_seed(0)
    gen = DCGANGenerator(32, 1, 16, base_channels=32, num_classes=10).to(device)
    disc = DCGANDiscriminator(1, 16, base_channels=32, num_classes=10).to(device)
    opt_g = mg.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = mg.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real, labels = np.tanh(host((batch, 1, 16, 16), 1)), host_labels(batch, 10)
    z_d, z_g = host((batch, 32), 2), host((batch, 32), 3)
    x, y = mg.tensor(real, device=device), mg.tensor(labels, device=device)
    zd, zg = mg.tensor(z_d, device=device), mg.tensor(z_g, device=device)

    def mine():
        stats = discriminator_step(gen, disc, opt_d, x, zd, labels=y)
        stats.update(generator_step(gen, disc, opt_g, zg, labels=y))
        return {"d_loss": stats["d_loss"], "g_loss": stats["g_loss"]}

    if not has_torch(device):
        return mine, None, None
    tgen = twin_of(gen, twins.DCGANGenerator(32, 1, 16, base_channels=32, num_classes=10))
    tdisc = twin_of(disc, twins.DCGANDiscriminator(1, 16, base_channels=32, num_classes=10))
    topt_g = torch.optim.Adam(tgen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    topt_d = torch.optim.Adam(tdisc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    dev = torch_device(device)
    tx, ty = torch.tensor(real, device=dev), torch.tensor(labels, device=dev)
    tzd, tzg = torch.tensor(z_d, device=dev), torch.tensor(z_g, device=dev)

    def theirs():
        stats = twins.gan_training_step(tgen, tdisc, topt_g, topt_d, tx, tzd, tzg, ty)
        return {"d_loss": stats["d_loss"], "g_loss": stats["g_loss"]}

    return training_pair([(gen, tgen), (disc, tdisc)], mine, theirs)


def vae_digits(device: str, quick: bool) -> Built:
    """The ConvVAE of demos/vae_digits.py --model conv (16×16, latent 16, width 32):
    Adam step on −ELBO with fixed noise ε, batch 128."""
    from minigen.models.vae import ConvVAE, vae_loss

    batch = 32 if quick else 128
    mg.manual_seed(0)
    model = ConvVAE(1, 16, latent_dim=16, base_channels=32).to(device)
    opt = mg.optim.Adam(model.parameters(), lr=1e-3)
    images = (host((batch, 1, 16, 16), 1) > 0.5).astype(np.float32)  # binary pixels, as in the demo
    noise = host((batch, 16), 2)
    x, eps = mg.tensor(images, device=device), mg.tensor(noise, device=device)

    def mine():
        out = model(x, eps)
        loss = vae_loss(out.x_hat, x, out.mu, out.logvar).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.ConvVAE(1, 16, latent_dim=16, base_channels=32))
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    tx, teps = torch.tensor(images, device=torch_device(device)), torch.tensor(noise, device=torch_device(device))

    def theirs():
        x_hat, mu, logvar = twin(tx, teps)
        loss = twins.vae_loss(x_hat, tx, mu, logvar)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


def unet_ddpm(device: str, quick: bool) -> Built:
    """The class-conditional U-Net of demos/diffusion_digits.py (16×16, width 16, levels ×1 ×2 ×2,
    attention at 4×4, cosine schedule T 500): Adam step on the DDPM loss
    ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, y)‖² with fixed t, ε and labels y (some null), batch 64."""
    from minigen.models.diffusion import cosine_schedule, ddpm_loss
    from minigen.models.unet import UNet
    from minigen.nn import init

    batch = 16 if quick else 64
    config = dict(in_channels=1, base_channels=16, channel_mults=(1, 2, 2), num_classes=10)
    mg.manual_seed(0)
    model = UNet(**config)
    # conv_out starts at zero, which would make every other gradient of the check zero.
    init.normal_(model.conv_out.weight, std=0.02)
    model.to(device)
    opt = mg.optim.Adam(model.parameters(), lr=1.5e-3)
    schedule = cosine_schedule(500)
    images, noise = np.tanh(host((batch, 1, 16, 16), 1)), host((batch, 1, 16, 16), 2)
    steps, labels = host_labels(batch, 500, seed=3), host_labels(batch, 11, seed=4)  # label 10: the null label
    x0, eps, t, y = (mg.tensor(a, device=device) for a in (images, noise, steps, labels))

    def mine():
        loss = ddpm_loss(model, schedule, x0, y=y, t=t, noise=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.UNet(**config))
    topt = torch.optim.Adam(twin.parameters(), lr=1.5e-3)
    dev = torch_device(device)
    tx0, teps, tt, ty = (torch.tensor(a, device=dev) for a in (images, noise, steps, labels))
    alpha_bars = torch.tensor(schedule.alpha_bars.astype(np.float32), device=dev)

    def theirs():
        alpha_bar = alpha_bars[tt].reshape(-1, 1, 1, 1)
        x_t = alpha_bar.sqrt() * tx0 + (1.0 - alpha_bar).sqrt() * teps
        loss = TF.mse_loss(twin(x_t, tt, ty), teps)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


# ------------------------------------------------------ image-to-image (issue 14)
def pix2pix_digits(device: str, quick: bool) -> Built:
    """The pix2pix of demos/pix2pix_digits.py (16×16, U-Net width 16, 3 levels, nearest
    upsampling, one noise channel z; conditional PatchGAN width 32): one D step and one G
    step, Adam(2e-4, β₁ 0.5), batch 32, with fixed pairs and noise z."""
    from minigen.models.pix2pix import PatchDiscriminator, UNetGenerator, train_step

    batch = 8 if quick else 32
    config = dict(in_channels=1, out_channels=1, base_channels=16, levels=3, upsample="nearest", noise_channels=1)
    mg.manual_seed(0)
    gen, disc = UNetGenerator(**config).to(device), PatchDiscriminator(2, 32, 2).to(device)
    opt_g = mg.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = mg.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    inputs, targets, noise = (
        np.tanh(host((batch, 1, 16, 16), 1)),
        np.tanh(host((batch, 1, 16, 16), 2)),
        host((batch, 1, 16, 16), 3),
    )
    x, y, z = (mg.tensor(a, device=device) for a in (inputs, targets, noise))

    def mine():
        stats = train_step(gen, disc, opt_g, opt_d, x, y, z=z)
        return {"d_loss": stats["d_loss"], "g_loss": stats["g_loss"]}

    if not has_torch(device):
        return mine, None, None
    tgen, tdisc = twin_of(gen, twins.UNetGenerator(**config)), twin_of(disc, twins.PatchDiscriminator(2, 32, 2))
    topt_g = torch.optim.Adam(tgen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    topt_d = torch.optim.Adam(tdisc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    tx, ty, tz = (torch.tensor(a, device=torch_device(device)) for a in (inputs, targets, noise))

    def theirs():
        return twins.pix2pix_training_step(tgen, tdisc, topt_g, topt_d, tx, ty, tz)

    return training_pair([(gen, tgen), (disc, tdisc)], mine, theirs)


def cyclegan_digits(device: str, quick: bool) -> Built:
    """The CycleGAN of demos/cyclegan_digits.py (16×16; G and F: U-Nets width 16, 2 levels;
    D_A and D_B: PatchGANs width 32): the generators' step (LSGAN + 10·cycle + 5·identity),
    then the discriminators' step, two Adams (2e-4, β₁ 0.5), batches of 16 per domain.
    The image pools have size 0 here (the fakes themselves), so both libraries see the same fakes."""
    from minigen.models.cyclegan import CycleGAN, ImagePool, make_optimizers, train_step

    batch = 4 if quick else 16
    config = dict(channels=1, base_channels=16, levels=2, upsample="nearest", disc_channels=32, disc_layers=2)
    mg.manual_seed(0)
    model = CycleGAN(**config).to(device)
    opt_g, opt_d = make_optimizers(model)
    images_a, images_b = np.tanh(host((batch, 1, 16, 16), 1)), np.tanh(host((batch, 1, 16, 16), 2))
    x, y = mg.tensor(images_a, device=device), mg.tensor(images_b, device=device)
    pools = ImagePool(0), ImagePool(0)

    def mine():
        stats = train_step(model, opt_g, opt_d, x, y, *pools)
        return {"g_loss": stats["g_loss"], "d_loss": stats["d_loss"]}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.CycleGAN(**config))
    topt_g = torch.optim.Adam([*twin.G.parameters(), *twin.F.parameters()], lr=2e-4, betas=(0.5, 0.999))
    topt_d = torch.optim.Adam([*twin.D_A.parameters(), *twin.D_B.parameters()], lr=2e-4, betas=(0.5, 0.999))
    tx, ty = torch.tensor(images_a, device=torch_device(device)), torch.tensor(images_b, device=torch_device(device))

    def theirs():
        return twins.cyclegan_training_step(twin, topt_g, topt_d, tx, ty)

    # Six generator passes and two GroupNorm-ed U-Nets per step: in float32 the gradients of
    # the two libraries differ by up to ~0.7% of their scale (in float64 they agree to 1e-14,
    # so the twin is exact; the rounding differs), hence a looser tolerance than other rows.
    return training_pair([(model, twin)], mine, theirs, tol=1e-2)


def clip_digits(device: str, quick: bool) -> Built:
    """The CLIP of demos/clip_digits.py (CNN 16-32-64, text d64 L2, D 64) on captioned digits:
    one AdamW step on the symmetric contrastive loss with soft targets, then the clamp of
    the logit scale, batch 128."""
    from minigen.data.captions import captioned_digits, describes
    from minigen.data.tokenizer import Tokenizer
    from minigen.models.clip import CLIP, LOGIT_SCALE_MAX, soft_targets

    batch = 32 if quick else 128
    tokenizer = Tokenizer.default()
    config = dict(vocab_size=tokenizer.vocab_size, end_id=tokenizer.end_id)
    mg.manual_seed(0)
    model = CLIP(**config).to(device)
    opt = mg.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    data = captioned_digits(batch, seed=0)
    tokens, mask = tokenizer.encode(data.captions)
    positives = describes(data.mentioned, data.codes, data.codes)
    image_to_text, text_to_image = soft_targets(positives)
    x, t, m = (mg.tensor(a, device=device) for a in (data.images, tokens, mask))

    def mine():
        loss = model.loss(x, t, m, positives)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_logit_scale_()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.CLIP(**config))
    topt = torch.optim.AdamW(twin.parameters(), lr=2e-3, weight_decay=0.01)
    dev = torch_device(device)
    tx, tt, tm = (torch.tensor(a, device=dev) for a in (data.images, tokens, mask))
    t_i2t, t_t2i = (torch.tensor(a, device=dev) for a in (image_to_text, text_to_image))

    def theirs():
        loss = twin.loss(tx, tt, tm, t_i2t, t_t2i)
        topt.zero_grad()
        loss.backward()
        topt.step()
        with torch.no_grad():
            twin.logit_scale.clamp_(max=LOGIT_SCALE_MAX)
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


# ------------------------------------------------------------ latent spaces (issue 15)
def vqvae_digits(device: str, quick: bool) -> Built:
    """The VQ-VAE of demos/vq_digits.py (16×16 → 4×4 codes, K 64, D 16, width 16), its
    codebook set by k-means on the batch's encoder outputs: one Adam step on
    ‖x − x̂‖² + L_VQ (straight-through), batch 64."""
    from minigen.models.vq import VQVAE, train_step

    batch = 16 if quick else 64
    config = dict(in_channels=1, num_codes=64, code_dim=16, hidden_channels=16)
    mg.manual_seed(0)
    model = VQVAE(**config).to(device)
    images = (host((batch, 1, 16, 16), 1) > 0.8).astype(np.float32)
    x = mg.tensor(images, device=device)
    with mg.no_grad():
        model.quantizer.kmeans_init_(model.encode(x))
    opt = mg.optim.Adam(model.parameters(), lr=1e-3)

    def mine():
        stats = train_step(model, opt, x)
        return {"loss": stats["loss"], "reconstruction": stats["reconstruction"]}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.VQVAE(**config))
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    tx = torch.tensor(images, device=torch_device(device))

    def theirs():
        return twins.vqvae_training_step(twin, topt, tx)

    return training_pair([(model, twin)], mine, theirs)


def code_prior(device: str, quick: bool) -> Built:
    """The class-conditional GPT prior of demos/vq_digits.py over 4×4 grids of K = 64 codes
    ([class token, 16 codes], d 64, 4 blocks, 4 heads), no dropout: AdamW step on the codes'
    cross-entropy, batch 64."""
    from minigen.models.vq import CodePrior

    batch = 16 if quick else 64
    config = dict(num_codes=64, grid_shape=(4, 4), num_classes=10, n_layers=4, n_heads=4, d_model=64)
    mg.manual_seed(0)
    model = CodePrior(**config).to(device)
    opt = mg.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    grids, labels = host_labels(batch * 16, 64).reshape(batch, 4, 4), host_labels(batch, 10, seed=1)
    k, y = mg.tensor(grids, device=device), mg.tensor(labels, device=device)

    def mine():
        loss = model.loss(k, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.CodePrior(**config))
    topt = torch.optim.AdamW(twin.parameters(), lr=2e-3, weight_decay=0.1)
    dev = torch_device(device)
    tk, ty = torch.tensor(grids, device=dev), torch.tensor(labels, device=dev)

    def theirs():
        loss = twin.loss(tk, ty)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


# ---------------------------------------------------------- latent diffusion (issue 17)
def latent_unet_ldm(device: str, quick: bool) -> Built:
    """The U-Net of demos/text_to_image.py on 8×8×4 latents (width 32, levels ×1 ×2, spatial
    transformers with 4 heads at 4×4 and in the middle, cross-attending to a 16-token context of
    width 64 with a key-padding mask): Adam step on the latent DDPM loss ‖ε − ε_θ(z_t, t, τ)‖² with
    fixed t, ε and context τ (the text encoder's output, held fixed), batch 64."""
    from minigen.models.diffusion import ddpm_loss, linear_schedule
    from minigen.models.latent_diffusion import CrossAttentionUNet
    from minigen.nn import init

    batch = 16 if quick else 64
    config = dict(in_channels=4, base_channels=32, channel_mults=(1, 2), context_dim=64, num_heads=4)
    mg.manual_seed(0)
    model = CrossAttentionUNet(**config)
    # conv_out and each block's proj_out start at zero, which would make other gradients of the check zero.
    for name, p in model.named_parameters():
        if name.startswith("conv_out") or "proj_out" in name:
            init.normal_(p, std=0.02)
    model.to(device)
    opt = mg.optim.Adam(model.parameters(), lr=1e-3)
    schedule = linear_schedule(1000)
    latents, noise = host((batch, 4, 8, 8), 1), host((batch, 4, 8, 8), 2)
    context = host((batch, 16, 64), 5)
    lengths = np.random.default_rng(6).integers(2, 16, batch)
    pad = np.arange(16)[None, :] >= lengths[:, None]  # True = padding, after each caption's tokens
    steps = host_labels(batch, 1000, seed=3)
    z0, eps, t, ctx, mask = (mg.tensor(a, device=device) for a in (latents, noise, steps, context, pad))

    def mine():
        loss = ddpm_loss(model, schedule, z0, y=(ctx, mask), t=t, noise=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    if not has_torch(device):
        return mine, None, None
    twin = twin_of(model, twins.CrossAttentionUNet(**config))
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    dev = torch_device(device)
    tz0, teps, tt, tctx, tmask = (torch.tensor(a, device=dev) for a in (latents, noise, steps, context, pad))
    alpha_bars = torch.tensor(schedule.alpha_bars.astype(np.float32), device=dev)

    def theirs():
        alpha_bar = alpha_bars[tt].reshape(-1, 1, 1, 1)
        z_t = alpha_bar.sqrt() * tz0 + (1.0 - alpha_bar).sqrt() * teps
        loss = TF.mse_loss(twin(z_t, tt, tctx, tmask), teps)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return {"loss": loss}

    return training_pair([(model, twin)], mine, theirs)


# ----------------------------------------------------------------------------- list
ATTENTION_256 = ((8, 8), (2, 8))  # (B, H) full, quick
ATTENTION_1024 = ((8, 8), (1, 2))

CASES: list[Case] = [
    Case("tiny-op chain ×200 (fwd+bwd)", "op", tiny_op_chain, target="≤ 2.0×"),
    Case(
        "matmul 1024 (fwd+bwd)",
        "op",
        matmul_case(1024),
        flops=lambda q: 3 * 2 * (512 if q else 1024) ** 3,
        target="≤ 1.2×",
    ),
    Case(
        "matmul 2048 (fwd+bwd)",
        "op",
        matmul_case(2048),
        flops=lambda q: 3 * 2 * (1024 if q else 2048) ** 3,
        repeats=(5, 3),
    ),
    Case("conv2d 3×3 (32,64,32,32)→64 p1", "op", conv2d_3x3, flops=conv2d_flops, target="≤ 2.0×"),
    Case(
        "conv_transpose2d k4 s2 p1 (64,128,8,8)→64",
        "op",
        conv_transpose2d_k4s2,
        flops=conv_transpose2d_flops,
        target="≤ 2.5×",
    ),
    Case("max_pool2d 2×2 (32,64,32,32)", "op", max_pool2d_2x2, target="≤ 2.0×"),
    Case("avg_pool2d 2×2 (32,64,32,32)", "op", avg_pool2d_2x2, target="≤ 2.0×"),
    Case("layer_norm (4096,768)", "op", layer_norm_768, target="≤ 2.0×"),
    Case("softmax (4096,768)", "op", softmax_768, target="≤ 2.0×"),
    Case("gelu (4096,768)", "op", gelu_768, target="≤ 2.0×"),
    Case(
        "causal attention B8 H8 T256 D64 (vs math path)",
        "op",
        attention_case(256, *ATTENTION_256),
        flops=attention_flops(256, *ATTENTION_256),
        target="≤ 1.5×",
    ),
    Case(
        "causal attention B8 H8 T1024 D64 (vs math path)",
        "op",
        attention_case(1024, *ATTENTION_1024),
        flops=attention_flops(1024, *ATTENTION_1024),
        target="≤ 1.5×",
        repeats=(3, 3),
    ),
    Case("RoPE (8,8,256,64)", "op", rope_8x8x256x64),
    Case("CNN: LeNet 16×16, batch 128 (train step)", "model", cnn_lenet, target="≤ 2.0×"),
    Case("ViT 16×16 d64 L4, batch 128 (train step)", "model", vit_digits, target="≤ 2.0×"),
    Case("GPT chars d96 L3 T64, batch 32 (train step)", "model", gpt_chars, target="≤ 2.0×"),
    Case("DCGAN cond. 16×16, batch 64 (D+G steps)", "model", dcgan_digits, target="≤ 2.0×"),
    Case("VAE conv 16×16, batch 128 (train step)", "model", vae_digits, target="≤ 2.0×"),
    Case("U-Net DDPM cond. 16×16 w16, batch 64 (train step)", "model", unet_ddpm, target="≤ 2.0×"),
    # image-to-image translation (issue 14)
    Case("pix2pix 16×16 U-Net w16 L3, batch 32 (D+G steps)", "model", pix2pix_digits, target="≤ 2.0×"),
    Case("CycleGAN 16×16 w16 L2, batch 16 (G+F, D_A+D_B steps)", "model", cyclegan_digits, target="≤ 2.0×"),
    # text meets images (issue 16)
    Case("CLIP digits CNN + text d64 L2, batch 128 (train step)", "model", clip_digits, target="≤ 2.0×"),
    # latent spaces (issue 15)
    Case("VQ-VAE 16×16 K64 D16 w16, batch 64 (train step)", "model", vqvae_digits, target="≤ 2.0×"),
    Case("GPT prior 4×4 codes K64 d64 L4, batch 64 (train step)", "model", code_prior, target="≤ 2.0×"),
    # latent diffusion (issue 17)
    Case("LDM U-Net 8×8×4 w32 cross-attn, batch 64 (train step)", "model", latent_unet_ldm, target="≤ 2.0×"),
]
