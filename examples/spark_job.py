"""A Spark job for ``spark-submit``: Parquet (or JSON lines) with a text column in, Parquet with entities out.

    spark-submit --master spark://HOST:7077 --conf spark.executor.cores=1 \\
        examples/spark_job.py INPUT OUTPUT [--model BUNDLE] [--schema sparknlp] [--on-error column]

The master, executor cores and memory come from spark-submit as usual; ``--model`` is a bundle directory
on the machine that submits (it is shipped to the executors); without it, the embedded default model.
A nertron error on an executor (a bad row under ``--on-error fail``, a bundle that did not arrive intact)
ends the job with exit status 2 and one line on stderr, ``nertron: <what, where, why>``. See docs/spark.md.
"""

from __future__ import annotations

import argparse
import sys

from nertron.errors import NertronError
from nertron.integrations.spark import annotate, job_errors
from pyspark.sql import SparkSession


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="Parquet files or a folder of them (.json/.jsonl: JSON lines)")
    parser.add_argument("output", help="folder for the Parquet output (must not exist)")
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--id-col", default=None, help="a column that names a row in error messages")
    parser.add_argument("--model", default=None, help="bundle directory (default: the embedded model)")
    parser.add_argument("--schema", default="nertron", choices=["nertron", "sparknlp"])
    parser.add_argument("--on-error", default="fail", choices=["fail", "column"])
    args = parser.parse_args()

    spark = SparkSession.builder.appName("nertron").getOrCreate()
    # Spark logs each failed task attempt (retried anyway) and a failed job with the executors' tracebacks;
    # the one line below says what failed. Lower this to "ERROR" or "WARN" to see Spark's own account.
    spark.sparkContext.setLogLevel("FATAL")
    try:
        reader = spark.read.json if args.input.endswith((".json", ".jsonl")) else spark.read.parquet
        df = reader(args.input)
        with job_errors():
            annotated = annotate(
                df, args.text_col, model=args.model, schema=args.schema, on_error=args.on_error, id_col=args.id_col
            )
            annotated.write.parquet(args.output)
    except NertronError as error:
        print(f"nertron: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
