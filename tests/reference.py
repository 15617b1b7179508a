"""Pure-Python reference of the C++ post-processing (csrc/postprocess.cpp), written for clarity."""

from __future__ import annotations

import math
from collections.abc import Sequence

Prediction = tuple[int, float, list[float]]  # label, score, distribution


def softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def align_row(
    logits: Sequence[Sequence[float]], word_ids: Sequence[int], num_words: int, aggregation: str
) -> list[Prediction]:
    """One row: per word (label, score, probs); words without subwords get (-1, 0.0, zeros)."""
    num_labels = len(logits[0]) if len(logits) else 0
    subwords: list[list[int]] = [[] for _ in range(num_words)]
    for position, word in enumerate(word_ids):
        if word >= 0:
            subwords[word].append(position)
    out: list[Prediction] = []
    for positions in subwords:
        if not positions:
            out.append((-1, 0.0, [0.0] * num_labels))
            continue
        if aggregation == "average":
            dists = [softmax(logits[p]) for p in positions]
            probs = [sum(d[k] for d in dists) / len(dists) for k in range(num_labels)]
            label = argmax(probs)
        else:
            # first: the first subword; max: the subword whose top probability is highest, first on
            # ties. The label is the argmax of that subword's logits.
            chosen = (
                positions[0]
                if aggregation == "first"
                else max(positions, key=lambda p: max(softmax(logits[p])))
            )
            probs = softmax(logits[chosen])
            label = argmax(logits[chosen])
        out.append((label, probs[label], probs))
    return out


def merge_windows(
    windows: Sequence[tuple[int, int, Sequence[Prediction]]], doc_words: Sequence[int]
) -> list[list[Prediction]]:
    """windows: (doc, word_start, predictions). Each word takes the window where it has most context."""
    best: list[list[tuple[float, Prediction] | None]] = [[None] * n for n in doc_words]
    for doc, start, predictions in windows:
        n = len(predictions)
        for i, prediction in enumerate(predictions):
            left = i if start > 0 else math.inf
            right = n - 1 - i if start + n < doc_words[doc] else math.inf
            context = min(left, right)
            current = best[doc][start + i]
            if current is None or context > current[0]:
                best[doc][start + i] = (context, prediction)
    merged = []
    for doc_best in best:
        assert all(entry is not None for entry in doc_best), "a word is not covered"
        merged.append([entry[1] for entry in doc_best if entry is not None])
    return merged


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) chunks: seqeval's default-mode get_entities, restated."""

    def split(tag: str) -> tuple[str, str]:
        return (tag, "") if tag == "O" else (tag[0], tag[2:])

    chunks: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = split(chunk)
        end = prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO")
        end = end or (prev_tag != "O" and prev_type != type_)
        start = tag in "BS" or (tag in "EI" and prev_tag in "ESO")
        start = start or (tag != "O" and prev_type != type_)
        if end:
            chunks.append((prev_type, begin, i - 1))
        if start:
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def decode_row(
    labels: Sequence[int], scores: Sequence[float], names: Sequence[str]
) -> list[tuple[str, int, int, float]]:
    """(type, first_word, end_word, mean score) spans of one row; label -1 reads as O."""
    tags = [names[label] if label >= 0 else "O" for label in labels]
    return [
        (type_, first, last + 1, sum(scores[first : last + 1]) / (last + 1 - first))
        for type_, first, last in get_entities(tags)
    ]
