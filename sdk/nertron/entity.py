"""The result type: one named entity found in a text."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity span: ``text == source[start:end]`` (code-point offsets, end exclusive)."""

    text: str
    label: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, str | int | float]:
        """JSON-serialisable form: ``{"text", "label", "start", "end", "score"}``."""
        return asdict(self)
