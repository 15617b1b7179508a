"""Corpus processing for ``nertron ner -i``: streaming readers (text lines, JSONL, CoNLL), tagging in
chunks, and the JSONL and CoNLL writers.

Readers are generators over the lines of a stream and keep one record in memory at a time; ``tag_corpus``
streams records through the model (see ``nertron.tagging``). A malformed line is reported as
``FILE:LINE: why`` and either raises ``ValueError`` or is skipped and counted, as the ``ErrorPolicy`` says.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from nertron.checks import check_batch_size
from nertron.entity import Entity
from nertron.errors import InvalidValue
from nertron.io.conll import DOCSTART
from nertron.ner import NER
from nertron.text import SegmentedText, lone_surrogate

INPUT_FORMATS = ("txt", "jsonl", "conll")
CONLL_SUFFIXES = (".conll", ".iob", ".iob2", ".bio", ".bioes")


class ErrorPolicy:
    """What to do with a malformed line: ``"fail"`` raises ``ValueError``, ``"skip"`` reports it on
    ``stream`` and counts it in ``skipped``."""

    def __init__(
        self, on_error: str = "fail", stream: IO[str] | None = None, report: Callable[[str], object] | None = None
    ) -> None:
        if on_error not in ("fail", "skip"):
            raise InvalidValue(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.stream = stream
        self.report = report  # writes a skipped line's message, e.g. around a progress bar
        self.skipped = 0

    def malformed(self, source: str, number: int, why: str) -> None:
        """Raises or reports (and counts) line ``number`` of ``source``."""
        message = f"{source}:{number}: {why}"
        if self.on_error == "fail":
            raise InvalidValue(message)
        self.skipped += 1
        if self.report is not None:
            self.report(f"skipped {message}")
        else:
            print(f"skipped {message}", file=self.stream or sys.stderr)


@dataclass
class Record:
    """One input record to tag: raw ``text`` (segmented as ``NER`` segments it) or pre-split ``sentences``
    (CoNLL), the input ``fields`` carried to the output (id, kept fields), the ``line`` of the input it
    starts on (``None`` for texts given as arguments), and whether a ``-DOCSTART-`` line opened it."""

    text: str | None = None
    sentences: list[list[str]] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    docstart: bool = False

    def segmented(self) -> SegmentedText:
        """Its text and words: raw text cut into words, or the sentences joined with spaces and newlines."""
        if self.sentences is None:
            return SegmentedText.split(self.text or "")
        return SegmentedText.join(self.sentences)


@dataclass
class Annotation:
    """A tagged record: its text and words, one IOB2 tag per word, and the entities (the tags are derived
    from the entities, so they agree)."""

    record: Record
    segmented: SegmentedText
    tags: list[str]
    entities: list[Entity]

    @property
    def text(self) -> str:
        return self.segmented.text

    @property
    def words(self) -> list[str]:
        return self.segmented[:]


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
) -> Iterator[Record]:
    """Streams the records of ``stream`` (lines as bytes, decoded as UTF-8, or str).

    ``txt``: a document per line. ``jsonl``: an object per line, the text in ``field``, ``id_field``
    carried over as ``id`` (all other fields too with ``keep_fields``); blank lines are ignored. ``conll``: token in
    the first column, blank lines end sentences, ``-DOCSTART-`` lines end documents; ``context`` is
    ``"document"`` (tag whole documents; a file without ``-DOCSTART-`` is one document) or ``"sentence"``.
    """
    errors = errors or ErrorPolicy()
    lines = _decoded(stream, source, errors)
    if input_format == "txt":
        return (Record(text=line.rstrip("\r\n"), line=number) for number, line in lines)
    if input_format == "jsonl":
        return _jsonl_documents(lines, source, errors, field, id_field, keep_fields)
    if input_format == "conll":
        if context not in ("document", "sentence"):
            raise InvalidValue(f"context must be 'document' or 'sentence', got {context!r}")
        return _conll_documents(lines, by_sentence=context == "sentence")
    raise InvalidValue(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")


def _decoded(stream: Iterable[bytes | str], source: str, errors: ErrorPolicy) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                errors.malformed(source, number, f"not valid UTF-8 ({error.reason} at byte {error.start})")
                continue
        else:
            text = line
            index = lone_surrogate(text)
            if index is not None:
                errors.malformed(source, number, f"not valid Unicode (a lone surrogate at index {index})")
                continue
        yield number, text.removeprefix("\ufeff") if number == 1 else text


# The fields of a JSONL output line that nertron writes itself (see jsonl_line).
OUTPUT_FIELDS = frozenset({"id", "line", "text", "entities"})


def _jsonl_documents(
    lines: Iterator[tuple[int, str]], source: str, errors: ErrorPolicy, field: str, id_field: str, keep: bool
) -> Iterator[Record]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            errors.malformed(source, number, f"not valid JSON: {error.msg.removesuffix(' at')} (column {error.colno})")
            continue
        if not isinstance(data, dict) or not isinstance(data.get(field), str):
            errors.malformed(source, number, f"expected an object with a string field {field!r}")
            continue
        surrogate = _lone_surrogate(data) if "\\u" in line else None  # only a \uXXXX escape can make one
        if surrogate is not None:
            errors.malformed(source, number, surrogate)
            continue
        fields = {"id": data[id_field]} if id_field in data else {}
        if keep:
            kept = {k: v for k, v in data.items() if k not in (field, id_field)}
            clash = sorted(kept.keys() & OUTPUT_FIELDS)
            if clash:
                errors.malformed(
                    source,
                    number,
                    f"field {clash[0]!r} would be overwritten by the output's own {clash[0]!r} (--keep-fields); "
                    "rename it in the input",
                )
                continue
            fields.update(kept)
        yield Record(text=data[field], fields=fields, line=number)


def _lone_surrogate(value: object, where: str = "") -> str | None:
    """Why ``value`` (parsed JSON) cannot be written as UTF-8, naming the field and index of the first lone
    surrogate (a ``\\ud800`` escape with no pair: valid JSON, but not a character), or None."""
    if isinstance(value, str):
        index = lone_surrogate(value)
        if index is None:
            return None
        where = where or "the line"
        return f"{where} holds a lone surrogate \\u{ord(value[index]):04x} at index {index}, which is not a character"
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else f"field {key!r}"
            why = _lone_surrogate(key, f"the name of {name}") or _lone_surrogate(item, name)
            if why:
                return why
    elif isinstance(value, list):
        for index, item in enumerate(value):
            why = _lone_surrogate(item, f"{where}[{index}]")
            if why:
                return why
    return None


def _conll_documents(lines: Iterator[tuple[int, str]], *, by_sentence: bool) -> Iterator[Record]:
    sentences: list[list[str]] = []
    words: list[str] = []
    docstart = False  # whether a -DOCSTART- opened the record being read
    first_line: int | None = None  # the line of its first token

    def end_record() -> Iterator[Record]:
        nonlocal sentences, docstart, first_line
        if sentences:
            yield Record(sentences=sentences, docstart=docstart, line=first_line)
            sentences, docstart, first_line = [], False, None

    def end_sentence() -> Iterator[Record]:
        nonlocal words
        if words:
            sentences.append(words)
            words = []
        if by_sentence:
            yield from end_record()

    for number, line in lines:
        columns = line.split()
        if not columns:
            yield from end_sentence()
        elif columns[0] == DOCSTART:
            yield from end_sentence()
            yield from end_record()
            docstart = True
        else:
            if first_line is None:
                first_line = number
            words.append(columns[0])
    yield from end_sentence()
    yield from end_record()


def tag_corpus(
    ner: NER,
    records: Iterable[Record],
    *,
    batch_size: int | None = None,
    on_words: Callable[[int], object] | None = None,
    on_found: Callable[[list[Entity]], object] | None = None,
) -> Iterator[Annotation]:
    """Tags records in input order, each as soon as the model has finished it. A record that cannot be read
    raises its error after every record before it has been yielded. ``on_found(entities)``: each record's
    entities before ``ner.min_score`` leaves any out (e.g. to tell a user that it left out every one).

    Raw texts are segmented as ``NER.__call__`` does, so their entities are the same. Entities never
    cross a sentence of CoNLL input, even when the whole document is tagged at once.
    """
    waiting: deque[Record] = deque()
    failed: list[Exception] = []

    def segmented() -> Iterator[SegmentedText]:
        try:
            for record in records:
                waiting.append(record)
                yield record.segmented()
        except (ValueError, OSError) as error:  # a malformed or unreadable line: finish the records before it
            failed.append(error)

    ner.check_open()
    pipeline = ner.pipeline
    size = ner.batch_size if batch_size is None else check_batch_size(batch_size)
    for tagged in pipeline.tag(segmented(), size, on_words):
        for document, found in zip(tagged.documents, tagged.entities(pipeline.decoder), strict=True):
            if on_found is not None:
                on_found(found)
            entities = [entity for entity in found if entity.score >= ner.min_score]
            yield Annotation(waiting.popleft(), document, iob2_tags(document, entities), entities)
    if failed:
        raise failed[0]


def iob2_tags(document: SegmentedText, entities: list[Entity]) -> list[str]:
    """One IOB2 tag per word of ``document``, from its entities (each covers whole words)."""
    tags = ["O"] * len(document)
    for entity in entities:
        first = int(np.searchsorted(document.starts, entity.start))
        end = int(np.searchsorted(document.ends, entity.end)) + 1
        tags[first:end] = [f"B-{entity.label}"] + [f"I-{entity.label}"] * (end - first - 1)
    return tags


def jsonl_line(annotation: Annotation) -> str:
    """The JSONL output line: ``id`` (if any), ``line`` (the input line, if any), the kept input fields,
    ``text`` and ``entities``."""
    fields = annotation.record.fields
    line = {} if annotation.record.line is None else {"line": annotation.record.line}
    record = {**{k: v for k, v in fields.items() if k == "id"}, **line, **fields, "text": annotation.text}
    record["entities"] = [e.to_dict() for e in annotation.entities]
    return json_line(record)


# Line breaks to Unicode (and so to str.splitlines and JavaScript) but not to JSON Lines: escaped, so that every
# line splitter sees one record per line.
_UNICODE_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(record: object) -> str:
    """``record`` as one JSON Lines line: UTF-8 text as is, except the Unicode line breaks U+0085, U+2028 and
    U+2029, which are escaped (they can only occur inside JSON strings, where the escape means the same)."""
    return json.dumps(record, ensure_ascii=False).translate(_UNICODE_LINE_BREAKS) + "\n"


def conll_block(annotation: Annotation, *, docstart: bool = False) -> str:
    """CoNLL rows (``token tag``, IOB2) of a document, a blank line after each sentence, preceded by
    ``-DOCSTART- O`` and a blank line when ``docstart``. A document without words gives no rows."""
    rows = [f"{DOCSTART} O\n\n"] if docstart else []
    words = annotation.words
    position = 0
    for length in annotation.segmented.sentence_lengths.tolist():
        if not length:
            continue
        for word, tag in zip(
            words[position : position + length], annotation.tags[position : position + length], strict=True
        ):
            rows.append(f"{word} {tag}\n")
        rows.append("\n")
        position += length
    return "".join(rows)
