"""Corpus processing for ``nertron ner -i``: streaming readers (text lines, JSONL, CoNLL), tagging in
chunks, and the JSONL and CoNLL writers.

Readers are generators over the lines of a stream and keep one document in memory at a time; ``annotate``
keeps ``chunk_size`` documents. A malformed line is reported as ``FILE:LINE: why`` and either raises
``ValueError`` or is skipped and counted, as the ``ErrorPolicy`` says.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, islice
from pathlib import Path
from typing import IO, Any

import numpy as np

from .conll import DOCSTART
from .entity import Entity
from .pipeline import NER
from .text import split_words

INPUT_FORMATS = ("txt", "jsonl", "conll")
CONLL_SUFFIXES = (".conll", ".iob", ".iob2", ".bio", ".bioes")


class ErrorPolicy:
    """What to do with a malformed line: ``"fail"`` raises ``ValueError``, ``"skip"`` reports it on
    ``stream`` and counts it in ``skipped``."""

    def __init__(self, on_error: str = "fail", stream: IO[str] | None = None) -> None:
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.stream = stream
        self.skipped = 0

    def malformed(self, source: str, number: int, why: str) -> None:
        """Raises or reports (and counts) line ``number`` of ``source``."""
        message = f"{source}:{number}: {why}"
        if self.on_error == "fail":
            raise ValueError(message)
        self.skipped += 1
        print(f"skipped {message}", file=self.stream or sys.stderr)


@dataclass
class Document:
    """One unit to tag: raw ``text`` (segmented with ``nertron.text.split_words``) or pre-split
    ``sentences`` (CoNLL), the input ``fields`` carried to the output (id, kept fields), and whether a
    ``-DOCSTART-`` line opened it."""

    text: str | None = None
    sentences: list[list[str]] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    docstart: bool = False


@dataclass
class Annotation:
    """A tagged document: its text, words (``text[starts[i]:ends[i]] == words[i]``), words per sentence,
    one IOB2 tag per word, and the entities (the tags are derived from the entities, so they agree)."""

    document: Document
    text: str
    words: list[str]
    starts: list[int]
    ends: list[int]
    sentence_lengths: list[int]
    tags: list[str]
    entities: list[Entity]


def detect_format(path: Path) -> str:
    """``jsonl`` for ``.jsonl``, ``conll`` for ``.conll``/``.iob``/``.iob2``/``.bio``/``.bioes``, else ``txt``."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    return "conll" if suffix in CONLL_SUFFIXES else "txt"


def read_corpus(
    stream: Iterable[bytes] | Iterable[str],
    input_format: str,
    *,
    source: str = "<stdin>",
    errors: ErrorPolicy | None = None,
    field: str = "text",
    id_field: str = "id",
    keep_fields: bool = False,
    context: str = "document",
) -> Iterator[Document]:
    """Streams the documents of ``stream`` (lines as bytes, decoded as UTF-8, or str).

    ``txt``: a document per line. ``jsonl``: an object per line, the text in ``field``, ``id_field``
    carried over as ``id`` (all other fields too with ``keep_fields``); blank lines are ignored. ``conll``: token in
    the first column, blank lines end sentences, ``-DOCSTART-`` lines end documents; ``context`` is
    ``"document"`` (tag whole documents; a file without ``-DOCSTART-`` is one document) or ``"sentence"``.
    """
    errors = errors or ErrorPolicy()
    lines = _decoded(stream, source, errors)
    if input_format == "txt":
        return (Document(text=line.rstrip("\r\n")) for _, line in lines)
    if input_format == "jsonl":
        return _jsonl_documents(lines, source, errors, field, id_field, keep_fields)
    if input_format == "conll":
        if context not in ("document", "sentence"):
            raise ValueError(f"context must be 'document' or 'sentence', got {context!r}")
        return _conll_documents(lines, by_sentence=context == "sentence")
    raise ValueError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")


def _decoded(stream: Iterable[bytes] | Iterable[str], source: str, errors: ErrorPolicy) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                errors.malformed(source, number, f"not valid UTF-8 ({error.reason} at byte {error.start})")
                continue
        yield number, line.removeprefix("\ufeff") if number == 1 else line


def _jsonl_documents(
    lines: Iterator[tuple[int, str]], source: str, errors: ErrorPolicy, field: str, id_field: str, keep: bool
) -> Iterator[Document]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            errors.malformed(source, number, f"not valid JSON ({error.msg})")
            continue
        if not isinstance(data, dict) or not isinstance(data.get(field), str):
            errors.malformed(source, number, f"expected an object with a string field {field!r}")
            continue
        fields = {"id": data[id_field]} if id_field in data else {}
        if keep:
            fields.update((k, v) for k, v in data.items() if k not in (field, id_field, "id", "entities"))
        yield Document(text=data[field], fields=fields)


