"""Tag schemes (IOB1, IOB2, BIOES): label parsing and conversions."""

from __future__ import annotations

from collections.abc import Sequence

from nertron.errors import InvalidValue

SCHEMES = ("IOB1", "IOB2", "BIOES")


def detect_scheme(labels: Sequence[str]) -> str:
    """``BIOES`` if any label uses E- or S-, else ``IOB2`` (IOB1 cannot be told from labels)."""
    return "BIOES" if any(label.startswith(("E-", "S-")) for label in labels) else "IOB2"


def check_scheme(scheme: str) -> str:
    """Returns the canonical scheme name or raises ``ValueError``."""
    name = scheme.upper().replace("BILOU", "BIOES")
    if name not in SCHEMES:
        raise InvalidValue(f"tag scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
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
