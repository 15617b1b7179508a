"""Triton on CPU vs in-process, perf_analyzer style: a concurrency sweep with latency percentiles.

    python perf/triton_bench.py --name cpu-2core [--sentences 1000] [--levels 1,2,4,8,16,32] [--rounds 3]

A real Triton server (the default int8 model's CPU repository) serves two models: ``nertron`` with
dynamic (ragged) batching and ``nertron_nobatch`` without. Each CoNLL-2003 test sentence is one request
(input_ids, attention_mask of one row). At each concurrency level, as many client threads send the
requests through the SDK's gRPC client (``TritonClient``), and through the same SDK in-process
(``OnnxRuntimeBackend``, one shared session). Systems run interleaved, ``--rounds`` times per level: the
tables show medians, and ratios are medians of each round's ratio (the machine's speed drifts between
rounds). At concurrency >= 8 the same is measured a level up, text in and entities out, one text per call:
``NER(url=...)(text)`` vs ``NER()(text)``. The SDK's batched path too: ``NER(url=...).batch`` vs
``NER().batch``. Also writes a perf_analyzer input-data JSON so that NVIDIA's ``perf_analyzer`` can
replay the same requests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import as_text, load_sentences, machine, timed  # noqa: E402
from nertron import NER  # noqa: E402
from nertron.backends import Triton  # noqa: E402
from nertron.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from nertron.backends.triton import TritonClient  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402
from nertron.serving.options import ConfigOptions  # noqa: E402
from nertron.serving.repository import write_repository  # noqa: E402
from nertron.serving.server import TritonServer  # noqa: E402

Request = tuple[np.ndarray, np.ndarray]


def make_requests(ner: NER, sentences: list) -> list[Request]:
    windows = [w for d, (words, _) in enumerate(sentences) for w in ner.encoder.windows(d, words)]
    return [(b.input_ids, b.attention_mask) for b in (ner.encoder.pad([w]) for w in windows)]


def run_level(call: Callable[..., Any], requests: Sequence[tuple], concurrency: int) -> dict:
    """Calls ``call(*request)`` for every request once, from ``concurrency`` threads; throughput, latency
    percentiles and the latencies (s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(requests)))

    def worker() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            call(*requests[index])
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"throughput": len(requests) / wall, **percentiles(latencies), "latencies": latencies}


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)}


def interleaved_rounds(
    systems: dict[str, Callable[..., Any]], requests: Sequence[tuple], level: int, rounds: int
) -> dict:
    """Each system ``rounds`` times, interleaved: median throughput, percentiles of all rounds' latencies,
    and each round's throughputs (for per-round ratios)."""
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, call in systems.items():
            runs[name].append(run_level(call, requests, level))
    return {
        name: {
            "throughput": statistics.median(r["throughput"] for r in rs),
            **percentiles([t for r in rs for t in r["latencies"]]),
            "rounds": [r["throughput"] for r in rs],
        }
        for name, rs in runs.items()
    }


def ratio(results: dict, numerator: str, denominator: str) -> float:
    """The median over rounds of numerator's / denominator's throughput in the same round."""
    pairs = zip(results[numerator]["rounds"], results[denominator]["rounds"], strict=True)
    return statistics.median(a / b for a, b in pairs)


def batching_ceiling(
    backend: OnnxRuntimeBackend, ner: NER, sentences: list, requests: list[Request], rounds: int, size: int = 16
) -> dict[str, float]:
    """The same requests (one window each) in-process as length-sorted batches of ``size`` vs one by one
    (8 threads), interleaved: the most that any batching, Triton's included, can gain on this machine."""
    windows = sorted(
        [w for d, (words, _) in enumerate(sentences) for w in ner.encoder.windows(d, words)],
        key=lambda w: w.input_ids.size,
    )
    padded = [ner.encoder.pad(windows[start : start + size]) for start in range(0, len(windows), size)]
    batches = [(b.input_ids, b.attention_mask) for b in padded]
    list(backend.map(batches))  # warm-up
    batched, single = [], []
    for _ in range(rounds):
        batched.append(len(windows) / timed(lambda: list(backend.map(batches))))
        single.append(run_level(backend, requests, 8)["throughput"])
    return {
        "batched_rows_per_s": statistics.median(batched),
        "single_rows_per_s": statistics.median(single),
        "ratio": statistics.median(b / s for b, s in zip(batched, single, strict=True)),
    }


def perf_analyzer_input(requests: list[Request], path: Path) -> None:
    """perf_analyzer's --input-data format: one entry per request, explicit shapes (batch dim excluded)."""
    data = [
        {
            "input_ids": {"content": ids[0].tolist(), "shape": [ids.shape[1]]},
            "attention_mask": {"content": mask[0].tolist(), "shape": [mask.shape[1]]},
        }
        for ids, mask in requests
    ]
    path.write_text(json.dumps({"data": data}))


