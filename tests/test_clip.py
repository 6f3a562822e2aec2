"""CLIP: the text encoder (padding, pooling, gradients), the symmetric contrastive loss (symmetry,
log B at chance, soft targets, PyTorch oracle, gradcheck), the logit-scale clamp, zero-shot
classification, one-batch overfitting and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from random_models import randomised_parameters

import minigen as mg
import minigen.nn as nn
from minigen.data.captions import captioned_digits, describes
from minigen.data.tokenizer import Tokenizer
from minigen.models.clip import (
    CLIP,
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    ImageEncoder,
    TextEncoder,
    clip_loss,
    l2_normalize,
    soft_targets,
)
from minigen.testing.strategies import arrays

TOK = Tokenizer.default()
CAPTIONS = ["a small red 3 on the left", "left: a red three, small", "something blue", "the digit 7"]


def _unit(rows: int, dim: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


# ------------------------------------------------------------------------------ text encoder
def test_text_encoder_shapes_and_pooling_at_end(device):
    encoder = TextEncoder(TOK.vocab_size, context_length=16, width=32, depth=2, heads=4).to(device)
    tokens, mask = TOK.encode(CAPTIONS)
    with mg.no_grad():
        features = encoder(mg.tensor(tokens, device=device), mg.tensor(mask, device=device))
        assert tuple(features.shape) == (4, 16, 32) and features.device == mg.tensor(0, device=device).device
        pooled = encoder.pool(features, tokens)
    ends = (~mask).sum(axis=1) - 1  # <end> is the last non-padding token
    np.testing.assert_array_equal(pooled.numpy(), features.numpy()[np.arange(4), ends])


def test_padded_tokens_change_nothing(device):
    """Whatever stands at the padded positions (and however long the padding), the real positions'
    features and the pooled vector are the same."""
    encoder = randomised_parameters(TextEncoder(TOK.vocab_size, context_length=16, width=16, depth=2, heads=2)).to(
        device
    )
    tokens, mask = TOK.encode(CAPTIONS, context_length=16)
    scrambled = tokens.copy()
    scrambled[mask] = np.random.default_rng(0).integers(0, TOK.vocab_size, mask.sum())
    short_tokens, short_mask = TOK.encode(CAPTIONS, context_length=9)
    with mg.no_grad():

        def run(t, m):
            f = encoder(mg.tensor(t, device=device), mg.tensor(m, device=device))
            return f.numpy(), encoder.pool(f, mg.tensor(t, device=device)).numpy()

        features, pooled = run(tokens, mask)
        features2, pooled2 = run(scrambled, mask)
        features3, pooled3 = run(short_tokens, short_mask)
    real = ~mask
    np.testing.assert_allclose(features2[real], features[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled2, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features3[~short_mask], features[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled3, pooled, rtol=1e-5, atol=1e-6)
    # Without the mask the padding would leak in: the check above is not vacuous.
    with mg.no_grad():
        leaky = encoder.pool(encoder(mg.tensor(scrambled), mg.tensor(np.zeros_like(mask))), scrambled).numpy()
    assert not np.allclose(leaky, pooled, atol=1e-4)


class _PooledText(nn.Module):
    """The pooled text encoder as a module of its parameters, for gradcheck."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: mg.Tensor, mask: mg.Tensor) -> mg.Tensor:
        return self.encoder.encode(tokens, mask)


def test_pooled_text_encoder_gradcheck():
    small = Tokenizer(["<pad>", "<end>", "a", "red", "3", "something", "blue"])  # fewer embedding rows to check
    encoder = TextEncoder(small.vocab_size, context_length=5, width=8, depth=1, heads=2, mlp_ratio=1)
    encoder = randomised_parameters(encoder, scale=0.2)
    tokens, mask = small.encode(["a red 3", "something blue", "3"], context_length=5)
    # Tensors of more than 32 entries are checked along random directions plus sampled entries.
    pooled = _PooledText(encoder).to(mg.float64)
    mg.gradcheck(pooled, mg.tensor(tokens), mg.tensor(mask), max_elements=32, n_directions=6, n_sampled=12)


