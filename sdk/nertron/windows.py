"""Subword tokenisation of word lists into model windows.

A document whose subwords do not fit in one model input (``max_length`` including ``<s>`` and ``</s>``)
is cut into overlapping windows of whole words; consecutive windows share about ``stride`` subwords of
context. Nothing is dropped: every word is in at least one window. The only cut is inside a single word
longer than a whole window, which keeps its first ``max_length - 2`` subwords (its label comes from
those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass
class Window:
    """One model input: subword ids of words ``[word_start, word_start + num_words)`` of document ``doc``."""

    doc: int
    word_start: int
    num_words: int
    input_ids: np.ndarray  # int64, with <s> and </s>
    word_ids: np.ndarray  # int64, word index within the window, -1 for <s>/</s>


@dataclass
class PaddedBatch:
    """Windows padded to a common length, ready for the model and the aligner."""

    windows: list[Window]
    input_ids: np.ndarray  # [batch, seq] int64
    attention_mask: np.ndarray  # [batch, seq] int64
    word_ids: np.ndarray  # [batch, seq] int64, -1 for specials and padding
    num_words: np.ndarray  # [batch] int64


class SubwordEncoder:
    """Turns pre-split words into windows of subword ids with exact word ids."""

    def __init__(
        self, tokenizer_file: str | Path, *, bos: int, eos: int, pad: int, max_length: int, stride: int
    ) -> None:
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (<s>, one subword, </s>), got {max_length}")
        if not 0 <= stride < max_length - 2:
            raise ValueError(f"stride must be in [0, {max_length - 2}), got {stride}")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.bos_id, self.eos_id, self.pad_id = bos, eos, pad
        self.max_length = max_length
        self.stride = stride

    def windows(self, docs: Sequence[Sequence[str]]) -> list[Window]:
        """Tokenises documents (lists of words) in one batched call and cuts them into windows."""
        encodings = self.tokenizer.encode_batch(
            [list(words) for words in docs], is_pretokenized=True, add_special_tokens=False
        )
        out: list[Window] = []
        for doc, (words, encoding) in enumerate(zip(docs, encodings, strict=True)):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            word_ids = np.asarray(encoding.word_ids, dtype=np.int64)
            out.extend(self._cut(doc, len(words), ids, word_ids))
        return out

    def _cut(self, doc: int, num_words: int, ids: np.ndarray, word_ids: np.ndarray) -> list[Window]:
        budget = self.max_length - 2
        if ids.size <= budget:
            return [self._window(doc, 0, num_words, ids, word_ids)]
        # first_token[w] = index of word w's first subword; a word may have none.
        first_token = np.searchsorted(word_ids, np.arange(num_words + 1), side="left")
        windows: list[Window] = []
        start = 0
        while True:
            # The longest run of whole words from `start` that fits, at least one word.
            end = int(np.searchsorted(first_token, first_token[start] + budget, side="right")) - 1
            end = min(max(end, start + 1), num_words)
            lo, hi = first_token[start], min(first_token[end], first_token[start] + budget)
            windows.append(self._window(doc, start, end - start, ids[lo:hi], word_ids[lo:hi] - start))
            if end >= num_words:
                return windows
            # Next window starts so that about `stride` subwords of context overlap, and moves on.
            overlap_start = int(np.searchsorted(first_token, first_token[end] - self.stride, side="left"))
            start = min(max(overlap_start, start + 1), end)

    def _window(self, doc: int, word_start: int, num_words: int, ids: np.ndarray, word_ids: np.ndarray) -> Window:
        input_ids = np.concatenate(([self.bos_id], ids, [self.eos_id])).astype(np.int64)
        local = np.concatenate(([-1], word_ids, [-1])).astype(np.int64)
        return Window(doc, word_start, num_words, input_ids, local)

    def pad(self, windows: Sequence[Window]) -> PaddedBatch:
        """Pads windows to the longest among them."""
        seq = max(w.input_ids.size for w in windows)
        input_ids = np.full((len(windows), seq), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(windows), seq), dtype=np.int64)
        word_ids = np.full((len(windows), seq), -1, dtype=np.int64)
        for row, window in enumerate(windows):
            n = window.input_ids.size
            input_ids[row, :n] = window.input_ids
            attention_mask[row, :n] = 1
            word_ids[row, :n] = window.word_ids
        num_words = np.fromiter((w.num_words for w in windows), dtype=np.int64, count=len(windows))
        return PaddedBatch(list(windows), input_ids, attention_mask, word_ids, num_words)
