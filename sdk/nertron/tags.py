"""Tag schemes (IOB1, IOB2, BIOES): label parsing and conversions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCHEMES = ("IOB1", "IOB2", "BIOES")
PREFIX_CODES = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}  # the codes csrc/postprocess.hpp uses


@dataclass(frozen=True)
class LabelSet:
    """A model's labels split into prefix codes and entity types, as the C++ decoder takes them."""

    labels: tuple[str, ...]
    types: tuple[str, ...]
    prefix: np.ndarray  # uint8 code per label id
    type_id: np.ndarray  # int32 index into types per label id, -1 for O

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> LabelSet:
        """Parses labels like ``O``, ``B-PER``, ``I-PER``; raises ``ValueError`` on others."""
        types: list[str] = []
        prefix = np.zeros(len(labels), dtype=np.uint8)
        type_id = np.full(len(labels), -1, dtype=np.int32)
        for i, label in enumerate(labels):
            if label == "O":
                continue
            head, sep, entity_type = label.partition("-")
            if not sep or head not in PREFIX_CODES or head == "O" or not entity_type:
                raise ValueError(f"label {i} ({label!r}) is not O or <B|I|E|S>-<TYPE>")
            if entity_type not in types:
                types.append(entity_type)
            prefix[i] = PREFIX_CODES[head]
            type_id[i] = types.index(entity_type)
        return cls(tuple(labels), tuple(types), prefix, type_id)

    def decode_spans(
        self,
        labels: np.ndarray,
        scores: np.ndarray,
        row_words: np.ndarray,
        word_starts: np.ndarray | None = None,
        word_ends: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Entity spans of per-word label ids (flat over rows), decoded by the C++ core."""
        from . import _native

        return _native.decode_spans(labels, scores, row_words, self.prefix, self.type_id, word_starts, word_ends)

    def detect_scheme(self) -> str:
        """``BIOES`` if any label uses E- or S-, else ``IOB2`` (IOB1 cannot be told from labels)."""
        return "BIOES" if np.isin(self.prefix, (3, 4)).any() else "IOB2"


def check_scheme(scheme: str) -> str:
    """Returns the canonical scheme name or raises ``ValueError``."""
    name = scheme.upper().replace("BILOU", "BIOES")
    if name not in SCHEMES:
        raise ValueError(f"tag scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return name


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrites IOB1 tags (``I-`` opens an entity unless it continues one) as IOB2."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Any of IOB1, IOB2, BIOES -> IOB2, reading ill-formed sequences as conlleval does."""
    plain = ["B-" + t[2:] if t.startswith("S-") else "I-" + t[2:] if t.startswith("E-") else t for t in tags]
    return iob1_to_iob2(plain)
