"""The onnxruntime choices behind the default CPU backend, measured side by side on the default int8 model.

    python perf/ort_tuning.py [--sentences 1000] [--repeats 4]

1. Operator time shares (onnxruntime's profiler, one thread) with and without the SkipLayerNormalization
   fusion, and model throughput of each on length-sorted batches of 16.
2. End to end (raw text in, entities out): one batch at a time on 2 threads, batch 32 (the earlier default)
   vs two batches at once on one thread each, batch 16 and 32.
3. Latency of one sentence with ``concurrent_batches=1`` and 2.
4. The cap on padded subwords per batch (``Pipeline.max_batch_tokens``): sentences and a 10,000-word document.
5. int8 static (the default: fixed activation scales) vs dynamic (a scale per batch), end to end.
Prints the tables; the machine is noisy, so runs are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import as_text, interleaved, load_sentences, timed  # noqa: E402
from nertron import NER  # noqa: E402
from nertron.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402


def session(model: Path, disabled: list[str], profile_dir: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = f"{profile_dir}/ort"
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def operator_shares(model: Path, disabled: list[str], feeds: list[dict[str, Any]]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as profile_dir:
        profiled = session(model, disabled, profile_dir)
        for feed in feeds:
            profiled.run(None, feed)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    whole = sum(totals.values())
    return {op: 100 * t / whole for op, t in totals.most_common(8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--sections", default="1,2,3,4,5", help="which of the tables, e.g. 4")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    bundle = default_bundle("int8")
    model = bundle / "model.onnx"
    sentences = load_sentences(args.sentences)
    texts = [as_text(words)[0] for words, _ in sentences]
    ner = NER(bundle)
    feeds = [
        {"input_ids": b.input_ids, "attention_mask": b.attention_mask}
        for b in ner.pipeline.batches((words for words, _ in sentences), 16)
    ]

    if "1" in sections:
        operators(model, feeds, texts, args.repeats)
    if "2" in sections or "3" in sections:
        concurrency(bundle, model, texts, args.repeats, sections)
    if "4" in sections:
        token_cap(ner, texts, args.repeats)
    if "5" in sections:
        static_vs_dynamic(texts, args.repeats)


def run_feeds(session: ort.InferenceSession, feeds: list[dict[str, Any]]) -> list[Any]:
    """The session's outputs on each of ``feeds``."""
    return [session.run(None, f) for f in feeds]


def operators(model: Path, feeds: list[dict[str, Any]], texts: list[str], repeats: int) -> None:
    variants = {"SkipLayerNorm fused (onnxruntime default)": [], "no SkipLayerNorm fusion": ["SkipLayerNormFusion"]}
    print("## 1. Operator shares, int8, 1 thread (onnxruntime profiler)\n")
    for name, disabled in variants.items():
        shares = ", ".join(f"{op} {share:.1f}%" for op, share in operator_shares(model, disabled, feeds).items())
        print(f"- {name}: {shares}")
    sessions = {name: session(model, disabled) for name, disabled in variants.items()}
    seconds = interleaved({name: functools.partial(run_feeds, s, feeds) for name, s in sessions.items()}, repeats)
    for name, s in seconds.items():
        print(f"- {name}: {len(texts) / s:.0f} sentences/s (model only, batches of 16)")


def concurrency(bundle: Path, model: Path, texts: list[str], repeats: int, sections: set[str]) -> None:
    print("\n## 2. End to end, int8, 2 threads\n")
    sequential = OnnxRuntimeBackend(model, threads=2, concurrent_batches=1)
    concurrent = OnnxRuntimeBackend(model, threads=2, concurrent_batches=2)
    systems = {
        "one batch at a time, 2 threads, batch 32": NER(bundle, backend=sequential, batch_size=32),
        "two batches at once, 1 thread each, batch 32": NER(bundle, backend=concurrent, batch_size=32),
        "two batches at once, 1 thread each, batch 16 (default)": NER(bundle, backend=concurrent, batch_size=16),
    }
    if "2" in sections:
        seconds = interleaved({name: functools.partial(n.batch, texts) for name, n in systems.items()}, repeats)
        base = seconds["one batch at a time, 2 threads, batch 32"]
        for name, s in seconds.items():
            print(f"- {name}: {len(texts) / s:.0f} sentences/s ({base / s:.2f}x)")
    if "3" in sections:
        latency(bundle, sequential, concurrent)


def latency(bundle: Path, sequential: OnnxRuntimeBackend, concurrent: OnnxRuntimeBackend) -> None:
    print("\n## 3. One sentence, latency (median of 200)\n")
    text = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."
    for name, backend in (("concurrent_batches=1", sequential), ("concurrent_batches=2 (default)", concurrent)):
        single = NER(bundle, backend=backend)
        for _ in range(20):
            single(text)
        print(
            f"- {name}: {1000 * statistics.median(timed(functools.partial(single, text)) for _ in range(200)):.2f} ms"
        )


def token_cap(ner: NER, texts: list[str], repeats: int) -> None:
    print("\n## 4. Padded subwords per batch, at most (int8, default backend, batch_size 16)\n")
    pool = " ".join(texts).split()
    document = " ".join((pool * (10_000 // len(pool) + 1))[:10_000])
    caps = {"512": 512, "768 (default)": 768, "1,024": 1024, "1,536": 1536, "unbounded": 1 << 30}

    def run(cap: int, inputs: list[str]) -> None:
        list(ner.pipeline.replace(max_batch_tokens=cap).entities(inputs))

    sentences = interleaved({name: functools.partial(run, c, texts) for name, c in caps.items()}, repeats)
    long = interleaved({name: functools.partial(run, c, [document]) for name, c in caps.items()}, repeats)
    for name in caps:
        print(
            f"- {name}: {len(texts) / sentences[name]:.0f} sentences/s; "
            f"a 10,000-word document {10_000 / long[name]:.0f} words/s"
        )


def static_vs_dynamic(texts: list[str], repeats: int) -> None:
    from determinism import dynamic_int8

    print("\n## 5. int8, static (default) vs dynamic, end to end, default backend\n")
    with tempfile.TemporaryDirectory() as tmp:
        ners = {
            "static (fixed scales)": NER(default_bundle("int8")),
            "dynamic (a scale per batch)": NER(dynamic_int8(default_bundle("fp32"), Path(tmp) / "dynamic")),
        }
        seconds = interleaved({name: functools.partial(n.batch, texts) for name, n in ners.items()}, repeats)
    base = seconds["dynamic (a scale per batch)"]
    for name, s in seconds.items():
        print(f"- {name}: {len(texts) / s:.0f} sentences/s ({base / s:.2f}x dynamic)")


if __name__ == "__main__":
    main()
