"""The lectures' worked examples, computed by the real minigen ops.

A student checks the code against the slide first, so each worked example is a test.
Where the slide's arithmetic is off, the test asserts the true value and a comment says
what the slide printed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.models.vit import VIT_CONFIGS, ViTConfig, build_vit, count_parameters
from minigen.ops.attention import additive_mask

# --------------------------------------------------------------------------- convolution
EDGE_FILTER = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]  # top row minus bottom row


@pytest.mark.parametrize(
    ("patch", "value"),
    [
        ([[0.6, 0.4, 0.6], [0.1, -0.2, -0.3], [-0.5, -0.4, -0.3]], 2.8),  # as the slide says
        ([[-0.7, 0.6, 0.2], [0.1, 0.5, -0.3], [-0.3, -0.4, 0.5]], 0.3),  # the slide prints −0.1
    ],
)
def test_conv_of_one_3x3_patch(device, patch, value):
    x = mg.tensor([[patch]], dtype=mg.float64, device=device)
    w = mg.tensor([[EDGE_FILTER]], dtype=mg.float64, device=device)
    out = F.conv2d(x, w)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(value, abs=1e-12)


IMAGE_6X6 = [
    [0, 0, 0, 0, 0, 0],
    [0, 1, 2, 2, 1, 0],
    [0, 2, 4, 4, 2, 0],
    [0, 1, 3, 3, 1, 0],
    [0, 1, 2, 3, 1, 0],
    [0, 0, 1, 1, 0, 0],
]
LAPLACIAN = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]

# The slide prints 3 at row 3, column 4 (1-based); the true value is 2.
LAPLACIAN_MAP = [
    [0, -1, -1, 0],
    [-2, -5, -5, -2],
    [2, -2, -1, 2],
    [-1, 0, -5, 0],
]
SLIDE_MAP = [
    [0, -1, -1, 0],
    [-2, -5, -5, -2],
    [2, -2, -1, 3],
    [-1, 0, -5, 0],
]
# With padding 1; the slide again prints 3 at row 4, column 5, where the value is 2.
LAPLACIAN_MAP_PADDED = [
    [0, 1, 2, 2, 1, 0],
    [1, 0, -1, -1, 0, 1],
    [2, -2, -5, -5, -2, 2],
    [1, 2, -2, -1, 2, 1],
    [1, -1, 0, -5, 0, 1],
    [0, 2, -1, 0, 2, 0],
]


def laplacian(device, padding):
    image = mg.tensor([[IMAGE_6X6]], dtype=mg.float64, device=device)
    kernel = mg.tensor([[LAPLACIAN]], dtype=mg.float64, device=device)
    return F.conv2d(image, kernel, padding=padding)


def test_laplacian_of_the_6x6_image_without_padding(device):
    out = laplacian(device, padding=0)
    assert out.shape == (1, 1, 4, 4)  # (6 − 3)/1 + 1 = 4
    np.testing.assert_array_equal(out.numpy()[0, 0], LAPLACIAN_MAP)


def test_laplacian_of_the_6x6_image_with_padding_1(device):
    out = laplacian(device, padding=1)
    assert out.shape == (1, 1, 6, 6)  # (6 + 2 − 3)/1 + 1 = 6: "same" padding
    np.testing.assert_array_equal(out.numpy()[0, 0], LAPLACIAN_MAP_PADDED)


@pytest.mark.parametrize(
    ("feature_map", "pooled"),
    [(SLIDE_MAP, [[0, 0], [2, 3]]), (LAPLACIAN_MAP, [[0, 0], [2, 2]])],
    ids=["the slide's map", "the true map"],
)
def test_max_pooling_2x2_stride_2(device, feature_map, pooled):
    x = mg.tensor([[feature_map]], dtype=mg.float64, device=device)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, stride=2).numpy()[0, 0], pooled)


def test_max_pooling_the_laplacian_output_directly(device):
    np.testing.assert_array_equal(F.max_pool2d(laplacian(device, 0), 2, stride=2).numpy()[0, 0], [[0, 0], [2, 2]])


# ------------------------------------------------------------------------ KL divergence
@pytest.mark.parametrize(
    ("q", "p", "term"),
    [(0.9, 0.9, 0.0), (0.9, 0.1, 1.98), (0.1, 0.9, -0.22), (0.1, 0.1, 0.0)],
)
def test_kl_terms_with_the_natural_log(device, q, p, term):
    q_t = mg.tensor([q], dtype=mg.float64, device=device)
    p_t = mg.tensor([p], dtype=mg.float64, device=device)
    value = (q_t * (q_t / p_t).log()).item()  # q(x) · log(q(x)/p(x))
    assert value == pytest.approx(q * math.log(q / p), abs=1e-12)
    assert round(value, 2) == term  # the table's two decimals


# --------------------------------------------------------------------------- causal mask
def test_causal_mask_for_t_4(device):
    m = additive_mask(None, True, 4, 4, np.float64, device).numpy()
    below = np.tril(np.ones((4, 4), dtype=bool))
    assert np.all(m[below] == 0) and np.all(m[~below] == -np.inf)


def test_masked_softmax_puts_zero_weight_above_the_diagonal(device):
    scores = mg.randn(2, 4, 4, dtype=mg.float64, device=device) * 3.0
    m = additive_mask(None, True, 4, 4, np.float64, device)
    weights = F.softmax(scores + m, dim=-1).numpy()
    assert np.all(weights[:, np.triu(np.ones((4, 4), dtype=bool), k=1)] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-12)
    assert weights[:, 0, 0] == pytest.approx(1.0)  # the first token sees only itself


# ------------------------------------------------------------------------------ ViT sizes
@pytest.mark.parametrize(
    ("name", "millions", "paper"),
    [
        ("base", 86.6, 86),
        # Table 1 of the paper prints 307M; the count of this architecture (a 1000-class head) is 304.3M.
        ("large", 304.3, 307),
        ("huge", 632.2, 632),
    ],
)
def test_vit_sizes_at_patch_16_and_224_px(name, millions, paper):
    count = count_parameters(VIT_CONFIGS[name], image_size=224, patch_size=16)
    assert count / 1e6 == pytest.approx(millions, abs=0.05)
    assert abs(count / 1e6 - paper) / paper < 0.01  # within 1% of the paper's table


def test_vit_base_configuration():
    base = VIT_CONFIGS["base"]
    assert (base.n_layers, base.d_model, base.mlp_dim, base.n_heads) == (12, 768, 3072, 12)


@pytest.mark.parametrize(
    "config", [ViTConfig(2, 16, 64, 4), ViTConfig(1, 12, 40, 3), ViTConfig(3, 22, 15, 11)], ids=str
)
def test_the_count_matches_a_built_model(config):
    model = build_vit(config, image_size=8, patch_size=4, in_channels=2, num_classes=3)
    assert model.blocks[0].fc1.weight.shape == (config.mlp_dim, config.d_model)
    assert sum(p.data.size for p in model.parameters()) == count_parameters(config, 8, 4, 2, 3)
