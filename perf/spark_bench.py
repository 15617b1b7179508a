"""nertron.integrations.spark at scale, on a real standalone cluster (a master and 1-core workers as
separate processes on this machine, ``nertron.integrations.spark.StandaloneCluster``).

    python perf/spark_bench.py --name cpu-2core [--docs 1000000] [--repeats 1] [--faults] [--triton]

1. ``--docs`` documents generated deterministically (seed 0) from CoNLL-2003 train: 80% single sentences,
   20% paragraphs of 3-8 consecutive sentences of one article; ``id`` (long) and ``text``, 64 Parquet
   files under ``artifacts/spark-bench/docs-<N>/`` (reused when present).
2. Parquet in, ``annotate``, Parquet out, for each output schema (``nertron``, ``sparknlp``) with one and
   with two workers (a two-worker cluster; the one-worker runs are capped by ``spark.cores.max=1``),
   interleaved over ``--repeats`` rounds, each after a warm-up job in its session. Printed: seconds,
   documents/s, the 2-vs-1 scaling, and each worker's peak memory (RSS of its executor JVM, and of its
   Python processes together (PSS) and the largest alone, sampled every second; ``spark.executor.memory``
   1g).
   Every output is verified in Spark, nothing collected: row count, distinct ids, no input id missing.
3. ``--faults``: the two-worker run with a worker's JVM SIGKILLed once a third of the tasks are done, and
   with one Python worker SIGKILLed: seconds, verification, and the output joined with the fault-free
   run's: entities equal, largest score difference (the static int8 model promises <= 1e-5).
4. ``--triton``: the two-worker run with ``backend=Triton(url)`` against a Triton server of the same model
   (token ids, dynamic batching), and with the server killed once a third of the tasks are done (the
   executors fall back to in-process onnxruntime); verified and compared like the faults.

Writes ``perf/results/<name>-spark-<docs/1000>k.{md,json}`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from bench import machine  # noqa: E402
from nertron.backends import Triton  # noqa: E402
from nertron.integrations.spark import Schema, StandaloneCluster, annotate  # noqa: E402
from nertron.io.conll import read_conll  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402
from nertron.serving.processes import command_line  # noqa: E402

TRAIN = ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"
WORK = ROOT / "artifacts" / "spark-bench"
FILES = 64
SCHEMAS: tuple[Schema, ...] = ("nertron", "sparknlp")


def generate(docs: int) -> Path:
    """``docs`` documents as FILES Parquet files (deterministic; reused when already written)."""
    out = WORK / f"docs-{docs}"
    if (out / "_DONE").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    articles = [[" ".join(s.words) for s in d.sentences] for d in read_conll(TRAIN)]
    articles = [a for a in articles if len(a) >= 8]
    rng = random.Random(0)
    per_file = -(-docs // FILES)
    for index in range(FILES):
        ids = range(index * per_file, min(docs, (index + 1) * per_file))
        texts = []
        for _ in ids:
            article = rng.choice(articles)
            length = 1 if rng.random() < 0.8 else rng.randint(3, 8)
            start = rng.randrange(len(article) - length + 1)
            texts.append(" ".join(article[start : start + length]))
        table = pa.table({"id": pa.array(list(ids), pa.int64()), "text": pa.array(texts, pa.string())})
        pq.write_table(table, out / f"part-{index:03d}.parquet")
    (out / "_DONE").write_text("")
    return out


class MemorySampler:
    """Peak memory of each worker's executor JVM (RSS, the largest one) and of its Python processes (PSS:
    the daemon and its forked workers together, and the largest alone), sampled every ``interval`` s."""

    def __init__(self, cluster: StandaloneCluster, workers: int, interval: float = 1.0) -> None:
        self.cluster, self.workers, self.interval = cluster, workers, interval
        self.peaks: dict[int, dict[str, float]] = {
            i: {"jvm": 0.0, "python": 0.0, "python_max": 0.0} for i in range(workers)
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for index in range(self.workers):
                try:
                    worker = self.cluster.worker_pid(index)
                    processes = [p for p in self.cluster.worker_processes(index) if p != worker]
                except (KeyError, OSError):
                    continue
                jvm = max(
                    (_memory_mib(p, "Rss") for p in processes if "CoarseGrainedExecutorBackend" in command_line(p)),
                    default=0.0,
                )
                python = [_memory_mib(p, "Pss") for p in processes if "-m pyspark.daemon" in command_line(p)]
                peak = self.peaks[index]
                peak["jvm"] = max(peak["jvm"], jvm)
                peak["python"] = max(peak["python"], sum(python))
                peak["python_max"] = max(peak["python_max"], max(python, default=0.0))


def _memory_mib(pid: int, field: str) -> float:
    """``Rss`` or ``Pss`` (shared pages split between their processes) of ``pid``, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def session(cluster: StandaloneCluster, cores: int, source: Path) -> Iterator[Any]:
    largest = max(p.stat().st_size for p in source.glob("*.parquet"))
    conf = {
        "spark.cores.max": str(cores),
        "spark.task.maxFailures": "8",
        "spark.sql.files.maxPartitionBytes": str(largest + 1),  # one partition per file
        "spark.sql.files.openCostInBytes": str(largest + 1),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
    }
    with cluster.session(f"nertron-bench-{cores}", **conf) as spark:
        yield spark


