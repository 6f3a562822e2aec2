"""Vector quantisation: the nearest code, the straight-through gradient, the two loss terms,
k-means, the EMA codebook, dead-code restarts, perplexity, the VQ-GAN's adaptive weight,
the GPT prior, the VQ-VAE overfitting a batch, gradient checks, PyTorch as oracle, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.nn as nn
from minigen.models.vq import (
    BETA,
    VQVAE,
    CodebookUsage,
    CodePrior,
    VectorQuantizer,
    adaptive_weight,
    code_counts,
    codebook_loss,
    commitment_loss,
    distortion,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kmeans,
    nearest_code,
    perplexity,
    quantize,
    squared_distances,
    straight_through,
    train_step,
)
from minigen.testing import arrays, distinct_arrays, forbid_host_reads


def _f64(*shape: int, seed: int = 0, scale: float = 1.0) -> mg.Tensor:
    return mg.tensor(np.random.default_rng(seed).normal(size=shape) * scale, dtype=mg.float64)


@st.composite
def vectors_and_codebook(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """M vectors and K codes of dimension D, each vector's nearest code clearly nearest:
    the codes are well apart and each vector is a code plus a small offset (no ties)."""
    k, d, m = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 8))
    codebook = draw(distinct_arrays((k, d), gap=0.6, low=-4.0, high=4.0))
    owners = draw(st.lists(st.integers(0, k - 1), min_size=m, max_size=m))
    spread = np.min([np.linalg.norm(a - b) for i, a in enumerate(codebook) for b in codebook[i + 1 :]] or [1.0])
    offsets = draw(arrays((m, d), low=-1.0, high=1.0)) * (0.2 * spread / np.sqrt(d))
    return codebook[owners] + offsets, codebook


def _brute_force_nearest(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """argmin_k ‖z_i − e_k‖² by looping over every pair (the first minimum wins)."""
    best = []
    for vector in z:
        distances = [float(np.sum((vector - code) ** 2)) for code in codebook]
        best.append(min(range(len(codebook)), key=lambda k: (distances[k], k)))
    return np.array(best)


# ------------------------------------------------------------------------- nearest code
@given(data=vectors_and_codebook())
def test_nearest_code_matches_brute_force(data, device):
    z, codebook = data
    got = nearest_code(mg.tensor(z, device=device), mg.tensor(codebook, device=device))
    assert got.dtype == np.int64 and got.shape == (len(z),)
    np.testing.assert_array_equal(got.numpy(), _brute_force_nearest(z, codebook))
    expanded = squared_distances(mg.tensor(z), mg.tensor(codebook)).numpy()
    direct = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(expanded, direct, atol=1e-10)


def test_nearest_code_ties_go_to_the_lowest_index():
    codebook = mg.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=mg.float64)
    z = mg.tensor([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5]], dtype=mg.float64)  # ties: {0, 2}; all four; {0, 1}
    np.testing.assert_array_equal(nearest_code(z, codebook).numpy(), [0, 0, 0])


# ---------------------------------------------------------------- gradients of the VQ layer
def _quantized(device="cpu", seed=0):
    rng = np.random.default_rng(seed)
    codebook = mg.tensor(rng.normal(size=(5, 3)), dtype=mg.float64, device=device, requires_grad=True)
    z_e = mg.tensor(rng.normal(size=(7, 3)), dtype=mg.float64, device=device, requires_grad=True)
    return z_e, codebook, quantize(z_e, codebook)


def test_straight_through_gradient_is_the_identity(device):
    z_e, codebook, out = _quantized(device)
    e = codebook.detach().numpy()[out.indices.numpy()]
    np.testing.assert_allclose(out.z_q.detach().numpy(), e)  # the value of the codes...
    g = _f64(7, 3, seed=5).to(device)
    z_q_grad, book_grad = mg.grad(out.z_q, [z_e, codebook], grad_outputs=g, allow_unused=True)
    np.testing.assert_allclose(z_q_grad.numpy(), g.numpy())  # ...and the gradient of z_e: ∂z_q/∂z_e = I
    assert book_grad is None or not np.any(book_grad.numpy())  # z_q sends nothing to the codebook


def test_codebook_term_moves_only_the_codes_and_commitment_only_the_encoder(device):
    z_e, codebook, out = _quantized(device)
    k = out.indices.numpy()
    z, e = z_e.detach().numpy(), codebook.detach().numpy()[k]
    n = z.size
    enc, book = mg.grad(out.codebook_loss, [z_e, codebook], allow_unused=True)
    assert enc is None or not np.any(enc.numpy())  # sg(z_e): the encoder gets nothing
    expected_book = np.zeros_like(codebook.detach().numpy())
    np.add.at(expected_book, k, 2.0 * (e - z) / n)  # ∂/∂e_k = Σ_{i: k(i)=k} 2(e_k − z_i)/n
    np.testing.assert_allclose(book.numpy(), expected_book, atol=1e-12)

    z_e, codebook, out = _quantized(device)  # the same values, fresh leaves
    enc, book = mg.grad(out.commitment_loss, [z_e, codebook], allow_unused=True)
    assert book is None or not np.any(book.numpy())  # sg(e): the codes get nothing
    np.testing.assert_allclose(enc.numpy(), 2.0 * (z - e) / n, atol=1e-12)


def test_vq_loss_puts_beta_on_the_commitment_term_before_straight_through():
    z_e, codebook, out = _quantized()
    k = out.indices.numpy()
    z, e = z_e.detach().numpy(), codebook.detach().numpy()[k]
    n = z.size
    np.testing.assert_allclose(out.loss.item(), (1 + BETA) * np.mean((z - e) ** 2), rtol=1e-12)
    enc, book = mg.grad(out.loss, [z_e, codebook])
    np.testing.assert_allclose(enc.numpy(), BETA * 2.0 * (z - e) / n, atol=1e-12)  # β on the encoder's pull
    expected_book = np.zeros_like(codebook.detach().numpy())
    np.add.at(expected_book, k, 2.0 * (e - z) / n)  # the codes' pull has weight 1
    np.testing.assert_allclose(book.numpy(), expected_book, atol=1e-12)


def test_quantizer_module_shapes_raster_order_and_lookup(device):
    vq = VectorQuantizer(num_codes=6, code_dim=3).to(device)
    z = mg.randn(2, 3, 2, 4, device=device)
    out = vq(z)
    assert out.z_q.shape == (2, 3, 2, 4) and out.indices.shape == (2, 2, 4)
    flat = z.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)  # raster order: row by row
    codes = vq.codebook.detach().numpy()
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), _brute_force_nearest(flat, codes))
    np.testing.assert_allclose(vq.lookup(out.indices).detach().numpy(), out.z_q.detach().numpy(), atol=1e-6)


# ------------------------------------------------------------------------------ codebook care
def _clusters(seed: int = 0, k: int = 8, per: int = 40, d: int = 2) -> tuple[mg.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-6, 6, size=(k, d))
    points = np.concatenate([c + 0.3 * rng.normal(size=(per, d)) for c in centres])
    return mg.tensor(points.astype(np.float32)), centres


def test_kmeans_lowers_distortion_compared_with_random_initialisation():
    z, _ = _clusters()
    random_vq = VectorQuantizer(num_codes=8, code_dim=2)
    random_distortion = distortion(z, random_vq.codebook).item()
    result = random_vq.kmeans_init_(z, iters=15)
    history = result.distortions.numpy()
    assert np.all(np.diff(history) <= 1e-5)  # Lloyd's steps never raise J
    assert distortion(z, random_vq.codebook).item() == pytest.approx(history[-1], rel=1e-5)
    assert history[-1] < 0.1 * random_distortion
    assert history[-1] < history[0]  # better than its own random start (k data points)


def test_kmeans_recovers_well_separated_clusters():
    mg.manual_seed(3)
    z, centres = _clusters(seed=1, k=3, per=50)
    best = min((kmeans(z, 3, iters=10) for _ in range(3)), key=lambda r: r.distortions.numpy()[-1])
    found = best.centroids.numpy()
    for c in centres:
        assert np.min(np.linalg.norm(found - c, axis=1)) < 0.2


def test_ema_update_matches_its_closed_form():
    """T updates with the same batch: N_T = γ^T N_0 + (1 − γ^T) n, m_T likewise, and
    e = m_T / Ñ_T with Ñ = (N + ε)/(Σ N + K ε) · Σ N (Laplace smoothing)."""
    gamma, eps, K, T = 0.9, 1e-3, 4, 5
    vq = VectorQuantizer(num_codes=K, code_dim=2, ema=True, decay=gamma, epsilon=eps).to(mg.float64)
    N0, m0 = vq.cluster_size.numpy().copy(), vq.embed_sum.numpy().copy()
    z = mg.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 0.0], [4.0, 4.0]], dtype=mg.float64)
    k = mg.tensor([0, 0, 2, 2, 2])  # code 1 and 3 get nothing
    for _ in range(T):
        vq.ema_update_(z, k)
    n = np.array([2.0, 0.0, 3.0, 0.0])
    s = np.zeros((K, 2))
    np.add.at(s, k.numpy(), z.numpy())
    N = gamma**T * N0 + (1 - gamma**T) * n
    m = gamma**T * m0 + (1 - gamma**T) * s
    smoothed = (N + eps) / (N.sum() + K * eps) * N.sum()
    np.testing.assert_allclose(vq.cluster_size.numpy(), N, rtol=1e-12)
    np.testing.assert_allclose(vq.embed_sum.numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(vq.codebook.detach().numpy(), m / smoothed[:, None], rtol=1e-12)


def test_ema_codebook_is_updated_by_the_forward_pass_not_by_gradients():
    vq = VectorQuantizer(num_codes=4, code_dim=2, ema=True)
    assert "codebook" not in dict(vq.named_parameters())
    z = mg.randn(10, 2, requires_grad=True)
    before = vq.codebook.detach().numpy().copy()
    out = vq(z)
    assert out.codebook_loss.item() == 0.0
    assert not np.allclose(vq.codebook.detach().numpy(), before)
    vq.eval()
    frozen_codes = vq.codebook.detach().numpy().copy()
    vq(z)
    np.testing.assert_array_equal(vq.codebook.detach().numpy(), frozen_codes)  # no update outside training


@pytest.mark.parametrize("ema", [False, True])
def test_restart_replaces_exactly_the_dead_codes(ema, device):
    vq = VectorQuantizer(num_codes=5, code_dim=3, ema=ema, dead_threshold=1.0).to(device)
    before = vq.codebook.detach().numpy().copy()
    vq.window_counts.data[...] = vq.window_counts.xp.asarray([12.0, 0.0, 7.0, 3.0, 1.0], dtype=np.float32)
    vq.steps_since_restart = 4  # dead: fewer than 1 use per step, i.e. fewer than 4 uses
    z = mg.randn(2, 3, 2, 2, device=device)  # 8 encoder outputs
    dead = vq.restart_dead_codes_(z).numpy()
    np.testing.assert_array_equal(dead, [False, True, False, True, True])
    after = vq.codebook.detach().numpy()
    np.testing.assert_array_equal(after[~dead], before[~dead])
    outputs = z.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    for row in after[dead]:  # each restarted code is one of the batch's encoder outputs
        assert np.min(np.abs(outputs - row).max(axis=1)) == 0.0
    assert not np.any(vq.window_counts.numpy()) and vq.steps_since_restart == 0  # a new window
    if ema:
        np.testing.assert_array_equal(vq.embed_sum.numpy()[dead], after[dead])


def test_training_forward_counts_code_uses_for_the_restart_window():
    vq = VectorQuantizer(num_codes=3, code_dim=1)
    vq.codebook.data[...] = np.array([[-1.0], [0.0], [5.0]], dtype=np.float32)
    vq(mg.tensor([[-1.1], [0.1], [-0.9], [0.2]]))
    vq(mg.tensor([[-1.0], [-1.0]]))
    np.testing.assert_array_equal(vq.window_counts.numpy(), [4.0, 2.0, 0.0])
    assert vq.steps_since_restart == 2
    vq.eval()
    vq(mg.tensor([[5.0]]))
    np.testing.assert_array_equal(vq.window_counts.numpy(), [4.0, 2.0, 0.0])


# ------------------------------------------------------------------------------ perplexity
@pytest.mark.parametrize("K", [1, 4, 64])
def test_perplexity_is_K_for_uniform_use_and_1_for_a_single_code(K, device):
    uniform = mg.tensor(np.repeat(np.arange(K), 3), device=device)
    assert perplexity(code_counts(uniform, K)).item() == pytest.approx(K, rel=1e-5)
    single = mg.tensor(np.full(20, K - 1), device=device)
    assert perplexity(code_counts(single, K)).item() == pytest.approx(1.0, rel=1e-6)


def test_codebook_usage_counts_over_the_whole_epoch():
    usage = CodebookUsage(8)
    with pytest.raises(ValueError, match="update"):
        usage.perplexity()
    for batch in ([0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [6, 6, 7, 7]):  # each batch: 2 codes
        usage.update(mg.tensor(batch))
    assert usage.codes_used() == 8 and usage.fraction_used() == 1.0
    assert usage.perplexity() == pytest.approx(8.0, rel=1e-5)  # per batch it would be 2
    assert usage.histogram() == [2.0] * 8


# ------------------------------------------------------------------------------- VQ-GAN
def test_adaptive_weight_matches_a_hand_computation():
    """Decoder's last layer x̂ = W h; L_rec = mean (x̂ − x)²; L_GAN = −mean(v·x̂) (a linear D)."""
    rng = np.random.default_rng(0)
    h, x, v, w = rng.normal(size=(6, 3)), rng.normal(size=(6, 2)), rng.normal(size=2), rng.normal(size=(2, 3))
    W = mg.tensor(w, requires_grad=True)
    x_hat = mg.tensor(h) @ W.t()
    rec = (x_hat - mg.tensor(x)).square().mean()
    gan = -(x_hat * mg.tensor(v)).sum(dim=1).mean()
    got = adaptive_weight(rec, gan, W)
    residual = h @ w.T - x
    g_rec = 2.0 * residual.T @ h / residual.size  # ∂L_rec/∂W
    g_gan = -np.outer(v, h.mean(axis=0))  # ∂L_GAN/∂W
    expected = np.linalg.norm(g_rec) / (np.linalg.norm(g_gan) + 1e-4)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert not got.requires_grad
    (rec + got * gan).backward()  # the graph is still there for the step's backward
    assert W.grad is not None


