"""Word segmentation: CoNLL-like words and exact offsets on any Unicode text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nertron.text import split_words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "EU rejects German call to boycott British lamb.",
            ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ),
        (
            "The U.S. paid $10,000 on 1996-08-22.",
            ["The", "U.S.", "paid", "$", "10,000", "on", "1996-08-22", "."],
        ),
        (
            "Mr. Smith's firm didn't agree (3.5%).",
            ["Mr.", "Smith", "'s", "firm", "did", "n't", "agree", "(", "3.5", "%", ")", "."],
        ),
        ("O'Neill of AT&T and Anglo-Dutch Shell", ["O'Neill", "of", "AT&T", "and", "Anglo-Dutch", "Shell"]),
        (
            "mail foo@bar.com or see https://x.org/a?b=1.",
            ["mail", "foo@bar.com", "or", "see", "https://x.org/a?b=1", "."],
        ),
        ("東京は日本", ["東", "京", "は", "日", "本"]),
        ("café cafe\u0301 👩\u200d👩\u200d👧!", ["café", "cafe\u0301", "👩\u200d👩\u200d👧", "!"]),
        ("שלום עולם, مرحبا", ["שלום", "עולם", ",", "مرحبا"]),
        ("a\x00b\u200bc\td", ["a", "b", "c", "d"]),
        ("", []),
        (" \n\t ", []),
    ],
)
def test_words(text: str, words: list[str]) -> None:
    assert split_words(text).words == words


@given(st.text())
def test_offsets_are_exact_and_ordered(text: str) -> None:
    result = split_words(text)
    previous_end = 0
    for word, start, end in zip(*result, strict=True):
        assert text[start:end] == word
        assert start >= previous_end and end > start
        assert word.strip() == word
        previous_end = end
