"""GPT, BERT and ViT: the properties the lectures state, and that each can learn.

MLM masking proportions (within 5σ), ViT's token count and patch embedding, GPT's
generation (greedy determinism, top-k), weight tying, initialisation, causality of the
whole model, and each model overfitting one tiny batch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.models import BERT, GPT, ViT, mlm_mask
from minigen.models.gpt import top_k_logits
from minigen.models.vit import PatchEmbedding
from minigen.optim import Adam


def adam_steps(model, loss_fn, steps: int, lr: float = 3e-3) -> list[float]:
    opt = Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# -------------------------------------------------------------------------- BERT MLM
def test_mlm_mask_proportions_within_five_sigma(device):
    vocab, mask_id, specials = 40, 1, [0, 1, 2]  # [PAD], [MASK], [CLS]
    rng = np.random.default_rng(0)
    host = rng.integers(3, vocab, size=(200, 500))
    host[:, 0] = 2  # [CLS] first
    host[:, -50:] = 0  # padding at the end
    tokens = mg.tensor(host, device=device)
    inputs, labels = (t.numpy() for t in mlm_mask(tokens, vocab, mask_id, specials, p=0.15, seed=1))

    def within_5_sigma(count: int, n: int, prob: float) -> bool:
        return abs(count - n * prob) <= 5 * math.sqrt(n * prob * (1 - prob))

    ordinary = ~np.isin(host, specials)
    selected = labels != -100
    assert not (selected & ~ordinary).any()  # specials are never selected
    assert within_5_sigma(int(selected.sum()), int(ordinary.sum()), 0.15)
    np.testing.assert_array_equal(labels[selected], host[selected])  # labels = the original tokens
    np.testing.assert_array_equal(inputs[~selected], host[~selected])  # unselected tokens untouched

    n = int(selected.sum())
    became_mask = inputs[selected] == mask_id
    changed_to_random = (inputs[selected] != mask_id) & (inputs[selected] != host[selected])
    # A random replacement equals the original with probability 1/37 (37 ordinary ids).
    p_random_differs = 0.1 * (1 - 1 / (vocab - len(specials)))
    assert within_5_sigma(int(became_mask.sum()), n, 0.8)
    assert within_5_sigma(int(changed_to_random.sum()), n, p_random_differs)
    assert within_5_sigma(n - int(became_mask.sum()) - int(changed_to_random.sum()), n, 1 - 0.8 - p_random_differs)
    random_values = inputs[selected][changed_to_random]
    assert not np.isin(random_values, specials).any()  # a random replacement is never a special token


def test_mlm_mask_is_repeatable_with_a_seed():
    tokens = mg.randint(3, 30, (8, 40))
    a = mlm_mask(tokens, 30, 1, [0, 1, 2], seed=5)
    b = mlm_mask(tokens, 30, 1, [0, 1, 2], seed=5)
    c = mlm_mask(tokens, 30, 1, [0, 1, 2], seed=6)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert (a[1].numpy() != c[1].numpy()).any()


def test_bert_padding_keys_do_not_change_real_tokens():
    """With the attention mask, whatever sits in the padding cannot affect the real tokens."""
    mg.manual_seed(0)
    model = BERT(20, 8, n_layers=2, n_heads=2, d_model=16).eval()
    tokens = mg.randint(3, 20, (2, 8))
    other = mg.tensor(tokens.numpy())
    other.data[:, 5:] = 7
    keep = np.ones((2, 8), bool)
    keep[:, 5:] = False
    with mg.no_grad():
        a, b = model(tokens, keep).numpy(), model(other, keep).numpy()
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=0, atol=1e-6)


def test_bert_overfits_one_batch():
    mg.manual_seed(0)
    model = BERT(16, 10, n_layers=2, n_heads=2, d_model=32, num_classes=3)
    tokens = mg.randint(3, 16, (8, 10))
    inputs, labels = mlm_mask(tokens, 16, 1, [0, 1, 2], p=0.3, seed=0)
    classes = mg.tensor(np.arange(8) % 3)

    def loss():
        hidden = model(inputs)
        logits = model.mlm_logits(hidden)
        mlm = F.cross_entropy(logits.reshape(-1, 16), labels.reshape(-1))
        return mlm + F.cross_entropy(model.classify(hidden), classes)

    losses = adam_steps(model, loss, 40, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0]


# ---------------------------------------------------------------------------- ViT
def test_vit_gives_num_patches_plus_one_tokens(device):
    model = ViT(image_size=16, patch_size=4, in_channels=1, d_model=16, n_layers=1, n_heads=2).to(device)
    images = mg.randn(3, 1, 16, 16, device=device)
    with mg.no_grad():
        assert model.tokens(images).shape == (3, 16 + 1, 16)
        assert model(images).shape == (3, 10)
        maps = model.attention_maps(images)
    assert maps.shape == (3, 2, 4, 4)
    assert np.all(maps.numpy().sum(axis=(-1, -2)) < 1 + 1e-6)  # [CLS]'s row minus its weight on itself
    sim = model.position_similarity().numpy()
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-5)


def test_patch_embedding_convolution_equals_flatten_then_linear():
    layer = PatchEmbedding(image_size=8, patch_size=4, in_channels=3, d_model=5)
    images = mg.randn(2, 3, 8, 8)
    with mg.no_grad():
        np.testing.assert_allclose(layer(images).numpy(), layer.as_linear(images).numpy(), rtol=1e-5, atol=1e-6)
    first_patch = images.numpy()[0, :, :4, :4].reshape(-1)  # the top-left patch, flattened (c, i, j)
    w = layer.proj.weight.detach().numpy().reshape(5, -1)
    with mg.no_grad():
        np.testing.assert_allclose(
            layer(images).numpy()[0, 0], w @ first_patch + layer.proj.bias.detach().numpy(), rtol=1e-5, atol=1e-6
        )


def test_vit_overfits_one_batch():
    mg.manual_seed(0)
    model = ViT(image_size=8, patch_size=4, in_channels=1, num_classes=4, d_model=32, n_layers=2, n_heads=2)
    images = mg.randn(16, 1, 8, 8)
    labels = mg.tensor(np.arange(16) % 4)
    losses = adam_steps(model, lambda: F.cross_entropy(model(images), labels), 40)
    assert losses[-1] < 0.1 * losses[0]


# ---------------------------------------------------------------------------- GPT
def small_gpt(**kwargs) -> GPT:
    mg.manual_seed(0)
    return GPT(vocab_size=11, block_size=8, n_layers=2, n_heads=2, d_model=16, **kwargs).eval()


def test_weight_tying_shares_the_array():
    model = small_gpt()
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.weight.data is model.wte.weight.data
    names = [name for name, _ in model.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names  # counted once
    idx = mg.randint(0, 11, (2, 6))
    model.loss(idx, idx).backward()
    # The gradient holds both uses: the output layer touches every row, the lookup only the ids seen.
    unseen = np.setdiff1d(np.arange(11), idx.numpy())
    if unseen.size:
        assert np.all(np.abs(model.wte.weight.grad.numpy()[unseen]).sum(-1) > 0)


def test_gpt_initialisation_scales_residual_projections():
    mg.manual_seed(0)
    model = GPT(vocab_size=50, block_size=64, n_layers=8, n_heads=4, d_model=128)
    assert abs(model.blocks[0].qkv.weight.detach().numpy().std() - 0.02) < 0.002
    assert abs(model.blocks[0].proj.weight.detach().numpy().std() - 0.02 / 4.0) < 0.0005  # 0.02/√(2·8)
    assert abs(model.blocks[3].fc2.weight.detach().numpy().std() - 0.02 / 4.0) < 0.0005
    assert np.all(model.blocks[0].qkv.bias.detach().numpy() == 0)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_gpt_is_causal(positions):
    model = small_gpt(positions=positions)
    idx = mg.randint(0, 11, (2, 8))
    other = mg.tensor(idx.numpy())
    other.data[:, 5:] = (other.data[:, 5:] + 1) % 11
    with mg.no_grad():
        np.testing.assert_array_equal(model(idx).numpy()[:, :5], model(other).numpy()[:, :5])


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_gpt_embed_is_tokens_plus_positions_and_feeds_the_attention_maps(positions):
    """``embed`` is E[idx] (+ P[0..T−1] for learned positions); ``attention_maps`` starts from
    it: one causal map per block whose rows sum to 1."""
    mg.manual_seed(1)
    model = GPT(vocab_size=11, block_size=6, n_layers=2, n_heads=2, d_model=8, positions=positions).eval()
    idx = mg.randint(0, 11, (3, 5))
    expected = model.wte.weight.detach().numpy()[idx.numpy()]
    if positions == "learned":
        expected = expected + model.wpe.weight.detach().numpy()[:5]
    np.testing.assert_allclose(model.embed(idx).detach().numpy(), expected, rtol=1e-6)
    maps = model.attention_maps(idx)
    assert len(maps) == 2 and all(m.shape == (3, 2, 5, 5) for m in maps)
    future = np.triu(np.ones((5, 5), dtype=bool), k=1)  # key j > query i
    for m in maps:
        weights = m.numpy()
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(weights[..., future] == 0)
    if positions == "learned":
        with pytest.raises(ValueError, match="sequence length 7 exceeds block_size 6"):
            model.embed(mg.randint(0, 11, (1, 7)))


def test_bert_embed_and_attention_maps_hide_the_padding():
    mg.manual_seed(2)
    model = BERT(20, 8, n_layers=2, n_heads=2, d_model=16).eval()
    tokens = mg.randint(3, 20, (2, 6))
    expected = model.tok_emb.weight.detach().numpy()[tokens.numpy()] + model.pos_emb.weight.detach().numpy()[:6]
    np.testing.assert_allclose(model.embed(tokens).detach().numpy(), expected, rtol=1e-6)
    keep = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    maps = model.attention_maps(tokens, attention_mask=mg.tensor(keep))
    assert len(maps) == 2
    for m in maps:
        weights = m.numpy()  # (B, heads, T, T)
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(weights[0, :, :, 4:] == 0)  # padded keys get no attention
        assert np.all(weights[1] > 0)  # without padding every key is seen (no causal mask)
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_len 8"):
        model.embed(mg.randint(3, 20, (1, 9)))


def test_gpt_greedy_generation_is_deterministic_and_follows_argmax():
    model = small_gpt()
    start = mg.tensor([[1, 2, 3]])
    a = model.generate(start, 5, temperature=0)
    mg.manual_seed(123)  # the seed must not matter for greedy decoding
    b = model.generate(start, 5, temperature=0)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == (1, 8)
    with mg.no_grad():
        logits = model(a[:, :-1]).numpy()
    np.testing.assert_array_equal(a.numpy()[0, 3:], logits[0, 2:].argmax(-1))  # each token was the argmax


def test_gpt_top_k_samples_only_among_the_k_most_likely():
    model = small_gpt()
    start = mg.tensor([[4, 5]] * 200)
    with mg.no_grad():
        logits = model(start).numpy()[0, -1]
    allowed = set(np.argsort(logits)[-3:].tolist())
    samples = model.generate(start, 1, temperature=1.0, top_k=3).numpy()[:, -1]
    assert set(samples.tolist()) <= allowed
    assert len(set(samples.tolist())) > 1  # it does sample, not just pick the argmax
    greedy = model.generate(start[:1], 1, temperature=0).numpy()[0, -1]
    assert set(model.generate(start, 1, top_k=1).numpy()[:, -1].tolist()) == {greedy}


def test_top_k_logits_keeps_k_per_row():
    logits = mg.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 6.0, -1.0]])
    kept = top_k_logits(logits, 2).numpy()
    np.testing.assert_array_equal(np.isfinite(kept), [[False, True, False, True], [True, False, True, False]])


def test_gpt_generation_crops_to_the_block_size():
    model = small_gpt()
    out = model.generate(mg.zeros(1, 8, dtype=mg.int64), 5, temperature=0)
    assert out.shape == (1, 13)
    with pytest.raises(ValueError, match="block_size"):
        model(mg.zeros(1, 9, dtype=mg.int64))
    rope_model = small_gpt(positions="rope")
    assert rope_model.wpe is None
    with mg.no_grad():
        assert rope_model(mg.zeros(1, 12, dtype=mg.int64)).shape == (1, 12, 11)  # RoPE: no table to run out of


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_gpt_overfits_one_batch(positions):
    model = small_gpt(positions=positions).train()
    idx = mg.randint(0, 11, (4, 8))
    losses = adam_steps(model, lambda: model.loss(idx[:, :-1], idx[:, 1:]), 40, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0]


def test_gpt_runs_on_the_standin_device():
    model = small_gpt().to("standin")
    idx = mg.randint(0, 11, (2, 5), device="standin")
    loss = model.loss(idx, idx)
    loss.backward()
    assert model.wte.weight.grad.device == "standin"
    assert model.generate(idx, 2, top_k=3).device == "standin"