def test_adaptive_weight_is_clamped_to_1e4():
    W = mg.tensor([[1.0, 2.0]], requires_grad=True)
    rec = (W * 1e3).sum()
    gan = (W * 0.0).sum()  # zero gradient: the ratio would be 1e3·√2 / 1e-4
    assert adaptive_weight(rec, gan, W).item() == 1e4


def test_hinge_losses():
    real, fake = mg.tensor([2.0, 0.5, -1.0]), mg.tensor([-3.0, 0.0, 1.5])
    expected_d = 0.5 * (np.mean([0.0, 0.5, 2.0]) + np.mean([0.0, 1.0, 2.5]))
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(expected_d)
    assert hinge_generator_loss(fake).item() == pytest.approx(0.5)


def test_vqgan_step_trains_decoder_and_discriminator():
    from minigen.models.pix2pix import PatchDiscriminator

    model = VQVAE(num_codes=8, code_dim=4, hidden_channels=4)
    disc = PatchDiscriminator(1, base_channels=4, num_layers=1)
    opt, opt_d = mg.optim.Adam(model.parameters(), lr=1e-3), mg.optim.Adam(disc.parameters(), lr=1e-3)
    x = mg.rand(2, 1, 8, 8)
    before = [p.detach().numpy().copy() for p in disc.parameters()]
    stats = train_step(model, opt, x, disc, opt_d, gan_active=False)
    assert "d_loss" not in stats and all(
        np.array_equal(b, p.detach().numpy()) for b, p in zip(before, disc.parameters())
    )
    stats = train_step(model, opt, x, disc, opt_d, gan_active=True)
    assert {"g_adv", "adaptive_weight", "d_loss"} <= set(stats)
    assert not all(np.array_equal(b, p.detach().numpy()) for b, p in zip(before, disc.parameters()))


