"""A training step of every demo model runs on a GPU without one host sync.

Reading a device value on the host (``loss.item()``, ``float(t)``, ``if t > 0:``) makes
Python wait until the GPU has finished all queued work, and the GPU then idles until
Python queues more. So a training step must never read back (issue 6; DESIGN.md:
"GPU: no host syncs inside a training step").

Each test builds a small model, puts a batch on the stand-in GPU ``"standin"`` (that
host -> device copy is allowed), then runs what the demo's training loop does per step
(forward, loss, zero_grad, backward, clipping, optimiser step, EMA, LR schedule) twice
inside ``forbid_host_reads()``, where any read of a device value raises. It also checks

* that the steps really trained: the same steps on the CPU, from the same weights and
  the same seed, give the same parameters (and they moved);
* that the second step copies nothing from the host onto the device
  (``count_host_uploads``): random numbers are drawn on the device, Python numbers in
  expressions such as ``1.0 - alpha`` are written there by a kernel, and constant
  tables are cached there by the first step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import backend
from minigen.models import bert, cnn, diffusion, gan, gpt, unet, vae, vit
from minigen.optim import AdamW, clip_grad_norm_, warmup_cosine
from minigen.testing import HostReadError, HostUploads, check_shared_numbers, count_host_uploads, forbid_host_reads
from minigen.testing.devices import _VALUE_READS
from minigen.testing.standin import StandInArray, _StandInModule

DEVICE = "standin"


# ------------------------------------------------------------------------ the harness
@contextlib.contextmanager
def same_conv_layout_as_the_device():
    """Run the CPU's convolutions on the phase grid, as a GPU does. Small ones otherwise take
    the channels-last layout (``kernels/conv.py``), whose different summation order changes
    the rounding noise in gradients that are zero in exact arithmetic (a bias followed by
    batch norm), and Adam's first steps turn such noise into full-size, different steps."""
    from minigen.kernels import conv as conv_kernels

    chosen = conv_kernels.prefers_channels_last
    conv_kernels.prefers_channels_last = lambda *args: False
    try:
        yield
    finally:
        conv_kernels.prefers_channels_last = chosen


def _parameters(parts: dict[str, Any]) -> dict[str, np.ndarray]:
    """Host copies of every parameter and buffer of the modules in ``parts`` (and of an EMA's shadow)."""
    values = {}
    for key, part in parts.items():
        if isinstance(part, nn.Module):
            for name, t in part.state_dict().items():
                values[f"{key}.{name}"] = np.array(t.numpy())  # a copy: CPU updates are in place
        elif isinstance(part, mg.optim.EMA):
            for name, t in part.shadow.items():
                values[f"{key}.{name}"] = np.array(t.numpy())  # a copy: CPU updates are in place
    return values


