"""Converters to displaCy, spaCy and HF-pipeline formats."""

from __future__ import annotations

import sys

import pytest
from nertron import Entity
from nertron.io.interop import to_displacy, to_hf, to_spacy

TEXT = "Angela Merkel met Emmanuel Macron in Paris."
ENTITIES = [
    Entity("Angela Merkel", "PER", 0, 13, 0.99),
    Entity("Emmanuel Macron", "PER", 18, 33, 0.98),
    Entity("Paris", "LOC", 37, 42, 0.97),
]


def test_to_displacy_is_the_manual_format() -> None:
    assert to_displacy(TEXT, ENTITIES) == {
        "text": TEXT,
        "ents": [
            {"start": 0, "end": 13, "label": "PER"},
            {"start": 18, "end": 33, "label": "PER"},
            {"start": 37, "end": 42, "label": "LOC"},
        ],
        "title": None,
    }
    assert to_displacy("", [], title="t") == {"text": "", "ents": [], "title": "t"}


def test_to_hf_matches_the_pipeline_dicts() -> None:
    groups = to_hf(ENTITIES)
    assert [list(g) for g in groups] == [["entity_group", "score", "word", "start", "end"]] * 3
    assert groups[2] == {"entity_group": "LOC", "score": 0.97, "word": "Paris", "start": 37, "end": 42}
    assert all(TEXT[g["start"] : g["end"]] == g["word"] for g in groups)


def test_to_spacy_without_spacy_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("spacy", "spacy.tokens", "spacy.util"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install spacy"):
        to_spacy(object(), TEXT, ENTITIES)


def test_to_spacy_sets_doc_ents() -> None:
    import spacy  # in the test extra: this test runs in CI

    nlp = spacy.blank("en")
    doc = to_spacy(nlp, TEXT, ENTITIES)
    assert [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents] == [
        (e.text, e.label, e.start, e.end) for e in ENTITIES
    ]
    # A Doc of the same text is reused; one of another text is refused.
    same = nlp.make_doc(TEXT)
    assert to_spacy(same, TEXT, ENTITIES[2:]) is same and [e.text for e in same.ents] == ["Paris"]
    with pytest.raises(ValueError, match="differs"):
        to_spacy(nlp.make_doc("other"), TEXT, ENTITIES)
    # Spans inside a spaCy token expand to the token by default; "strict" refuses them.
    inner = [Entity("Merk", "PER", 7, 11, 0.5)]
    assert [e.text for e in to_spacy(nlp, TEXT, inner).ents] == ["Merkel"]
    with pytest.raises(ValueError, match="token boundaries"):
        to_spacy(nlp, TEXT, inner, alignment_mode="strict")
