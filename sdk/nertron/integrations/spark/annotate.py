"""``annotate``: a DataFrame's text column in, the same DataFrame with an entities column out, and the
per-partition work that the executors run, bad rows included."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa

from nertron.entity import Entity
from nertron.errors import InvalidType, InvalidValue, NertronError
from nertron.integrations.spark.engines import engine
from nertron.integrations.spark.schemas import (
    Schema,
    arrow_type,
    check_schema,
    entity_rows,
    entity_schema,
    token_arrow_types,
    token_rows,
    token_schemas,
)
from nertron.integrations.spark.shipping import ShippedBundle, ship_bundle
from nertron.io.corpus import iob2_tags
from nertron.ner import NER, NERConfig, check_options

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import DataFrame

OnError = Literal["fail", "column"]
ON_ERROR: tuple[str, ...] = get_args(OnError)
MAX_CHARS = 1_000_000


class BadRow(NertronError, ValueError):
    """A row that cannot be annotated (``on_error="fail"``): the message names the row and says why."""


@dataclass(frozen=True)
class AnnotateJob:
    """What every executor needs to annotate a partition: the engine's configuration and where its model
    comes from, the columns, the output schema and the bad-row policy (see :func:`annotate`)."""

    config: NERConfig
    text_col: str = "text"
    output_col: str = "entities"
    schema: Schema = "nertron"
    rows_per_chunk: int = 1024
    on_error: OnError = "fail"
    error_col: str = "error"
    max_chars: int | None = MAX_CHARS
    id_col: str | None = None
    tokens_col: str | None = None
    tags_col: str | None = None
    shipped: ShippedBundle | None = None

    def __post_init__(self) -> None:
        check_schema(self.schema)
        if self.on_error not in ON_ERROR:
            raise InvalidValue(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        _check_positive("rows_per_chunk", self.rows_per_chunk)
        if self.max_chars is not None:
            _check_positive("max_chars", self.max_chars)
        if (self.tokens_col is None) != (self.tags_col is None):
            raise InvalidValue(
                f"tokens_col and tags_col go together (the words and their tags), got tokens_col={self.tokens_col!r} "
                f"and tags_col={self.tags_col!r}"
            )
        for name in ("text_col", "output_col", "error_col", "id_col", "tokens_col", "tags_col"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidType(f"{name} must be a column name (a non-empty str), got {value!r}")
        if self.on_error == "column" and self.error_col == self.output_col:
            raise InvalidValue(f"output_col and error_col must differ, both are {self.output_col!r}")
        added = self.added_columns
        if len(set(added)) != len(added):
            raise InvalidValue(f"the added columns must have distinct names, got {added}")

    @property
    def tokens(self) -> bool:
        """Whether the job adds the token-level columns."""
        return self.tokens_col is not None

    @property
    def added_columns(self) -> list[str]:
        """The columns the job appends: the entities, the words and their tags (if asked), and with
        ``on_error="column"`` the errors."""
        columns = [self.output_col]
        if self.tokens_col is not None and self.tags_col is not None:
            columns += [self.tokens_col, self.tags_col]
        return [*columns, self.error_col] if self.on_error == "column" else columns


def annotate(
    df: DataFrame,
    text_col: str = "text",
    *,
    output_col: str = "entities",
    schema: Schema = "nertron",
    rows_per_chunk: int = 1024,
    on_error: OnError = "fail",
    error_col: str = "error",
    max_chars: int | None = MAX_CHARS,
    id_col: str | None = None,
    tokens_col: str | None = None,
    tags_col: str | None = None,
    **options: Any,
) -> DataFrame:
    """``df`` with an added column ``output_col`` holding the entities of ``text_col`` (lazy, like any
    Spark transformation); works on batch and streaming DataFrames.

    ``options`` are ``NER``'s (``NERConfig``'s fields: ``model``, ``precision``, ``aggregation``,
    ``batch_size``, ``backend``, ``min_score``, ...). ``model``: a bundle directory on the driver, shipped
    to the executors with the job and verified there (or, if the driver lacks it, a path every executor can
    read); default: the embedded model, which ships inside the package and is assembled once per machine.
    ``backend=Triton(url)`` sends the model's work to one Triton server for all executors.

    Bad rows (a text over ``max_chars`` characters, bytes of a binary ``text_col`` that are not UTF-8):
    ``on_error="fail"`` fails the job naming the row (by ``id_col``'s value when given, else its partition
    and position); ``"column"`` gives them null entities and a message in ``error_col`` (null for good
    rows). Each Arrow batch is annotated ``rows_per_chunk`` rows at a time: memory stays bounded.

    ``tokens_col`` and ``tags_col`` (both or neither) add the token level: the text's words with their
    offsets and one IOB2 tag per word, made from the row's entities (``schemas``).
    """
    from pyspark.sql.types import BinaryType, StringType, StructField, StructType

    check_options(options, "annotate()")
    job = AnnotateJob(
        NERConfig(**options),
        text_col=text_col,
        output_col=output_col,
        schema=schema,
        rows_per_chunk=rows_per_chunk,
        on_error=on_error,
        error_col=error_col,
        max_chars=max_chars,
        id_col=id_col,
        tokens_col=tokens_col,
        tags_col=tags_col,
    )
    for name, column in (("text_col", text_col), ("id_col", id_col)):
        if column is not None and column not in df.columns:
            raise InvalidValue(f"{name} {column!r} is not a column of the DataFrame (columns: {df.columns})")
    text_type = df.schema[text_col].dataType
    if not isinstance(text_type, (StringType, BinaryType)):
        raise InvalidType(
            f"column {text_col!r} must be a string (or UTF-8 binary) column, got {text_type.simpleString()}"
        )
    for name in job.added_columns:
        if name in df.columns:
            raise InvalidValue(f"column {name!r} already exists; pick another name or drop it first")
    job = _with_model_source(job, df)
    # A new StructType: ``df.schema.add`` would change the DataFrame's cached schema in place.
    fields = [*df.schema.fields, StructField(output_col, entity_schema(schema), nullable=True)]
    if tokens_col is not None and tags_col is not None:
        tokens_type, tags_type = token_schemas(schema)
        fields += [StructField(tokens_col, tokens_type, nullable=True), StructField(tags_col, tags_type, nullable=True)]
    if on_error == "column":
        fields.append(StructField(error_col, StringType(), nullable=True))

    def annotate_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return annotate_batches(batches, job)

    return df.mapInArrow(annotate_partition, StructType(fields))


def _with_model_source(job: AnnotateJob, df: DataFrame) -> AnnotateJob:
    config, shipped = model_source(job.config, df.sparkSession.sparkContext)
    return dataclasses.replace(job, config=config, shipped=shipped)


def model_source(config: NERConfig, context: SparkContext) -> tuple[NERConfig, ShippedBundle | None]:
    """A bundle that exists on the driver travels with the job (a cluster) or is read in place (local mode):
    the configuration the executors build their engine from, and the shipped bundle if any."""
    model = config.model
    if model is None or not Path(model).is_dir():
        return config, None  # the embedded model, or a path only the executors have
    if (context.master or "").startswith("local"):
        return dataclasses.replace(config, model=str(Path(model).resolve())), None
    return dataclasses.replace(config, model=None), ship_bundle(context, Path(model))


def annotate_batches(batches: Iterator[pa.RecordBatch], job: AnnotateJob) -> Iterator[pa.RecordBatch]:
    """The per-partition work of :func:`annotate`: each input batch, ``rows_per_chunk`` rows at a time,
    comes back with the entities column (and the error column) appended. Lazy: a batch is read only when
    its output is asked for."""
    ner = engine(job.config, job.shipped)
    position = 0  # of the next row in this partition, for messages
    for batch in batches:
        for offset in range(0, batch.num_rows, job.rows_per_chunk):
            chunk = batch.slice(offset, job.rows_per_chunk)
            columns = [*chunk.columns, *_annotated_columns(ner, chunk, job, position)]
            position += chunk.num_rows
            yield pa.RecordBatch.from_arrays(columns, names=[*chunk.schema.names, *job.added_columns])


def _annotated_columns(ner: NER, chunk: pa.RecordBatch, job: AnnotateJob, position: int) -> list[pa.Array]:
    texts: list[str | None] = []
    errors: list[str | None] = []
    for index, value in enumerate(chunk.column(job.text_col).to_pylist()):
        text, error = _text_of(value, job.max_chars)
        if error is not None and job.on_error == "fail":  # before any inference: fail fast
            raise BadRow(
                f"{_row_name(chunk, job, index, position)}: {error} (on_error='column' reports it and goes on)"
            )
        texts.append(text)
        errors.append(error)
    indices = [i for i, text in enumerate(texts) if text is not None]
    found = _entities(ner, texts, indices, errors)
    if job.on_error == "fail" and any(errors):
        index = next(i for i, error in enumerate(errors) if error is not None)
        raise BadRow(f"{_row_name(chunk, job, index, position)}: {errors[index]}")
    rows: list[list[dict[str, Any]] | None] = [None] * len(texts)
    tokens: list[list[Any] | None] = [None] * len(texts)
    tags: list[list[Any] | None] = [None] * len(texts)
    for index, entities in zip(indices, found, strict=True):
        text = texts[index]
        if entities is not None and text is not None:
            rows[index] = entity_rows(text, entities, job.schema)
            if job.tokens:
                document = ner.pipeline.segmenter(text)
                tokens[index], tags[index] = token_rows(document, iob2_tags(document, entities), job.schema)
    columns = [pa.array(rows, type=arrow_type(job.schema))]
    if job.tokens:
        tokens_type, tags_type = token_arrow_types(job.schema)
        columns += [pa.array(tokens, type=tokens_type), pa.array(tags, type=tags_type)]
    return columns if job.on_error == "fail" else [*columns, pa.array(errors, type=pa.string())]


def _text_of(value: object, max_chars: int | None) -> tuple[str | None, str | None]:
    """(text, None) for a usable value, (None, why) for a bad one, (None, None) for null."""
    if value is None:
        return None, None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as error:
            return None, f"text is not UTF-8 (byte {value[error.start]:#04x} at offset {error.start})"
    if not isinstance(value, str):
        return None, f"text is {type(value).__name__}, not a string"
    if max_chars is not None and len(value) > max_chars:
        return None, f"text has {len(value):,} characters, over max_chars={max_chars:,}"
    return value, None


def _entities(
    ner: NER, texts: list[str | None], indices: list[int], errors: list[str | None]
) -> list[list[Entity] | None]:
    """The entities of ``texts[i]`` for each of ``indices``, in one batch. If a text is refused (an
    invalid value or type), each text alone: the refused ones get None and their reason in ``errors``.
    Any other error (a server down with no fallback) is the job's, not a row's: it propagates."""
    batch = [text for text in (texts[i] for i in indices) if text is not None]
    if not batch:
        return []
    try:
        return list(ner.batch(batch))
    except (InvalidValue, InvalidType):
        found: list[list[Entity] | None] = []
        for index, text in zip(indices, batch, strict=True):
            try:
                found.append(ner(text))
            except (InvalidValue, InvalidType) as error:
                errors[index] = str(error)
                found.append(None)
        return found


def _row_name(chunk: pa.RecordBatch, job: AnnotateJob, index: int, position: int) -> str:
    from pyspark import TaskContext

    context = TaskContext.get()
    partition = f"partition {context.partitionId()}" if context is not None else "this partition"
    name = f"row {position + index} of {partition}"
    if job.id_col is not None:
        name += f" ({job.id_col}={chunk.column(job.id_col)[index].as_py()!r})"
    return f"cannot annotate {name}"


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise InvalidValue(f"{name} must be >= 1, got {value}")
