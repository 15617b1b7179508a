"""Scoring NER output against gold CoNLL tags: token-level report, conlleval's entity-level lines, and how
well the entities' scores are calibrated (ECE, precision and recall above score thresholds)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nertron._native import PostProcessor
from nertron.backends.base import Backend
from nertron.calibration import BINS, RecordingBackend, ScoredEntities, fit_temperature
from nertron.errors import InvalidValue
from nertron.io.conll import Document
from nertron.model.bundle import Calibration
from nertron.pipeline import Pipeline
from nertron.tags import to_iob2
from nertron.text import SegmentedText

if TYPE_CHECKING:
    from nertron.ner import NER

CONTEXTS = ("sentence", "document")


PRF = ("precision", "recall", "f1")


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
    scored: ScoredEntities | None = None  # each predicted entity's score and whether it is right

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
            **({} if self.scored is None else {"entity_scores": calibration_dict(self.scored)}),
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
        lines += type_lines(self.per_type)
        if self.scored is not None:
            lines += ["", *format_calibration(self.scored)]
        return "\n".join(lines)


def type_lines(per_type: dict[str, Scores]) -> list[str]:
    """conlleval's line per entity type."""
    return [
        f"{entity_type:>17}: precision: {100 * s.precision:6.2f}%; recall: {100 * s.recall:6.2f}%; "
        f"FB1: {100 * s.f1:6.2f}  {s.found}"
        for entity_type, s in per_type.items()
    ]


def scores_by_type(gold: set[tuple[Any, ...]], predicted: set[tuple[Any, ...]]) -> dict[str, Scores]:
    """Per entity type (the last field of each entity tuple), in name order: precision, recall, F1."""
    correct = gold & predicted
    return {
        t: Scores.from_counts(
            sum(e[-1] == t for e in correct), sum(e[-1] == t for e in predicted), sum(e[-1] == t for e in gold)
        )
        for t in sorted({e[-1] for e in gold | predicted})
    }


def calibration_dict(scored: ScoredEntities) -> dict[str, Any]:
    """Entity-score calibration as JSON: ECE, log-loss, reliability bins, scores above thresholds."""
    return {
        "ece": scored.ece(),
        "bins": BINS,
        "log_loss": scored.log_loss(),
        "reliability": [vars(b) for b in scored.reliability()],
        "thresholds": [vars(t) for t in scored.at_thresholds()],
    }


