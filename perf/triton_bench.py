"""Triton on CPU vs in-process, perf_analyzer style: a concurrency sweep with latency percentiles.

    python perf/triton_bench.py --name cpu-2core [--model BUNDLE] [--sentences 1000] [--levels 1,2,4,8,16,32]

A real Triton server (the default int8 model's CPU repository) serves two models: ``nertron`` with
dynamic (ragged) batching and ``nertron_nobatch`` without. Each CoNLL-2003 test sentence is one request
(input_ids, attention_mask of one row). At each concurrency level, as many client threads send the
requests through the SDK's gRPC client (``TritonClient``), and through the same SDK in-process
(``OnnxRuntimeBackend``, one shared session). Systems run interleaved, ``--rounds`` times per level: the
tables show medians, and ratios are medians of each round's ratio (the machine's speed drifts between
rounds). At concurrency >= 8 the same is measured a level up, text in and entities out, one text per call:
``NER(backend=Triton(url))(text)`` vs ``NER()(text)``. The SDK's batched path too: ``NER(backend=Triton(url)).batch`` vs
``NER().batch``.

Text in, entities out (``--sections text``): one text per request at concurrency 1-32 to the text model
``nertron_text`` over HTTP/JSON (Python's http.client, one keep-alive connection per client thread) and gRPC
(tritonclient), through the SDK with the server doing everything
(``Triton(text_model="nertron_text")``) and client-side (the client tokenises and decodes, the server runs
``nertron``), and in-process ``NER()``; with the CPU time per request of the client process and of the server
(tritonserver and its python stubs, from /proc).

Also writes perf_analyzer input-data JSON for both models, so that NVIDIA's ``perf_analyzer`` can replay the
same requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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
from nertron.serving.options import TEXT_MODEL_NAME, ConfigOptions  # noqa: E402
from nertron.serving.repository import write_repository  # noqa: E402
from nertron.serving.server import TritonServer  # noqa: E402

Request = tuple[np.ndarray, np.ndarray]
HTTP, GRPC = "nertron_text, HTTP/JSON (http.client)", "nertron_text, gRPC (tritonclient)"


def make_requests(ner: NER, sentences: list) -> list[Request]:
    windows = ner.pipeline.windows(words for words, _ in sentences)
    return [(b.input_ids, b.attention_mask) for b in (ner.pipeline.encoder.pad([w]) for w in windows)]


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
    padded = ner.pipeline.batches((words for words, _ in sentences), size)
    windows = [w for b in padded for w in b.windows]
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


def perf_analyzer_text_input(texts: list[str], path: Path) -> None:
    """perf_analyzer's --input-data for the text model: one text per request."""
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [text], "shape": [1]}} for text in texts]}))


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (tritonserver and its python stubs)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        times[process] = (int(fields[11]) + int(fields[12])) / ticks
    tree, grew = {pid}, True
    while grew:
        grown = tree | {p for p, parent in parents.items() if parent in tree}
        grew, tree = len(grown) > len(tree), grown
    return sum(times.get(p, 0.0) for p in tree)


def text_level(
    systems: dict[str, Callable[[str], Any]], texts: list[str], level: int, rounds: int, server_pid: int
) -> dict:
    """``interleaved_rounds`` for text-in systems, with each system's CPU ms per request in this (client)
    process and in the server, summed over its rounds."""
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    cpu = {name: [0.0, 0.0] for name in systems}
    for _ in range(rounds):
        for name, call in systems.items():
            client, server = time.process_time(), process_tree_cpu(server_pid)
            runs[name].append(run_level(call, [(text,) for text in texts], level))
            cpu[name][0] += time.process_time() - client
            cpu[name][1] += process_tree_cpu(server_pid) - server
    return {
        name: {
            "throughput": statistics.median(r["throughput"] for r in rs),
            **percentiles([t for r in rs for t in r["latencies"]]),
            "rounds": [r["throughput"] for r in rs],
            "client_cpu_ms": cpu[name][0] * 1000 / (rounds * len(texts)),
            "server_cpu_ms": cpu[name][1] * 1000 / (rounds * len(texts)),
        }
        for name, rs in runs.items()
    }


