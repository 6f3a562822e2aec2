"""Captioned digits: captions describe their images, images show their attributes, held-out
combinations stay out of training, determinism, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigen.data.captions import (
    ATTRIBUTES,
    COLOUR_RGB,
    COLOURS,
    DIGIT_WORDS,
    HELDOUT_COMBINATIONS,
    POSITIONS,
    SIZES,
    THICKNESSES,
    VOCABULARIES,
    CaptionedDigits,
    caption,
    captioned_digits,
    describes,
    is_heldout,
)
from minigen.data.tokenizer import Tokenizer

# Every word that names an attribute value (synonyms included): the test's own reading of a caption.
_WORD_MEANS = {
    **{str(d): ("digit", d) for d in range(10)},
    **{w: ("digit", d) for d, w in enumerate(DIGIT_WORDS)},
    **{w: ("colour", c) for c, w in enumerate(COLOURS)},
    "small": ("size", 0),
    "large": ("size", 1),
    "big": ("size", 1),
    "thin": ("thickness", 0),
    "thick": ("thickness", 1),
    "bold": ("thickness", 1),
    **{w: ("position", p) for p, w in enumerate(POSITIONS)},
}


def _read(text: str) -> dict[str, int]:
    """The attributes a caption names, found word by word; a name given twice must agree."""
    named: dict[str, int] = {}
    for word in Tokenizer.split(text):
        if word in _WORD_MEANS:
            attribute, value = _WORD_MEANS[word]
            assert named.get(attribute, value) == value, f"{text!r} names two values of {attribute}"
            named[attribute] = value
    return named


@pytest.fixture(scope="module")
def train() -> CaptionedDigits:
    return captioned_digits(3000, seed=0, split="train")


def test_shapes_dtypes_and_ranges(train):
    n = len(train)
    assert train.images.shape == (n, 3, 32, 32) and train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    for name in ATTRIBUTES:
        codes = getattr(train, name)
        assert codes.shape == (n,) and codes.dtype == np.int64
        assert set(np.unique(codes)) == set(range(len(VOCABULARIES[name])))  # every value occurs
    assert train.mentioned.shape == (n, 5) and train.mentioned.dtype == bool
    assert train.mentioned.any(axis=1).all()  # every caption names something
    assert len(train.captions) == n and all(isinstance(c, str) for c in train.captions)
    assert list(train.attributes) == list(ATTRIBUTES)
    assert train.codes.shape == (n, 5)


def test_captions_describe_their_images(train):
    """Read each caption back: it names exactly the attributes in ``mentioned``, with the image's values."""
    for i, text in enumerate(train.captions):
        named = _read(text)
        assert set(named) == {a for a, m in zip(ATTRIBUTES, train.mentioned[i]) if m}, text
        for attribute, value in named.items():
            assert getattr(train, attribute)[i] == value, (text, attribute)


def test_mention_all_names_all_five():
    data = captioned_digits(200, seed=3, split="test", mention_all=True)
    assert data.mentioned.all()
    for i, text in enumerate(data.captions):
        assert _read(text) == {a: int(getattr(data, a)[i]) for a in ATTRIBUTES}, text


def test_templates_vary_word_order_and_synonyms(train):
    """The same content appears in several forms ("a red 3", "the three, red", "left: ...")."""
    texts = train.captions
    assert any(Tokenizer.split(t)[:2] in ([p, ":"] for p in POSITIONS) for t in texts)  # a position prefix
    assert any(" on the " in t or " at the " in t for t in texts)  # a position phrase
    assert any(t.startswith("something") for t in texts)
    assert any("digit " in t for t in texts)
    for a, b in (("large", "big"), ("thick", "bold"), ("3", "three")):
        assert any(a in t.split() or f"{a}," in t for t in texts) and any(b in t.split() or f"{b}," in t for t in texts)
    assert len(set(texts)) > len(texts) // 3  # varied, though templates repeat


def test_every_caption_fits_the_default_context(train):
    tokens, mask = Tokenizer.default().encode(train.captions)  # raises if a word or a length does not fit
    assert (~mask).sum(axis=1).max() <= 16


def test_images_show_their_colour_and_position(train):
    """Colour: the ink's mean colour is nearest the named RGB. Position: the ink's centre of mass."""
    ink = train.images.max(axis=1)  # (N, 32, 32)
    weight = ink * (ink > 0.3)
    mass = weight.sum(axis=(1, 2))
    mean_rgb = (train.images * weight[:, None]).sum(axis=(2, 3)) / mass[:, None]
    rgb = COLOUR_RGB / np.linalg.norm(COLOUR_RGB, axis=1, keepdims=True)
    nearest = np.argmax(mean_rgb / np.linalg.norm(mean_rgb, axis=1, keepdims=True) @ rgb.T, axis=1)
    np.testing.assert_array_equal(nearest, train.colour)
    rows, cols = np.indices((32, 32))
    com_row = (weight * rows).sum(axis=(1, 2)) / mass
    com_col = (weight * cols).sum(axis=(1, 2)) / mass
    # The position is the direction in which the ink's centre lies furthest from the frame's centre.
    dx, dy = com_col - 15.5, com_row - 15.5
    direction = np.argmax(np.stack([-dx, dx, -dy, dy], axis=1), axis=1)  # left, right, top, bottom
    assert (direction == train.position).mean() > 0.99
    assert (np.maximum(np.abs(dx), np.abs(dy)) > 3).mean() > 0.99  # and clearly off-centre