def check_step(build: Callable[[str], dict[str, Any]], step: Callable[[dict[str, Any]], Any]) -> None:
    """Run ``step`` twice on the stand-in GPU without host reads; compare with the CPU.

    ``build(device)`` returns the models, optimisers, batch... on ``device`` (weights
    are initialised on the host, so both devices start from the same ones);
    ``step(parts)`` is one iteration of the demo's training loop.
    """
    mg.manual_seed(0)
    cpu = build("cpu")
    mg.manual_seed(0)
    gpu = build(DEVICE)
    before = _parameters(cpu)
    assert before.keys() == _parameters(gpu).keys()
    for name, value in _parameters(gpu).items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} differs before training")

    mg.manual_seed(1)  # the same random draws (noise, dropout, t, masks) on both devices
    with same_conv_layout_as_the_device():
        for _ in range(2):
            step(cpu)
    mg.manual_seed(1)
    with forbid_host_reads():
        step(gpu)  # the first step also creates optimiser state and caches tables
        with count_host_uploads() as uploads:
            step(gpu)
    assert uploads == HostUploads(), f"host data uploaded during a training step: {uploads}"

    check_shared_numbers()  # the numbers shared on the device (0.5, 1 - β, ...) were not written to
    after_cpu, after_gpu = _parameters(cpu), _parameters(gpu)
    moved = [name for name in before if not np.array_equal(after_cpu[name], before[name])]
    assert moved, "the training step changed no parameter"
    for name in before:
        # The same arithmetic (today bit for bit); the tolerance leaves room for CPU-only fast paths.
        np.testing.assert_allclose(after_gpu[name], after_cpu[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _on(device: str, array: np.ndarray) -> mg.Tensor:
    return mg.tensor(array, device=device)


def _digits(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, 1, size, size), dtype=np.float32), rng.integers(0, 10, size=n)


# ------------------------------------------------------------------------ the harness itself
def _patched_attributes() -> dict[str, Any]:
    """What the two context managers replace, to check that they put it all back."""
    owners = {"StandInArray": StandInArray, "xp": _StandInModule, "backend": backend}
    names = [*_VALUE_READS, "__getitem__", "__getattr__", "asnumpy", "asarray", "array", "to_device"]
    return {f"{o}.{n}": vars(owner).get(n) for o, owner in owners.items() for n in names}


def test_forbid_host_reads_refuses_each_read_and_restores_everything() -> None:
    t = mg.tensor([1.5, -2.0], device=DEVICE)
    scalar = mg.tensor(3, device=DEVICE)
    data = t.data
    reads = {
        "Tensor.item": lambda: t.sum().item(),
        "Tensor.numpy": lambda: t.numpy(),
        "Tensor.tolist": lambda: t.tolist(),
        "to cpu": lambda: t.to("cpu"),
        "float": lambda: float(t.sum()),
        "int": lambda: int(scalar),
        "bool": lambda: bool((t > 0).any()),
        "if": lambda: 1 if t.sum() > 0 else 0,
        "repr": lambda: repr(t),
        "format": lambda: f"{t.data}",
        "get": lambda: data.get(),
        "array.item": lambda: data.sum().item(),
        "array.tolist": lambda: data.tolist(),
        "asnumpy": lambda: t.xp.asnumpy(data),
        "nonzero": lambda: t.xp.nonzero(data),
        "array.nonzero": lambda: data.nonzero(),
        "one-argument where": lambda: t.xp.where(data > 0),
        "boolean mask": lambda: t[t > 0],
    }
    originals = _patched_attributes()
    for name, read in reads.items():
        try:
            with forbid_host_reads():
                read()
        except HostReadError as error:
            assert "host sync" in str(error), name
        else:
            pytest.fail(f"{name}: the read was not refused")
    with pytest.raises(HostReadError, match="1 host read.* refused and caught"), forbid_host_reads():
        with contextlib.suppress(HostReadError):  # swallowed, as a broad `except` in library code would
            t.sum().item()
    with forbid_host_reads():  # what is not a sync stays allowed
        assert t.shape == (2,) and len(t) == 2 and t.dtype == np.float32
        assert mg.tensor(np.ones(2), device=DEVICE).shape == (2,)  # host -> device
        assert type(((t * 2).sum() + mg.randn(2, device=DEVICE)).data) is StandInArray
        assert t.xp.where(data > 0, data, 0).shape == (2,)
        assert [row.shape for row in mg.zeros(2, 3, device=DEVICE).data] == [(3,), (3,)]
        assert mg.tensor([1.0, 2.0]).sum().item() == 3.0  # a CPU tensor is already on the host
    with pytest.raises(RuntimeError, match="boom"), forbid_host_reads():
        raise RuntimeError("boom")

    # Restored, after a normal exit and after an error: every read works again.
    assert _patched_attributes() == originals
    for read in reads.values():
        read()
    assert t.sum().item() == -0.5 and float(t[0]) == 1.5 and t[t > 0].numpy().tolist() == [1.5]
    assert "standin" in repr(t) and int(scalar) == 3 and data.nonzero()[0].tolist() == [0, 1]


def test_count_host_uploads_counts_arrays_and_scalars() -> None:
    originals = _patched_attributes()
    t = mg.zeros(3, device=DEVICE)
    with count_host_uploads() as uploads:
        mg.tensor(np.ones((2, 2)), device=DEVICE)  # backend.to_device
        t.xp.asarray([1, 2, 3])  # a host list
        t.xp.asarray(0.5, dtype=t.dtype)  # one number
        t + 0.5  # the 0.5 is written on the device by a kernel (Tensor._lift): no copy
        t.xp.asarray(t.data)  # already on the device: no copy
        mg.randn(4, device=DEVICE)  # drawn on the device
        mg.tensor(np.ones(2))  # stays on the CPU
    assert uploads.arrays == [((2, 2), "backend.to_device"), ((3,), "xp.asarray")]
    assert uploads.scalars == 1
    with count_host_uploads() as again:
        mg.tensor(np.ones(2), device=DEVICE)
    assert len(again.arrays) == 1 and len(uploads.arrays) == 2  # counting stopped on exit
    with pytest.raises(RuntimeError, match="boom"), count_host_uploads():
        raise RuntimeError("boom")
    assert _patched_attributes() == originals  # everything put back, after an error too


# ---------------------------------------------------------------------------------- CNN
def test_cnn_classifier_step() -> None:
    """demos/cnn_digits.py trains with ``fit_classifier``: one ``classifier_step`` per batch."""
    x, y = _digits(8, 8, np.random.default_rng(0))

    def build(device: str) -> dict:
        model = cnn.LeNet(num_classes=10, image_size=8, widths=(4, 8)).to(device).train()
        return {
            "model": model,
            "opt": mg.optim.Adam(model.parameters(), lr=2e-3),
            "x": _on(device, x),
            "y": _on(device, y),
        }

    check_step(build, lambda p: cnn.classifier_step(p["model"], p["opt"], p["x"], p["y"]))


def test_fit_classifier_reads_the_losses_once_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop around ``classifier_step``: one host read per epoch, not one per step."""
    x, y = _digits(32, 8, np.random.default_rng(0))
    reads = []

    def counted(name: str) -> Callable:
        def read(array: StandInArray, *args: Any) -> Any:
            reads.append((name, array.shape))
            return getattr(array._a, "copy" if name == "get" else name)(*args)

        return read

    for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(StandInArray, name, counted(name), raising=False)
    model = cnn.LeNet(num_classes=10, image_size=8, widths=(4, 8))
    losses = cnn.fit_classifier(model, x, y, epochs=2, batch_size=8, device=DEVICE, progress=False)
    assert reads == [("get", (4,)), ("get", (4,))]  # two epochs of four steps: one stacked read each
    assert len(losses) == 8 and all(isinstance(v, float) and np.isfinite(v) for v in losses)


# ---------------------------------------------------------------------------------- ViT
def test_vit_step() -> None:
    """demos/vit_digits.py: cross-entropy, AdamW, warmup-cosine schedule."""
    x, y = _digits(6, 8, np.random.default_rng(0))

    def build(device: str) -> dict:
        model = vit.ViT(image_size=8, patch_size=4, num_classes=10, d_model=16, n_layers=1, n_heads=2).to(device)
        optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
        schedule = warmup_cosine(optimizer, warmup_steps=1, total_steps=10)
        return {"model": model, "opt": optimizer, "schedule": schedule, "x": _on(device, x), "y": _on(device, y)}

    def step(p: dict) -> None:
        loss = F.cross_entropy(p["model"](p["x"]), p["y"])
        p["opt"].zero_grad()
        loss.backward()
        p["opt"].step()
        p["schedule"].step()

    check_step(build, step)


# ---------------------------------------------------------------------------------- GPT
def _gpt_step(p: dict, clip: float | None = None) -> None:
    loss = p["model"].loss(p["x"], p["y"])
    p["opt"].zero_grad()
    loss.backward()
    if clip is not None:
        clip_grad_norm_(p["model"].parameters(), clip)
    p["opt"].step()
    p["schedule"].step()


@pytest.mark.parametrize(
    "vocab, length, dropout, positions, clip",
    [
        pytest.param(3, 11, 0.0, "learned", None, id="gpt_sort"),  # the unsorted half's targets are −100
        pytest.param(20, 12, 0.1, "learned", 1.0, id="gpt_chars"),  # dropout and gradient clipping
        pytest.param(16, 12, 0.0, "rope", None, id="rope"),  # RoPE positions
    ],
)
def test_gpt_step(vocab: int, length: int, dropout: float, positions: str, clip: float | None) -> None:
    """demos/gpt_sort.py, gpt_chars.py and rope.py: next-token loss, AdamW, warmup-cosine."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(4, length))
    y = rng.integers(0, vocab, size=(4, length))
    y[:, :3] = -100

    def build(device: str) -> dict:
        model = gpt.GPT(vocab, length, n_layers=1, n_heads=2, d_model=16, dropout=dropout, positions=positions)
        model.to(device)
        optimizer = AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
        schedule = warmup_cosine(optimizer, warmup_steps=1, total_steps=10)
        return {"model": model, "opt": optimizer, "schedule": schedule, "x": _on(device, x), "y": _on(device, y)}

    check_step(build, lambda p: _gpt_step(p, clip))


# --------------------------------------------------------------------------------- BERT
SPECIALS = [0, 1, 2, 3]  # [PAD], [CLS], [SEP], [MASK]


def _bert_build(device: str, tokens: np.ndarray) -> dict:
    model = bert.BERT(12, max_len=tokens.shape[1], n_layers=1, n_heads=2, d_model=16, mlp_ratio=2).to(device)
    optimizer = AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=1, total_steps=10)
    return {"model": model, "opt": optimizer, "schedule": schedule, "tokens": _on(device, tokens)}