def text_systems(server: TritonServer, bundle: Path, local: NER, level: int) -> tuple[dict[str, Any], list[Any]]:
    """The text-in systems, and what to close after the level."""
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    connections = threading.local()  # one keep-alive connection per client thread (tritonclient.http is gevent's)

    def over_http(text: str) -> list[Any]:
        if not hasattr(connections, "http"):
            connections.http = http.client.HTTPConnection(host, int(port), timeout=60)
        body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}
        connections.http.request("POST", f"/v2/models/{TEXT_MODEL_NAME}/infer", json.dumps(body))
        reply = json.loads(connections.http.getresponse().read())
        return json.loads(reply["outputs"][0]["data"][0])

    def over_grpc(text: str) -> list[Any]:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        return json.loads(grpc.infer(TEXT_MODEL_NAME, [tensor]).as_numpy("ENTITIES")[0, 0])

    server_side = NER(bundle, backend=Triton(server.grpc_url, text_model=TEXT_MODEL_NAME, fallback=None))
    client_side = NER(bundle, backend=Triton(server.grpc_url, text_model=None, fallback=None))
    systems = {
        HTTP: over_http,
        GRPC: over_grpc,
        "SDK, server-side (text_model)": server_side,
        "SDK, client-side (token ids)": client_side,
        "in-process NER()": local,
    }
    return systems, [grpc, server_side, client_side]