def statistics_of(url: str, model: str) -> tuple[int, int]:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model).model_stats[0]
    return int(stats.inference_count), int(stats.execution_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="local")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--levels", default="1,2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the batched SDK comparison")
    defaults = ConfigOptions()
    parser.add_argument("--queue-delay-us", type=int, default=defaults.max_queue_delay_us, help="max_queue_delay")
    parser.add_argument("--instances", type=int, default=defaults.instances, help="model instances (both models)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per instance (default: onnxruntime's)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    sentences = load_sentences(args.sentences)
    bundle = default_bundle()
    local_ner = NER(bundle)
    requests = make_requests(local_ner, sentences)
    out = ROOT / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    perf_analyzer_input(requests, out / f"{args.name}-perf-analyzer-input.json")

    results: dict[str, Any] = {
        "command": "python perf/triton_bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "levels": {},
    }
    with tempfile.TemporaryDirectory() as repository:
        served = {"instances": args.instances, "threads": args.threads}
        options = ConfigOptions(max_queue_delay_us=args.queue_delay_us, **served)
        write_repository(bundle, repository, link=True, options=options)
        write_repository(
            bundle, repository, name="nertron_nobatch", options=ConfigOptions(dynamic_batching=False, **served)
        )
        with TritonServer(repository) as server:
            in_process = OnnxRuntimeBackend(local_ner.bundle.model_path)
            batching = TritonClient(Triton(server.grpc_url, max_in_flight=64, fallback=None))
            unbatched = TritonClient(Triton(server.grpc_url, model="nertron_nobatch", max_in_flight=64, fallback=None))
            systems = {"in-process": in_process, "triton, dynamic batching": batching, "triton, no batching": unbatched}
            for call in systems.values():  # warm-up
                run_level(call, requests[:32], 4)
            results["batching_ceiling"] = batching_ceiling(in_process, local_ner, sentences, requests, args.rounds)
            before = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
            for level in levels:
                results["levels"][level] = interleaved_rounds(systems, requests, level, args.rounds)
                print(level, {k: round(v["throughput"]) for k, v in results["levels"][level].items()}, flush=True)
            after = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
            results["server"] = {
                m: {"inferences": after[m][0] - before[m][0], "executions": after[m][1] - before[m][1]} for m in after
            }
            texts = [as_text(words)[0] for words, _ in sentences]
            served_ner = NER(bundle, backend=Triton(server.grpc_url, max_in_flight=8, fallback=None))
            sdk_systems = {"SDK in-process": local_ner, "SDK via Triton": served_ner}
            results["sdk_levels"] = {}
            for level in (level for level in levels if level >= 8):
                text_requests = [(text,) for text in texts]
                results["sdk_levels"][level] = interleaved_rounds(sdk_systems, text_requests, level, args.rounds)
                print("sdk", level, {k: round(v["throughput"]) for k, v in results["sdk_levels"][level].items()})
            runs: dict[str, list[float]] = {"in-process NER.batch": [], "Triton NER(url).batch": []}
            for _ in range(args.repeats):
                for name, ner in (("in-process NER.batch", local_ner), ("Triton NER(url).batch", served_ner)):
                    started = time.perf_counter()
                    ner.batch(texts)
                    runs[name].append(time.perf_counter() - started)
            results["sdk_batch_sentences_per_s"] = {k: len(texts) / statistics.median(v) for k, v in runs.items()}
            batching.close()
            unbatched.close()
    (out / f"{args.name}-triton.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(args.name, results, len(requests))
    (out / f"{args.name}-triton.md").write_text(text)
    print(text)


def report(name: str, results: dict[str, Any], requests: int) -> str:
    lines = [
        f"# nertron Triton benchmark `{name}`",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}  ",
        f"Date: {results['date']}",
        "",
        f"{requests} single-sentence requests per level and system, systems interleaved; medians of the rounds "
        "(requests/s; latency ms over all rounds).",
        "",
        *latency_table(results["levels"]),
    ]
    server = results["server"]
    lines += [
        "",
        "Server statistics over the sweep: "
        + "; ".join(f"`{m}` {s['inferences']} inferences in {s['executions']} executions" for m, s in server.items()),
        "",
        "The SDK a level up, text in and entities out, one text per call (`NER(url=...)(text)` vs `NER()(text)`):",
        "",
        *latency_table(results["sdk_levels"]),
        "",
    ]
    sdk = results["sdk_batch_sentences_per_s"]
    lines.append(
        "SDK batched path on the same sentences (sentences/s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sdk.items())
        + f"; Triton / in-process = {sdk['Triton NER(url).batch'] / sdk['in-process NER.batch']:.2f}",
    )
    ceiling = results["batching_ceiling"]
    lines += [
        "",
        f"Batching's ceiling here: the same requests in-process as length-sorted batches of 16 "
        f"{ceiling['batched_rows_per_s']:.0f} rows/s vs one by one from 8 threads {ceiling['single_rows_per_s']:.0f} "
        f"(median ratio {ceiling['ratio']:.2f}x).",
        "",
        "Ratios (medians of each round's ratio):",
    ]
    for level, systems in results["levels"].items():
        if int(level) >= 8:
            line = (
                f"- concurrency {level}: Triton with batching = "
                f"{ratio(systems, 'triton, dynamic batching', 'in-process'):.2f}x in-process, "
                f"{ratio(systems, 'triton, dynamic batching', 'triton, no batching'):.2f}x no batching"
            )
            sdk_level = results["sdk_levels"].get(level)
            if sdk_level:
                line += f"; SDK text in, entities out: {ratio(sdk_level, 'SDK via Triton', 'SDK in-process'):.2f}x"
            lines.append(line)
    return "\n".join(lines) + "\n"


def latency_table(levels: dict[Any, dict[str, dict]]) -> list[str]:
    lines = ["| concurrency | system | requests/s | p50 | p90 | p95 | p99 |", "|---|---|---|---|---|---|---|"]
    for level, systems in levels.items():
        for system, r in systems.items():
            lines.append(
                f"| {level} | {system} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
            )
    return lines


if __name__ == "__main__":
    main()
