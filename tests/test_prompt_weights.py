"""A1111's prompt syntax: the parser on A1111's own examples, chunks of 75 tokens, and the weighting arithmetic.

No model here: the tokenizer is a stand-in that makes one token per word,
so the chunk boundaries can be checked by counting words.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.diffusion.prompt_weights import (
    CHUNK_TOKENS,
    TokenIds,
    apply_weights,
    encode_chunks,
    make_chunks,
    pad_to_same_length,
    parse_prompt,
    parse_prompt_attention,
)

# A1111's doctests of parse_prompt_attention (modules/prompt_parser.py), verbatim.
A1111_EXAMPLES = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_EXAMPLES)
def test_the_parser_reads_a1111s_own_examples_as_a1111_does(prompt, expected):
    assert parse_prompt_attention(prompt) == expected


def test_weights_square_brackets_escapes_and_break():
    assert parse_prompt("a (cat:1.3) on [grass]").fragments == (("a ", 1.0), ("cat", 1.3), (" on ", 1.0),
                                                                ("grass", 1 / 1.1))
    assert parse_prompt("((cat))").fragments == (("cat", pytest.approx(1.21)),)
    assert parse_prompt("\\(not weighted\\)").fragments == (("(not weighted)", 1.0),)
    assert parse_prompt("a (word:1.0) here").fragments == (("a word here", 1.0),)  # merged: the plain prompt
    assert parse_prompt("sky BREAK sea").fragments == (("sky", 1.0), ("BREAK", None), ("sea", 1.0))
    assert not parse_prompt("a (cat:1.0)").weighted and parse_prompt("[cat]").weighted


@pytest.mark.parametrize(("prompt", "problem"), [
    ("a (cat on grass", "the '(' at character 3 is never closed"),
    ("a cat) on grass", "a ')' at character 6 closes nothing"),
    ("[a cat on grass", "the '[' at character 1 is never closed"),
    ("a cat] on", "a ']' at character 6 closes nothing"),
    # A1111's own last example leaves one '(' open (it then weights the rest of the prompt ×1.1).
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", "the '(' at character 3 is never closed"),
])
def test_unbalanced_brackets_are_read_literally_with_a_notice(prompt, problem):
    parsed = parse_prompt(prompt, "negative prompt")
    assert parsed.fragments == ((prompt, 1.0),)
    assert parsed.notice == (f"The negative prompt's brackets do not balance ({problem}), so it was read "
                             "literally, without weights. Close each '(' and '[', or write \\( and \\) for "
                             "literal ones.")


def test_balanced_and_escaped_brackets_give_no_notice():
    for prompt in ("plain", "(a) [b] (c:1.2) \\(d\\) \\[e\\]", "(a:b)"):
        assert parse_prompt(prompt).notice == ""


# ---- chunks -------------------------------------------------------------------

IDS = TokenIds(start=1000, end=1001, pad=0, comma=999)


def word_tokens(text: str) -> list[int]:
    """One token per word (its length + 10), a comma is its own token (999)."""
    tokens = []
    for word in text.replace(",", " , ").split():
        tokens.append(999 if word == "," else len(word) + 10)
    return tokens


def test_a_short_prompt_is_one_chunk_framed_and_padded_as_the_tokenizer_pads():
    (chunk,) = make_chunks(parse_prompt("a (big:1.5) cat"), word_tokens, IDS)
    assert chunk.ids == (1000, 11, 13, 13, 1001) + (0,) * 72
    assert chunk.weights == (1.0, 1.0, 1.5, 1.0, 1.0) + (1.0,) * 72
    assert len(chunk.ids) == CHUNK_TOKENS + 2 == 77


def test_a_prompt_over_75_tokens_continues_in_a_second_chunk():
    words = " ".join(["word"] * 100)  # 100 tokens, no comma: cut at 75
    first, second = make_chunks(parse_prompt(words), word_tokens, IDS)
    assert first.ids == (1000,) + (14,) * 75 + (1001,)
    assert second.ids == (1000,) + (14,) * 25 + (1001,) + (0,) * 50


def test_a_chunk_full_mid_phrase_goes_back_to_its_last_comma():
    # 70 words, a comma (token 71), then 10 more words: the 4 words after the comma that would end the first
    # chunk move to the second, as A1111's comma backtrack does.
    prompt = " ".join(["word"] * 70) + ", " + " ".join(["tail"] * 10)
    first, second = make_chunks(parse_prompt(prompt), word_tokens, IDS)
    assert first.ids[1:73] == (14,) * 70 + (999, 1001)
    assert second.ids[:12] == (1000,) + (14,) * 10 + (1001,)


def test_break_starts_a_new_chunk():
    first, second = make_chunks(parse_prompt("a cat BREAK a dog"), word_tokens, IDS)
    assert first.ids[:4] == (1000, 11, 13, 1001) and second.ids[:4] == (1000, 11, 13, 1001)


# ---- weighting ----------------------------------------------------------------

def test_weights_scale_each_position_then_restore_the_mean():
    rng = np.random.default_rng(0)
    hidden = rng.normal(0.3, 1.0, (1, 77, 8)).astype(np.float32)
    weights = np.ones((1, 77), dtype=np.float32)
    weights[0, 3] = 1.3
    weighted = apply_weights(hidden, weights)
    scaled = hidden * weights[..., None]
    np.testing.assert_allclose(weighted, scaled * (hidden.mean() / scaled.mean()), rtol=1e-6)
    assert weighted.mean() == pytest.approx(hidden.mean(), rel=1e-5)
    ratio = weighted[0, 3] / weighted[0, 2] * (hidden[0, 2] / hidden[0, 3])
    np.testing.assert_allclose(ratio, 1.3, rtol=1e-4)  # the weighted word is 1.3× its neighbours
    assert apply_weights(hidden, np.ones((1, 77), dtype=np.float32)) is hidden  # weight 1: untouched


def test_a_mean_of_rounding_noise_is_not_restored():
    rng = np.random.default_rng(1)
    hidden = rng.normal(0.0, 1.0, (1, 77, 8)).astype(np.float32)
    hidden -= hidden.mean()  # what a layer norm without bias leaves: a mean of ~1e-9
    weights = np.ones((1, 77), dtype=np.float32)
    weights[0, 3] = 1.3
    np.testing.assert_array_equal(apply_weights(hidden, weights), hidden * weights[..., None])


def test_chunks_are_encoded_one_by_one_and_joined_with_the_first_chunks_pooled_output():
    calls = []

    def encode(ids):
        calls.append(ids.copy())
        return [np.full((1, 77, 4), float(len(calls)), dtype=np.float32), np.full((1, 6), float(len(calls)))]

    chunks = make_chunks(parse_prompt(" ".join(["word"] * 100)), word_tokens, IDS)
    hidden, (pooled,) = encode_chunks(chunks, encode)
    assert hidden.shape == (1, 154, 4) and [c.shape for c in calls] == [(1, 77), (1, 77)]
    assert hidden[0, 0, 0] == 1.0 and hidden[0, 77, 0] == 2.0 and pooled[0, 0] == 1.0


def test_prompt_and_negative_are_evened_out_with_the_empty_prompt():
    long, short, empty = np.ones((1, 154, 4)), np.zeros((1, 77, 4)), np.full((1, 77, 4), 7.0)
    first, second = pad_to_same_length(long, short, empty)
    assert first is long and second.shape == (1, 154, 4) and (second[0, 77:] == 7.0).all()