def statistics_of(url: str, model: str) -> tuple[int, int]:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model).model_stats[0]
    return int(stats.inference_count), int(stats.execution_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="local")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--model", type=Path, help="a bundle (default: the embedded default model, int8)")
    parser.add_argument("--levels", default="1,2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the batched SDK comparison")
    defaults = ConfigOptions()
    parser.add_argument("--queue-delay-us", type=int, default=defaults.max_queue_delay_us, help="max_queue_delay")
    parser.add_argument("--instances", type=int, default=defaults.instances, help="model instances (both models)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per instance (default: onnxruntime's)")
    parser.add_argument(
        "--sections", default="ids,text", help="ids: token ids in, logits out (and the SDK on top); text: text in"
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    levels = [int(x) for x in args.levels.split(",")]
    sentences = load_sentences(args.sentences)
    bundle = args.model or default_bundle()
    local_ner = NER(bundle)
    requests = make_requests(local_ner, sentences)
    out = ROOT / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    texts = [as_text(words)[0] for words, _ in sentences]
    perf_analyzer_input(requests, out / f"{args.name}-perf-analyzer-input.json")
    perf_analyzer_text_input(texts, out / f"{args.name}-perf-analyzer-text-input.json")

    results: dict[str, Any] = {
        "command": "python perf/triton_bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "levels": {},
    }
    if "ids" not in sections:
        del results["levels"]
    with tempfile.TemporaryDirectory() as repository:
        served = {"instances": args.instances, "threads": args.threads}
        options = ConfigOptions(max_queue_delay_us=args.queue_delay_us, **served)
        write_repository(bundle, repository, link=True, options=options)
        unbatched_options = ConfigOptions(dynamic_batching=False, **served)
        write_repository(bundle, repository, name="nertron_nobatch", options=unbatched_options, text_model=False)
        with TritonServer(repository) as server:
            if "ids" in sections:
                in_process = OnnxRuntimeBackend(local_ner.bundle.model_path)
                batching = TritonClient(Triton(server.grpc_url, max_in_flight=64, fallback=None))
                unbatched = TritonClient(
                    Triton(server.grpc_url, model="nertron_nobatch", max_in_flight=64, fallback=None)
                )
                systems: dict[str, Callable[..., Any]] = {
                    "in-process": in_process,
                    "triton, dynamic batching": batching,
                    "triton, no batching": unbatched,
                }
                for call in systems.values():  # warm-up
                    run_level(call, requests[:32], 4)
                results["batching_ceiling"] = batching_ceiling(in_process, local_ner, sentences, requests, args.rounds)
                before = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
                for level in levels:
                    results["levels"][level] = interleaved_rounds(systems, requests, level, args.rounds)
                    print(level, {k: round(v["throughput"]) for k, v in results["levels"][level].items()}, flush=True)
                after = {m: statistics_of(server.grpc_url, m) for m in ("nertron", "nertron_nobatch")}
                results["server"] = {
                    m: {"inferences": after[m][0] - before[m][0], "executions": after[m][1] - before[m][1]}
                    for m in after
                }
                served_ner = NER(bundle, backend=Triton(server.grpc_url, max_in_flight=8, fallback=None))
                sdk_systems: dict[str, Callable[..., Any]] = {"SDK in-process": local_ner, "SDK via Triton": served_ner}
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
            if "text" in sections:
                results["text_command"], results["text_date"] = results["command"], results["date"]
                results["text_levels"] = {}
                for level in levels:
                    systems, closing = text_systems(server, bundle, local_ner, level)
                    for call in systems.values():  # warm-up
                        run_level(call, [(text,) for text in texts[:16]], 4)
                    measured = text_level(systems, texts, level, args.rounds, server.pid or 0)
                    results["text_levels"][level] = measured
                    print("text", level, {k: round(v["throughput"]) for k, v in measured.items()}, flush=True)
                    for thing in closing:
                        thing.close()
    path = out / f"{args.name}-triton.json"
    if path.exists() and sections != {"ids", "text"}:  # a run of some sections keeps the others' results
        earlier = json.loads(path.read_text())
        kept = ("levels", "server", "sdk_levels", "sdk_batch_sentences_per_s", "batching_ceiling", "command", "date")
        results = {**{k: earlier[k] for k in kept if k in earlier}, **{k: v for k, v in results.items() if v}}
        if "ids" not in sections:
            results["command"], results["date"] = earlier["command"], earlier["date"]
    path.write_text(json.dumps(results, indent=2) + "\n")
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
    ]
    if "text_levels" in results:
        lines += text_report(results, requests)
    if "levels" not in results:
        return "\n".join(lines) + "\n"
    lines += [
        "## Token ids in, logits out (model `nertron`)",
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
        "The SDK a level up, text in and entities out, one text per call "
        "(`NER(backend=Triton(url))(text)` vs `NER()(text)`):",
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


def text_report(results: dict[str, Any], requests: int) -> list[str]:
    levels = results["text_levels"]
    lines = [
        "## Text in, entities out",
        "",
        f"Command: `{results['text_command']}`, {results['text_date']}. {requests} CoNLL test sentences, one text per "
        "request, at each concurrency; systems interleaved, medians of the rounds (requests/s; latency ms over all "
        "rounds). CPU ms per request: this (client) process / the server (tritonserver and its python stubs).",
        "",
        "| concurrency | system | requests/s | p50 | p90 | p99 | CPU client | CPU server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level, systems in levels.items():
        for system, r in systems.items():
            lines.append(
                f"| {level} | {system} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['client_cpu_ms']:.2f} | {r['server_cpu_ms']:.2f} |"
            )
    lines += ["", "Ratios (medians of each round's ratio):"]
    for level, systems in levels.items():
        lines.append(
            f"- concurrency {level}: SDK server-side / client-side "
            f"{ratio(systems, 'SDK, server-side (text_model)', 'SDK, client-side (token ids)'):.2f}x; "
            f"server-side / in-process {ratio(systems, 'SDK, server-side (text_model)', 'in-process NER()'):.2f}x; "
            f"gRPC / HTTP {ratio(systems, GRPC, HTTP):.2f}x"
        )
    return [*lines, ""]


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