def _bert_tokens(rng: np.random.Generator) -> np.ndarray:
    tokens = rng.integers(4, 12, size=(6, 8))
    tokens[:, 0], tokens[:, -1] = 1, 2
    return tokens


def test_bert_mlm_step() -> None:
    """demos/bert_mlm.py pre-training: BERT's masking drawn on the device, then the MLM loss."""
    tokens = _bert_tokens(np.random.default_rng(0))

    def step(p: dict) -> None:
        inputs, targets = bert.mlm_mask(p["tokens"], 12, 3, [0, 1, 2], p=0.5)
        loss = p["model"].mlm_loss(inputs, targets)
        p["opt"].zero_grad()
        loss.backward()
        p["opt"].step()
        p["schedule"].step()

    check_step(lambda device: _bert_build(device, tokens), step)


def test_bert_fine_tune_step() -> None:
    """demos/bert_mlm.py fine-tuning: the [CLS] classifier."""
    rng = np.random.default_rng(0)
    tokens, labels = _bert_tokens(rng), rng.integers(0, 2, size=6)

    def build(device: str) -> dict:
        return {**_bert_build(device, tokens), "labels": _on(device, labels)}

    def step(p: dict) -> None:
        loss = F.cross_entropy(p["model"].classify(p["model"](p["tokens"])), p["labels"])
        p["opt"].zero_grad()
        loss.backward()
        p["opt"].step()
        p["schedule"].step()

    check_step(build, step)


