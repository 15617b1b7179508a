"""Subword tokenisation of documents into model windows.

A document whose subwords do not fit in one model input (``max_length`` including ``<s>`` and ``</s>``)
is cut into overlapping windows of whole words; consecutive windows share about ``stride`` subwords of
context. Nothing is dropped: every word is in at least one window. The only cut is inside a single word
longer than a whole window, which keeps its first ``max_length - 2`` subwords (its label comes from
those).

Windows are cut as the document is read: its words are tokenised ``block_words`` at a time, so a document
of any length is held as subwords only a few windows ahead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nertron.errors import InvalidValue
from nertron.subwords import WordTokenizer


def default_stride(max_length: int) -> int:
    """The overlap of consecutive windows, in subwords, when none is given: a quarter of a window."""
    return (max_length - 2) // 4


@dataclass
class Window:
    """One model input: subword ids of words ``[word_start, word_start + num_words)`` of document ``doc``."""

    doc: int
    word_start: int
    num_words: int
    input_ids: np.ndarray  # int64, with <s> and </s>
    word_ids: np.ndarray  # int64, word index within the window, -1 for <s>/</s>
    new_words: int  # words that no earlier window of the document covered (for progress)


@dataclass
class PaddedBatch:
    """Windows padded to a common length, ready for the model and the aligner."""

    windows: list[Window]
    input_ids: np.ndarray  # [batch, seq] int64
    attention_mask: np.ndarray  # [batch, seq] int64
    word_ids: np.ndarray  # [batch, seq] int64, -1 for specials and padding
    num_words: np.ndarray  # [batch] int64


class SubwordEncoder:
    """Turns documents (sequences of words) into windows of subword ids with exact word ids."""

    def __init__(
        self,
        tokenizer: WordTokenizer,
        *,
        bos: int,
        eos: int,
        pad: int,
        max_length: int,
        stride: int,
        block_words: int = 4096,
    ) -> None:
        if max_length < 3:
            raise InvalidValue(f"max_length must be at least 3 (<s>, one subword, </s>), got {max_length}")
        if not 0 <= stride < max_length - 2:
            raise InvalidValue(f"stride must be in [0, {max_length - 2}), got {stride}")
        self.tokenizer = tokenizer
        self.bos_id, self.eos_id, self.pad_id = bos, eos, pad
        self.max_length = max_length
        self.stride = stride
        self.block_words = block_words

    def windows(self, doc: int, words: Sequence[str], unmarked: np.ndarray | None = None) -> Iterator[Window]:
        """The windows of document ``doc`` (its id in the caller's numbering), in word order; ``unmarked`` (bool
        per word, see ``SegmentedText.unmarked``) marks the words tokenised without the word-start marker."""
        budget = self.max_length - 2
        num_words = len(words)
        # Subwords of the words read so far, from the current window's first word on: ids and word index.
        ids = np.zeros(0, np.int64)
        word_ids = np.zeros(0, np.int64)
        loaded = start = covered = 0
        while start < num_words:
            first_token = np.searchsorted(word_ids, np.arange(start, loaded + 1), side="left")
            # Enough subwords to place this window's end, unless the document ends first.
            if loaded < num_words and first_token[-1] - first_token[0] <= budget:
                block = slice(loaded, loaded + self.block_words)
                block_ids, block_word_ids = self._tokenize(
                    words[block], None if unmarked is None else unmarked[block], loaded
                )
                keep = first_token[0]
                ids = np.concatenate((ids[keep:], block_ids))
                word_ids = np.concatenate((word_ids[keep:], block_word_ids))
                loaded = min(num_words, loaded + self.block_words)
                continue
            # The longest run of whole words from `start` that fits, at least one word.
            end = int(np.searchsorted(first_token, first_token[0] + budget, side="right")) - 1
            end = start + min(max(end, 1), num_words - start)
            lo, hi = first_token[0], min(first_token[end - start], first_token[0] + budget)
            yield self._window(doc, start, end - start, ids[lo:hi], word_ids[lo:hi] - start, end - covered)
            covered = end
            if end >= num_words:
                return
            # Next window starts so that about `stride` subwords of context overlap, and moves on.
            overlap = int(np.searchsorted(first_token, first_token[end - start] - self.stride, side="left"))
            start = min(max(start + overlap, start + 1), end)

    def _tokenize(
        self, words: Sequence[str], unmarked: np.ndarray | None, first_word: int
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, word_ids = self.tokenizer.encode_words(words, unmarked)
        return ids, word_ids + first_word

    def _window(
        self, doc: int, word_start: int, num_words: int, ids: np.ndarray, word_ids: np.ndarray, new_words: int
    ) -> Window:
        input_ids = np.concatenate(([self.bos_id], ids, [self.eos_id])).astype(np.int64)
        local = np.concatenate(([-1], word_ids, [-1])).astype(np.int64)
        return Window(doc, word_start, num_words, input_ids, local, new_words)

    def pad(self, windows: Sequence[Window]) -> PaddedBatch:
        """Pads windows to the longest among them."""
        ids = [w.input_ids for w in windows]
        num_words = np.fromiter((w.num_words for w in windows), dtype=np.int64, count=len(windows))
        return PaddedBatch(
            list(windows),
            pad_rows(ids, self.pad_id),
            pad_rows([np.ones_like(i) for i in ids], 0),
            pad_rows([w.word_ids for w in windows], -1),
            num_words,
        )


def pad_rows(parts: Sequence[np.ndarray], value: int, length: int | None = None) -> np.ndarray:
    """The rows of ``parts`` (1-D arrays are one row each, 2-D arrays their rows) stacked into one int64
    array, each padded at its end with ``value`` to the longest (or to ``length``, if longer)."""
    rows = [part.reshape(1, -1) if part.ndim == 1 else part for part in parts]
    longest = max(length or 0, *(r.shape[1] for r in rows))
    out = np.full((sum(len(r) for r in rows), longest), value, dtype=np.int64)
    start = 0
    for r in rows:
        out[start : start + len(r), : r.shape[1]] = r
        start += len(r)
    return out