def run(spark: Any, source: Path, out: Path, schema: Schema, **options: Any) -> float:
    """Seconds to annotate ``source`` into ``out`` (Parquet)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    annotate(spark.read.parquet(str(source)), "text", schema=schema, **options).write.parquet(str(out))
    return time.perf_counter() - started


def warm_up(spark: Any, source: Path, **options: Any) -> None:
    """A small job first, so that every executor's Python worker has built its engine."""
    df = spark.read.parquet(str(source)).limit(400).repartition(8)
    annotate(df, "text", **options).write.format("noop").mode("overwrite").save()


def verify(spark: Any, source: Path, out: Path, docs: int) -> dict[str, Any]:
    """Counted in Spark: rows, distinct ids, input ids missing from the output."""
    written = spark.read.parquet(str(out))
    rows = written.count()
    distinct = written.select("id").distinct().count()
    missing = spark.read.parquet(str(source)).join(written, "id", "left_anti").count()
    ok = rows == distinct == docs and missing == 0
    return {"rows": rows, "distinct_ids": distinct, "missing_ids": missing, "ok": ok}


def compare(spark: Any, reference: Path, out: Path, schema: Schema) -> dict[str, Any]:
    """The output of ``out`` against ``reference``, joined on id in Spark: rows whose entities differ (spans,
    labels) and the largest score difference."""
    from pyspark.sql import functions as F

    if schema == "nertron":
        spans = "transform(entities, e -> struct(e.text, e.label, e.start, e.end))"
        scores = "transform(entities, e -> cast(e.score as double))"
    else:
        spans = "transform(entities, e -> struct(e.begin, e.end, e.result, e.metadata['entity']))"
        scores = "transform(entities, e -> cast(e.metadata['confidence'] as double))"

    def prepared(path: Path, tag: str) -> Any:
        df = spark.read.parquet(str(path))
        return df.select("id", F.expr(spans).alias(f"spans_{tag}"), F.expr(scores).alias(f"s_{tag}"))

    joined = prepared(reference, "a").join(prepared(out, "b"), "id")
    differ = joined.filter(F.col("spans_a") != F.col("spans_b")).count()
    largest = (
        joined.select(
            F.expr(
                "aggregate(zip_with(s_a, s_b, (x, y) -> abs(x - y)), cast(0 as double), (m, d) -> greatest(m, d))"
            ).alias("d")
        )
        .agg(F.max("d"))
        .first()[0]
    )
    return {"rows_differing": differ, "max_score_diff": float(largest or 0.0)}


def fault_run(
    spark: Any,
    cluster: StandaloneCluster,
    source: Path,
    out: Path,
    schema: Schema,
    kill: Callable[[], None],
    **options: Any,
) -> tuple[float, int, int]:
    """``run`` with ``kill()`` called once a third of the tasks are done; (seconds, tasks done at the kill, tasks)."""
    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["seconds"] = run(spark, source, out, schema, **options)
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=job)
    thread.start()
    tracker = spark.sparkContext.statusTracker()
    done_at = total = -1
    deadline = time.monotonic() + 3600
    while thread.is_alive() and time.monotonic() < deadline:
        stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
        stages = [s for s in stages if s is not None and s.numTasks >= FILES]
        if stages and stages[0].numCompletedTasks >= stages[0].numTasks // 3:
            done_at, total = stages[0].numCompletedTasks, stages[0].numTasks
            kill()
            break
        time.sleep(0.05)
    thread.join()
    if "error" in result:
        raise result["error"]
    if done_at < 0:
        raise SystemExit("the job finished before the fault could be injected: use more --docs")
    return result["seconds"], done_at, total


