"""The caption tokenizer: round trips, the layout of tokens and mask, the shipped vocabulary, errors."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigen.data.captions import ATTRIBUTES, VOCABULARIES, caption, captioned_digits
from minigen.data.tokenizer import END, PAD, VOCABULARY_FILE, Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


def test_the_vocabulary_ships_in_the_package(tok):
    shipped = importlib.resources.files("minigen.data") / "caption_vocabulary.txt"
    assert shipped.is_file()
    assert tok.vocabulary[0] == PAD and tok.pad_id == 0 and tok.vocabulary[tok.end_id] == END
    assert tok.vocab_size == len(tok.vocabulary) == len(set(tok.vocabulary))
    for words in VOCABULARIES.values():  # every attribute name is one token
        assert all(w in tok.ids for w in words)


def test_layout_words_then_end_then_padding(tok):
    tokens, mask = tok.encode(["left: a red three, small", "a 7"], context_length=10)
    assert tokens.dtype == np.int64 and mask.dtype == bool and tokens.shape == mask.shape == (2, 10)
    words = ["left", ":", "a", "red", "three", ",", "small"]
    assert tokens[0, :7].tolist() == [tok.ids[w] for w in words]
    assert tokens[0, 7] == tok.end_id and (tokens[0, 8:] == tok.pad_id).all()
    assert mask[0].tolist() == [False] * 8 + [True] * 2  # True marks padding, as MHA's key_padding_mask
    assert tokens[1, :3].tolist() == [tok.ids["a"], tok.ids["7"], tok.end_id]
    assert mask[1].tolist() == [False] * 3 + [True] * 7


def test_empty_caption_is_just_end(tok):
    tokens, mask = tok.encode("")
    assert tokens.shape == (1, 16) and tokens[0, 0] == tok.end_id and (tokens[0, 1:] == tok.pad_id).all()
    assert mask[0].tolist() == [False] + [True] * 15
    assert tok.decode(tokens) == [""]


def test_case_and_spacing_do_not_matter(tok):
    a, _ = tok.encode("Left:a RED three ,small")
    b, _ = tok.encode("left: a red three, small")
    np.testing.assert_array_equal(a, b)


def test_round_trip_on_generated_captions(tok):
    data = captioned_digits(500, seed=2)
    tokens, _ = tok.encode(data.captions)
    assert tok.decode(tokens) == data.captions
    assert tok.decode(tokens[0]) == data.captions[:1]  # one row


@given(
    codes=st.tuples(*(st.integers(0, len(VOCABULARIES[a]) - 1) for a in ATTRIBUTES)),
    mention=st.lists(st.booleans(), min_size=5, max_size=5).filter(any),
    seed=st.integers(0, 2**16),
    extra=st.integers(0, 8),
)
def test_round_trip_property(codes, mention, seed, extra):
    tok = Tokenizer.default()
    text = caption(*codes, rng=np.random.default_rng(seed), mention=mention)
    length = len(Tokenizer.split(text)) + 1 + extra
    tokens, mask = tok.encode(text, context_length=length)
    assert tok.decode(tokens) == [text]
    assert (~mask).sum() == len(Tokenizer.split(text)) + 1


def test_unknown_word_names_the_word_and_the_vocabulary(tok):
    with pytest.raises(ValueError, match=r"the word 'purple' in caption 'a purple 3'.*caption_vocabulary\.txt"):
        tok.encode(["a red 3", "a purple 3"])


def test_too_long_names_both_lengths(tok):
    with pytest.raises(ValueError, match=r"has 5 tokens, more than context_length - 1 = 4"):
        tok.encode("a small red 3 left", context_length=5)
    tok.encode("a small red 3", context_length=5)  # 4 words + <end> fit exactly


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="context_length must be a positive int"):
        tok.encode("a 3", context_length=0)
    with pytest.raises(TypeError, match="captions must be strings"):
        tok.encode(["a 3", 3])
    with pytest.raises(ValueError, match="token id 99 is outside"):
        tok.decode(np.array([[99]]))
    with pytest.raises(ValueError, match="must start with '<pad>'"):
        Tokenizer(["a", "<pad>", "<end>"])
    with pytest.raises(ValueError, match="must contain '<end>'"):
        Tokenizer(["<pad>", "a"])
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        Tokenizer(["<pad>", "<end>", "a", "a"])
    assert VOCABULARY_FILE.name == "caption_vocabulary.txt"
