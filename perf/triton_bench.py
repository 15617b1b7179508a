"""Triton on CPU vs in-process, perf_analyzer style: a concurrency sweep with latency percentiles.

    python perf/triton_bench.py --name cpu-2core [--sentences 400] [--levels 1,2,4,8,16,32]

A real Triton server (the default int8 model's CPU repository) serves two models: ``nertron`` with
dynamic (ragged) batching and ``nertron_nobatch`` without. Each CoNLL-2003 test sentence is one request
(input_ids, attention_mask of one row). At each concurrency level, as many client threads send the
requests through the SDK's gRPC client (``TritonBackend``), and through the same SDK in-process
(``OnnxRuntimeBackend``, one shared session); systems interleaved per level. The SDK's batched path is
measured too: ``NER(url=...).batch`` vs ``NER().batch`` on the same sentences. Also writes a perf_analyzer
input-data JSON (``--input-data``) so that NVIDIA's ``perf_analyzer`` can replay the same requests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import as_text, load_sentences, timed  # noqa: E402
from nertron import NER  # noqa: E402
from nertron.default_model import default_bundle  # noqa: E402
from nertron.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from nertron.repository import ConfigOptions, write_repository  # noqa: E402
from nertron.server import TritonServer  # noqa: E402
from nertron.triton_backend import TritonBackend  # noqa: E402

Request = tuple[np.ndarray, np.ndarray]


def make_requests(ner: NER, sentences: list) -> list[Request]:
    windows = ner.encoder.windows([words for words, _ in sentences])
    return [(b.input_ids, b.attention_mask) for b in (ner.encoder.pad([w]) for w in windows)]


def run_level(call: Callable[[np.ndarray, np.ndarray], Any], requests: list[Request], concurrency: int) -> dict:
    """Sends every request once from ``concurrency`` threads; throughput and latency percentiles."""
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
    ms = np.array(latencies) * 1000
    return {
        "throughput": len(requests) / wall,
        **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)},
    }


def batched_throughput(backend: OnnxRuntimeBackend, ner: NER, sentences: list, size: int = 16) -> float:
    """Rows/s of the same requests (one window each) in-process, length-sorted batches of ``size``: the
    most that any batching (Triton's included) can gain over running them one by one on this machine."""
    windows = sorted(ner.encoder.windows([words for words, _ in sentences]), key=lambda w: w.input_ids.size)
    padded = [ner.encoder.pad(windows[start : start + size]) for start in range(0, len(windows), size)]
    batches = [(b.input_ids, b.attention_mask) for b in padded]
    list(backend.map(batches))  # warm-up
    seconds = statistics.median(timed(lambda: list(backend.map(batches))) for _ in range(3))
    return len(windows) / seconds


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
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--levels", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the batched SDK comparison")
    parser.add_argument("--queue-delay-us", type=int, default=300, help="dynamic batching's max_queue_delay")
    parser.add_argument("--instances", type=int, default=2, help="model instances (both models)")
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

    results: dict[str, Any] = {"command": "python perf/triton_bench.py " + " ".join(sys.argv[1:]), "levels": {}}
    with tempfile.TemporaryDirectory() as repository:
        served = {"instances": args.instances, "threads": args.threads}
        options = ConfigOptions(max_queue_delay_us=args.queue_delay_us, **served)
        write_repository(bundle, repository, link=True, options=options)
        write_repository(
            bundle, repository, name="nertron_nobatch", options=ConfigOptions(dynamic_batching=False, **served)
        )
        with TritonServer(repository) as server:
            in_process = OnnxRuntimeBackend(local_ner.bundle.model_path)
            batching = TritonBackend(server.grpc_url, max_in_flight=64)
            unbatched = TritonBackend(server.grpc_url, model="nertron_nobatch", max_in_flight=64)
            systems = {"in-process": in_process, "triton, dynamic batching": batching, "triton, no batching": unbatched}
            for call in systems.values():  # warm-up
                run_level(call, requests[:32], 4)
            results["batched_in_process_rows_per_s"] = batched_throughput(in_process, local_ner, sentences)
            before = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
            for level in levels:
                results["levels"][level] = {name: run_level(call, requests, level) for name, call in systems.items()}
                print(level, {k: round(v["throughput"]) for k, v in results["levels"][level].items()}, flush=True)
            after = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
            results["server"] = {
                m: {"inferences": after[m][0] - before[m][0], "executions": after[m][1] - before[m][1]} for m in after
            }
            texts = [as_text(words)[0] for words, _ in sentences]
            served_ner = NER(bundle, url=server.grpc_url, fallback=False, triton_options={"max_in_flight": 8})
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
        f"Command: `{results['command']}`; {requests} single-sentence requests per level (requests/s; latency ms).",
        "",
        "| concurrency | system | requests/s | p50 | p90 | p95 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for level, systems in results["levels"].items():
        for system, r in systems.items():
            lines.append(
                f"| {level} | {system} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
            )
    server = results["server"]
    lines += [
        "",
        "Server statistics over the sweep: "
        + "; ".join(f"`{m}` {s['inferences']} inferences in {s['executions']} executions" for m, s in server.items()),
        "",
        "SDK batched path on the same sentences (sentences/s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["sdk_batch_sentences_per_s"].items()),
    ]
    sdk = results["sdk_batch_sentences_per_s"]
    lines.append(
        f"; Triton / in-process = {sdk['Triton NER(url).batch'] / sdk['in-process NER.batch']:.2f}",
    )
    batched = results["batched_in_process_rows_per_s"]
    lines.append(
        f"\nThe same requests in-process as length-sorted batches of 16: {batched:.0f} rows/s (the most that "
        "batching can reach here)."
    )
    for level, systems in results["levels"].items():
        if int(level) >= 8:
            on = systems["triton, dynamic batching"]["throughput"]
            single = systems["in-process"]["throughput"]
            lines.append(
                f"- concurrency {level}: Triton with batching = {on / single:.2f}x in-process single requests, "
                f"{on / systems['triton, no batching']['throughput']:.2f}x no batching; batching's ceiling here: "
                f"{batched / single:.2f}x"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
