"""Converters from nertron entities to other libraries' formats: displaCy's manual format, spaCy
``Doc.ents`` (spaCy is optional) and the dicts of the HF token-classification pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nertron.entity import Entity
from nertron.errors import InvalidValue, MissingExtra


def to_displacy(text: str, entities: Iterable[Entity], title: str | None = None) -> dict[str, Any]:
    """displaCy's manual format: ``displacy.render(to_displacy(text, ents), style="ent", manual=True)``."""
    return {
        "text": text,
        "ents": [{"start": e.start, "end": e.end, "label": e.label} for e in entities],
        "title": title,
    }


def to_hf(entities: Iterable[Entity]) -> list[dict[str, Any]]:
    """Dicts as HF's ``pipeline("token-classification", aggregation_strategy=...)`` returns them:
    ``entity_group``, ``score``, ``word`` (the exact source text), ``start``, ``end``."""
    return [
        {"entity_group": e.label, "score": e.score, "word": e.text, "start": e.start, "end": e.end} for e in entities
    ]


def to_spacy(doc_or_nlp: Any, text: str, entities: Iterable[Entity], alignment_mode: str = "expand") -> Any:
    """A spaCy ``Doc`` of ``text`` with ``entities`` as its ``ents``.

    ``doc_or_nlp`` is a ``Doc`` of exactly ``text`` (its entities are replaced) or a ``Language`` such as
    ``spacy.blank("en")`` whose tokenizer makes one. Entities that do not fall on spaCy's token boundaries
    are aligned by ``Doc.char_span``'s ``alignment_mode`` (``"expand"``, ``"contract"``, or ``"strict"``,
    which raises ``ValueError``); if aligned spans overlap, the longest is kept. Raises ``MissingExtra`` (an
    ``ImportError``) when spaCy is not installed (it is not a dependency of nertron).
    """
    try:
        from spacy.tokens import Doc
        from spacy.util import filter_spans
    except ImportError as error:
        raise MissingExtra(
            f"to_spacy needs spaCy, which nertron does not install: pip install spacy ({error})"
        ) from None
    if isinstance(doc_or_nlp, Doc):
        if doc_or_nlp.text != text:
            raise InvalidValue("the Doc's text differs from the text the entities were found in")
        doc = doc_or_nlp
    else:
        doc = doc_or_nlp.make_doc(text)
    spans = []
    for entity in entities:
        span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode=alignment_mode)
        if span is None:
            raise InvalidValue(
                f"entity {entity.text!r} at {entity.start}:{entity.end} is not on spaCy token boundaries"
            )
        spans.append(span)
    doc.ents = filter_spans(spans)
    return doc
