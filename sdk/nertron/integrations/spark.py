"""Named-entity recognition over Spark DataFrames (``pip install "nertron[spark]"``).

>>> from nertron.integrations.spark import annotate
>>> annotated = annotate(df, "text")                      # doctest: +SKIP
>>> annotated.select("id", "entities").show()             # doctest: +SKIP

Rows travel to the Python workers as Arrow record batches (``mapInArrow``) and come back with an added
entities column; each worker process builds one ``NER`` engine for a given configuration and keeps it for
every later task and batch (Spark reuses Python workers by default). The engine runs the model in-process
with onnxruntime, or on a Triton server that all executors share (``backend=Triton(url)``).

Two output schemas:

- ``"nertron"`` (default): ``array<struct<text, label, start, end, score>>``, the fields of
  :class:`nertron.Entity`; ``start``/``end`` are code-point offsets, end exclusive, the way Python and
  Spark SQL's ``substring`` count.
- ``"sparknlp"``: Spark NLP's annotation struct as ``NerConverter`` writes chunks: ``annotatorType``
  ``"chunk"``, ``begin`` and ``end`` (inclusive) in UTF-16 code units like JVM strings, ``result`` (the
  entity text), ``metadata`` with ``entity``, ``confidence``, ``sentence`` and ``chunk``, and empty
  ``embeddings``; pipelines that read the ``xlm_roberta_base_token_classifier_conll03`` chunks can switch.

A null text gives a null entities value; an empty text gives an empty array.
"""

from __future__ import annotations

import dataclasses
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nertron.backends import OnnxRuntime, Triton
from nertron.backends.specs import MAX_THREADS
from nertron.entity import Entity
from nertron.errors import InvalidType, InvalidValue
from nertron.extras import require
from nertron.ner import NER, NERConfig, check_options

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

pa = require("pyarrow", "nertron.integrations.spark")
require("pyspark", "nertron.integrations.spark")

SCHEMAS = ("nertron", "sparknlp")

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


def entity_schema(schema: str = "nertron") -> DataType:
    """The Spark type of the entities column for ``schema`` (``"nertron"`` or ``"sparknlp"``)."""
    from pyspark.sql.types import _parse_datatype_string

    if schema == "nertron":
        return _parse_datatype_string("array<struct<text:string,label:string,start:int,end:int,score:float>>")
    if schema == "sparknlp":
        return _parse_datatype_string(
            "array<struct<annotatorType:string,begin:int,end:int,result:string,"
            "metadata:map<string,string>,embeddings:array<float>>>"
        )
    raise InvalidValue(f"schema must be one of {SCHEMAS}, got {schema!r}")


def executor_config(config: NERConfig) -> NERConfig:
    """``config`` as an executor runs it: onnxruntime threads not given default to ``spark.task.cpus``, so
    that concurrent tasks on one executor do not oversubscribe its cores."""
    cpus = _task_cpus()
    spec = config.backend_spec

    def with_task_threads(local: Any) -> Any:
        if isinstance(local, OnnxRuntime) and local.threads is None and cpus is not None:
            return dataclasses.replace(local, threads=min(cpus, MAX_THREADS))
        return local

    if isinstance(spec, Triton):
        spec = dataclasses.replace(spec, fallback=with_task_threads(spec.fallback))
    return dataclasses.replace(config, backend=with_task_threads(spec))


_engines: dict[NERConfig, NER] = {}
_builds: Counter[NERConfig] = Counter()  # NER objects built, per config: stays 1 while engines are reused
_engines_lock = threading.Lock()


def engine(config: NERConfig) -> NER:
    """This process's engine for ``config``, built at its first use and kept for the life of the process."""
    with _engines_lock:
        if config not in _engines:
            _engines[config] = executor_config(config).build()
            _builds[config] += 1
        return _engines[config]


def engine_builds(config: NERConfig) -> int:
    """How many engines this process has built for ``config`` (each build counted as it happens)."""
    with _engines_lock:
        return _builds[config]