def test_images_show_their_size_and_thickness(train):
    """Size: the height of the ink. Thickness: more ink for the same digit and size."""
    ink = train.images.max(axis=1)
    height = ((ink > 0.3).any(axis=2)).sum(axis=1)
    assert (height[train.size == 0] <= 14).mean() > 0.99
    assert (height[train.size == 1] >= 15).mean() > 0.99
    amount = ink.sum(axis=(1, 2))
    for digit in range(10):
        for size in range(len(SIZES)):
            group = (train.digit == digit) & (train.size == size)
            thin, thick = amount[group & (train.thickness == 0)], amount[group & (train.thickness == 1)]
            assert thick.mean() > 1.4 * thin.mean(), (digit, SIZES[size])
            # One threshold per digit and size tells thin from thick, sample by sample.
            threshold = np.sqrt(thin.mean() * thick.mean())
            correct = np.concatenate([thin < threshold, thick > threshold])
            assert correct.mean() > 0.98, (digit, SIZES[size], THICKNESSES)


def test_heldout_combinations_never_appear_in_training():
    data = captioned_digits(6000, seed=1, split="train")
    assert not is_heldout(data.attributes).any()
    for combination in HELDOUT_COMBINATIONS:
        hit = np.ones(len(data), bool)
        for name, value in combination.items():
            hit &= data.attributes[name] == value
        assert not hit.any(), combination


def test_heldout_split_holds_only_heldout_combinations_and_test_holds_any():
    heldout = captioned_digits(400, seed=0, split="heldout")
    assert is_heldout(heldout.attributes).all()
    assert len({tuple(row) for row in heldout.codes[:, :2]}) == len(HELDOUT_COMBINATIONS)
    test = captioned_digits(2000, seed=0, split="test")
    assert is_heldout(test.attributes).any() and not is_heldout(test.attributes).all()


def test_same_arguments_same_data_and_splits_differ():
    a, b = captioned_digits(50, seed=4), captioned_digits(50, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    c = captioned_digits(50, seed=4, split="test")
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, captioned_digits(50, seed=5).images)


def test_subset_copies_every_field(train):
    part = train.subset(np.array([3, 1, 2]))
    assert len(part) == 3 and part.captions == [train.captions[i] for i in (3, 1, 2)]
    np.testing.assert_array_equal(part.images, train.images[[3, 1, 2]])
    np.testing.assert_array_equal(part.mentioned, train.mentioned[[3, 1, 2]])
    mask = train.digit == 7
    assert train.subset(mask).captions == [c for c, m in zip(train.captions, mask) if m]
    assert len(train.subset(slice(0, 5))) == 5


def test_describes_is_the_attribute_test():
    codes = np.array([[3, 0, 0, 0, 0], [3, 0, 1, 2, 1], [4, 0, 0, 0, 0]])
    mentioned = np.array([[True, True, False, False, False], [True] * 5, [False, True, False, False, False]])
    # Caption 0 "a red 3", caption 1 "a large thick red 3 at the top", caption 2 "something red".
    expected = np.array([[True, False, True], [True, True, True], [False, False, True]])
    np.testing.assert_array_equal(describes(mentioned, codes, codes), expected)


@given(
    codes=st.tuples(*(st.integers(0, len(VOCABULARIES[a]) - 1) for a in ATTRIBUTES)),
    mention=st.lists(st.booleans(), min_size=5, max_size=5).filter(any),
    seed=st.integers(0, 2**16),
)
def test_any_caption_names_what_it_is_asked_to(codes, mention, seed):
    text = caption(*codes, rng=np.random.default_rng(seed), mention=mention)
    assert _read(text) == {a: c for a, c, m in zip(ATTRIBUTES, codes, mention) if m}
    Tokenizer.default().encode(text)  # in the vocabulary and within the context


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'heldout'\), got 'val'"):
        captioned_digits(4, split="val")
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        captioned_digits(-1)
    with pytest.raises(ValueError, match=r"colour must be in 0\.\.5, got 6"):
        caption(1, 6, 0, 0, 0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="mention must have 5 bools"):
        caption(1, 1, 0, 0, 0, rng=np.random.default_rng(0), mention=[True])