def test_text_encoder_state_dict_moves_to_another_model():
    """CLIP's text tower can initialise another model's text encoder (latent diffusion's τθ)."""
    clip = CLIP(TOK.vocab_size, text_width=16, text_depth=1, text_heads=2, embed_dim=8)
    other = TextEncoder(TOK.vocab_size, width=16, depth=1, heads=2)
    other.load_state_dict(clip.text_encoder.state_dict())
    tokens, mask = TOK.encode(CAPTIONS)
    with mg.no_grad():
        np.testing.assert_array_equal(other(tokens, mask).numpy(), clip.text_encoder(tokens, mask).numpy())


def test_text_encoder_errors_name_the_argument():
    encoder = TextEncoder(TOK.vocab_size, context_length=8, width=8, depth=1, heads=2)
    tokens, mask = TOK.encode("a red 3", context_length=8)
    with pytest.raises(ValueError, match=r"key_padding_mask must both be \(batch, length\)"):
        encoder(tokens, mask[:, :4])
    with pytest.raises(TypeError, match="key_padding_mask must be bool"):
        encoder(tokens, mask.astype(np.int64))
    with pytest.raises(TypeError, match="tokens must be integer token ids"):
        encoder(tokens.astype(np.float32), mask)
    long_tokens, long_mask = TOK.encode("a red 3", context_length=12)
    with pytest.raises(ValueError, match="length 12 exceeds context_length 8"):
        encoder(long_tokens, long_mask)
    with pytest.raises(ValueError, match="needs an <end> token"):
        encoder.pool(mg.zeros(1, 8, 8), np.zeros((1, 8), np.int64))


# ------------------------------------------------------------------------------------ loss
def _reference_loss(u: np.ndarray, v: np.ndarray, t: float, targets=None) -> float:
    """½ [CE(S, T) + CE(Sᵀ, T')] written out in NumPy."""
    s = math.exp(t) * u @ v.T
    t_it, t_ti = (np.eye(len(u)), np.eye(len(u))) if targets is None else targets

    def ce(logits, target):
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        return -(target * log_p).sum(axis=1).mean()

    return 0.5 * (ce(s, t_it) + ce(s.T, t_ti))


@given(data=st.data(), batch=st.integers(2, 6), dim=st.integers(2, 5), t=st.floats(0.0, 3.0))
def test_loss_is_symmetric_in_images_and_texts(data, batch, dim, t):
    u = data.draw(arrays((batch, dim), low=-2.0, high=2.0).filter(lambda a: (np.linalg.norm(a, axis=1) > 0.3).all()))
    v = data.draw(arrays((batch, dim), low=-2.0, high=2.0).filter(lambda a: (np.linalg.norm(a, axis=1) > 0.3).all()))
    u, v = l2_normalize(mg.tensor(u)), l2_normalize(mg.tensor(v))
    forward, swapped = clip_loss(u, v, t).item(), clip_loss(v, u, t).item()
    assert forward == pytest.approx(swapped, rel=1e-9, abs=1e-12)
    assert forward == pytest.approx(_reference_loss(u.numpy(), v.numpy(), t), rel=1e-9)
    # With soft targets, swapping the roles swaps (and transposes) the targets.
    positives = data.draw(arrays((batch, batch), low=0.0, high=1.0)) > 0.5
    np.fill_diagonal(positives, True)
    t_it, t_ti = soft_targets(positives)
    s_it, s_ti = soft_targets(positives.T)
    assert clip_loss(u, v, t, (t_it, t_ti)).item() == pytest.approx(clip_loss(v, u, t, (s_it, s_ti)).item(), rel=1e-6)
    assert clip_loss(u, v, t, (t_it, t_ti)).item() == pytest.approx(
        _reference_loss(u.numpy(), v.numpy(), t, (t_it, t_ti)), rel=1e-6
    )


@pytest.mark.parametrize("batch", [8, 64])
def test_loss_is_log_batch_for_random_embeddings(batch):
    """Unrelated unit vectors in many dimensions are nearly orthogonal: every logit ≈ 0, so
    each softmax is ≈ uniform over the batch and each cross-entropy ≈ log B."""
    u, v = _unit(batch, 4096, seed=1), _unit(batch, 4096, seed=2)
    loss = clip_loss(mg.tensor(u), mg.tensor(v), LOGIT_SCALE_INIT).item()
    assert loss == pytest.approx(math.log(batch), abs=0.06)


