"""The training data of ``nertron train``: CoNLL documents tokenised once (labels on each word's first subword),
grouped into chunks of consecutive sentences, batched by length and collated into tensors; and the dev files, each
under the key its F1 is reported by."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nertron.errors import InvalidValue
from nertron.io.conll import Document, read_conll
from nertron.subwords import HFTokenizer
from nertron.text import SegmentedText
from tokenizers import Tokenizer

IGNORE = -100


@dataclass
class EncodedSentence:
    ids: np.ndarray  # subword ids, no specials
    labels: np.ndarray  # label id on each word's first subword, IGNORE elsewhere
    word_ids: np.ndarray  # word index of each subword
    num_words: int


def encode_documents(
    documents: Sequence[Document], tokenizer: Tokenizer, label2id: dict[str, int]
) -> list[list[EncodedSentence]]:
    """Tokenises every sentence once, as the SDK does (words of scripts without spaces without the word-start
    marker, ``SegmentedText.unmarked``); labels go on first subwords."""
    sentences = [s for d in documents for s in d.sentences]
    encodings = tokenizer.encode_batch([s.words for s in sentences], is_pretokenized=True, add_special_tokens=False)
    words_tokenizer = HFTokenizer.of(tokenizer)
    all_unmarked = SegmentedText.join([s.words for s in sentences]).unmarked  # one pass over every word
    ends = np.cumsum([len(s.words) for s in sentences])
    encoded = []
    for sentence, encoding, end in zip(sentences, encodings, ends.tolist(), strict=True):
        ids, word_ids = np.asarray(encoding.ids, np.int64), np.asarray(encoding.word_ids, dtype=np.int64)
        unmarked = None if all_unmarked is None else all_unmarked[end - len(sentence.words) : end]
        if unmarked is not None and unmarked.any():
            ids, word_ids = words_tokenizer.encode_words(sentence.words, unmarked)
        labels = np.full(word_ids.size, IGNORE, dtype=np.int64)
        first = np.flatnonzero(np.r_[True, word_ids[1:] != word_ids[:-1]]) if word_ids.size else np.zeros(0, int)
        labels[first] = [label2id[sentence.tags[w]] for w in word_ids[first]]
        encoded.append(EncodedSentence(ids, labels, word_ids, len(sentence.words)))
    out, start = [], 0
    for d in documents:
        out.append(encoded[start : start + len(d.sentences)])
        start += len(d.sentences)
    return out


def make_chunks(
    documents: Sequence[Sequence[EncodedSentence]],
    budget: int,
    single_fraction: float,
    rng: random.Random | None,
) -> list[list[int]]:
    """Groups each document's sentences into chunks of at most ``budget`` subwords.

    Returns chunks as lists of (document, sentence) flat indices. With ``rng``, a chunk is a single
    sentence with probability ``single_fraction``; without, chunks are as long as fit (evaluation).
    """
    chunks: list[list[int]] = []
    flat = 0
    for sentences in documents:
        current: list[int] = []
        size = 0
        for sentence in sentences:
            n = sentence.ids.size
            single = rng is not None and rng.random() < single_fraction
            if current and (single or size + n > budget):
                chunks.append(current)
                current, size = [], 0
            current.append(flat)
            size += n
            if single:
                chunks.append(current)
                current, size = [], 0
            flat += 1
        if current:
            chunks.append(current)
    return chunks


def collate(
    chunk_list: Sequence[list[int]],
    sentences: Sequence[EncodedSentence],
    budget: int,
    bos: int,
    eos: int,
    pad: int,
) -> dict[str, torch.Tensor]:
    ids = [np.concatenate([sentences[i].ids for i in c])[:budget] for c in chunk_list]
    labels = [np.concatenate([sentences[i].labels for i in c])[:budget] for c in chunk_list]
    length = max(x.size for x in ids) + 2
    input_ids = np.full((len(ids), length), pad, np.int64)
    label_ids = np.full((len(ids), length), IGNORE, np.int64)
    mask = np.zeros((len(ids), length), np.int64)
    for row, (x, y) in enumerate(zip(ids, labels, strict=True)):
        input_ids[row, : x.size + 2] = np.r_[bos, x, eos]
        label_ids[row, 1 : x.size + 1] = y
        mask[row, : x.size + 2] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(label_ids),
    }


def bucketed_batches(
    chunks: list[list[int]], sentences: Sequence[EncodedSentence], batch_size: int, rng: random.Random
) -> list[list[list[int]]]:
    """Length-sorted batches (little padding), in random order."""
    lengths = [sum(sentences[i].ids.size for i in c) for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (lengths[i], rng.random()))
    batches = [[chunks[i] for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def dev_keys(paths: Sequence[str]) -> list[str]:
    """How each dev file's F1 is named (``<key>_f1_document``), a distinct key a file: ``dev`` for the first;
    after it, its folder's name (``es/dev.txt`` -> ``es``) where no other of them is in a folder of that name,
    else the shortest end of its path, without the extension, that ends no other one's path
    (``x/dev/es.txt``, ``y/dev/es.txt`` -> ``x/dev/es``, ``y/dev/es``), else its absolute path.
    ``InvalidValue``, naming both, when two of them are the same file."""
    resolved = [Path(path).resolve() for path in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise InvalidValue(f"--dev names the same file twice: {paths[resolved.index(path)]} and {paths[i]}")
    folders = [Path(path).parent.name or Path(path).stem for path in paths[1:]]
    keys = ["dev", *(f if f != "dev" and folders.count(f) == 1 else "" for f in folders)]
    absolute = [Path(os.path.abspath(path)) for path in paths]  # ".." folded; links named as given
    ends = [["/".join([*a.parts[1:-1], a.stem][-n:]) for n in range(1, len(a.parts))] for a in absolute]
    for i in range(1, len(paths)):
        if not keys[i]:
            distinct = (
                end
                for n, end in enumerate(ends[i])
                if end not in keys and all(n >= len(other) or other[n] != end for other in ends[:i] + ends[i + 1 :])
            )
            keys[i] = next(distinct, str(absolute[i]))  # an end of one path may be all of another
    return keys


@dataclass
class DevSet:
    """A dev file, encoded, and its gold tags per sentence."""

    key: str
    documents: list[list[EncodedSentence]]
    flat: list[EncodedSentence]
    gold: list[list[str]]

    @classmethod
    def read(cls, path: str, key: str, tokenizer: Tokenizer, label2id: dict[str, int]) -> DevSet:
        documents = read_conll(path)
        encoded = encode_documents(documents, tokenizer, label2id)
        gold = [s.tags for d in documents for s in d.sentences]
        return cls(key, encoded, [s for d in encoded for s in d], gold)
