"""Latent diffusion (``minigen/models/latent_diffusion.py``): the spatial transformer, the U-Net with
cross-attention, the latent scale, caption dropout, guidance, inpainting and errors.

Small models throughout (a few thousand parameters), so the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from random_models import randomised_parameters

import minigen as mg
from minigen.data.tokenizer import Tokenizer
from minigen.models.clip import TextEncoder
from minigen.models.diffusion import cosine_schedule, guided_eps, predict_eps, q_sample
from minigen.models.latent_diffusion import (
    CrossAttentionUNet,
    KLAutoencoder,
    LatentDiffusion,
    SpatialTransformer,
    autoencoder_loss,
    drop_captions,
    encode_captions,
    latent_mask,
    psnr,
)
from minigen.models.samplers import Trajectory, ddim_timesteps
from minigen.testing import arrays, to_device_like

TOKENIZER = Tokenizer.default()
CONTEXT = 16
CAPTIONS = ["a small red 3 on the left", "the digit 7, blue, thick", "something green", "top: a big 0"]


def _tiny_ldm(seed: int = 0, T: int = 50, prediction: str = "eps") -> LatentDiffusion:
    mg.manual_seed(seed)
    autoencoder = KLAutoencoder(3, latent_channels=2, widths=(4, 8))
    text_encoder = TextEncoder(TOKENIZER.vocab_size, CONTEXT, width=8, depth=1, heads=2)
    unet = CrossAttentionUNet(2, base_channels=8, channel_mults=(1, 2), context_dim=8, num_heads=2)
    null_tokens, null_mask = TOKENIZER.encode("", CONTEXT)
    return LatentDiffusion(autoencoder, text_encoder, unet, cosine_schedule(T), null_tokens, null_mask, prediction)


def _images(n: int = 4, seed: int = 0) -> mg.Tensor:
    """Coloured blobs on black (32×32), like the captioned digits but cheap to make."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 32, 32), np.float32)
    for i in range(n):
        r, c = rng.integers(4, 24, 2)
        x[i, :, r : r + 8, c : c + 6] = rng.random(3)[:, None, None]
    return mg.tensor(x)


# ============================================================ the spatial transformer
def test_a_new_spatial_transformer_is_the_identity():
    block = SpatialTransformer(8, context_dim=6, num_heads=2)
    x = mg.randn(2, 8, 4, 4)
    out = block(x, mg.randn(2, 5, 6), mg.tensor(np.array([[False] * 5, [False, False, True, True, True]])))
    np.testing.assert_array_equal(out.detach().numpy(), x.numpy())


@st.composite
def block_inputs(draw):
    """A feature map (B, C, H, W) with H·W ≠ M, a context (B, M, d_c) and a key-padding mask."""
    b, m = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.sampled_from([(1, 2), (2, 2), (2, 3)]))
    x = draw(arrays((b, 4, h, w), -2, 2))
    context = draw(arrays((b, m, 3), -2, 2))
    pad = np.array(draw(st.lists(st.booleans(), min_size=b * m, max_size=b * m))).reshape(b, m)
    pad[:, 0] = False
    return x, context, pad


@given(inputs=block_inputs(), data=st.data())
def test_spatial_transformer_ignores_padded_tokens(device, inputs, data):
    x, context, pad = inputs
    block = randomised_parameters(SpatialTransformer(4, context_dim=3, num_heads=2).double(), seed=1).to(device)

    def run(ctx):
        with mg.no_grad():
            return block(to_device_like(x, device), to_device_like(ctx, device), to_device_like(pad, device)).numpy()

    changed = context.copy()
    changed[pad] = data.draw(arrays((int(pad.sum()), 3), -5, 5))
    np.testing.assert_allclose(run(changed), run(context), rtol=1e-12, atol=1e-12)


