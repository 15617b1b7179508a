"""NERTransformer in Spark ML pipelines (local[2]): equal to annotate(), saved and loaded, token-level columns,
bad params refused on the driver, the SQL function; and the migration page's example, as docs/spark.md shows it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nertron.model.bundle import Bundle, Calibration, Manifest

pyspark = pytest.importorskip("pyspark", reason="pip install 'nertron[spark]'")
from nertron.integrations.spark import (  # noqa: E402
    BundleChanged,
    NERTransformer,
    annotate,
    register_sql_function,
)
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.feature import SQLTransformer  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris.",
    None,
    "",
    "EU rejects German call to boycott British lamb.\nPeter Blackburn",
    "😀 Angela Merkel 𝄞 in Berlin",  # astral characters: UTF-16 offsets differ from code points
    "x " * 400,
]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("nertron-stage-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that a test may change."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def texts_frame(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([(i, t) for i, t in enumerate(TEXTS)], "id long, raw string").repartition(2)


def rows(frame: DataFrame) -> list[dict[str, Any]]:
    return [r.asDict(recursive=True) for r in frame.orderBy("id").collect()]


def test_a_pipeline_of_spark_stages_and_nertron_equals_annotate(
    spark: SparkSession, bundle: Path, tmp_path: Path
) -> None:
    df = texts_frame(spark)
    pipeline = Pipeline(
        stages=[
            SQLTransformer(statement="SELECT id, trim(raw) AS text FROM __THIS__"),
            NERTransformer(model=str(bundle), tokensCol="tokens", tagsCol="tags"),
            SQLTransformer(statement="SELECT *, size(entities) AS found FROM __THIS__"),
        ]
    )
    fitted = pipeline.fit(df)
    got = rows(fitted.transform(df))
    trimmed = df.selectExpr("id", "trim(raw) AS text")
    expected = rows(annotate(trimmed, "text", model=str(bundle), tokens_col="tokens", tags_col="tags"))
    assert [{k: v for k, v in r.items() if k != "found"} for r in got] == expected
    assert [r["found"] for r in got] == [None if r["entities"] is None else len(r["entities"]) for r in expected]

    fitted.save(str(tmp_path / "pipeline"))
    other = spark.newSession()
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert rows(loaded.transform(other.createDataFrame(df.collect(), df.schema))) == got
    stage = loaded.stages[1]
    assert isinstance(stage, NERTransformer)
    assert stage.getOrDefault("fingerprint") == Bundle.load(bundle).fingerprint
    assert stage.getOrDefault("model") == str(bundle)


def test_a_bundle_changed_after_saving_is_a_clear_error(spark: SparkSession, bundle: Path, tmp_path: Path) -> None:
    PipelineModel(stages=[NERTransformer(model=str(bundle))]).save(str(tmp_path / "pipeline"))
    before = Bundle.load(bundle).fingerprint
    manifest = Manifest.read(bundle / "manifest.json")
    manifest.__class__(**{**manifest.__dict__, "calibration": Calibration(2.0, "a test")}).write(bundle)
    after = Bundle.load(bundle).fingerprint
    assert after != before
    with pytest.raises(
        BundleChanged, match=f"runs model {bundle} of fingerprint {before}, but that bundle is now {after}"
    ):
        PipelineModel.load(str(tmp_path / "pipeline"))


def test_a_stage_checks_its_bundle_when_it_runs(spark: SparkSession, bundle: Path) -> None:
    stage = NERTransformer(model=str(bundle), fingerprint="0123456789abcdef")
    with pytest.raises(BundleChanged, match="fingerprint 0123456789abcdef"):
        stage.transform(texts_frame(spark).withColumnRenamed("raw", "text"))


def entities_from_tags(tokens: list[dict[str, Any]], tags: list[str]) -> list[tuple[int, int, str]]:
    """IOB2 tags back to (start, end, label) spans over the words' offsets."""
    spans: list[list[Any]] = []
    for token, tag in zip(tokens, tags, strict=True):
        if tag.startswith("B-") or (tag.startswith("I-") and (not spans or spans[-1][2] != tag[2:])):
            spans.append([token["start"], token["end"], tag[2:]])
        elif tag.startswith("I-"):
            spans[-1][1] = token["end"]
    return [(s, e, label) for s, e, label in spans]