# --------------------------------------------------------------------------------- prior
def test_prior_samples_keep_the_class_token():
    prior = CodePrior(num_codes=5, grid_shape=(2, 3), num_classes=4, n_layers=1, n_heads=2, d_model=16)
    labels = [3, 0, 2, 2, 1]
    seq = prior.generate(labels, temperature=1.0, top_k=3)
    assert seq.shape == (5, 7)
    np.testing.assert_array_equal(seq.numpy()[:, 0], 5 + np.array(labels))  # ⟨c⟩ = K + c
    codes = prior.sample(labels, temperature=0.7)
    assert codes.shape == (5, 2, 3) and codes.numpy().min() >= 0 and codes.numpy().max() < 5  # codes only


def test_trained_prior_generates_the_codes_of_the_requested_class():
    """Class c's grids are all code c: after training, samples of class c are too."""
    mg.manual_seed(0)
    prior = CodePrior(num_codes=4, grid_shape=(2, 2), num_classes=4, n_layers=1, n_heads=2, d_model=16)
    labels = mg.tensor(np.tile(np.arange(4), 8))
    grids = mg.tensor(np.repeat(np.tile(np.arange(4), 8), 4).reshape(32, 2, 2))
    opt = mg.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(60):
        loss = prior.loss(grids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    samples = prior.sample([0, 1, 2, 3, 2], temperature=1.0).numpy()
    np.testing.assert_array_equal(samples, np.array([0, 1, 2, 3, 2])[:, None, None] * np.ones((1, 2, 2)))


def test_prior_loss_counts_only_the_codes():
    prior = CodePrior(num_codes=6, grid_shape=(2, 2), num_classes=3, n_layers=1, n_heads=2, d_model=8)
    grids, labels = mg.randint(0, 6, (3, 2, 2)), mg.tensor([0, 2, 1])
    seq = prior.sequences(grids, labels)
    np.testing.assert_array_equal(seq.numpy()[:, 0], [6, 8, 7])
    np.testing.assert_array_equal(seq.numpy()[:, 1:], grids.numpy().reshape(3, 4))
    logits = prior.gpt(seq[:, :-1]).detach().numpy()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, seq.numpy()[:, 1:, None], axis=-1).mean()
    assert prior.loss(grids, labels).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------- VQ-VAE overfits
