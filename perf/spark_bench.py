"""nertron.integrations.spark throughput with 1 vs 2 local executor cores, beside the SDK in-process.

    python perf/spark_bench.py --name cpu-2core [--sentences 3000] [--repeats 3] [--precision int8]

CoNLL-2003 test sentences (raw text joined from the gold words) in a DataFrame of 8 partitions are
annotated by ``nertron.integrations.spark.annotate`` on ``local[1]`` (one task at a time, onnxruntime with 1 thread),
``local[1]`` with 2 onnxruntime threads, and ``local[2]`` (two tasks at once, 1 thread each); the output
is written to Spark's ``noop`` sink so that every row is computed and nothing is collected. Each
configuration runs in its own Spark session; a warm-up job first builds the engines in the Python workers,
so the timings are steady-state throughput. Configurations are interleaved over ``--repeats`` rounds and
the median is reported. Writes ``perf/results/<name>-spark.{md,json}`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import as_text, load_sentences, machine  # noqa: E402
from nertron import NER  # noqa: E402
from nertron.backends import OnnxRuntime  # noqa: E402
from nertron.integrations.spark import annotate  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402

CONFIGS = {  # name: (Spark master, onnxruntime threads per engine)
    "local[1], 1 thread": ("local[1]", 1),
    "local[1], 2 threads": ("local[1]", 2),
    "local[2], 1 thread each": ("local[2]", 1),
}
PARTITIONS = 8


def spark_seconds(master: str, threads: int, texts: list[str], bundle: Path) -> float:
    """Seconds to annotate ``texts`` on a fresh session with ``master`` (after a warm-up job)."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master)
        .appName("nertron-spark-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string")
        df = df.repartition(PARTITIONS).cache()
        df.count()
        engine = OnnxRuntime(threads=threads)
        warm = annotate(df.limit(64).repartition(PARTITIONS), "text", model=bundle, backend=engine)
        warm.write.format("noop").mode("overwrite").save()
        started = time.perf_counter()
        annotate(df, "text", model=bundle, backend=engine).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - started
    finally:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="cpu-2core")
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    args = parser.parse_args()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    bundle = default_bundle(args.precision)
    sentences = load_sentences(args.sentences)
    texts = [as_text(words)[0] for words, _ in sentences]
    words = sum(len(w) for w, _ in sentences)

    sdk = NER(bundle, backend=OnnxRuntime(threads=2))
    sdk.batch(texts[:64])
    times: dict[str, list[float]] = {name: [] for name in ["SDK in-process, 2 threads", *CONFIGS]}
    for round_index in range(args.repeats):
        started = time.perf_counter()
        sdk.batch(texts)
        times["SDK in-process, 2 threads"].append(time.perf_counter() - started)
        for name, (master, threads) in CONFIGS.items():
            times[name].append(spark_seconds(master, threads, texts, bundle))
        print(f"round {round_index + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()))

    base = statistics.median(times["local[1], 1 thread"])
    rows = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows.append(
            {
                "system": name,
                "seconds": median,
                "sentences_per_s": len(texts) / median,
                "words_per_s": words / median,
                "vs_local1": base / median,
                "runs": seconds,
            }
        )
    result = {
        "machine": machine(),
        "command": " ".join(["python", "perf/spark_bench.py", *sys.argv[1:]]),
        "precision": args.precision,
        "sentences": len(texts),
        "words": words,
        "partitions": PARTITIONS,
        "rows": rows,
    }
    lines = [
        f"# nertron.integrations.spark: 1 vs 2 local executor cores ({args.precision})",
        "",
        f"`{result['command']}` on {result['machine']}; {len(texts)} CoNLL-2003 test sentences ({words} words),",
        f"{PARTITIONS} partitions, noop sink, median of {args.repeats} interleaved rounds after a warm-up job.",
        "",
        "| system | s | sentences/s | words/s | vs local[1], 1 thread |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['system']} | {r['seconds']:.2f} | {r['sentences_per_s']:.0f} | {r['words_per_s']:.0f} "
            f"| {r['vs_local1']:.2f}x |"
            for r in rows
        ),
    ]
    out = ROOT / "perf" / "results" / f"{args.name}-spark"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