@pytest.mark.parametrize("schema", ["nertron", "sparknlp"])
def test_the_token_columns_agree_with_the_entities(spark: SparkSession, bundle: Path, schema: str) -> None:
    stage = NERTransformer(inputCol="raw", model=str(bundle), schema=schema, tokensCol="token", tagsCol="ner")
    for row in rows(stage.transform(texts_frame(spark))):
        if row["raw"] is None:
            assert row["token"] is None and row["ner"] is None and row["entities"] is None
            continue
        if schema == "nertron":
            tokens, tags = row["token"], row["ner"]
            assert [t["text"] for t in tokens] == [row["raw"][t["start"] : t["end"]] for t in tokens]
            expected = [(e["start"], e["end"], e["label"]) for e in row["entities"]]
        else:
            assert [t["annotatorType"] for t in row["token"]] == ["token"] * len(row["token"])
            assert [n["annotatorType"] for n in row["ner"]] == ["named_entity"] * len(row["ner"])
            assert [n["metadata"]["word"] for n in row["ner"]] == [t["result"] for t in row["token"]]
            tokens = [{"start": t["begin"], "end": t["end"] + 1} for t in row["token"]]  # UTF-16, end inclusive
            tags = [n["result"] for n in row["ner"]]
            expected = [(c["begin"], c["end"] + 1, c["metadata"]["entity"]) for c in row["entities"]]
        assert entities_from_tags(tokens, tags) == expected
        assert len(tags) == len(tokens) and all(t == "O" or t[:2] in ("B-", "I-") for t in tags)
    assert any(row["entities"] for row in rows(stage.transform(texts_frame(spark))))


def assert_refused_on_the_driver(spark: SparkSession, action: Any, error: type[Exception], match: str) -> None:
    context = spark.sparkContext
    context.setJobGroup("refused", "params that must be refused before any task")
    try:
        with pytest.raises(error, match=match):
            action()
        assert context.statusTracker().getJobIdsForGroup("refused") == []
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]


def test_bad_params_are_refused_on_the_driver(spark: SparkSession, bundle: Path) -> None:
    df = texts_frame(spark)
    assert_refused_on_the_driver(spark, lambda: NERTransformer(schema="spacy"), ValueError, "schema must be one of")
    assert_refused_on_the_driver(spark, lambda: NERTransformer(batchSize="many"), TypeError, "batchSize")
    assert_refused_on_the_driver(
        spark, lambda: NERTransformer(minScore=2.0), ValueError, r"min_score must be in \[0, 1\]"
    )
    assert_refused_on_the_driver(spark, lambda: NERTransformer(tokensCol="t"), ValueError, "tokensCol and tagsCol")
    missing = NERTransformer(model=str(bundle), inputCol="body")
    assert_refused_on_the_driver(spark, lambda: missing.transform(df), ValueError, "text_col 'body' is not a column")
    taken = NERTransformer(model=str(bundle), inputCol="raw", outputCol="id")
    assert_refused_on_the_driver(spark, lambda: taken.transform(df), ValueError, "column 'id' already exists")
    wrong_type = NERTransformer(model=str(bundle), inputCol="id")
    assert_refused_on_the_driver(spark, lambda: wrong_type.transform(df), TypeError, "must be a string")


def test_the_sql_function_equals_annotate(spark: SparkSession, bundle: Path) -> None:
    df = texts_frame(spark).withColumnRenamed("raw", "text")
    df.createOrReplaceTempView("docs")
    register_sql_function(spark, model=str(bundle))
    got = rows(spark.sql("SELECT id, text, nertron_entities(text) AS entities FROM docs"))
    assert got == rows(annotate(df, "text", model=str(bundle)))


def test_the_migration_example(spark: SparkSession, default_int8: Path) -> None:
    """docs/spark.md, "Migrating from Spark NLP": the nertron side of the side-by-side, and the output it shows."""
    example = spark.createDataFrame([["My name is John!"], ["Angela Merkel met Emmanuel Macron in Paris."]]).toDF(
        "text"
    )
    nertron_stage = NERTransformer(
        model=str(default_int8), inputCol="text", schema="sparknlp", tokensCol="token", tagsCol="ner"
    )
    pipeline = Pipeline(stages=[nertron_stage])
    result = pipeline.fit(example).transform(example)
    lines = []
    for row in result.select("token", "ner", "entities").collect():
        lines.append("token:    " + ", ".join(t.result for t in row.token))
        lines.append("ner:      " + ", ".join(n.result for n in row.ner))
        lines.append("entities: " + ", ".join(f"{c.result} ({c.metadata['entity']})" for c in row.entities))
    print("\n".join(lines))
    page = (Path(__file__).parents[1] / "docs" / "spark.md").read_text()
    assert "\n".join(lines) in page


def test_a_stage_set_to_another_bundle_runs_and_saves_that_one(
    spark: SparkSession, bundle: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    PipelineModel(stages=[NERTransformer(model=str(tiny_bundle))]).save(str(tmp_path / "first"))
    stage = PipelineModel.load(str(tmp_path / "first")).stages[0]
    assert isinstance(stage, NERTransformer)
    manifest = Manifest.read(bundle / "manifest.json")
    manifest.__class__(**{**manifest.__dict__, "calibration": Calibration(3.0, "a test")}).write(bundle)
    stage.setParams(model=str(bundle))  # another bundle: its own fingerprint from now on
    df = texts_frame(spark).withColumnRenamed("raw", "text")
    assert rows(stage.transform(df)) == rows(annotate(df, "text", model=str(bundle)))
    PipelineModel(stages=[stage]).save(str(tmp_path / "second"))
    loaded = PipelineModel.load(str(tmp_path / "second")).stages[0]
    assert loaded.getOrDefault("fingerprint") == Bundle.load(bundle).fingerprint != Bundle.load(tiny_bundle).fingerprint
