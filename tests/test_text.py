"""Word segmentation: CoNLL-like words and exact offsets on any Unicode text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nertron.io.conll import read_conll
from nertron.text import SegmentedText, split_words

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "dev.txt"


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
        ("東京は日本", ["東京", "は", "日本"]),
        ("café cafe\u0301 👩\u200d👩\u200d👧!", ["café", "cafe\u0301", "👩\u200d👩\u200d👧", "!"]),
        ("שלום עולם, مرحبا", ["שלום", "עולם", ",", "مرحبا"]),
        ("a\x00b\u200bc\td", ["a", "b", "c", "d"]),
        ("", []),
        (" \n\t ", []),
        # as CoNLL-2003 cuts them (each was a systematic difference on its dev set)
        ("1. Dionne Rose ( Jamaica ) 12.61", ["1.", "Dionne", "Rose", "(", "Jamaica", ")", "12.61"]),
        ("Results:\n  10. Marie Curie", ["Results", ":", "10.", "Marie", "Curie"]),
        ("He scored 5. Then 6.", ["He", "scored", "5", ".", "Then", "6", "."]),  # not at a line start
        (
            "the 61st minute of a 10-year-old's 2nd game",
            ["the", "61st", "minute", "of", "a", "10-year-old", "'s", "2nd", "game"],
        ),
        (
            "C$ 1.5 and US$ 2 vs Mayo .496 +48 -- wait ...",
            ["C$", "1.5", "and", "US$", "2", "vs", "Mayo", ".496", "+48", "--", "wait", "..."],
        ),
        ("in Calif. and Fla. now", ["in", "Calif.", "and", "Fla.", "now"]),
    ],
)
def test_words(text: str, words: list[str]) -> None:
    assert split_words(text).words == words


def test_a_line_break_ends_a_sentence() -> None:
    segmented = SegmentedText.split("Paris Hilton\n\nBerlin London\n  Rome  \n")
    assert list(segmented) == ["Paris", "Hilton", "Berlin", "London", "Rome"]
    assert segmented.sentence_lengths.tolist() == [2, 2, 1]
    assert SegmentedText.split("one line").sentence_lengths.tolist() == [2]
    assert SegmentedText.split("\n\n").sentence_lengths.tolist() == [0]


def test_raw_text_segmentation_matches_conll_on_dev() -> None:
    """Dev's gold words joined by spaces, cut again: few words may be cut otherwise (622 before the rules
    for list numbers, ordinals, dashes, currencies; 43 with them)."""
    if not DEV.is_file():
        pytest.skip(f"needs {DEV}")
    differ = total = 0
    for document in read_conll(DEV):
        for sentence in document.sentences:
            segmented = SegmentedText.split(" ".join(sentence.words))
            words = list(segmented)
            total += len(sentence.words)
            differ += len(set(sentence.words) - set(words))
    assert total > 50000 and differ < 100


@given(st.text())
def test_offsets_are_exact_and_ordered(text: str) -> None:
    result = split_words(text)
    previous_end = 0
    for word, start, end in zip(*result, strict=True):
        assert text[start:end] == word
        assert start >= previous_end and end > start
        assert word.strip() == word
        previous_end = end