def test_vqvae_overfits_a_batch():
    mg.manual_seed(0)
    model = VQVAE(num_codes=16, code_dim=8, hidden_channels=8)
    rng = np.random.default_rng(0)
    x = mg.tensor((rng.uniform(size=(4, 1, 8, 8)) > 0.6).astype(np.float32))
    model.quantizer.kmeans_init_(model.encode(x))
    opt = mg.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(220):
        stats = train_step(model, opt, x, restart_dead=step % 25 == 24)
        first = first if first is not None else stats["reconstruction"].item()
    assert stats["reconstruction"].item() < 0.02 * first
    model.eval()
    assert ((model.reconstruct(x) - x).square().mean().item()) < 0.02 * first


# ----------------------------------------------------------------------- gradient checks
def test_codebook_and_commitment_terms_gradcheck():
    z_e, e = _f64(4, 3), _f64(4, 3, seed=1)
    mg.gradcheck(lambda codes: codebook_loss(z_e, codes), e.requires_grad_(True))
    mg.gradcheck(lambda z: commitment_loss(z, e.detach()), z_e.requires_grad_(True))


def test_squared_distances_gradcheck():
    mg.gradcheck(squared_distances, _f64(5, 3).requires_grad_(True), _f64(4, 3, seed=1).requires_grad_(True))