def test_mlm_mask_on_the_device_follows_the_recipe() -> None:
    """The device masking keeps BERT's rules: specials never chosen, random tokens never special."""
    mg.manual_seed(0)
    tokens = mg.tensor(_bert_tokens(np.random.default_rng(1)).repeat(200, axis=0), device=DEVICE)
    with forbid_host_reads():
        inputs, labels = bert.mlm_mask(tokens, 12, 3, [0, 1, 2], p=0.5)
    original, inputs, labels = tokens.numpy(), inputs.numpy(), labels.numpy()
    selected = labels != bert.IGNORE_INDEX
    assert not selected[:, [0, -1]].any()  # [CLS] and [SEP] stay
    np.testing.assert_array_equal(labels[selected], original[selected])
    np.testing.assert_array_equal(inputs[~selected], original[~selected])
    masked, changed = inputs == 3, selected & (inputs != original) & (inputs != 3)
    assert not np.isin(inputs[changed], SPECIALS).any()  # random replacements are ordinary tokens
    assert abs(selected[:, 1:-1].mean() - 0.5) < 0.03
    assert abs(masked.sum() / selected.sum() - 0.8) < 0.03
    assert np.unique(inputs[changed]).tolist() == list(range(4, 12))  # every ordinary token can be drawn


# ---------------------------------------------------------------------------------- GAN
@pytest.mark.parametrize(
    "loss, k, r1",
    [("nonsaturating", 1, 1.0), ("saturating", 1, 0.0), ("wgan-gp", 2, 0.0)],
)
def test_gan_toy2d_step(loss: str, k: int, r1: float) -> None:
    """demos/gan_toy2d.py: k D steps (R1 or WGAN-GP: double backward), one G step, LR schedules."""
    pool = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)

    def build(device: str) -> dict:
        generator = gan.MLPGenerator(2, 2, hidden=(16, 16)).to(device)
        discriminator = gan.MLPDiscriminator(2, hidden=(16, 16)).to(device)
        opt_g = mg.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
        opt_d = mg.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.9))
        schedules = [mg.optim.LambdaLR(opt, lambda t: min(1.0, 2.0 * (1.0 - t / 10))) for opt in (opt_g, opt_d)]
        parts = {"G": generator, "D": discriminator, "opt_g": opt_g, "opt_d": opt_d, "schedules": schedules}
        return {**parts, "pool": _on(device, pool), "log": gan.TrainingLog(sync_every=100), "device": device}

    def step(p: dict) -> None:
        for _ in range(k):
            real = p["pool"][mg.randint(0, len(p["pool"]), (16,), device=p["device"])]
            z = mg.randn(16, 2, device=p["device"])
            stats = gan.discriminator_step(p["G"], p["D"], p["opt_d"], real, z, loss=loss, r1_weight=r1)
        z = mg.randn(16, 2, device=p["device"])
        stats.update(gan.generator_step(p["G"], p["D"], p["opt_g"], z, loss=loss))
        p["log"].record(stats)
        for schedule in p["schedules"]:
            schedule.step()

    check_step(build, step)