def format_calibration(scored: ScoredEntities, title: str = "entity scores") -> list[str]:
    """Lines: the ECE, then precision/recall/F1 of the entities scored at least each threshold."""
    lines = [
        f"{title}: ECE {scored.ece():.4f} ({BINS} equal-width bins, {scored.n} entities), "
        f"log-loss {scored.log_loss():.4f}",
        f"{'min_score':>10}  {'found':>6}  {'precision':>9}  {'recall':>9}  {'f1':>9}",
    ]
    for t in scored.at_thresholds():
        lines.append(
            f"{t.threshold:10.2f}  {t.found:6d}  {100 * t.precision:9.2f}  {100 * t.recall:9.2f}  {100 * t.f1:9.2f}"
        )
    return lines


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
        raise InvalidValue(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold2 = [to_iob2(s) for s in gold]
    pred2 = [to_iob2(s) for s in predicted]
    for i, (g, p) in enumerate(zip(gold2, pred2, strict=True)):
        if len(g) != len(p):
            raise InvalidValue(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    flat_gold = [t for s in gold2 for t in s]
    flat_pred = [t for s in pred2 for t in s]
    tags = sorted(set(flat_gold) | set(flat_pred), key=lambda t: (t == "O", t))
    gold_count, pred_count = Counter(flat_gold), Counter(flat_pred)
    hits = Counter(g for g, p in zip(flat_gold, flat_pred, strict=True) if g == p)
    per_tag = {t: Scores.from_counts(hits[t], pred_count[t], gold_count[t]) for t in tags}
    total = len(flat_gold)
    precision, recall, f1 = (float(np.mean([getattr(s, a) for s in per_tag.values()])) for a in PRF)
    macro = Scores(precision, recall, f1, total)
    weights = np.array([s.support for s in per_tag.values()], dtype=np.float64) / max(total, 1)
    precision, recall, f1 = (float(np.dot(weights, [getattr(s, a) for s in per_tag.values()])) for a in PRF)
    weighted = Scores(precision, recall, f1, total)
    gold_entities, pred_entities = entity_set(gold2), entity_set(pred2)
    correct = gold_entities & pred_entities
    per_type = scores_by_type(gold_entities, pred_entities)
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


def evaluate(
    ner: NER | Pipeline,
    documents: Sequence[Document],
    *,
    context: str = "sentence",
    batch_size: int = 16,
    backend: Backend | None = None,
    types: Collection[str] | None = None,
) -> Report:
    """Tags the gold words with ``ner`` (an ``NER``, or a ``Pipeline`` of one) and scores them, entity scores
    included.

    ``context="sentence"`` tags each sentence alone (as CoNLL-2003 is usually scored);
    ``"document"`` tags each document's words as one text, so sentences see their neighbours.
    ``backend`` replaces the pipeline's (e.g. one that records or replays logits).
    ``types``: the entity types scored, in the gold tags and the model's; others read as ``O`` (``None``: all).
    """
    if context not in CONTEXTS:
        raise InvalidValue(f"context must be one of {CONTEXTS}, got {context!r}")
    pipeline = ner if isinstance(ner, Pipeline) else ner.pipeline
    if backend is not None:
        pipeline = pipeline.replace(backend=backend)
    postprocessor = pipeline.decoder
    sentences = [s for d in documents for s in d.sentences]
    groups = (
        [[s.words] for s in sentences] if context == "sentence" else [[s.words for s in d.sentences] for d in documents]
    )
    predicted: list[list[str]] = []
    spans: list[tuple[int, int, int, str, float]] = []
    names = postprocessor.types
    for tagged in pipeline.tag((SegmentedText.join(g) for g in groups), batch_size):
        found = tagged.spans(postprocessor)
        first_row = len(predicted)
        for doc_tags, document in zip(tagged.tags(postprocessor), tagged.documents, strict=True):
            start = 0
            if types is not None:
                doc_tags = [tag if tag == "O" or tag[2:] in types else "O" for tag in doc_tags]
            for length in document.sentence_lengths.tolist():
                predicted.append(doc_tags[start : start + length])
                start += length
        for row, first, end, type_id, entity_score in zip(
            found.row.tolist(),
            found.first_word.tolist(),
            found.end_word.tolist(),
            found.type.tolist(),
            found.score.tolist(),
            strict=True,
        ):
            if types is None or names[type_id] in types:
                spans.append((first_row + row, first, end, names[type_id], entity_score))
    gold_tags = [s.tags for s in sentences]
    if types is not None:
        gold_tags = [[tag if tag == "O" or tag[2:] in types else "O" for tag in tags] for tags in gold_tags]
    report = score(gold_tags, predicted, context)
    gold = entity_set([to_iob2(tags) for tags in gold_tags])
    report.scored = ScoredEntities(
        np.array([x[4] for x in spans], dtype=np.float64),
        np.array([x[:4] in gold for x in spans], dtype=bool),
        len(gold),
    )
    return report


@dataclass
class CalibrationFit:
    """A fitted temperature and the entities' scores before (T = 1) and after, per context."""

    temperature: float
    before: dict[str, ScoredEntities]
    after: dict[str, ScoredEntities]

    def calibration(self, data: str) -> Calibration:
        """What the manifest stores: the temperature, the data, and the ECE over all contexts."""
        before = ScoredEntities.concatenate(list(self.before.values()))
        after = ScoredEntities.concatenate(list(self.after.values()))
        return Calibration(self.temperature, data, round(after.ece(), 4), round(before.ece(), 4))


def rescore(
    ner: NER | Pipeline,
    documents: Sequence[Document],
    recorded: RecordingBackend,
    temperature: float,
    *,
    context: str,
    batch_size: int = 16,
    types: Collection[str] | None = None,
) -> ScoredEntities:
    """The entities of a recorded run (``evaluate(..., backend=recorded)``, same documents and context) with
    their scores at ``temperature``: the logits are replayed, the model does not run again."""
    pipeline = ner if isinstance(ner, Pipeline) else ner.pipeline
    replayed = pipeline.with_temperature(temperature).replace(backend=recorded.replay())
    report = evaluate(replayed, documents, context=context, batch_size=batch_size, types=types)
    assert report.scored is not None
    return report.scored


def fit_calibration(
    ner: NER, documents: Sequence[Document], *, contexts: Sequence[str] = CONTEXTS, batch_size: int = 16
) -> CalibrationFit:
    """Fits the temperature of ``ner``'s scores on ``documents`` (held-out data, e.g. dev): the model runs
    once per context, then post-processing is replayed at each temperature tried (``fit_temperature``)."""
    recorded = {}
    for context in contexts:
        recorder = RecordingBackend(ner.backend)
        evaluate(ner, documents, context=context, batch_size=batch_size, backend=recorder)
        recorded[context] = recorder

    def scored_at(temperature: float) -> dict[str, ScoredEntities]:
        return {
            c: rescore(ner, documents, r, temperature, context=c, batch_size=batch_size) for c, r in recorded.items()
        }

    temperature = fit_temperature(lambda t: ScoredEntities.concatenate(list(scored_at(t).values())))
    return CalibrationFit(temperature, scored_at(1.0), scored_at(temperature))
