"""nertron.integrations.spark on a real local Spark (local[2]): equal to the plain SDK, nulls, streaming, Triton URL."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from nertron import NER, Entity
from nertron.backends import OnnxRuntime, Triton
from nertron.integrations.spark import (
    AnnotateJob,
    annotate,
    annotate_batches,
    engine,
    engine_builds,
    entities_column,
    executor_config,
)
from nertron.model.default import default_bundle
from nertron.ner import NERConfig

pyspark = pytest.importorskip("pyspark", reason="pip install 'nertron[spark]'")
from pyspark.sql import SparkSession  # noqa: E402

from tests.languages import WHOLE_WORD_ENTITIES  # noqa: E402
from tests.spark_data import dev_texts, frame  # noqa: E402

ARROW_BATCH_ROWS = 500


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded model at its default precision (static int8) assembled into a private cache that the
    Spark workers inherit. Its results do not depend on how Spark's partitions batch the texts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERTRON_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("NERTRON_MODEL", raising=False)
        yield default_bundle(quiet=True)


@pytest.fixture(scope="module")
def spark(default_model: Path) -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter, with nertron
        session = (
            SparkSession.builder.master("local[2]")
            .appName("nertron-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


@pytest.fixture(scope="module")
def sdk(default_model: Path) -> NER:
    return NER(default_model)


def assert_same_entities(got: list[list[dict[str, Any]]], expected: list[list[Entity]]) -> None:
    """Spans and labels equal; scores equal up to float32 rounding (batches pad to other lengths)."""
    assert len(got) == len(expected)
    for index, (row, entities) in enumerate(zip(got, expected, strict=True)):
        assert [(e["text"], e["label"], e["start"], e["end"]) for e in row] == [
            (e.text, e.label, e.start, e.end) for e in entities
        ], f"row {index}"
        assert [e["score"] for e in row] == pytest.approx([e.score for e in entities], abs=1e-5), f"row {index}"


TRICKY = [
    "",
    "   ",
    "Angela Merkel met Emmanuel Macron in Paris.",
    "\U0001d49c Dr. Müller works at Siemens in München \U0001f600 with José García.",  # astral planes
    "東京で安倍晋三はトヨタの社長と会った。",
    *WHOLE_WORD_ENTITIES,  # Chinese, Japanese, Thai, Korean: word links on the executors too
]


def test_equals_sdk_with_nulls_empty_and_long_texts(spark: SparkSession, sdk: NER) -> None:
    long_document = " ".join(dev_texts(400))  # several windows: merged, never truncated
    texts: list[str | None] = [*dev_texts(300), None, *TRICKY, long_document, None]
    rows = annotate(frame(spark, texts, partitions=3), "text").orderBy("id").collect()
    assert [r.id for r in rows] == list(range(len(texts)))
    expected = sdk.batch([t for t in texts if t is not None])
    got = [r.entities for r in rows if r.text is not None]
    assert [r.entities for r in rows if r.text is None] == [None, None]
    assert_same_entities([[e.asDict() for e in ents] for ents in got], expected)
    assert sum(len(e) for e in expected) > 300  # real entities, not empty lists
    assert got[len(dev_texts(300)) + TRICKY.index("")] == []


def test_sparknlp_schema_matches_ner_converter_chunks(spark: SparkSession, sdk: NER) -> None:
    texts = TRICKY + dev_texts(50)
    rows = annotate(frame(spark, texts), "text", output_col="ner_chunk", schema="sparknlp").orderBy("id").collect()
    for row, entities in zip(rows, sdk.batch(texts), strict=True):
        assert len(row.ner_chunk) == len(entities)
        utf16 = row.text.encode("utf-16-le")
        for index, (chunk, entity) in enumerate(zip(row.ner_chunk, entities, strict=True)):
            assert chunk.annotatorType == "chunk"
            # begin/end are inclusive UTF-16 offsets, as Scala's text.substring(begin, end + 1) reads them
            assert utf16[2 * chunk.begin : 2 * (chunk.end + 1)].decode("utf-16-le") == entity.text == chunk.result
            assert chunk.metadata["entity"] == entity.label
            assert float(chunk.metadata["confidence"]) == pytest.approx(entity.score, rel=1e-5)
            assert chunk.metadata["chunk"] == str(index)
            assert chunk.embeddings == []
    assert any(ord(c) > 0xFFFF for c in rows[3].text) and rows[3].ner_chunk[0].begin > rows[3].text.index("Dr")


def test_one_partition_of_thousands_of_rows_streams(spark: SparkSession, sdk: NER) -> None:
    texts = dev_texts(3000)
    df = frame(spark, texts, partitions=1)
    assert df.rdd.getNumPartitions() == 1
    rows = annotate(df, "text", rows_per_chunk=128).orderBy("id").collect()
    assert len(rows) == 3000 > 5 * ARROW_BATCH_ROWS
    expected = sdk.batch(texts)
    assert_same_entities([[e.asDict() for e in r.entities] for r in rows], expected)


def test_engine_loaded_once_per_worker_process(spark: SparkSession, default_model: Path) -> None:
    spec = NERConfig(model=str(default_model))

    def probe(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        first = engine(spec)
        for batch in batches:
            assert engine(spec) is first
            yield pa.RecordBatch.from_pydict(
                {"pid": [os.getpid()] * batch.num_rows, "engines": [engine_builds(spec)] * batch.num_rows}
            )

    df = spark.range(0, 64, numPartitions=16)
    rows = df.mapInArrow(probe, "pid long, engines long").distinct().collect()
    assert {r.engines for r in rows} == {1}  # one engine per process, however many tasks it ran
    assert len({r.pid for r in rows}) < 16  # workers (and their engines) are reused across tasks


def test_annotate_batches_is_lazy_and_chunked(sdk: NER, default_model: Path) -> None:
    texts = dev_texts(1000)
    pulled: list[int] = []

    def source() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(texts), 250):
            pulled.append(start)
            yield pa.RecordBatch.from_pydict({"text": texts[start : start + 250]})

    job = AnnotateJob(NERConfig(model=str(default_model)), text_col="text", rows_per_chunk=100)
    out = annotate_batches(source(), job)
    first = next(out)
    assert first.num_rows == 100 and pulled == [0]  # one input batch read, one chunk annotated
    rest = list(out)
    assert [b.num_rows for b in [first, *rest]] == [100, 100, 50] * 4
    assert pulled == [0, 250, 500, 750]
    combined = pa.Table.from_batches([first, *rest])
    assert combined.column("text").to_pylist() == texts
    assert_same_entities(combined.column("entities").to_pylist(), sdk.batch(texts))


def test_entities_column_types_and_nulls(sdk: NER) -> None:
    column = entities_column(sdk, [None, "", "Angela Merkel lives in Berlin."], "sparknlp")
    assert column.null_count == 1 and column.to_pylist()[1] == []
    labels = [dict(c["metadata"])["entity"] for c in column.to_pylist()[2]]
    assert labels == ["PER", "LOC"]


def test_calibrated_scores_and_min_score_reach_the_executors(
    spark: SparkSession, default_model: Path, sdk: NER
) -> None:
    assert sdk.temperature != 1.0  # the embedded model's calibration, from its manifest
    texts = dev_texts(120)
    rows = annotate(frame(spark, texts), "text", min_score=0.9).orderBy("id").collect()
    with NER(default_model, min_score=0.9) as strict:
        expected = strict.batch(texts)
    assert_same_entities([[e.asDict() for e in r.entities] for r in rows], expected)
    assert sum(map(len, expected)) < sum(map(len, sdk.batch(texts)))


def test_executor_threads_follow_task_cpus_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import nertron.integrations.spark.engines as spark_module

    for cpus, threads in ((4, 4), (1000, 256)):  # spark.task.cpus, capped at the specs' bound
        monkeypatch.setattr(spark_module, "_task_cpus", lambda cpus=cpus: cpus)
        assert executor_config(NERConfig()).backend == OnnxRuntime(threads=threads)
        served = executor_config(NERConfig(backend=Triton("h:1")))
        assert isinstance(served.backend, Triton) and served.backend.fallback == OnnxRuntime(threads=threads)
        given = NERConfig(backend=OnnxRuntime(threads=2))
        assert executor_config(given) == given  # threads given are kept


def test_bad_arguments_fail_on_the_driver(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, "x")], "id int, text string")
    with pytest.raises(ValueError, match="'body' is not a column"):
        annotate(df, "body")
    with pytest.raises(TypeError, match="must be a string \\(or UTF-8 binary\\) column, got int"):
        annotate(df, "id")
    with pytest.raises(ValueError, match="column 'id' already exists"):
        annotate(df, "text", output_col="id")
    with pytest.raises(ValueError, match="column 'id' already exists"):
        annotate(df, "text", on_error="column", error_col="id")
    with pytest.raises(ValueError, match="output_col and error_col must differ"):
        annotate(df, "text", on_error="column", error_col="entities")
    with pytest.raises(ValueError, match="on_error must be one of \\('fail', 'column'\\), got 'skip'"):
        annotate(df, "text", on_error="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chars must be >= 1, got 0"):
        annotate(df, "text", max_chars=0)
    with pytest.raises(TypeError, match="rows_per_chunk must be an int, got float"):
        annotate(df, "text", rows_per_chunk=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id_col 'key' is not a column"):
        annotate(df, "text", id_col="key")
    with pytest.raises(ValueError, match="schema must be one of"):
        annotate(df, "text", schema="conll")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        annotate(df, "text", aggregation="mean")
    with pytest.raises(ValueError, match="min_score must be in"):
        annotate(df, "text", min_score=2)
    with pytest.raises(TypeError, match="annotate\\(\\) got an unknown option 'batchsize'"):
        annotate(df, "text", batchsize=2)
    with pytest.raises(ValueError, match="stride must be in"):
        annotate(df, "text", stride=-1)
    assert df.columns == ["id", "text"]  # the input DataFrame is left as it was


def test_triton_url_shared_by_executors(spark: SparkSession, tiny_bundle: Path, tmp_path: Path) -> None:
    from nertron.serving.options import ConfigOptions
    from nertron.serving.repository import write_repository
    from nertron.serving.server import TritonServer

    write_repository(tiny_bundle, tmp_path, name="nertron", options=ConfigOptions(threads=1))
    texts = dev_texts(200)
    with TritonServer(tmp_path, startup_timeout=60, stop_timeout=15) as server:
        backend = Triton(server.grpc_url, fallback=None)
        served = annotate(frame(spark, texts), "text", model=tiny_bundle, backend=backend)
        rows = served.orderBy("id").collect()
    expected = NER(tiny_bundle).batch(texts)
    assert_same_entities([[e.asDict() for e in r.entities] for r in rows], expected)


def test_executor_errors_come_back_as_themselves_in_one_line() -> None:
    from nertron.integrations.spark import BadRow, executor_error, job_errors

    worker_trace = (
        "\n  An exception was thrown from the Python worker. Please see the stack trace below.\n"
        'Traceback (most recent call last):\n  File "annotate.py", line 9, in _annotated_columns\n'
        "nertron.integrations.spark.annotate.BadRow: cannot annotate row 3 of partition 1: text has 12 characters\n"
    )
    error = executor_error(RuntimeError(worker_trace))
    assert isinstance(error, BadRow) and str(error) == "cannot annotate row 3 of partition 1: text has 12 characters"
    assert executor_error(RuntimeError("java.lang.OutOfMemoryError: heap\nos.Error: x")) is None
    assert executor_error(RuntimeError("nertron.nowhere.Missing: not a class of ours")) is None
    with pytest.raises(BadRow) as caught, job_errors():
        raise RuntimeError(worker_trace)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(KeyError), job_errors():  # not a nertron error: raised unchanged
        raise KeyError("x")