@pytest.mark.parametrize("patch", [False, True])
def test_conditional_dcgan_step(patch: bool) -> None:
    """demos/dcgan_digits.py: conditional D and G steps (batch norm), then the EMA of G."""
    x, y = _digits(4, 8, np.random.default_rng(0))

    def build(device: str) -> dict:
        generator = gan.DCGANGenerator(8, 1, 8, base_channels=4, num_classes=10).to(device)
        ema = mg.optim.EMA(generator, decay=0.995)
        discriminator = gan.DCGANDiscriminator(1, 8, base_channels=4, num_classes=10, patch=patch).to(device)
        opt_g = mg.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = mg.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        parts = {"G": generator, "ema": ema, "D": discriminator, "opt_g": opt_g, "opt_d": opt_d}
        return {**parts, "x": _on(device, x * 2 - 1), "y": _on(device, y), "log": gan.TrainingLog(sync_every=50)}

    def step(p: dict) -> None:
        x, y = p["x"], p["y"]
        z = mg.randn(x.shape[0], 8, device=x.device)
        stats = gan.discriminator_step(p["G"], p["D"], p["opt_d"], x, z, labels=y)
        z = mg.randn(x.shape[0], 8, device=x.device)
        stats.update(gan.generator_step(p["G"], p["D"], p["opt_g"], z, labels=y))
        p["ema"].update(p["G"])
        p["log"].record(stats)

    check_step(build, step)


