"""Checks of the SDK's arguments: each returns the argument or raises ``TypeError``/``ValueError`` naming it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nertron.errors import InvalidType, InvalidValue
from nertron.text import lone_surrogate


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is an int >= 1; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidType(f"batch_size must be an int, got {type(batch_size).__name__} {batch_size!r}")
    if batch_size < 1:
        raise InvalidValue(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def check_min_score(min_score: Any) -> float:
    """``min_score`` as a float if it is a number in [0, 1]; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)):
        raise InvalidType(f"min_score must be a number, got {type(min_score).__name__} {min_score!r}")
    if not 0.0 <= min_score <= 1.0:
        raise InvalidValue(f"min_score must be in [0, 1], got {min_score}")
    return float(min_score)


def check_texts(texts: object, kind: str) -> None:
    """Raises ``TypeError`` naming ``texts`` unless it is an iterable and not a single ``str``."""
    if isinstance(texts, (str, bytes)):
        raise InvalidType(f"texts must be {kind} of str, got a single {type(texts).__name__}; use ner(text)")
    if not isinstance(texts, Iterable):
        raise InvalidType(f"texts must be {kind} of str, got {type(texts).__name__}")


def check_item(text: object, index: int) -> str:
    return check_text(text, f"texts[{index}]")


def check_text(text: object, name: str) -> str:
    """``text`` if it is a ``str`` that is valid Unicode; else ``TypeError``/``ValueError`` naming ``name``. A
    lone surrogate (U+D800 to U+DFFF: from JSON's ``"\\ud800"``, or bytes decoded with ``surrogateescape``)
    is not a character and no tokenizer takes it."""
    if not isinstance(text, str):
        raise InvalidType(f"{name} must be str, got {type(text).__name__}")
    index = lone_surrogate(text)
    if index is not None:
        raise InvalidValue(
            f"{name} holds a lone surrogate U+{ord(text[index]):04X} at index {index}, which is "
            "not a character (text decoded with errors='surrogateescape', or a JSON \\ud800 escape); "
            "decode the bytes as UTF-8 with errors='replace'"
        )
    return text
