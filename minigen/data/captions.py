"""Captioned digits: coloured digits on black with a caption that describes them (offline, seeded).

Each 32×32 RGB image shows one digit rendered by ``digits.py`` (the same glyphs and
jitter as ``load_digits``), with five attributes, each stored as an integer code:

* ``digit``     0-9                                        (``DIGIT_WORDS``)
* ``colour``    red, green, blue, yellow, magenta, cyan    (``COLOURS``, RGB in ``COLOUR_RGB``)
* ``size``      small (about 11 pixels tall) or large (about 20)          (``SIZES``)
* ``position``  left, right, top or bottom of the frame    (``POSITIONS``)
* ``thickness`` thin (stroke about 1 pixel) or thick (about 3)            (``THICKNESSES``)

and a caption built from templates with varied word order and a few synonyms:

    "a small red 3 on the left"        "left: a red three, small"
    "the digit 7, thick, at the top"   "something red"

A caption may leave attributes out (``mentioned`` records which it names), in which case it
is simply less specific: "a red 3" is true of a red 3 of any size, position and thickness.

**Held-out combinations.** ``HELDOUT_COMBINATIONS`` lists attribute combinations (every blue
7, ...) that ``split="train"`` never produces; ``split="heldout"`` produces only them. A model
that draws or recognises a blue 7 after training has composed "blue" and "7", never having
seen them together: a test of compositional generalisation.

How an image is made (all samples at once, no Python loop over images):

1. the digit's grey glyph is rendered by ``digits._render_chunk`` into a square frame of 16
   pixels (small) or 28 pixels (large; the glyph fills 20/28 of its frame, as in MNIST), at a
   thin or a thick stroke level, with the usual small random rotation, shear and wobble;
2. the frame is pasted into the 32×32 canvas so that the glyph's centre of mass lands at the
   position's anchor (for example 8 pixels from the left edge for a small digit on the left),
   give or take one pixel of random shift;
3. the grey image is multiplied by the colour's RGB (times a brightness in [0.85, 1]), and a
   little Gaussian noise is added.

Every attribute is therefore visible in the pixels: colour in the channel ratios, size in the
extent of the ink, position in its centre of mass, thickness in the stroke width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from minigen.data import digits as _digits

# --------------------------------------------------------------------------- vocabularies
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
# Bright, saturated and far apart: every pair differs by at least 0.7 in some channel. Pure
# (0, 0, 1) blue is dim to the eye, so blue gets a little red and green.
COLOUR_RGB: np.ndarray = np.array(
    [
        [1.00, 0.12, 0.10],  # red
        [0.10, 0.90, 0.15],  # green
        [0.20, 0.35, 1.00],  # blue
        [0.95, 0.90, 0.10],  # yellow
        [0.95, 0.15, 0.95],  # magenta
        [0.10, 0.90, 0.95],  # cyan
    ],
    np.float32,
)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
THICKNESSES: tuple[str, ...] = ("thin", "thick")
ATTRIBUTES: tuple[str, ...] = ("digit", "colour", "size", "position", "thickness")
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "digit": DIGIT_WORDS,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "thickness": THICKNESSES,
}

# Combinations that split="train" never produces (compositional generalisation tests).
HELDOUT_COMBINATIONS: tuple[dict[str, int], ...] = (
    {"digit": 7, "colour": COLOURS.index("blue")},
    {"digit": 3, "colour": COLOURS.index("red")},
    {"digit": 5, "colour": COLOURS.index("green")},
    {"digit": 9, "colour": COLOURS.index("yellow")},
)

SPLITS: tuple[str, ...] = ("train", "test", "heldout")
IMAGE_SIZE = 32
FULL_CAPTION_P = 0.5  # the share of captions that name all five attributes (split train and test)

# Words of the templates: synonyms, and the phrases for positions.
_SIZE_WORDS = {0: ("small",), 1: ("large", "big")}
_THICKNESS_WORDS = {0: ("thin",), 1: ("thick", "bold")}
_POSITION_PHRASES = (("on", "the", "left"), ("on", "the", "right"), ("at", "the", "top"), ("at", "the", "bottom"))

# Rendering: the frame each size is drawn in (one of digits.py's sizes), and where the
# glyph's centre goes for each position, (row, column) in canvas pixels.
_FRAME = (16, 28)
_ANCHORS = (
    ((16.0, 8.0), (16.0, 24.0), (8.0, 16.0), (24.0, 16.0)),  # small: left, right, top, bottom
    ((16.0, 9.5), (16.0, 22.5), (11.0, 16.0), (21.0, 16.0)),  # large
)
_JITTER = 1  # pixels of random shift around the anchor, each way
# Stroke levels of digits.py (indices into its _LEVELS = -2..4 template pixels per side).
_THIN_LEVELS = (0, 1)  # eroded: about 1 pixel wide at 28 px, 0.7 at 16 px
_THICK_LEVELS = (5, 6)  # widened: about 3.8 pixels at 28 px, 2.2 at 16 px
_NOISE = 0.02


@dataclasses.dataclass(frozen=True)
class CaptionedDigits:
    """Captioned images and their attributes (host NumPy arrays).

    * ``images``: float32 ``(N, 3, 32, 32)`` in [0, 1], a coloured digit on black;
    * ``digit``, ``colour``, ``size``, ``position``, ``thickness``: int64 ``(N,)`` codes,
      indices into ``DIGIT_WORDS``, ``COLOURS``, ``SIZES``, ``POSITIONS``, ``THICKNESSES``;
    * ``captions``: ``list[str]``, one per image;
    * ``mentioned``: bool ``(N, 5)``, which attributes each caption names (columns in the
      order of ``ATTRIBUTES``).
    """

    images: np.ndarray
    digit: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    position: np.ndarray
    thickness: np.ndarray
    captions: list[str]
    mentioned: np.ndarray

    def __len__(self) -> int:
        return len(self.digit)

    @property
    def attributes(self) -> dict[str, np.ndarray]:
        """Attribute name -> its codes (N,), in the order of ``ATTRIBUTES``."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    @property
    def codes(self) -> np.ndarray:
        """All attribute codes as one int64 array (N, 5), columns in the order of ``ATTRIBUTES``."""
        return np.stack([getattr(self, name) for name in ATTRIBUTES], axis=1)

    def subset(self, index: Any) -> CaptionedDigits:
        """The samples at ``index`` (a slice, a boolean mask or integer indices), copied."""
        rows = np.arange(len(self))[index]
        return CaptionedDigits(
            self.images[index].copy(),
            *(getattr(self, name)[index].copy() for name in ATTRIBUTES),
            captions=[self.captions[i] for i in np.atleast_1d(rows)],
            mentioned=self.mentioned[index].copy(),
        )