def test_batch_norm_cumulative_average_needs_no_host_read() -> None:
    """``momentum=None`` (a cumulative average of the batch statistics) stays on the device."""
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, 2, 2)).astype(np.float32) + i for i in range(3)]

    def build(device: str) -> dict:
        model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, momentum=None)).to(device)
        return {
            "model": model,
            "opt": mg.optim.SGD(model.parameters(), lr=0.1),
            "batches": [_on(device, b) for b in batches],
        }

    def step(p: dict) -> None:
        for batch in p["batches"]:
            loss = p["model"](batch).square().mean()
            p["opt"].zero_grad()
            loss.backward()
            p["opt"].step()

    check_step(build, step)
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm2d(3, momentum=None).to(DEVICE), torch.nn.BatchNorm2d(3, momentum=None)
    with forbid_host_reads():
        for batch in batches:
            ours(mg.tensor(batch, device=DEVICE))
    for batch in batches:
        theirs(torch.tensor(batch))
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)
    assert ours.num_batches_tracked.numpy() == 3


# ---------------------------------------------------------------------------------- VAE
@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_vae_step(model_name: str) -> None:
    """demos/vae_digits.py: reparameterised forward (ε drawn on the device), −ELBO, Adam."""
    x = (np.random.default_rng(0).random((6, 1, 8, 8)) > 0.5).astype(np.float32)

    def build(device: str) -> dict:
        model = vae.ConvVAE(1, 8, 4, base_channels=4) if model_name == "conv" else vae.MLPVAE((1, 8, 8), 4, (16,))
        model.to(device)
        return {"model": model, "opt": mg.optim.Adam(model.parameters(), lr=1e-3), "x": _on(device, x), "sums": []}

    def step(p: dict) -> None:
        out = p["model"](p["x"])
        parts = vae.vae_loss(out.x_hat, p["x"], out.mu, out.logvar)
        p["opt"].zero_grad()
        parts.loss.backward()
        p["opt"].step()
        p["sums"].append(mg.stack([parts.loss.detach(), parts.reconstruction.detach(), parts.kl.detach()]))

    check_step(build, step)


# ---------------------------------------------------------------------------- diffusion
def test_diffusion_digits_step() -> None:
    """demos/diffusion_digits.py: labels dropped for ∅, DDPM loss (t, ε drawn on the device), EMA."""
    x, y = _digits(4, 8, np.random.default_rng(0))
    schedule = diffusion.cosine_schedule(20)

    def build(device: str) -> dict:
        model = unet.UNet(in_channels=1, base_channels=4, channel_mults=(1, 2), num_classes=10).to(device)
        optimizer = mg.optim.Adam(model.parameters(), lr=2e-3)
        lr_schedule = warmup_cosine(optimizer, warmup_steps=1, total_steps=10, eta_min=2e-4)
        ema = mg.optim.EMA(model, decay=0.995, warmup=True)
        parts = {"model": model, "opt": optimizer, "lr_schedule": lr_schedule, "ema": ema, "pending": []}
        return {**parts, "x0": _on(device, 2 * x - 1), "y": _on(device, y)}

    def step(p: dict) -> None:
        y = diffusion.drop_labels(p["y"], 0.5, p["model"].null_label)
        loss = diffusion.ddpm_loss(p["model"], schedule, p["x0"], y=y)
        p["opt"].zero_grad()
        loss.backward()
        p["opt"].step()
        p["lr_schedule"].step()
        p["ema"].update(p["model"])
        p["pending"].append(loss.detach())

    check_step(build, step)


