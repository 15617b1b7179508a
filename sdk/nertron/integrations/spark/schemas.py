"""The two shapes of the entities column: nertron's own and Spark NLP's chunk annotations.

- ``"nertron"`` (default): ``array<struct<text, label, start, end, score>>``, the fields of
  :class:`nertron.Entity`; ``start``/``end`` are code-point offsets, end exclusive.
- ``"sparknlp"``: Spark NLP's annotation struct as ``NerConverter`` writes chunks: ``annotatorType``
  ``"chunk"``, ``begin`` and ``end`` (inclusive) in UTF-16 code units like JVM strings, ``result``,
  ``metadata`` with ``entity``, ``confidence``, ``sentence`` and ``chunk``, and empty ``embeddings``.

The optional token-level columns (``annotate(..., tokens_col=, tags_col=)``): the words of the text, as
nertron cuts it, and one IOB2 tag per word, made from the entities of the same row (so rebuilding entities
from the tags gives the entities column back). ``"nertron"``: ``array<struct<text, start, end>>`` and
``array<string>``; ``"sparknlp"``: the annotations of Spark NLP's ``Tokenizer`` (``"token"``) and of its token
classifiers (``"named_entity"``, the tag in ``result``, the word in ``metadata``), as the
``xlm_roberta_base_token_classifier_conll03`` card's ``token`` and ``ner`` columns.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa

from nertron.entity import Entity
from nertron.errors import InvalidValue
from nertron.text import SegmentedText

if TYPE_CHECKING:
    from pyspark.sql.types import DataType

    from nertron.ner import NER

Schema = Literal["nertron", "sparknlp"]
SCHEMAS: tuple[str, ...] = get_args(Schema)

NERTRON_ARROW_TYPE = pa.list_(
    pa.struct(
        [
            ("text", pa.string()),
            ("label", pa.string()),
            ("start", pa.int32()),
            ("end", pa.int32()),
            ("score", pa.float32()),
        ]
    )
)
SPARKNLP_ARROW_TYPE = pa.list_(
    pa.struct(
        [
            ("annotatorType", pa.string()),
            ("begin", pa.int32()),
            ("end", pa.int32()),
            ("result", pa.string()),
            ("metadata", pa.map_(pa.string(), pa.string())),
            ("embeddings", pa.list_(pa.float32())),
        ]
    )
)


NERTRON_TOKENS_ARROW_TYPE = pa.list_(pa.struct([("text", pa.string()), ("start", pa.int32()), ("end", pa.int32())]))
NERTRON_TAGS_ARROW_TYPE = pa.list_(pa.string())
ANNOTATIONS = (
    "array<struct<annotatorType:string,begin:int,end:int,result:string,"
    "metadata:map<string,string>,embeddings:array<float>>>"
)


def check_schema(schema: object) -> None:
    if schema not in SCHEMAS:
        raise InvalidValue(f"schema must be one of {SCHEMAS}, got {schema!r}")


def entity_schema(schema: Schema = "nertron") -> DataType:
    """The Spark type of the entities column for ``schema`` (``"nertron"`` or ``"sparknlp"``)."""
    from pyspark.sql.types import _parse_datatype_string

    check_schema(schema)
    if schema == "nertron":
        return _parse_datatype_string("array<struct<text:string,label:string,start:int,end:int,score:float>>")
    return _parse_datatype_string(ANNOTATIONS)


def token_schemas(schema: Schema = "nertron") -> tuple[DataType, DataType]:
    """The Spark types of the tokens and tags columns for ``schema``."""
    from pyspark.sql.types import _parse_datatype_string

    check_schema(schema)
    if schema == "nertron":
        return _parse_datatype_string("array<struct<text:string,start:int,end:int>>"), _parse_datatype_string(
            "array<string>"
        )
    return _parse_datatype_string(ANNOTATIONS), _parse_datatype_string(ANNOTATIONS)


def token_arrow_types(schema: Schema) -> tuple[pa.DataType, pa.DataType]:
    """The Arrow types of the tokens and tags columns for ``schema``."""
    if schema == "nertron":
        return NERTRON_TOKENS_ARROW_TYPE, NERTRON_TAGS_ARROW_TYPE
    return SPARKNLP_ARROW_TYPE, SPARKNLP_ARROW_TYPE


def token_rows(document: SegmentedText, tags: list[str], schema: Schema) -> tuple[list[Any], list[Any]]:
    """The words of ``document`` and their tags as the values of one row's tokens and tags columns."""
    starts, ends = document.starts.tolist(), document.ends.tolist()
    words = document[:]
    if schema == "nertron":
        return [{"text": w, "start": s, "end": e} for w, s, e in zip(words, starts, ends, strict=True)], tags
    to_utf16 = _utf16_offsets(document.text)
    tokens, named = [], []
    for word, start, end, tag in zip(words, starts, ends, tags, strict=True):
        begin, last = to_utf16(start), to_utf16(end) - 1
        tokens.append(_annotation("token", begin, last, word, [("sentence", "0")]))
        named.append(_annotation("named_entity", begin, last, tag, [("word", word), ("sentence", "0")]))
    return tokens, named


def _annotation(kind: str, begin: int, end: int, result: str, metadata: list[tuple[str, str]]) -> dict[str, Any]:
    return {"annotatorType": kind, "begin": begin, "end": end, "result": result, "metadata": metadata, "embeddings": []}


def arrow_type(schema: Schema) -> pa.DataType:
    """The Arrow type of the entities column for ``schema``."""
    return NERTRON_ARROW_TYPE if schema == "nertron" else SPARKNLP_ARROW_TYPE


def entity_rows(text: str, entities: list[Entity], schema: Schema) -> list[dict[str, Any]]:
    """``entities`` of ``text`` as the values of one row's entities column."""
    return [e.to_dict() for e in entities] if schema == "nertron" else _sparknlp_rows(text, entities)


def entities_column(ner: NER, texts: list[str | None], schema: Schema = "nertron") -> pa.Array:
    """The Arrow entities column for ``texts`` (null stays null)."""
    present = [i for i, text in enumerate(texts) if text is not None]
    found = ner.batch([text for text in texts if text is not None]) if present else []
    rows: list[list[dict[str, Any]] | None] = [None] * len(texts)
    for i, entities in zip(present, found, strict=True):
        text = texts[i]
        assert text is not None
        rows[i] = entity_rows(text, entities, schema)
    return pa.array(rows, type=arrow_type(schema))


def _sparknlp_rows(text: str, entities: list[Entity]) -> list[dict[str, Any]]:
    to_utf16 = _utf16_offsets(text)
    rows = []
    for index, e in enumerate(entities):
        metadata = {"entity": e.label, "confidence": f"{e.score:.6g}", "sentence": "0", "chunk": str(index)}
        rows.append(_annotation("chunk", to_utf16(e.start), to_utf16(e.end) - 1, e.text, list(metadata.items())))
    return rows


def _utf16_offsets(text: str) -> Callable[[int], int]:
    """Code-point offset -> UTF-16 code units (as JVM strings count): astral characters take two units."""
    if text.isascii():
        return lambda index: index
    astral = [i for i, char in enumerate(text) if ord(char) > 0xFFFF]
    return lambda index: index + bisect_left(astral, index)