def annotate(
    df: DataFrame,
    text_col: str = "text",
    *,
    output_col: str = "entities",
    schema: str = "nertron",
    rows_per_chunk: int = 1024,
    **options: Any,
) -> DataFrame:
    """``df`` with an added column ``output_col`` holding the entities of ``text_col`` (lazy, like any
    Spark transformation).

    ``options`` are ``NER``'s (``NERConfig``'s fields: ``model``, ``precision``, ``aggregation``,
    ``batch_size``, ``backend``, ``min_score``, ...). ``model`` is a bundle directory that every executor can
    read (default: the embedded model, which ships inside the package); ``backend=Triton(url)`` sends the
    model's work to one Triton server for all executors. Each Arrow batch that Spark hands a worker is
    annotated ``rows_per_chunk`` rows at a time, so memory stays bounded however large a partition is.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    if text_col not in df.columns:
        raise InvalidValue(f"text_col {text_col!r} is not a column of the DataFrame (columns: {df.columns})")
    text_type = df.schema[text_col].dataType
    if not isinstance(text_type, StringType):
        raise InvalidType(f"column {text_col!r} must be a string column, got {text_type.simpleString()}")
    if output_col in df.columns:
        raise InvalidValue(f"output_col {output_col!r} already exists; pick another name or drop it first")
    output_type = entity_schema(schema)
    if rows_per_chunk < 1:
        raise InvalidValue(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    check_options(options, "annotate()")
    config = NERConfig(**options)
    if config.model is not None and Path(config.model).exists():  # resolved here: executors run elsewhere
        config = dataclasses.replace(config, model=str(Path(config.model).resolve()))
    # A new StructType: ``df.schema.add`` would change the DataFrame's cached schema in place.
    out_schema = StructType([*df.schema.fields, StructField(output_col, output_type, nullable=True)])

    def annotate_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return annotate_batches(
            batches, config, text_col=text_col, output_col=output_col, schema=schema, rows_per_chunk=rows_per_chunk
        )

    return df.mapInArrow(annotate_partition, out_schema)


def annotate_batches(
    batches: Iterator[pa.RecordBatch],
    config: NERConfig,
    *,
    text_col: str,
    output_col: str = "entities",
    schema: str = "nertron",
    rows_per_chunk: int = 1024,
) -> Iterator[pa.RecordBatch]:
    """The per-partition work of :func:`annotate`: each input batch, ``rows_per_chunk`` rows at a time,
    comes back with the entities column appended. Lazy: a batch is read only when its output is asked for."""
    ner = engine(config)
    for batch in batches:
        for offset in range(0, batch.num_rows, rows_per_chunk):
            chunk = batch.slice(offset, rows_per_chunk)
            texts = chunk.column(text_col).to_pylist()
            entities = entities_column(ner, texts, schema)
            yield pa.RecordBatch.from_arrays([*chunk.columns, entities], names=[*chunk.schema.names, output_col])


def entities_column(ner: NER, texts: list[str | None], schema: str = "nertron") -> pa.Array:
    """The Arrow entities column for ``texts`` (null stays null)."""
    present = [i for i, text in enumerate(texts) if text is not None]
    found = ner.batch([text for text in texts if text is not None]) if present else []
    rows: list[list[dict[str, Any]] | None] = [None] * len(texts)
    for i, entities in zip(present, found, strict=True):
        text = texts[i]
        assert text is not None
        rows[i] = _nertron_rows(entities) if schema == "nertron" else _sparknlp_rows(text, entities)
    return pa.array(rows, type=NERTRON_ARROW_TYPE if schema == "nertron" else SPARKNLP_ARROW_TYPE)


def _nertron_rows(entities: list[Entity]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in entities]


def _sparknlp_rows(text: str, entities: list[Entity]) -> list[dict[str, Any]]:
    to_utf16 = _utf16_offsets(text)
    rows = []
    for index, e in enumerate(entities):
        metadata = {"entity": e.label, "confidence": f"{e.score:.6g}", "sentence": "0", "chunk": str(index)}
        rows.append(
            {
                "annotatorType": "chunk",
                "begin": to_utf16(e.start),
                "end": to_utf16(e.end) - 1,
                "result": e.text,
                "metadata": list(metadata.items()),
                "embeddings": [],
            }
        )
    return rows


def _utf16_offsets(text: str) -> Callable[[int], int]:
    """Code-point offset -> UTF-16 code units (as JVM strings count): astral characters take two units."""
    if text.isascii():
        return lambda index: index
    astral = [i for i, char in enumerate(text) if ord(char) > 0xFFFF]
    return lambda index: index + bisect_left(astral, index)


def _task_cpus() -> int | None:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else None