# ------------------------------------------------------------------------------- captions
def caption(
    digit: int,
    colour: int,
    size: int,
    position: int,
    thickness: int,
    *,
    rng: np.random.Generator,
    mention: Sequence[bool] | None = None,
) -> str:
    """One caption for a digit with these attribute codes, from the templates.

    ``mention`` (5 bools, in the order of ``ATTRIBUTES``) says which attributes to name; None
    names all five. The template is drawn with ``rng``:

    * the digit is "3" or "three", sometimes "digit 3", after "a" or "the"; an unnamed digit
      is "a digit", "the digit" or "something";
    * size, thickness and colour go before the noun ("a small thick red 3") or after it, as
      a comma-separated list ("the 3, small, thick"), or colour before and the rest after;
      after "something" they all go after ("something red");
    * the position is a prefix ("left: ..."), a phrase after the noun ("... on the left")
      or one more item of the list (", left" or ", on the left").

    Synonyms: "large"/"big", "thick"/"bold", numerals/words. Every caption has at most 14
    words and punctuation marks, so it fits ``Tokenizer.encode``'s default context of 16.
    """
    codes = (digit, colour, size, position, thickness)
    for name, code in zip(ATTRIBUTES, codes):
        if not 0 <= int(code) < len(VOCABULARIES[name]):
            raise ValueError(f"caption: {name} must be in 0..{len(VOCABULARIES[name]) - 1}, got {code!r}")
    if mention is None:
        mention = (True,) * 5
    if len(mention) != 5:
        raise ValueError(f"caption: mention must have 5 bools (one per attribute of {ATTRIBUTES}), got {mention!r}")
    named = dict(zip(ATTRIBUTES, (bool(m) for m in mention)))

    # The noun phrase's head.
    something = False
    if named["digit"]:
        name = str(digit) if rng.random() < 0.5 else DIGIT_WORDS[digit]
        noun = ["digit", name] if rng.random() < 0.3 else [name]
        determiner = ["the"] if rng.random() < 0.5 else ["a"]
    elif rng.random() < 0.3:
        something, noun, determiner = True, ["something"], []
    else:
        noun, determiner = ["digit"], ["the"] if rng.random() < 0.5 else ["a"]

    # Adjectives: before the noun ("pre") or in the list after it ("post").
    adjectives = []  # (attribute, words)
    if named["size"]:
        synonyms = _SIZE_WORDS[int(size)]
        adjectives.append(("size", [synonyms[int(rng.integers(len(synonyms)))]]))
    if named["thickness"]:
        synonyms = _THICKNESS_WORDS[int(thickness)]
        adjectives.append(("thickness", [synonyms[int(rng.integers(len(synonyms)))]]))
    if named["colour"]:
        adjectives.append(("colour", [COLOURS[int(colour)]]))
    style = 1 if something else int(rng.integers(3))  # 0 all before, 1 all after, 2 colour before
    pre = [w for attr, words in adjectives if style == 0 or (style == 2 and attr == "colour") for w in words]
    post = [words for attr, words in adjectives if not (style == 0 or (style == 2 and attr == "colour"))]

    prefix: list[str] = []
    suffix: list[str] = []
    if named["position"]:
        form = int(rng.integers(3))
        if form == 0:
            prefix = [POSITIONS[int(position)], ":"]
        elif form == 1:
            suffix = list(_POSITION_PHRASES[int(position)])
        else:
            post.append([POSITIONS[int(position)]] if rng.random() < 0.5 else list(_POSITION_PHRASES[int(position)]))
    post = [post[i] for i in rng.permutation(len(post))]

    words = prefix + determiner + pre + noun + suffix
    for i, item in enumerate(post):
        # "something red, small": the first item follows "something" directly.
        words += item if (something and i == 0 and not suffix) else [",", *item]
    return " ".join(words).replace(" ,", ",").replace(" :", ":")


