"""Entity scores on raw text: what a user meets, the segmentation included (``nertron eval --input raw``).

The gold words of a CoNLL file are joined into text (by spaces, or by nothing for a file of characters of a
script written without spaces, such as Chinese), tagged by ``ner(text)``, and entities compared as character
spans with their types.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from nertron.errors import InvalidValue
from nertron.evaluation import CONTEXTS, Scores, entity_set, scores_by_type, type_lines
from nertron.io.conll import Document
from nertron.pipeline import Pipeline
from nertron.tags import to_iob2


@dataclass
class RawTextReport:
    """Entity scores on raw text: the gold words joined (by spaces, or by nothing; sentences by newlines), cut
    into words by nertron's own segmentation, and scored on character spans. Against the report on the gold
    words, it shows what segmentation costs."""

    context: str
    entity: Scores
    per_type: dict[str, Scores]
    correct_entities: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "input": "raw",
            "entity": {**vars(self.entity), "correct": self.correct_entities},
            "per_type": {t: vars(s) for t, s in self.per_type.items()},
        }

    def format(self) -> str:
        e = self.entity
        lines = [
            f"raw text: found {e.found} phrases of {e.support}; correct: {self.correct_entities}.",
            f"precision: {100 * e.precision:6.2f}%; recall: {100 * e.recall:6.2f}%; FB1: {100 * e.f1:6.2f}",
        ]
        return "\n".join(lines + type_lines(self.per_type))


def raw_text(sentences: Sequence[Sequence[str]], joiner: str = " ") -> tuple[str, list[list[int]]]:
    """The text of gold ``sentences`` (words joined by ``joiner``, sentences by a newline) and the offset of
    each word in it, per sentence."""
    parts: list[str] = []
    starts: list[list[int]] = []
    position = 0
    for index, words in enumerate(sentences):
        if index:
            parts.append("\n")
            position += 1
        sentence_starts = []
        for number, word in enumerate(words):
            if number:
                parts.append(joiner)
                position += len(joiner)
            sentence_starts.append(position)
            parts.append(word)
            position += len(word)
        starts.append(sentence_starts)
    return "".join(parts), starts


def evaluate_raw(
    ner: Any,
    documents: Sequence[Document],
    *,
    context: str = "sentence",
    batch_size: int = 16,
    joiner: str = " ",
    types: Collection[str] | None = None,
) -> RawTextReport:
    """Tags raw text made from the gold words (each sentence alone, or each document with a sentence per
    line) with ``ner`` (an ``NER``, or anything with its ``batch``, or a ``Pipeline``) and its segmentation, and
    scores entities by (text, start, end, type).

    ``joiner`` goes between the gold words: ``""`` for a file of characters of a script written without
    spaces (Chinese). ``types``: the entity types scored; other types, gold or found, are left out
    (``None``: all), e.g. ``{"PER", "ORG", "LOC"}`` for data annotated without MISC."""
    if context not in CONTEXTS:
        raise InvalidValue(f"context must be one of {CONTEXTS}, got {context!r}")
    groups = (
        [[s] for d in documents for s in d.sentences] if context == "sentence" else [d.sentences for d in documents]
    )
    texts, gold = [], set()
    for index, sentences in enumerate(groups):
        text, starts = raw_text([s.words for s in sentences], joiner)
        texts.append(text)
        for row, first, end, label in entity_set([to_iob2(s.tags) for s in sentences]):
            last = sentences[row].words[end - 1]
            if types is None or label in types:
                gold.add((index, starts[row][first], starts[row][end - 1] + len(last), label))
    tagged = ner.entities(texts, batch_size) if isinstance(ner, Pipeline) else ner.batch(texts, batch_size=batch_size)
    predicted = {
        (index, e.start, e.end, e.label)
        for index, found in enumerate(tagged)
        for e in found
        if types is None or e.label in types
    }
    correct = gold & predicted
    per_type = scores_by_type(gold, predicted)
    return RawTextReport(context, Scores.from_counts(len(correct), len(predicted), len(gold)), per_type, len(correct))