def _conll_documents(lines: Iterator[tuple[int, str]], *, by_sentence: bool) -> Iterator[Document]:
    sentences: list[list[str]] = []
    words: list[str] = []
    docstart = False  # whether a -DOCSTART- opened the document being read

    def end_sentence() -> Iterator[Document]:
        nonlocal words, sentences, docstart
        if words:
            sentences.append(words)
            words = []
        if by_sentence and sentences:
            yield Document(sentences=sentences, docstart=docstart)
            sentences, docstart = [], False

    for _, line in lines:
        columns = line.split()
        if not columns:
            yield from end_sentence()
        elif columns[0] == DOCSTART:
            yield from end_sentence()
            if sentences:
                yield Document(sentences=sentences, docstart=docstart)
                sentences = []
            docstart = True
        else:
            words.append(columns[0])
    yield from end_sentence()
    if sentences:
        yield Document(sentences=sentences, docstart=docstart)


def annotate(
    ner: NER, documents: Iterable[Document], *, batch_size: int | None = None, chunk_size: int = 2048
) -> Iterator[Annotation]:
    """Tags documents in input order, ``chunk_size`` at a time (one model pass per chunk).

    Raw texts are segmented as ``NER.__call__`` does, so their entities are the same. Entities never
    cross a sentence of CoNLL input, even when the whole document is tagged at once.
    """
    iterator = iter(documents)
    while chunk := list(islice(iterator, chunk_size)):
        yield from _annotate_chunk(ner, [_layout(d) for d in chunk], batch_size)


def _layout(document: Document) -> Annotation:
    if document.sentences is None:
        text = document.text or ""
        words, starts, ends = split_words(text)
        return Annotation(document, text, words, starts, ends, [len(words)] if words else [], [], [])
    words, starts, ends = [], [], []
    position = 0
    for sentence in document.sentences:
        for word in sentence:
            words.append(word)
            starts.append(position)
            ends.append(position + len(word))
            position += len(word) + 1  # the " " after a word, or the "\n" after a sentence's last word
        if not sentence:
            position += 1  # an empty sentence is only its "\n"
    text = "\n".join(" ".join(sentence) for sentence in document.sentences)
    return Annotation(document, text, words, starts, ends, [len(s) for s in document.sentences], [], [])


def _annotate_chunk(ner: NER, chunk: list[Annotation], batch_size: int | None) -> list[Annotation]:
    predictions = ner.predict_words([a.words for a in chunk], batch_size=batch_size)
    # Spans are decoded per sentence (each sentence a row), then mapped back to their document.
    rows = [
        (a, offset)
        for a in chunk
        for offset, _ in zip(accumulate(a.sentence_lengths, initial=0), a.sentence_lengths, strict=False)
    ]
    spans = ner.label_set.decode_spans(
        predictions.labels,
        predictions.scores,
        np.fromiter((n for a in chunk for n in a.sentence_lengths), dtype=np.int64, count=len(rows)),
    )
    for a in chunk:
        a.tags = ["O"] * len(a.words)
    types = ner.label_set.types
    for row, type_id, first, end, score in zip(
        spans["row"].tolist(),
        spans["type"].tolist(),
        spans["first_word"].tolist(),
        spans["end_word"].tolist(),
        spans["score"].tolist(),
        strict=True,
    ):
        a, offset = rows[row]
        first, end, label = first + offset, end + offset, types[type_id]
        a.tags[first:end] = [f"B-{label}"] + [f"I-{label}"] * (end - first - 1)
        start_char, end_char = a.starts[first], a.ends[end - 1]
        a.entities.append(Entity(a.text[start_char:end_char], label, start_char, end_char, score))
    return chunk


def jsonl_line(annotation: Annotation) -> str:
    """The JSONL output line: input fields (id first), ``text`` and ``entities``."""
    record = {**annotation.document.fields, "text": annotation.text}
    record["entities"] = [e.to_dict() for e in annotation.entities]
    return json.dumps(record, ensure_ascii=False) + "\n"


def conll_block(annotation: Annotation, *, docstart: bool = False) -> str:
    """CoNLL rows (``token tag``, IOB2) of a document, a blank line after each sentence, preceded by
    ``-DOCSTART- O`` and a blank line when ``docstart``. A document without words gives no rows."""
    rows = [f"{DOCSTART} O\n\n"] if docstart else []
    position = 0
    for length in annotation.sentence_lengths:
        if not length:
            continue
        for word, tag in zip(
            annotation.words[position : position + length], annotation.tags[position : position + length], strict=True
        ):
            rows.append(f"{word} {tag}\n")
        rows.append("\n")
        position += length
    return "".join(rows)
