"""Scoring NER output against gold CoNLL tags: token-level report and conlleval's entity-level lines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nertron._native import PostProcessor
from nertron.io.conll import Document
from nertron.tags import to_iob2

CONTEXTS = ("sentence", "document")


@dataclass
class Scores:
    """Precision, recall and F1 (as fractions) with the counts behind them."""

    precision: float
    recall: float
    f1: float
    support: int  # gold items
    found: int = 0  # predicted items

    @classmethod
    def from_counts(cls, correct: int, found: int, gold: int) -> Scores:
        precision = correct / found if found else 0.0
        recall = correct / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, gold, found)


@dataclass
class Report:
    """Token-level and entity-level (conlleval) scores of one prediction run."""

    context: str
    tokens: int
    token_accuracy: float
    per_tag: dict[str, Scores]
    macro: Scores
    weighted: Scores
    entity: Scores
    correct_entities: int
    per_type: dict[str, Scores] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def scores(s: Scores) -> dict[str, float | int]:
            return {
                "precision": s.precision,
                "recall": s.recall,
                "f1": s.f1,
                "support": s.support,
                "found": s.found,
            }

        return {
            "context": self.context,
            "tokens": self.tokens,
            "token_accuracy": self.token_accuracy,
            "per_tag": {tag: scores(s) for tag, s in self.per_tag.items()},
            "macro_avg": scores(self.macro),
            "weighted_avg": scores(self.weighted),
            "entity": {**scores(self.entity), "correct": self.correct_entities},
            "per_type": {t: scores(s) for t, s in self.per_type.items()},
        }

    def format(self) -> str:
        """The token-level table (as in the seed model card), then conlleval's lines."""
        lines = [f"{'':>12}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"]
        for tag, s in self.per_tag.items():
            lines.append(f"{tag:>12}  {s.precision:9.4f}  {s.recall:9.4f}  {s.f1:9.4f}  {s.support:9d}")
        lines.append(f"{'accuracy':>12}  {'':9}  {'':9}  {self.token_accuracy:9.4f}  {self.tokens:9d}")
        for name, s in (("macro avg", self.macro), ("weighted avg", self.weighted)):
            lines.append(f"{name:>12}  {s.precision:9.4f}  {s.recall:9.4f}  {s.f1:9.4f}  {s.support:9d}")
        e = self.entity
        lines += [
            "",
            f"processed {self.tokens} tokens with {e.support} phrases; found: {e.found} phrases; "
            f"correct: {self.correct_entities}.",
            f"accuracy: {100 * self.token_accuracy:6.2f}%; precision: {100 * e.precision:6.2f}%; "
            f"recall: {100 * e.recall:6.2f}%; FB1: {100 * e.f1:6.2f}",
        ]
        for entity_type, s in self.per_type.items():
            lines.append(
                f"{entity_type:>17}: precision: {100 * s.precision:6.2f}%; recall: {100 * s.recall:6.2f}%; "
                f"FB1: {100 * s.f1:6.2f}  {s.found}"
            )
        return "\n".join(lines)


def entity_set(sentences: Sequence[Sequence[str]]) -> set[tuple[int, int, int, str]]:
    """(sentence, first word, end word, type) of every entity, decoded by the C++ core."""
    names = sorted({t for s in sentences for t in s} | {"O"}, key=lambda t: (t != "O", t))
    postprocessor = PostProcessor(names)
    index = {name: i for i, name in enumerate(names)}
    labels = np.fromiter((index[t] for s in sentences for t in s), dtype=np.int32)
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    spans = postprocessor.decode(labels, np.zeros(labels.size, np.float32), lengths)
    types = postprocessor.types
    return {
        (r, f, e, types[t])
        for r, f, e, t in zip(
            spans.row.tolist(), spans.first_word.tolist(), spans.end_word.tolist(), spans.type.tolist(), strict=True
        )
    }


def score(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], context: str = "sentence") -> Report:
    """Scores predicted tag sequences against gold ones (both converted to IOB2 first)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold2 = [to_iob2(s) for s in gold]
    pred2 = [to_iob2(s) for s in predicted]
    for i, (g, p) in enumerate(zip(gold2, pred2, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    flat_gold = [t for s in gold2 for t in s]
    flat_pred = [t for s in pred2 for t in s]
    tags = sorted(set(flat_gold) | set(flat_pred), key=lambda t: (t == "O", t))
    gold_count, pred_count = Counter(flat_gold), Counter(flat_pred)
    hits = Counter(g for g, p in zip(flat_gold, flat_pred, strict=True) if g == p)
    per_tag = {t: Scores.from_counts(hits[t], pred_count[t], gold_count[t]) for t in tags}
    total = len(flat_gold)
    macro = Scores(
        *(float(np.mean([getattr(s, a) for s in per_tag.values()])) for a in ("precision", "recall", "f1")),
        total,
    )
    weights = np.array([s.support for s in per_tag.values()], dtype=np.float64) / max(total, 1)
    weighted = Scores(
        *(float(np.dot(weights, [getattr(s, a) for s in per_tag.values()])) for a in ("precision", "recall", "f1")),
        total,
    )
    gold_entities, pred_entities = entity_set(gold2), entity_set(pred2)
    correct = gold_entities & pred_entities
    types = sorted({e[3] for e in gold_entities | pred_entities})
    per_type = {
        t: Scores.from_counts(
            sum(e[3] == t for e in correct),
            sum(e[3] == t for e in pred_entities),
            sum(e[3] == t for e in gold_entities),
        )
        for t in types
    }
    return Report(
        context=context,
        tokens=total,
        token_accuracy=sum(hits.values()) / total if total else 0.0,
        per_tag=per_tag,
        macro=macro,
        weighted=weighted,
        entity=Scores.from_counts(len(correct), len(pred_entities), len(gold_entities)),
        correct_entities=len(correct),
        per_type=per_type,
    )


def evaluate(ner: Any, documents: Sequence[Document], *, context: str = "sentence", batch_size: int = 16) -> Report:
    """Tags the gold words with ``ner`` (an ``NER``) and scores them.

    ``context="sentence"`` tags each sentence alone (as CoNLL-2003 is usually scored);
    ``"document"`` tags each document's words as one text, so sentences see their neighbours.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    sentences = [s for d in documents for s in d.sentences]
    if context == "sentence":
        predicted = ner.tag([s.words for s in sentences], batch_size=batch_size)
    else:
        predicted = []
        for doc, tags in zip(documents, ner.tag([d.words for d in documents], batch_size=batch_size), strict=True):
            start = 0
            for s in doc.sentences:
                predicted.append(tags[start : start + len(s.words)])
                start += len(s.words)
    return score([s.tags for s in sentences], predicted, context)