def schema_of(name: str) -> Schema:
    """``name`` as an output schema of ``annotate``; ValueError when it is none of ``SCHEMAS``."""
    for schema in SCHEMAS:
        if name == schema:
            return schema
    raise ValueError(f"--schemas: {name!r} is not one of {', '.join(SCHEMAS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="cpu-2core")
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--schemas", default=",".join(SCHEMAS))
    parser.add_argument("--workers", default="1,2", help="worker counts to time, e.g. 2 alone for the largest runs")
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--triton", action="store_true")
    args = parser.parse_args()
    try:
        schemas = [schema_of(name) for name in args.schemas.split(",")]
    except ValueError as error:
        parser.error(str(error))
    counts = [int(n) for n in args.workers.split(",")]
    if (args.faults or args.triton) and 2 not in counts:
        parser.error("--faults and --triton compare with the two-worker run: keep 2 in --workers")
    started = time.perf_counter()
    source = generate(args.docs)
    megabytes = sum(p.stat().st_size for p in source.glob("*.parquet")) / 2**20
    print(f"{args.docs:,} documents in {source} ({megabytes:.0f} MB)")
    bundle = default_bundle()
    times: dict[tuple[str, int], list[float]] = {}
    memory: dict[tuple[str, int], Any] = {}
    checks: dict[str, Any] = {}
    with StandaloneCluster(workers=2, cores=1, memory="3g") as cluster:
        for round_index in range(args.repeats):
            for schema in schemas:
                for workers in counts:
                    with session(cluster, workers, source) as spark:
                        warm_up(spark, source)
                        out = WORK / f"out-{schema}-{workers}"
                        with MemorySampler(cluster, 2) as sampler:
                            seconds = run(spark, source, out, schema)
                        times.setdefault((schema, workers), []).append(seconds)
                        memory[(schema, workers)] = sampler.peaks
                        checks[f"{schema}, {workers} worker(s)"] = verify(spark, source, out, args.docs)
                    print(
                        f"round {round_index + 1}: {schema}, {workers} worker(s): {seconds:.1f} s, "
                        f"{args.docs / seconds:.0f} docs/s, {checks[f'{schema}, {workers} worker(s)']}",
                        flush=True,
                    )
        faults: list[dict[str, Any]] = []
        if args.faults or args.triton:
            schema = schemas[0]
            reference = WORK / f"out-{schema}-2"  # the fault-free two-worker run's output
            scenarios: list[tuple[str, Callable[[], None], dict[str, Any], Callable[[], None]]] = []
            if args.faults:
                scenarios.append(
                    ("worker SIGKILLed", lambda: cluster.kill_worker(1), {}, lambda: cluster.start_worker(1))
                )

                def kill_python() -> None:
                    os.kill(cluster.python_workers(0)[0], signal.SIGKILL)

                scenarios.append(("Python worker SIGKILLed", kill_python, {}, lambda: None))
            for name, kill, options, restore in scenarios:
                with session(cluster, 2, source) as spark:
                    warm_up(spark, source)
                    out = WORK / f"out-fault-{len(faults)}"
                    seconds, done_at, total = fault_run(spark, cluster, source, out, schema, kill, **options)
                    restore()
                    faults.append(
                        {
                            "run": name,
                            "seconds": seconds,
                            "killed_after_tasks": f"{done_at}/{total}",
                            **verify(spark, source, out, args.docs),
                            **compare(spark, reference, out, schema),
                        }
                    )
                print(faults[-1], flush=True)
            if args.triton:
                faults.extend(triton_runs(cluster, source, bundle, schema, reference, args.docs))
    rows = []
    for schema in schemas:
        one = statistics.median(times[(schema, 1)]) if 1 in counts else float("nan")
        for workers in counts:
            seconds = statistics.median(times[(schema, workers)])
            peaks = memory[(schema, workers)]
            rows.append(
                {
                    "schema": schema,
                    "workers": workers,
                    "seconds": seconds,
                    "docs_per_s": args.docs / seconds,
                    "scaling": one / seconds,
                    "runs": times[(schema, workers)],
                    "executor_jvm_mib": max(p["jvm"] for p in peaks.values()),
                    "python_mib": max(p["python"] for p in peaks.values()),
                    "python_worker_max_mib": max(p["python_max"] for p in peaks.values()),
                }
            )
    result = {
        "machine": machine(),
        "command": " ".join(["python", "perf/spark_bench.py", *sys.argv[1:]]),
        "docs": args.docs,
        "input_mb": sum(p.stat().st_size for p in source.glob("*.parquet")) / 2**20,
        "rows": rows,
        "checks": checks,
        "faults": faults,
        "total_minutes": (time.perf_counter() - started) / 60,
    }
    lines = report(result, args.repeats)
    out = ROOT / "perf" / "results" / f"{args.name}-spark-{args.docs // 1000}k"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def triton_runs(
    cluster: StandaloneCluster, source: Path, bundle: Path, schema: Schema, reference: Path, docs: int
) -> list[dict[str, Any]]:
    """Two workers sharing one Triton server: alive for the whole job, then killed a third of the way."""
    from nertron.serving.options import ConfigOptions
    from nertron.serving.repository import write_repository
    from nertron.serving.server import TritonServer

    repository = WORK / "triton-repository"
    shutil.rmtree(repository, ignore_errors=True)
    write_repository(bundle, repository, name="nertron", options=ConfigOptions(threads=1))
    found = []
    for killed in (False, True):
        with TritonServer(repository, startup_timeout=120) as server, session(cluster, 2, source) as spark:
            backend = Triton(server.grpc_url)
            warm_up(spark, source, backend=backend)
            out = WORK / f"out-triton-{int(killed)}"
            if killed:
                seconds, done_at, total = fault_run(spark, cluster, source, out, schema, server.kill, backend=backend)
                name, at = "Triton server, killed mid-job (fallback)", f"{done_at}/{total}"
            else:
                seconds, name, at = run(spark, source, out, schema, backend=backend), "Triton server", "-"
            found.append(
                {
                    "run": name,
                    "seconds": seconds,
                    "killed_after_tasks": at,
                    **verify(spark, source, out, docs),
                    **compare(spark, reference, out, schema),
                }
            )
        print(found[-1], flush=True)
    return found


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def report(result: dict[str, Any], repeats: int) -> list[str]:
    docs = result["docs"]
    lines = [
        "# nertron.integrations.spark on a standalone cluster: 1 vs 2 workers (1 core each), int8",
        "",
        f"`{result['command']}` on {result['machine']}; {docs:,} documents ({result['input_mb']:.0f} MB of Parquet,",
        f"{FILES} files), Parquet out; median of {repeats} interleaved round(s) after a warm-up job per session.",
        f"Whole benchmark {result['total_minutes']:.1f} min.",
        "",
        "| schema | workers | s | docs/s | vs 1 worker | executor JVM MiB | Python MiB (all / largest) | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        check = result["checks"][f"{r['schema']}, {r['workers']} worker(s)"]
        lines.append(
            f"| {r['schema']} | {r['workers']} | {r['seconds']:.1f} | {r['docs_per_s']:.0f} | {_ratio(r['scaling'])} "
            f"| {r['executor_jvm_mib']:.0f} | {r['python_mib']:.0f} / {r['python_worker_max_mib']:.0f} "
            f"| {'yes' if check['ok'] else check} ({check['rows']:,} rows, {check['distinct_ids']:,} ids, "
            f"{check['missing_ids']} missing) |"
        )
    if result["faults"]:
        lines += [
            "",
            "Faults (2 workers, first schema), compared with the fault-free 2-worker output joined on id:",
            "",
            "| run | s | killed after tasks | rows / ids / missing ids | rows with other entities | max score diff |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for f in result["faults"]:
            lines.append(
                f"| {f['run']} | {f['seconds']:.1f} | {f['killed_after_tasks']} "
                f"| {f['rows']:,} / {f['distinct_ids']:,} / {f['missing_ids']} "
                f"| {f['rows_differing']} | {f['max_score_diff']:.2g} |"
            )
    return lines


if __name__ == "__main__":
    main()