def test_spatial_transformer_gradcheck():
    block = randomised_parameters(SpatialTransformer(4, context_dim=3, num_heads=2).double(), seed=2)
    rng = np.random.default_rng(3)
    x = mg.tensor(rng.normal(size=(2, 4, 2, 3)), requires_grad=True)
    context = mg.tensor(rng.normal(size=(2, 3, 3)), requires_grad=True)
    pad = mg.tensor(np.array([[False, False, True], [False, False, False]]))
    mg.gradcheck(lambda x, c: block(x, c, pad), x, context)
    small = randomised_parameters(SpatialTransformer(2, context_dim=3, num_heads=2).double(), seed=3)
    mg.gradcheck(small, x[:, :2], context, pad)  # and every parameter of a (smaller) block


def _torch_spatial_transformer(torch, channels, context_dim, heads, groups):
    """The block in PyTorch, with the same parameter names."""
    nn = torch.nn

    class TorchSpatialTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.GroupNorm(groups, channels)
            self.proj_in = nn.Linear(channels, channels)
            self.norm1 = nn.LayerNorm(channels)
            self.attn1 = nn.MultiheadAttention(channels, heads, bias=False, batch_first=True)
            self.norm2 = nn.LayerNorm(channels)
            self.attn2 = nn.MultiheadAttention(
                channels, heads, bias=False, kdim=context_dim, vdim=context_dim, batch_first=True
            )
            self.norm3 = nn.LayerNorm(channels)
            self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
            self.proj_out = nn.Linear(channels, channels)

        def forward(self, x, context, pad):
            b, c, h, w = x.shape
            t = self.proj_in(self.norm(x).reshape(b, c, h * w).transpose(1, 2))
            n = self.norm1(t)
            t = t + self.attn1(n, n, n, need_weights=False)[0]
            n = self.norm2(t)
            t = t + self.attn2(n, context, context, key_padding_mask=pad, need_weights=False)[0]
            t = t + self.ff(self.norm3(t))
            return x + self.proj_out(t).transpose(1, 2).reshape(b, c, h, w)

    return TorchSpatialTransformer().double()


