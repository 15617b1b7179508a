"""Spark SQL: ``register_sql_function`` makes ``nertron_entities(text)`` callable from SQL, over the same engines
as ``annotate`` (one per Python worker and configuration)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from nertron.errors import MissingExtra
from nertron.integrations.spark.annotate import model_source
from nertron.integrations.spark.engines import engine
from nertron.integrations.spark.schemas import Schema, check_schema, entities_column, entity_schema
from nertron.ner import NERConfig, check_options

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def register_sql_function(
    spark: SparkSession, name: str = "nertron_entities", *, schema: Schema = "nertron", **options: Any
) -> str:
    """Registers the SQL function ``name(text)``: the entities of a string, as ``annotate``'s entities column
    in ``schema`` (a null text gives null). ``options`` are ``NER``'s. A text that cannot be annotated fails
    the query; ``annotate`` and ``NERTransformer`` can put such rows in an error column instead. Returns
    ``name``.

    >>> register_sql_function(spark, model="my-bundle")                                # doctest: +SKIP
    >>> spark.sql("SELECT id, nertron_entities(text) AS entities FROM docs")           # doctest: +SKIP
    """
    try:
        from pyspark.sql.functions import arrow_udf
    except ImportError:
        import pyspark

        raise MissingExtra(
            f"register_sql_function needs pyspark >= 4.1 (its arrow_udf); this is pyspark {pyspark.__version__}: "
            "use annotate() or NERTransformer, or upgrade pyspark"
        ) from None

    check_options(options, "register_sql_function()")
    check_schema(schema)
    config, shipped = model_source(NERConfig(**options), spark.sparkContext)

    def entities(texts: pa.Array) -> pa.Array:
        return entities_column(engine(config, shipped), texts.to_pylist(), schema)

    # entity_schema is an ArrayType; pyspark's overloads name the types one by one
    spark.udf.register(name, arrow_udf(entities, entity_schema(schema)))  # type: ignore[call-overload]
    return name