def test_diffusion_toy2d_step() -> None:
    """demos/diffusion_toy2d.py: a batch gathered from the device pool, DDPM loss, EMA."""
    pool = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    schedule = diffusion.cosine_schedule(20)

    def build(device: str) -> dict:
        model = unet.MLPDenoiser(data_dim=2, hidden=16, num_layers=2, time_dim=8).to(device)
        optimizer = mg.optim.Adam(model.parameters(), lr=2e-3)
        lr_schedule = warmup_cosine(optimizer, warmup_steps=1, total_steps=10, eta_min=1e-4)
        ema = mg.optim.EMA(model, decay=0.99, warmup=True)
        parts = {"model": model, "opt": optimizer, "lr_schedule": lr_schedule, "ema": ema, "pending": []}
        return {**parts, "pool": _on(device, pool), "device": device}

    def step(p: dict) -> None:
        x0 = p["pool"][mg.randint(0, len(pool), (16,), device=p["device"])]
        loss = diffusion.ddpm_loss(p["model"], schedule, x0)
        p["opt"].zero_grad()
        loss.backward()
        p["opt"].step()
        p["lr_schedule"].step()
        p["ema"].update(p["model"])
        p["pending"].append(loss.detach())

    check_step(build, step)


# ------------------------------------------------------------ image-to-image (issue 14)
def test_pix2pix_step() -> None:
    """demos/pix2pix_digits.py: G(x, z) with z drawn on the device, the D step then the G step
    (D frozen), and the L1-only model's per-pixel step alongside."""
    from minigen.models import pix2pix

    rng = np.random.default_rng(0)
    x, y = rng.random((4, 1, 8, 8), dtype=np.float32) * 2 - 1, rng.random((4, 1, 8, 8), dtype=np.float32) * 2 - 1

    def build(device: str) -> dict:
        shape = dict(base_channels=4, levels=2, noise_channels=1)
        G, G_l1 = pix2pix.UNetGenerator(1, 1, **shape).to(device), pix2pix.UNetGenerator(1, 1, **shape).to(device)
        D = pix2pix.PatchDiscriminator(2, base_channels=4, num_layers=2).to(device)
        adam = {"lr": 2e-4, "betas": (0.5, 0.999)}
        opts = {
            "opt_g": mg.optim.Adam(G.parameters(), **adam),
            "opt_d": mg.optim.Adam(D.parameters(), **adam),
            "opt_l1": mg.optim.Adam(G_l1.parameters(), **adam),
        }
        return {
            "G": G,
            "G_l1": G_l1,
            "D": D,
            **opts,
            "x": _on(device, x),
            "y": _on(device, y),
            "log": gan.TrainingLog(50),
        }

    def step(p: dict) -> None:
        stats = pix2pix.train_step(p["G"], p["D"], p["opt_g"], p["opt_d"], p["x"], p["y"])
        stats["l1 (L1 only)"] = pix2pix.pretrain_step(p["G_l1"], p["opt_l1"], p["x"], p["y"])["l1"]
        p["log"].record(stats)

    check_step(build, step)


def test_cyclegan_step() -> None:
    """demos/cyclegan_digits.py: generators then discriminators on pooled fakes (the pool's
    choices drawn on the device; a pool of 2 so both steps swap), LR schedules."""
    from minigen.models import cyclegan

    rng = np.random.default_rng(0)
    x, y = rng.random((4, 1, 8, 8), dtype=np.float32) * 2 - 1, rng.random((4, 1, 8, 8), dtype=np.float32) * 2 - 1

    def build(device: str) -> dict:
        model = cyclegan.CycleGAN(1, base_channels=4, levels=2, disc_channels=4, disc_layers=2).to(device)
        opt_g, opt_d = cyclegan.make_optimizers(model)
        parts = {"model": model, "opt_g": opt_g, "opt_d": opt_d, "schedules": cyclegan.make_schedulers(opt_g, opt_d, 4)}
        pools = {"pool_a": cyclegan.ImagePool(2), "pool_b": cyclegan.ImagePool(2)}
        return {**parts, **pools, "x": _on(device, x), "y": _on(device, y), "log": gan.TrainingLog(50)}

    def step(p: dict) -> None:
        stats = cyclegan.train_step(p["model"], p["opt_g"], p["opt_d"], p["x"], p["y"], p["pool_a"], p["pool_b"])
        for schedule in p["schedules"]:
            schedule.step()
        p["log"].record(stats)

    check_step(build, step)
