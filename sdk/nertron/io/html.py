"""Self-contained HTML pages with entities highlighted in their text, displaCy-style (no scripts, no
external assets)."""

from __future__ import annotations

import hashlib
import html
import io
from collections.abc import Iterable
from types import TracebackType
from typing import Protocol

from nertron.entity import Entity


class Writable(Protocol):
    """Where a page goes: anything with ``write(str)``, such as a text file."""

    def write(self, text: str, /) -> object: ...


COLOURS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#e4e7d2"}

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; margin: 2em auto;
       max-width: 60em; padding: 0 1em; color: #222; }
section { border-bottom: 1px solid #ddd; padding: 1em 0; }
h2 { font-size: 1em; color: #555; margin: 0 0 0.5em; }
.text { line-height: 2.5; white-space: pre-wrap; unicode-bidi: plaintext; }
mark { padding: 0.25em 0.4em; margin: 0 0.1em; border-radius: 0.35em; line-height: 1; }
mark .label { font-size: 0.7em; font-weight: bold; text-transform: uppercase; margin-left: 0.4em;
              vertical-align: middle; }
"""


def label_colour(label: str) -> str:
    """The mark colour of ``label``: displaCy's for PER/ORG/LOC/MISC, else a stable pastel of its hash."""
    if label in COLOURS:
        return COLOURS[label]
    hue = int.from_bytes(hashlib.sha1(label.encode("utf-8")).digest()[:2], "big") % 360
    return f"hsl({hue}, 80%, 80%)"


def render_document(text: str, entities: Iterable[Entity], title: str | None = None) -> str:
    """One ``<section>``: the escaped text with a ``<mark>`` per entity (its label inside). Entities
    overlapping an earlier one are left out."""
    parts = [f"<section>\n<h2>{html.escape(title)}</h2>\n" if title is not None else "<section>\n"]
    parts.append('<div class="text" dir="auto">')
    cursor = 0
    for entity in sorted(entities, key=lambda e: (e.start, -e.end)):
        if entity.start < cursor:
            continue
        label = html.escape(entity.label)
        parts.append(html.escape(text[cursor : entity.start]))
        parts.append(
            f'<mark style="background: {label_colour(entity.label)}" title="{label} {entity.score:.2f}">'
            f'{html.escape(text[entity.start : entity.end])}<span class="label">{label}</span></mark>'
        )
        cursor = entity.end
    parts.append(html.escape(text[cursor:]) + "</div>\n</section>\n")
    return "".join(parts)


class HtmlWriter:
    """Streams an HTML page to ``stream``, a section per ``add``; use as a context manager (the page is
    complete once it exits)."""

    def __init__(self, stream: Writable, title: str = "nertron entities") -> None:
        self.stream = stream
        self.title = title
        self.count = 0

    def __enter__(self) -> HtmlWriter:
        title = html.escape(self.title)
        self.stream.write(
            f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        )
        return self

    def add(self, text: str, entities: Iterable[Entity], title: str | None = None) -> None:
        """Appends a document's section; ``title`` defaults to ``Document N`` (from 1)."""
        self.count += 1
        self.stream.write(render_document(text, entities, f"Document {self.count}" if title is None else title))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stream.write("</body>\n</html>\n")


def render_html(documents: Iterable[tuple[str, Iterable[Entity]]], title: str = "nertron entities") -> str:
    """A whole page for ``(text, entities)`` pairs, e.g. ``zip(texts, ner.batch(texts))``."""
    buffer = io.StringIO()
    with HtmlWriter(buffer, title) as page:
        for text, entities in documents:
            page.add(text, entities)
    return buffer.getvalue()