@pytest.mark.torch
def test_spatial_transformer_matches_pytorch():
    torch = pytest.importorskip("torch")
    mine = randomised_parameters(SpatialTransformer(8, context_dim=5, num_heads=2).double(), seed=4)
    theirs = _torch_spatial_transformer(torch, 8, 5, 2, mine.norm.num_groups)
    state = {name: t.numpy() for name, t in mine.state_dict().items()}
    assert sorted(state) == sorted(theirs.state_dict())
    theirs.load_state_dict({name: torch.tensor(a) for name, a in state.items()})
    rng = np.random.default_rng(5)
    x, context, grad = rng.normal(size=(2, 8, 3, 3)), rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 8, 3, 3))
    pad = np.array([[False, False, True, True], [False, False, False, False]])

    xm, cm = mg.tensor(x, requires_grad=True), mg.tensor(context, requires_grad=True)
    out = mine(xm, cm, mg.tensor(pad))
    out.backward(mg.tensor(grad))
    xt, ct = torch.tensor(x, requires_grad=True), torch.tensor(context, requires_grad=True)
    out_t = theirs(xt, ct, torch.tensor(pad))
    out_t.backward(torch.tensor(grad))

    np.testing.assert_allclose(out.detach().numpy(), out_t.detach().numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cm.grad.numpy(), ct.grad.numpy(), rtol=1e-8, atol=1e-10)
    params = dict(mine.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


# ======================================================================= the U-Net
def test_unet_shapes_attention_maps_and_zero_output():
    unet = CrossAttentionUNet(4, base_channels=8, channel_mults=(1, 2), context_dim=6, num_heads=2)
    assert [type(m).__name__ for m in unet.down_attn] == ["Identity", "SpatialTransformer"]
    z, t = mg.randn(3, 4, 8, 8), mg.tensor(np.array([0, 5, 9]))
    context, pad = mg.randn(3, 5, 6), mg.tensor(np.zeros((3, 5), bool))
    maps: list = []
    eps = unet(z, t, context, pad, attention_maps=maps)
    assert eps.shape == (3, 4, 8, 8)
    assert np.all(eps.detach().numpy() == 0.0)  # conv_out starts at zero
    # level 1 (4×4) down, middle (4×4), level 1 up: each (B, heads, h·w, M)
    assert [tuple(m.shape) for m in maps] == [(3, 2, 16, 5)] * 3


def test_unet_depends_on_the_caption_and_ignores_its_padding():
    unet = randomised_parameters(
        CrossAttentionUNet(4, base_channels=8, channel_mults=(1, 2), context_dim=6, num_heads=2)
    )
    z, t = mg.randn(2, 4, 8, 8), mg.tensor(np.array([3, 7]))
    context = mg.randn(2, 5, 6)
    pad = np.array([[False, False, False, True, True], [False, True, True, True, True]])
    with mg.no_grad():
        eps = unet(z, t, context, mg.tensor(pad)).numpy()
        other = unet(z, t, mg.randn(2, 5, 6), mg.tensor(pad)).numpy()
        changed = context.numpy().copy()
        changed[pad] = 9.0
        same = unet(z, t, mg.tensor(changed), mg.tensor(pad)).numpy()
    assert np.abs(eps - other).max() > 1e-3
    np.testing.assert_allclose(same, eps, rtol=1e-5, atol=1e-6)


def test_unet_errors_name_the_argument_and_the_valid_values():
    unet = CrossAttentionUNet(4, base_channels=8, channel_mults=(1, 2, 2), context_dim=6, num_heads=2)
    t, context = mg.tensor(np.array([1])), mg.randn(1, 3, 6)
    with pytest.raises(
        ValueError, match=r"h and w divisible by 4 \(the U-Net halves them 2 times\), got \(1, 4, 6, 6\)"
    ):
        unet(mg.randn(1, 4, 6, 6), t, context)
    with pytest.raises(ValueError, match=r"context must be \(B, M, context_dim\) = \(1, M, 6\).*\(1, 3, 5\)"):
        unet(mg.randn(1, 4, 8, 8), t, mg.randn(1, 3, 5))
    with pytest.raises(ValueError, match=r"attention_levels must lie in 0..2"):
        CrossAttentionUNet(4, channel_mults=(1, 2, 2), attention_levels=(3,))
    with pytest.raises(ValueError, match="CrossAttention: context must have shape"):  # the block on its own
        SpatialTransformer(8, context_dim=6)(mg.randn(1, 8, 2, 2), mg.randn(1, 3, 7))


def test_model_refuses_a_text_encoder_of_another_width():
    text_encoder = TextEncoder(TOKENIZER.vocab_size, CONTEXT, width=12, depth=1, heads=2)
    unet = CrossAttentionUNet(2, base_channels=8, channel_mults=(1, 2), context_dim=8, num_heads=2)
    null = TOKENIZER.encode("", CONTEXT)
    with pytest.raises(ValueError, match="width 12 must equal the U-Net's cross-attention context_dim 8"):
        LatentDiffusion(KLAutoencoder(3, 2, (4, 8)), text_encoder, unet, cosine_schedule(10), *null)


# ================================================================ the autoencoder
def test_autoencoder_shapes_loss_and_overfitting():
    mg.manual_seed(0)
    autoencoder = KLAutoencoder(3, latent_channels=4, widths=(8, 16))
    x = _images(4)
    out = autoencoder(x)
    assert out.x_hat.shape == (4, 3, 32, 32) and out.mu.shape == (4, 4, 8, 8) == out.z.shape
    assert autoencoder.latent_shape(32, 32) == (4, 8, 8)
    optimizer = mg.optim.Adam(autoencoder.parameters(), lr=1e-2)
    before = psnr(autoencoder.reconstruct(x).detach().numpy(), x.numpy())
    for _ in range(60):
        loss = autoencoder_loss(autoencoder(x), x, beta=1e-3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = psnr(autoencoder.reconstruct(x).detach().numpy(), x.numpy())
    assert after > before + 8.0, (before, after)
    with pytest.raises(ValueError, match=r"images \(B, 3, H, W\) with H and W divisible by 4"):
        autoencoder.encode(mg.randn(1, 3, 30, 30))


# ================================================================ the latent scale
def _scale_problems(ldm: LatentDiffusion, x: mg.Tensor) -> list[str]:
    """What goes wrong if the scale is forgotten on either side (the check the tests rely on)."""
    problems = []
    z0 = ldm.encode(x).numpy()
    if abs(z0.std() - 1.0) > 0.05:  # diffusion needs z_0 of unit variance, as x_T ~ N(0, I)
        problems.append(f"z_0 = s·E(x) has std {z0.std():.3f}, not 1: the scale is not applied before diffusion")
    round_trip = ldm.decode(ldm.encode(x)).numpy()
    if not np.allclose(round_trip, ldm.autoencoder.reconstruct(x).detach().numpy(), rtol=1e-4, atol=1e-5):
        problems.append("D(z_0 / s) differs from the autoencoder's reconstruction: 1/s is not applied before decoding")
    return problems


def _scaled_ldm() -> tuple[LatentDiffusion, mg.Tensor]:
    """A model whose raw latents have a std far from 1, so that a missing scale shows."""
    ldm = _tiny_ldm()
    last = ldm.autoencoder.encoder[-1]
    last.weight.data *= 7.0
    last.bias.data += 0.5
    x = _images(8)
    ldm.fit_latent_scale(x)
    return ldm, x


def test_latent_scale_is_one_over_the_std_and_round_trips():
    ldm, x = _scaled_ldm()
    mu, _ = ldm.autoencoder.encode(x)
    scale = float(ldm.latent_scale.item())
    assert scale == pytest.approx(1.0 / float(np.std(mu.detach().numpy())), rel=1e-5)
    assert abs(scale - 1.0) > 0.3  # the raw latent is far from unit variance
    assert _scale_problems(ldm, x) == []


def test_forgetting_the_latent_scale_on_either_side_is_caught(monkeypatch):
    ldm, x = _scaled_ldm()
    unscaled_encode = lambda images: ldm.autoencoder.encode(images)[0].detach()  # noqa: E731
    with monkeypatch.context() as patch:
        patch.setattr(ldm, "encode", unscaled_encode)
        assert any("not applied before diffusion" in p for p in _scale_problems(ldm, x))
    with monkeypatch.context() as patch:
        patch.setattr(ldm, "decode", lambda z: ldm.autoencoder.decode(z).sigmoid().detach())
        assert any("1/s is not applied before decoding" in p for p in _scale_problems(ldm, x))


def test_latent_scale_must_be_set_and_is_saved(tmp_path):
    ldm = _tiny_ldm()
    with pytest.raises(RuntimeError, match=r"latent scale is not set: call fit_latent_scale\(first_batch\)"):
        ldm.encode(_images(2))
    with pytest.raises(RuntimeError, match="latent scale is not set"):
        ldm.decode(mg.randn(2, 2, 8, 8))
    ldm, _ = _scaled_ldm()
    assert "latent_scale" in ldm.state_dict()
    mg.save(ldm.state_dict(), tmp_path / "ldm.npz")
    fresh = _tiny_ldm(seed=1)
    fresh.load_state_dict(mg.load(tmp_path / "ldm.npz"))
    assert float(fresh.latent_scale.item()) == float(ldm.latent_scale.item())


# ====================================================== captions, dropout, guidance
def test_caption_dropout_gives_the_null_caption_at_the_stated_rate():
    ldm = _tiny_ldm()
    n = 4000
    tokens, mask = encode_captions(TOKENIZER, [CAPTIONS[i % 4] for i in range(n)], CONTEXT)
    dropped_tokens, dropped_mask = drop_captions(tokens, mask, ldm.null_condition(), p_uncond=0.1)
    null_tokens, null_mask = (t.numpy()[0] for t in ldm.null_condition())
    is_null = np.all(dropped_tokens.numpy() == null_tokens, axis=1)
    assert np.all(dropped_mask.numpy()[is_null] == null_mask)  # tokens and mask dropped together
    kept = ~is_null
    np.testing.assert_array_equal(dropped_tokens.numpy()[kept], tokens.numpy()[kept])
    np.testing.assert_array_equal(dropped_mask.numpy()[kept], mask.numpy()[kept])
    rate, sigma = is_null.mean(), np.sqrt(0.1 * 0.9 / n)
    assert abs(rate - 0.1) < 4 * sigma, rate
    assert TOKENIZER.decode(null_tokens[None]) == [""]  # ∅ is the empty caption


def test_guidance_w0_is_unconditional_and_w1_conditional():
    ldm = _tiny_ldm()
    randomised_parameters(ldm.unet, seed=3)
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    z, t = mg.randn(2, 2, 8, 8), mg.tensor(np.array([10, 30]))
    null = ldm.null_condition()
    with mg.no_grad():
        conditional = ldm(z, t, tokens, mask).numpy()
        unconditional = ldm(z, t, *ldm.null_condition(2)).numpy()
        w0 = guided_eps(ldm, z, t, (tokens, mask), 0.0, null=null).numpy()
        w1 = guided_eps(ldm, z, t, (tokens, mask), 1.0, null=null).numpy()
        w3 = predict_eps(ldm, z, t, (tokens, mask), 3.0, null=null).numpy()
    assert np.abs(conditional - unconditional).max() > 1e-3
    np.testing.assert_allclose(w0, unconditional, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w1, conditional, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w3, unconditional + 3.0 * (conditional - unconditional), rtol=1e-4, atol=1e-5)


def test_v_prediction_is_converted_to_eps_for_the_samplers(monkeypatch):
    ldm = _tiny_ldm(prediction="v")
    x = _images(2)
    ldm.fit_latent_scale(x)
    z0 = ldm.encode(x)
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    t, noise = mg.tensor(np.array([3, 40])), mg.randn_like(z0)
    z_t = q_sample(ldm.schedule, z0, t, noise)
    alpha_bar = ldm.schedule.alpha_bars[t.numpy()].reshape(2, 1, 1, 1)
    v = np.sqrt(alpha_bar) * noise.numpy() - np.sqrt(1 - alpha_bar) * z0.numpy()
    # A network that outputs the true v makes forward return the true ε ...
    monkeypatch.setattr(ldm, "network", lambda *args, **kw: mg.tensor(v.astype(np.float32)))
    np.testing.assert_allclose(ldm(z_t, t, tokens, mask).numpy(), noise.numpy(), rtol=1e-4, atol=1e-4)
    # ... and the loss is the mean squared error of v̂ against v.
    keep = mg.tensor(np.zeros(2, bool))
    monkeypatch.setattr(ldm, "network", lambda *args, **kw: mg.tensor((v + 0.5).astype(np.float32)))
    assert ldm.loss(z0, tokens, mask, t=t, noise=noise, drop=keep).item() == pytest.approx(0.25, rel=1e-4)
    with pytest.raises(ValueError, match="prediction must be 'eps' or 'v', got 'x0'"):
        _tiny_ldm(prediction="x0")


def test_a_prompt_with_unknown_words_names_them():
    with pytest.raises(ValueError, match=r"the word 'purple'.*not in the vocabulary.*caption_vocabulary.txt"):
        encode_captions(TOKENIZER, ["a purple 3"], CONTEXT)


def test_tokens_and_mask_must_match_the_latents():
    ldm = _tiny_ldm()
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    with pytest.raises(ValueError, match=r"tokens and key_padding_mask must both be \(B, L\) with B = 3 latents"):
        ldm(mg.randn(3, 2, 8, 8), mg.tensor(np.array([1, 2, 3])), tokens, mask)


# ======================================================================= inpainting
def test_inpainting_keeps_the_known_region_noised_at_every_step_and_exact_at_the_end():
    ldm = _tiny_ldm(T=40)
    randomised_parameters(ldm.unet, seed=5, scale=0.1)
    x = _images(2, seed=2)
    ldm.fit_latent_scale(x)
    known = np.ones((32, 32), bool)
    known[:, :8] = False  # generate the left two latent columns
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    steps = 6
    z0 = ldm.encode(x)
    noise = [mg.randn_like(z0) for _ in range(steps)]
    trajectory = Trajectory(every=1)
    final = ldm.inpaint(x, known, tokens, mask, 2.0, steps, known_noise=noise, trajectory=trajectory, decode=False)

    m = latent_mask(known, x.shape, 4).numpy().astype(bool)  # (1, 1, 8, 8)
    assert m[0, 0, :, :2].sum() == 0 and m[0, 0, :, 2:].all()
    cells = np.broadcast_to(m, z0.shape)
    timesteps = ddim_timesteps(ldm.schedule.T, steps)
    assert trajectory.timesteps[:-1] == timesteps
    for i, t in enumerate(timesteps):  # each state z_t the network sees
        expected = q_sample(ldm.schedule, z0, mg.full((2,), t, dtype=mg.int64), noise[i]).numpy()
        np.testing.assert_allclose(trajectory.xs[i].numpy()[cells], expected[cells], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(final.numpy()[cells], z0.numpy()[cells])  # exactly z_0 at t = 0
    assert np.abs(final.numpy()[~cells] - z0.numpy()[~cells]).max() > 1e-3  # the rest was generated

    # In pixels: far from the generated cells (beyond the decoder's reach) the result is D(z_0),
    # so the known region differs from the original only by the decoder's own error.
    out, reconstruction = ldm.decode(final).numpy(), ldm.decode(z0).numpy()
    far = (slice(None), slice(None), slice(None), slice(24, 32))  # 4+ latent cells from the generated ones
    np.testing.assert_allclose(out[far], reconstruction[far], rtol=1e-5, atol=1e-6)


def test_inpainting_mask_of_the_wrong_shape_is_refused():
    ldm = _tiny_ldm()
    x = _images(2)
    ldm.fit_latent_scale(x)
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    with pytest.raises(
        ValueError, match=r"mask must have the image's height and width.*\(2, 1, 32, 32\), got \(16, 16\)"
    ):
        ldm.inpaint(x, np.ones((16, 16), bool), tokens, mask, num_steps=2)
    with pytest.raises(ValueError, match=r"known_noise needs num_steps = 3 tensors"):
        ldm.inpaint(x, np.ones((32, 32), bool), tokens, mask, num_steps=3, known_noise=[mg.randn(2, 2, 8, 8)])


# ============================================================ the whole model learns
def test_cross_attention_maps_are_distributions_over_the_words():
    ldm = _tiny_ldm()
    randomised_parameters(ldm.unet, seed=6, scale=0.2)
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS[:2], CONTEXT)
    maps = ldm.cross_attention_maps(mg.randn(2, 2, 8, 8), mg.tensor(np.array([5, 5])), tokens, mask)
    assert len(maps) == 3 and maps[0].shape == (2, 16, CONTEXT)
    for m in maps:
        np.testing.assert_allclose(m.numpy().sum(-1), 1.0, rtol=1e-5)
        assert np.all(m.numpy()[np.broadcast_to(mask.numpy()[:, None, :], m.shape)] == 0.0)


def test_the_whole_model_overfits_a_batch():
    ldm = _tiny_ldm(T=50)
    x = _images(4, seed=3)
    ldm.fit_latent_scale(x)
    z0 = ldm.encode(x)
    tokens, mask = encode_captions(TOKENIZER, CAPTIONS, CONTEXT)
    t, noise = mg.tensor(np.array([5, 15, 25, 35])), mg.randn_like(z0)
    keep = mg.tensor(np.zeros(4, bool))
    parameters = ldm.diffusion_parameters()
    assert len(parameters) == len(list(ldm.text_encoder.parameters())) + len(list(ldm.unet.parameters()))
    optimizer = mg.optim.Adam(parameters, lr=1e-2)
    losses = []
    for _ in range(40):
        loss = ldm.loss(z0, tokens, mask, t=t, noise=noise, drop=keep)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    assert all(p.grad is not None for p in ldm.text_encoder.parameters())  # τ_θ is trained jointly
    assert ldm.autoencoder.encoder[0].weight.grad is None  # the autoencoder stays frozen
