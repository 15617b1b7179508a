"""``NERTransformer``: ``annotate`` as a ``pyspark.ml`` stage, for ``Pipeline(stages=[...])``, saved and loaded
with the pipeline.

A stage that names a bundle (``model``, or the embedded default model) records the bundle's fingerprint
(``Bundle.fingerprint``, a content hash of its model, tokenizer, labels and temperature) when it is saved;
loading it where that path holds another bundle, or running it after the bundle changed, raises
``BundleChanged`` naming both fingerprints instead of giving other answers. The bundle itself is not saved
with the pipeline: it is the user's file, often hundreds of MB, and stays where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLWriter,
)

from nertron.backends import OnnxRuntime, Triton
from nertron.errors import InvalidValue, NertronError
from nertron.integrations.spark.annotate import MAX_CHARS, ON_ERROR, annotate
from nertron.integrations.spark.schemas import SCHEMAS
from nertron.model.bundle import Bundle
from nertron.ner import AGGREGATIONS, PRECISIONS, NERConfig, resolve_model

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class BundleChanged(NertronError, ValueError):
    """The bundle a saved stage names is not the bundle it was saved with."""


def _param(name: str, doc: str, converter: Any) -> Param[Any]:
    return Param(Params._dummy(), name, doc, typeConverter=converter)  # noqa: SLF001 (pyspark's own idiom)


class NERTransformer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Named entities of ``inputCol`` (default ``"text"``) in ``outputCol`` (default ``"entities"``): the
    stage form of :func:`nertron.integrations.spark.annotate`, with the same defaults.

    >>> stage = NERTransformer(inputCol="text", schema="sparknlp", tokensCol="token", tagsCol="ner")  # doctest: +SKIP
    >>> PipelineModel(stages=[stage]).transform(df)                                                     # doctest: +SKIP
    """

    model = _param("model", "bundle directory (default: the embedded model)", TypeConverters.toString)
    precision = _param("precision", f"the embedded model's variant, one of {PRECISIONS}", TypeConverters.toString)
    schema = _param("schema", f"the entities column's shape, one of {SCHEMAS}", TypeConverters.toString)
    tokensCol = _param("tokensCol", "column of the words and their offsets (with tagsCol)", TypeConverters.toString)
    tagsCol = _param("tagsCol", "column of one IOB2 tag per word (with tokensCol)", TypeConverters.toString)
    onError = _param("onError", f"bad rows: one of {ON_ERROR}", TypeConverters.toString)
    errorCol = _param("errorCol", "column of bad rows' errors (onError='column')", TypeConverters.toString)
    idCol = _param("idCol", "column that names a row in errors", TypeConverters.toString)
    maxChars = _param("maxChars", "longest text, in characters (0: no limit)", TypeConverters.toInt)
    batchSize = _param("batchSize", "windows per model batch", TypeConverters.toInt)
    rowsPerChunk = _param("rowsPerChunk", "rows annotated at a time", TypeConverters.toInt)
    aggregation = _param("aggregation", f"word from subwords, one of {AGGREGATIONS}", TypeConverters.toString)
    minScore = _param("minScore", "entities scored below it are left out", TypeConverters.toFloat)
    tritonUrl = _param("tritonUrl", "host:port of a Triton server (gRPC) that runs the model", TypeConverters.toString)
    fallback = _param("fallback", "compute locally while the Triton server cannot answer", TypeConverters.toBoolean)
    fingerprint = _param("fingerprint", "the bundle's fingerprint when the stage was saved", TypeConverters.toString)

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self._setDefault(
            inputCol="text",
            outputCol="entities",
            schema="nertron",
            onError="fail",
            errorCol="error",
            maxChars=MAX_CHARS,
            batchSize=16,
            rowsPerChunk=1024,
            aggregation="first",
            minScore=0.0,
            fallback=True,
        )
        self._set(**params)
        self.check()

    def setParams(self, **params: Any) -> NERTransformer:
        """Sets the given params (checked at once). Another ``model`` or ``precision`` forgets the recorded
        fingerprint: the stage runs the bundle it now names, and records that one when it is saved."""
        if {"model", "precision"} & params.keys() and "fingerprint" not in params:
            self.clear(self.fingerprint)
        self._set(**params)
        self.check()
        return self

    def check(self) -> None:
        """Raises ``ValueError`` naming a param whose value cannot be used (types are checked when set)."""
        choices = {
            self.schema: SCHEMAS,
            self.onError: ON_ERROR,
            self.aggregation: AGGREGATIONS,
            self.precision: PRECISIONS,
        }
        for param, allowed in choices.items():
            if self.isDefined(param) and self.getOrDefault(param) not in allowed:
                raise InvalidValue(f"{param.name} must be one of {allowed}, got {self.getOrDefault(param)!r}")
        if self.isSet(self.tokensCol) != self.isSet(self.tagsCol):
            raise InvalidValue("tokensCol and tagsCol go together (the words and their tags): set both or neither")
        self.config()  # NERConfig checks the engine's options

    def config(self) -> NERConfig:
        """The engine's configuration these params describe."""
        url = self._value(self.tritonUrl)
        backend = (
            None if url is None else Triton(url, fallback=OnnxRuntime() if self.getOrDefault("fallback") else None)
        )
        return NERConfig(
            model=self._value(self.model),
            precision=self._value(self.precision),
            aggregation=self.getOrDefault("aggregation"),
            batch_size=self.getOrDefault("batchSize"),
            min_score=self.getOrDefault("minScore"),
            backend=backend,
        )

    def bundle_fingerprint(self) -> str | None:
        """The fingerprint of the bundle the stage runs, as it is on the driver now (None: a path that only the
        executors have)."""
        config = self.config()
        path = resolve_model(config.model, config.variant)
        if not path.is_dir():
            return None
        return Bundle.load(path).fingerprint

    def check_bundle(self, saved_at: str | None = None) -> None:
        """Raises ``BundleChanged`` if the stage records a fingerprint and its bundle now has another."""
        recorded = self._value(self.fingerprint)
        if recorded is None:
            return
        now = self.bundle_fingerprint()
        if now is not None and now != recorded:
            where = f"the stage saved at {saved_at}" if saved_at else "this stage"
            model = self._value(self.model) or "the embedded default model"
            raise BundleChanged(
                f"{where} runs model {model} of fingerprint {recorded}, but that bundle is now {now}: restore it, "
                "or set model= to the bundle you mean and save the pipeline again"
            )

    def _value(self, param: Param[Any]) -> Any:
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.check()
        self.check_bundle()
        config = self.config()
        max_chars = self.getOrDefault("maxChars")
        return annotate(
            dataset,
            self.getOrDefault("inputCol"),
            output_col=self.getOrDefault("outputCol"),
            schema=self.getOrDefault("schema"),
            rows_per_chunk=self.getOrDefault("rowsPerChunk"),
            on_error=self.getOrDefault("onError"),
            error_col=self.getOrDefault("errorCol"),
            max_chars=max_chars or None,
            id_col=self._value(self.idCol),
            tokens_col=self._value(self.tokensCol),
            tags_col=self._value(self.tagsCol),
            **config.options(),
        )

    def write(self) -> MLWriter:
        """Saves the params, with the fingerprint of the bundle as it is now (after ``check_bundle``: a stage
        whose recorded bundle changed is not saved as if it were the same)."""
        self.check_bundle()
        fingerprint = self.bundle_fingerprint()
        saved = self if fingerprint is None else self.copy({self.fingerprint: fingerprint})
        return DefaultParamsWriter(saved)

    @classmethod
    def read(cls) -> _Reader:
        return _Reader(cls)


class _Reader(DefaultParamsReader):
    """pyspark's reader of Python stages, then the bundle's fingerprint checked against the one saved (a
    bundle path that the driver does not have is checked by the executors' own verification only)."""

    def load(self, path: str) -> NERTransformer:
        stage = super().load(path)
        assert isinstance(stage, NERTransformer)
        stage.check_bundle(saved_at=str(Path(path)))
        return stage
