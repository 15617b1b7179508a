"""Named-entity recognition over Spark DataFrames (``pip install "nertron[spark]"``).

>>> from nertron.integrations.spark import annotate
>>> annotated = annotate(df, "text")                      # doctest: +SKIP
>>> annotated.select("id", "entities").show()             # doctest: +SKIP

In a Spark ML pipeline, the same as a stage that is saved and loaded with it (``NERTransformer``); from
Spark SQL, ``register_sql_function(spark)`` then ``SELECT nertron_entities(text) FROM ...``.

Rows travel to the Python workers as Arrow record batches (``mapInArrow``) and come back with an added
entities column; each worker process builds one ``NER`` engine for a given configuration and keeps it for
every later task and batch (Spark reuses Python workers by default). The engine runs the model in-process
with onnxruntime, or on a Triton server that all executors share (``backend=Triton(url)``). A bundle that
exists on the driver only is shipped to the executors with the job (``shipping``); a nertron error on an
executor is raised on the driver in one line by ``job_errors()``.

Two output schemas (``schemas``): ``"nertron"`` (the fields of :class:`nertron.Entity`, code-point
offsets) and ``"sparknlp"`` (Spark NLP's chunk annotations, UTF-16 offsets), so that pipelines that read
the ``xlm_roberta_base_token_classifier_conll03`` chunks can switch.

A null text gives a null entities value; an empty text gives an empty array.
"""

from nertron.extras import require

require("pyarrow", "nertron.integrations.spark")
require("pyspark", "nertron.integrations.spark")

from nertron.integrations.spark.annotate import (  # noqa: E402
    MAX_CHARS,
    ON_ERROR,
    AnnotateJob,
    BadRow,
    OnError,
    annotate,
    annotate_batches,
)
from nertron.integrations.spark.engines import engine, engine_builds, executor_config  # noqa: E402
from nertron.integrations.spark.failures import executor_error, job_errors  # noqa: E402
from nertron.integrations.spark.schemas import SCHEMAS, Schema, entities_column, entity_schema  # noqa: E402
from nertron.integrations.spark.shipping import BundleNotShipped, ShippedBundle, ship_bundle  # noqa: E402
from nertron.integrations.spark.sql import register_sql_function  # noqa: E402
from nertron.integrations.spark.stage import BundleChanged, NERTransformer  # noqa: E402
from nertron.integrations.spark.standalone import ClusterError, StandaloneCluster  # noqa: E402

__all__ = [
    "MAX_CHARS",
    "ON_ERROR",
    "SCHEMAS",
    "AnnotateJob",
    "BadRow",
    "BundleChanged",
    "BundleNotShipped",
    "ClusterError",
    "NERTransformer",
    "OnError",
    "Schema",
    "ShippedBundle",
    "StandaloneCluster",
    "annotate",
    "annotate_batches",
    "engine",
    "engine_builds",
    "entities_column",
    "entity_schema",
    "executor_config",
    "executor_error",
    "job_errors",
    "register_sql_function",
    "ship_bundle",
]