def test_loss_gradcheck():
    u = mg.tensor(_unit(4, 3, seed=0), requires_grad=True)
    v = mg.tensor(_unit(4, 3, seed=1), requires_grad=True)
    t = mg.tensor(0.7, dtype=mg.float64, requires_grad=True)
    mg.gradcheck(clip_loss, u, v, t)
    positives = np.eye(4, dtype=bool)
    positives[0, 2] = positives[3, 1] = True
    mg.gradcheck(lambda a, b, s: clip_loss(a, b, s, soft_targets(positives)), u, v, t)
    # Through the normalisation, from raw encoder outputs.
    raw_u = mg.tensor(np.random.default_rng(3).normal(size=(3, 4)), dtype=mg.float64, requires_grad=True)
    raw_v = mg.tensor(np.random.default_rng(4).normal(size=(3, 4)), dtype=mg.float64, requires_grad=True)
    mg.gradcheck(lambda a, b, s: clip_loss(l2_normalize(a), l2_normalize(b), s), raw_u, raw_v, t)


def test_loss_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    raw_u, raw_v = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    positives = rng.random((6, 6)) < 0.3
    np.fill_diagonal(positives, True)
    for targets in (None, soft_targets(positives)):
        u = mg.tensor(raw_u, dtype=mg.float64, requires_grad=True)
        v = mg.tensor(raw_v, dtype=mg.float64, requires_grad=True)
        t = mg.tensor(LOGIT_SCALE_INIT, dtype=mg.float64, requires_grad=True)
        loss = clip_loss(l2_normalize(u), l2_normalize(v), t, targets)
        loss.backward()

        tu = torch.tensor(raw_u, requires_grad=True)
        tv = torch.tensor(raw_v, requires_grad=True)
        tt = torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64, requires_grad=True)
        logits = tt.exp() * torch.nn.functional.normalize(tu, dim=-1) @ torch.nn.functional.normalize(tv, dim=-1).T
        if targets is None:
            labels = torch.arange(6)
        else:
            labels = torch.tensor(targets[0], dtype=torch.float64)
        labels_t = labels if targets is None else torch.tensor(targets[1], dtype=torch.float64)
        expected = 0.5 * (
            torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels_t)
        )
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
        np.testing.assert_allclose(u.grad.numpy(), tu.grad.numpy(), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(v.grad.numpy(), tv.grad.numpy(), rtol=1e-8, atol=1e-12)
        assert t.grad.item() == pytest.approx(tt.grad.item(), rel=1e-8, abs=1e-12)


def test_soft_targets_spread_over_every_true_caption():
    data = captioned_digits(64, seed=0)
    positives = describes(data.mentioned, data.codes, data.codes)
    image_to_text, text_to_image = soft_targets(positives)
    np.testing.assert_allclose(image_to_text.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(text_to_image.sum(axis=1), 1.0, rtol=1e-6)
    assert (image_to_text > 0).sum() == positives.sum() > 64  # duplicates exist and are all positives
    same = np.array([[c1 == c2 for c2 in data.captions] for c1 in data.captions])
    assert positives[same].all()  # identical captions describe each other's images
    with pytest.raises(ValueError, match="square bool matrix with a True diagonal"):
        soft_targets(np.zeros((3, 3), bool))


def test_batch_of_one_is_refused():
    u = mg.tensor(_unit(1, 4))
    with pytest.raises(ValueError, match="batch size must be at least 2 .* got 1"):
        clip_loss(u, u, 1.0)
    with pytest.raises(ValueError, match=r"must both be \(batch, dim\)"):
        clip_loss(mg.tensor(_unit(3, 4)), mg.tensor(_unit(2, 4)), 1.0)
    with pytest.raises(ValueError, match=r"targets must be \(batch, batch\)"):
        clip_loss(mg.tensor(_unit(3, 4)), mg.tensor(_unit(3, 4)), 1.0, (np.eye(2), np.eye(2)))


# ------------------------------------------------------------------------------------ model
def _small_clip() -> CLIP:
    return CLIP(TOK.vocab_size, embed_dim=16, text_width=16, text_depth=1, text_heads=2, image_channels=(8, 16, 16))


def test_clip_outputs_unit_vectors_and_logits(device):
    model = _small_clip().to(device)
    data = captioned_digits(5, seed=0)
    tokens, mask = TOK.encode(data.captions)
    with mg.no_grad():
        images = mg.tensor(data.images, device=device)
        u = model.encode_image(images)
        v = model.encode_text(mg.tensor(tokens, device=device), mg.tensor(mask, device=device))
        logits = model(images, mg.tensor(tokens, device=device), mg.tensor(mask, device=device))
    np.testing.assert_allclose(np.linalg.norm(u.numpy(), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v.numpy(), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), np.exp(LOGIT_SCALE_INIT) * u.numpy() @ v.numpy().T, rtol=1e-4)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_image_encoder_keeps_position():
    """Flattening (not averaging) the last grid: the same blob left and right gives different features."""
    encoder = randomised_parameters(ImageEncoder(3, (4, 4, 4)), scale=0.3)
    left, right = np.zeros((1, 3, 32, 32), np.float32), np.zeros((1, 3, 32, 32), np.float32)
    left[..., 12:20, 2:10], right[..., 12:20, 22:30] = 1.0, 1.0
    with mg.no_grad():
        a, b = encoder(mg.tensor(left)).numpy(), encoder(mg.tensor(right)).numpy()
    assert a.shape == (1, encoder.out_features) == (1, 4 + 4 + 4 * 4)  # two means, and the quadrants
    assert np.abs(a - b).max() > 1e-3


def test_logit_scale_clamp_holds():
    model = _small_clip()
    optimizer = mg.optim.SGD([model.logit_scale], lr=10.0)
    for _ in range(3):
        optimizer.zero_grad()
        (-model.logit_scale).backward()  # a gradient that always pushes the scale up
        optimizer.step()
        model.clamp_logit_scale_()
        assert model.logit_scale.item() <= LOGIT_SCALE_MAX + 1e-6
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    assert math.exp(model.logit_scale.item()) == pytest.approx(100.0, rel=1e-5)
    with mg.no_grad():
        model.logit_scale.fill_(1.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(1.0)  # below the cap: untouched


def test_clip_overfits_one_batch():
    mg.manual_seed(0)
    data = captioned_digits(16, seed=0, split="test", mention_all=True)
    tokens, mask = TOK.encode(data.captions)
    model = _small_clip()
    positives = describes(data.mentioned, data.codes, data.codes)
    optimizer = mg.optim.Adam(model.parameters(), lr=3e-3)
    images, tokens_t, mask_t = mg.tensor(data.images), mg.tensor(tokens), mg.tensor(mask)
    first = None
    for _ in range(80):
        loss = model.loss(images, tokens_t, mask_t, positives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale_()
        first = loss.item() if first is None else first
    assert loss.item() < 0.05 * first  # from ≈ log 16 + the initial bias to nearly 0
    with mg.no_grad():
        logits = model(images, tokens_t, mask_t).numpy()
    assert (logits.argmax(axis=1) == np.arange(16)).all() and (logits.argmax(axis=0) == np.arange(16)).all()


def test_zero_shot_picks_the_nearest_prompt():
    model = _small_clip()
    prompts = [f"the digit {d}" for d in range(10)]
    tokens, mask = TOK.encode(prompts)
    weights = model.zero_shot_weights(tokens, mask)
    assert tuple(weights.shape) == (10, 16)
    images = mg.tensor(captioned_digits(6, seed=0).images)
    predicted = model.zero_shot_predict(images, weights).numpy()
    with mg.no_grad():
        expected = (model.encode_image(images) @ weights.mT).numpy().argmax(axis=1)
    np.testing.assert_array_equal(predicted, expected)
    # A prompt ensemble: two prompts per class, averaged.
    ensemble = [p for d in range(10) for p in (f"the digit {d}", f"a {d}")]
    tokens, mask = TOK.encode(ensemble)
    assert tuple(model.zero_shot_weights(tokens, mask, prompts_per_class=2).shape) == (10, 16)
    with pytest.raises(ValueError, match="prompts_per_class must divide the 20 prompts, got 3"):
        model.zero_shot_weights(tokens, mask, prompts_per_class=3)