def test_decoding_code_ids_gradcheck_reaches_the_codebook():
    """Decoding a fixed grid of IDs is a smooth function of the codebook (and the decoder)."""
    model = VQVAE(num_codes=5, code_dim=2, hidden_channels=2, downsamples=1).to(mg.float64)
    indices = mg.tensor([[[0, 3], [3, 1]]])
    codebook = mg.tensor(model.quantizer.codebook.detach().numpy() * 10, requires_grad=True)

    def decode(codes):
        grid = mg.nn.functional.embedding(indices, codes).permute(0, 3, 1, 2)
        return model.decoder(grid)

    mg.gradcheck(decode, codebook)


def test_hinge_losses_gradcheck():
    real, fake = mg.tensor([2.5, 0.5, -1.0], dtype=mg.float64), mg.tensor([-3.0, 0.3, 1.5], dtype=mg.float64)
    mg.gradcheck(hinge_discriminator_loss, real.requires_grad_(True), fake.requires_grad_(True))
    mg.gradcheck(hinge_generator_loss, fake)


# ------------------------------------------------------------------------- PyTorch oracle
def test_quantizer_forward_and_backward_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z, book, g = rng.normal(size=(2, 4, 3, 3)), rng.normal(size=(7, 4)), rng.normal(size=(2, 4, 3, 3))
    vq = VectorQuantizer(num_codes=7, code_dim=4).to(mg.float64)
    vq.codebook.data[...] = book
    z_e = mg.tensor(z, requires_grad=True)
    out = vq(z_e)
    total = (out.z_q * mg.tensor(g)).sum() + out.loss
    total.backward()

    tz, tbook = torch.tensor(z, requires_grad=True), torch.tensor(book, requires_grad=True)
    flat = tz.permute(0, 2, 3, 1).reshape(-1, 4)
    distances = (flat**2).sum(1, keepdim=True) - 2 * flat @ tbook.T + (tbook**2).sum(1)
    k = distances.argmin(1)
    e = tbook[k]
    loss = torch.nn.functional.mse_loss(e, flat.detach()) + 0.25 * torch.nn.functional.mse_loss(flat, e.detach())
    tz_q = (flat + (e - flat).detach()).reshape(2, 3, 3, 4).permute(0, 3, 1, 2)
    ((tz_q * torch.tensor(g)).sum() + loss).backward()

    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), k.numpy())
    np.testing.assert_allclose(out.z_q.detach().numpy(), tz_q.detach().numpy(), rtol=1e-12)
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(z_e.grad.numpy(), tz.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vq.codebook.grad.numpy(), tbook.grad.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match=r"num_codes \(K\) must be an integer ≥ 1, got 0"):
        VectorQuantizer(num_codes=0, code_dim=4)
    with pytest.raises(ValueError, match="code_dim"):
        VectorQuantizer(num_codes=4, code_dim=0)
    vq = VectorQuantizer(num_codes=8, code_dim=16)
    with pytest.raises(ValueError, match=r"D = 32 channels.*code_dim is 16.*must be equal"):
        vq(mg.randn(2, 32, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, D, H, W\) or vectors \(M, D\)"):
        vq(mg.randn(16))
    with pytest.raises(ValueError, match=r"needs a GPT context of at least 16 positions, but block_size=8"):
        CodePrior(num_codes=64, grid_shape=(4, 4), block_size=8)
    prior = CodePrior(num_codes=8, grid_shape=(2, 2), num_classes=10, n_layers=1, n_heads=2, d_model=8)
    with pytest.raises(ValueError, match=r"class label 10 is out of range; valid labels are 0..9"):
        prior.sample([3, 10])
    with pytest.raises(ValueError, match=r"class label -1 is out of range; valid labels are 0..9"):
        prior.loss(mg.zeros(1, 2, 2, dtype=mg.int64), mg.tensor([-1]))
    with pytest.raises(ValueError, match=r"expected code grids \(N, 2, 2\)"):
        prior.loss(mg.zeros(1, 4, 4, dtype=mg.int64), mg.tensor([1]))
    with pytest.raises(ValueError, match="k must be at least 1"):
        kmeans(mg.randn(5, 2), 0)
    with pytest.raises(ValueError, match="need at least k = 6 vectors"):
        kmeans(mg.randn(5, 2), 6)


def test_quantizer_runs_on_every_device_like_the_cpu(device):
    mg.manual_seed(0)
    vq = VectorQuantizer(num_codes=6, code_dim=3)
    z = np.random.default_rng(1).normal(size=(2, 3, 2, 2)).astype(np.float32)
    cpu = vq(mg.tensor(z))
    moved = VectorQuantizer(num_codes=6, code_dim=3)
    moved.load_state_dict(vq.state_dict())
    on_device = moved.to(device)(mg.tensor(z, device=device))
    np.testing.assert_array_equal(on_device.indices.numpy(), cpu.indices.numpy())
    np.testing.assert_allclose(on_device.z_q.detach().numpy(), cpu.z_q.detach().numpy(), rtol=1e-6)
    assert straight_through(mg.tensor(z), mg.tensor(z)).shape == (2, 3, 2, 2)


def test_models_are_modules():
    assert isinstance(VQVAE(), nn.Module) and isinstance(CodePrior(8), nn.Module)


def test_quantizer_block_gradcheck_away_from_ties():
    """The quantiser's two terms as functions of the codebook and of z_e (the chosen codes fixed:
    each z_e row sits well inside its code's cell), through the embedding lookup's scatter."""
    book = mg.tensor([[2.0, 0.0], [-2.0, 0.5], [0.0, -2.5]], dtype=mg.float64)
    z = mg.tensor([[1.7, 0.3], [-1.6, 0.2], [0.4, -2.2], [2.2, -0.2]], dtype=mg.float64)
    mg.gradcheck(lambda codes: quantize(z, codes).codebook_loss, book.clone().requires_grad_(True))
    mg.gradcheck(lambda vectors: quantize(vectors, book).commitment_loss, z.clone().requires_grad_(True))


def test_training_steps_make_no_host_sync():
    """A VQ-VAE step (with the restart of dead codes) and a prior step on the stand-in GPU, with
    every device -> host read refused (DESIGN.md: no host syncs inside a training step)."""
    mg.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, hidden_channels=4).to("standin")
    opt = mg.optim.Adam(model.parameters(), lr=1e-3)
    x = mg.rand(2, 1, 8, 8).to("standin")
    prior = CodePrior(num_codes=8, grid_shape=(2, 2), num_classes=3, n_layers=1, n_heads=2, d_model=8).to("standin")
    popt = mg.optim.AdamW(prior.parameters(), lr=1e-3)
    grids, labels = mg.randint(0, 8, (2, 2, 2)).to("standin"), mg.tensor([0, 2]).to("standin")
    before = model.quantizer.codebook.detach().numpy().copy()
    with forbid_host_reads():
        for step in range(2):
            train_step(model, opt, x, restart_dead=step == 1)
            loss = prior.loss(grids, labels)
            popt.zero_grad()
            loss.backward()
            popt.step()
    assert not np.array_equal(model.quantizer.codebook.detach().numpy(), before)