def describes(mentioned: np.ndarray, caption_codes: np.ndarray, image_codes: np.ndarray) -> np.ndarray:
    """Does caption j describe image i? A bool matrix (N_images, N_captions).

    Caption j (attribute codes ``caption_codes[j]``, naming the attributes
    ``mentioned[j]``) describes image i when every attribute it names equals image i's:
    "a red 3" describes every red 3, whatever its size, position and thickness.
    """
    caption_codes, image_codes, mentioned = np.asarray(caption_codes), np.asarray(image_codes), np.asarray(mentioned)
    agree = image_codes[:, None, :] == caption_codes[None, :, :]  # (N_i, N_c, 5)
    return np.all(agree | ~mentioned[None, :, :], axis=-1)


# ------------------------------------------------------------------------------ rendering
def _render(
    digit: np.ndarray,
    colour: np.ndarray,
    size: np.ndarray,
    position: np.ndarray,
    thickness: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Images (n, 3, 32, 32) for the attribute codes, drawing jitter and noise from ``rng``."""
    n = len(digit)
    u = rng.random((n, _digits._N_PARAMS))  # digits.py's jitter: rotation, scale, shear, wobble, ...
    u[:, 1:3] = 0.25 + 0.5 * u[:, 1:3]  # half the scale and aspect jitter, so size stays unambiguous
    level_pick = rng.integers(0, 2, n)
    level = np.where(thickness == 1, np.take(_THICK_LEVELS, level_pick), np.take(_THIN_LEVELS, level_pick))
    shift = rng.integers(-_JITTER, _JITTER + 1, (n, 2))
    brightness = (0.85 + 0.15 * rng.random(n)).astype(np.float32)

    grey = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    anchors = np.array(_ANCHORS)  # (size, position, 2)
    for s, frame in enumerate(_FRAME):
        rows = np.flatnonzero(size == s)
        if len(rows) == 0:
            continue
        glyphs = np.zeros((len(rows), frame + 2, frame + 2), np.float32)  # with a zero border
        for chunk in np.array_split(np.arange(len(rows)), max(1, -(-len(rows) // 2048))):
            picked = rows[chunk]
            glyphs[chunk, 1:-1, 1:-1] = _digits._render_chunk(u[picked], frame, level[picked], digit[picked])[0]
        # Every glyph's brightest pixel becomes 1, as in load_digits.
        glyphs /= np.maximum(glyphs.reshape(len(rows), -1).max(axis=1), 0.25)[:, None, None]
        # The frame's centre (where digits.py puts the centre of mass) goes to the anchor:
        # canvas pixel (y, x) reads frame pixel (y − top, x − left), or the zero border
        # when that falls outside the frame.
        top_left = np.rint(anchors[s, position[rows]] + shift[rows] - frame / 2).astype(np.int64)
        pixels = np.arange(IMAGE_SIZE)
        r = np.clip(pixels[None, :] - top_left[:, :1] + 1, 0, frame + 1)  # (m, 32)
        c = np.clip(pixels[None, :] - top_left[:, 1:] + 1, 0, frame + 1)
        grey[rows] = glyphs[np.arange(len(rows))[:, None, None], r[:, :, None], c[:, None, :]]
    rgb = COLOUR_RGB[colour] * brightness[:, None]  # (n, 3)
    images = grey[:, None] * rgb[:, :, None, None]
    images += _NOISE * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0.0, 1.0)


# ------------------------------------------------------------------------------- sampling
def _matches(codes: dict[str, np.ndarray], combination: dict[str, int]) -> np.ndarray:
    """Which samples have every attribute of ``combination``."""
    match = np.ones(len(codes["digit"]), bool)
    for name, value in combination.items():
        match &= codes[name] == value
    return match


def is_heldout(attributes: dict[str, np.ndarray]) -> np.ndarray:
    """Which samples (attribute name -> codes) show one of ``HELDOUT_COMBINATIONS``: bool (N,)."""
    hit = np.zeros(len(attributes["digit"]), bool)
    for combination in HELDOUT_COMBINATIONS:
        hit |= _matches(attributes, combination)
    return hit


def captioned_digits(n: int, *, seed: int = 0, split: str = "train", mention_all: bool = False) -> CaptionedDigits:
    """``n`` captioned digits of one split. Same arguments, same data.

    * ``split="train"``: any attribute combination except ``HELDOUT_COMBINATIONS``;
    * ``split="test"``: any combination, drawn from a random stream disjoint from train's;
    * ``split="heldout"``: only the held-out combinations (each equally often; the
      attributes a combination leaves free are random).

    Half of the captions (``FULL_CAPTION_P``) name all five attributes, the others k of them,
    k drawn from 1..4 equally often and the k chosen at random; ``mention_all=True`` names
    all five in every caption (evaluation prompts).
    """
    if split not in SPLITS:
        raise ValueError(f"captioned_digits: split must be one of {SPLITS}, got {split!r}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"captioned_digits: n must be a non-negative int, got {n!r}")
    attribute_rng, render_rng, caption_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 16, SPLITS.index(split)]).spawn(3)
    )

    def draw(m: int) -> dict[str, np.ndarray]:
        return {name: attribute_rng.integers(0, len(VOCABULARIES[name]), m) for name in ATTRIBUTES}

    codes = draw(n)
    if split == "train":  # redraw every sample that shows a held-out combination, until none does
        bad = is_heldout(codes)
        while bad.any():
            fresh = draw(int(bad.sum()))
            for name in ATTRIBUTES:
                codes[name][bad] = fresh[name]
            bad = is_heldout(codes)
    elif split == "heldout":
        which = attribute_rng.integers(0, len(HELDOUT_COMBINATIONS), n)
        for k, combination in enumerate(HELDOUT_COMBINATIONS):
            for name, value in combination.items():
                codes[name][which == k] = value

    if mention_all:
        mentioned = np.ones((n, len(ATTRIBUTES)), bool)
    else:
        # How many attributes to name: all five for half of the captions (an image has few
        # true captions, a sharp training signal), else 1 to 4 equally often (short captions,
        # "the digit 7", "something red", true of many images); then which: the first k of a
        # random order.
        short = caption_rng.random(n) >= FULL_CAPTION_P
        k = np.where(short, caption_rng.integers(1, len(ATTRIBUTES), n), len(ATTRIBUTES))
        order = np.argsort(caption_rng.random((n, len(ATTRIBUTES))), axis=1)
        rank = np.argsort(order, axis=1)  # where each attribute falls in the random order
        mentioned = rank < k[:, None]
    captions = [
        caption(*(int(codes[name][i]) for name in ATTRIBUTES), rng=caption_rng, mention=mentioned[i]) for i in range(n)
    ]
    images = _render(*(codes[name] for name in ATTRIBUTES), rng=render_rng)
    return CaptionedDigits(images, *(codes[name] for name in ATTRIBUTES), captions=captions, mentioned=mentioned)
