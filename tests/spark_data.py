"""Inputs shared by the Spark tests: CoNLL-2003 dev sentences as texts, and a DataFrame of (id, text)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nertron.io.conll import read_conll

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "dev.txt"


def dev_texts(limit: int) -> list[str]:
    """The first ``limit`` dev sentences, words joined by spaces."""
    return [" ".join(s.words) for d in read_conll(DEV) for s in d.sentences][:limit]


def frame(spark: SparkSession, texts: list[str | None], partitions: int = 2) -> DataFrame:
    """``texts`` as a DataFrame ``id long, text string`` (ids in input order) of ``partitions`` partitions."""
    return spark.createDataFrame(list(enumerate(texts)), "id long, text string").repartition(partitions)
