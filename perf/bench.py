"""nertron's benchmark harness: every comparison measured in one run, interleaved, medians of repeats.

    python perf/bench.py --name cpu-2core [--sentences 1000] [--repeats 5]

Sections (CoNLL-2003 test sentences, the embedded default model):
  postprocess  C++ alignment + span decoding vs numpy + Python vs the pure-Python reference vs the HF
               TokenClassificationPipeline's post-processing, on the same logits (us per sentence)
  e2e          raw text in, entities out: nertron int8 / fp32 (onnxruntime) and bf16 (OpenVINO, where the
               CPU has native bf16) vs the HF pipeline (PyTorch fp32, same
               weights, aggregation "first", batch 32): sentences/s, words/s, entity F1
  pipeline     nertron end to end (raw text in, entities out) vs its model alone on the very batches the pipeline
               sends, int8 and fp32: how much of the model's speed the pipeline keeps (goal: >= 93%)
  ceiling      the encoder's FLOPs per token vs this CPU's measured matmul peaks
  scaling      throughput and peak memory vs document length (10 to 1,000,000 words, one document)
  startup      the default model: first use (assembly), NER() from the cache (seconds, RSS, peak), the
               bundle on disk, and `nertron ner "one sentence"` (wall seconds, peak), each in fresh processes
Writes perf/results/<name>.{md,json,png}; the machine is noisy, so read the ratios. Every result names the
machine and the CPU's instruction sets (int8 speed and even int8 results depend on them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from nertron import NER  # noqa: E402
from nertron._native import PostProcessor  # noqa: E402
from nertron.backends.base import Backend  # noqa: E402
from nertron.backends.openvino import has_native_bf16  # noqa: E402
from nertron.io.conll import read_conll  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402
from nertron.text import Words  # noqa: E402

from tests import reference  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "conll2003" / "test.txt"


SECTIONS = ("postprocess", "e2e", "pipeline", "ceiling", "scaling", "startup")


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


QUIET_SECONDS = 1.0


def interleaved(systems: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per system, runs interleaved so that machine noise hits all alike."""
    for fn in systems.values():  # warm-up
        fn()
    runs: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            # a pause first: the previous system's idle threads (torch's OpenMP, onnxruntime's pool) spin for a
            # while after their last task and would slow whichever system runs next
            time.sleep(QUIET_SECONDS)
            runs[name].append(timed(fn))
    return {name: statistics.median(times) for name, times in runs.items()}


# ---------------------------------------------------------------------------------------------- data
# The instruction sets that decide which int8 and bf16 kernels onnxruntime and OpenVINO use.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Of ``ISA_FLAGS``, those this CPU has (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = set(next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return []
    return [flag for flag in ISA_FLAGS if flag in flags]


def cpu_kind() -> str:
    """``AVX-512 VNNI`` or ``AVX2 only`` (or what the CPU is): the two kinds this project's machines come in."""
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI" + (" + AMX" if "amx_int8" in flags else "")
    if "avx2" in flags:
        return "AVX2 + AVX-VNNI" if "avx_vnni" in flags else "AVX2 only"
    return "no AVX2"


def machine() -> str:
    """CPU model, count, instruction sets and OS: the machine changes between runs, so every result names its own."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({cpu_kind()}: {' '.join(cpu_flags())}), {os.cpu_count()} CPUs, {platform.platform()}"


def load_sentences(limit: int) -> list[tuple[list[str], list[str]]]:
    sentences = [(s.words, s.tags) for d in read_conll(DATA) for s in d.sentences]
    return sentences[:limit]


def as_text(words: list[str]) -> tuple[str, Words]:
    """Words joined by spaces, with their offsets (the gold segmentation of the raw text)."""
    starts, ends, position = [], [], 0
    for word in words:
        starts.append(position)
        ends.append(position + len(word))
        position += len(word) + 1
    return " ".join(words), Words(list(words), starts, ends)


def gold_spans(sentences: list[tuple[list[str], list[str]]]) -> list[set[tuple[int, int, str]]]:
    out = []
    for words, tags in sentences:
        _, w = as_text(words)
        out.append({(w.starts[f], w.ends[e], t) for t, f, e in reference.get_entities(tags)})
    return out


def f1(gold: list[set], predicted: list[set]) -> float:
    correct = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
    found, total = sum(map(len, predicted)), sum(map(len, gold))
    precision, recall = correct / max(found, 1), correct / max(total, 1)
    return 100 * 2 * precision * recall / max(precision + recall, 1e-12)


# ------------------------------------------------------------------------------------ post-processing
def numpy_postprocess(logits: np.ndarray, word_ids: np.ndarray, num_words: int, names: list[str]) -> list:
    """A lean numpy + Python implementation: first-subword softmax, then IOB decoding in Python."""
    first = np.flatnonzero((word_ids >= 0) & np.r_[True, word_ids[1:] != word_ids[:-1]])
    rows = logits[first]
    probs = np.exp(rows - rows.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels = probs.argmax(-1)
    scores = probs[np.arange(labels.size), labels]
    return reference.decode_row(labels.tolist(), scores.tolist(), names)


def bench_postprocess(ner: NER, sentences: list, repeats: int) -> dict[str, Any]:
    from hf_reference import build_hf_model
    from transformers.pipelines import AggregationStrategy, TokenClassificationPipeline

    docs = [words for words, _ in sentences]
    windows = list(ner.pipeline.windows(docs))
    batches = [ner.pipeline.encoder.pad(windows[b : b + 32]) for b in range(0, len(windows), 32)]
    logits = [ner.backend(b.input_ids, b.attention_mask) for b in batches]
    names = ner.labels
    # Like for like: each word's most likely label, as numpy, the reference and HF's pipeline decode; the SDK's own
    # decoder (labels constrained to the tag scheme) is timed beside it.
    sdk_decoder = ner.pipeline.decoder
    postprocessor = ner.pipeline.with_constrained_labels(False).decoder
    offsets = [as_text(words)[1] for words in docs]
    starts = np.array([s for w in offsets for s in w.starts], np.int64)
    ends = np.array([e for w in offsets for e in w.ends], np.int64)

    def native(decoder: PostProcessor = postprocessor) -> list:
        out = []
        for batch, lg in zip(batches, logits, strict=True):
            labels, scores = decoder.align(lg, batch.word_ids, batch.num_words)
            out.append(decoder.decode(labels, scores, batch.num_words))
        return out

    def align_only(decoder: PostProcessor) -> list:
        return [decoder.align(lg, b.word_ids, b.num_words) for b, lg in zip(batches, logits, strict=True)]

    def native_with_offsets() -> Any:
        parts = [postprocessor.align(lg, b.word_ids, b.num_words) for b, lg in zip(batches, logits, strict=True)]
        return postprocessor.decode(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.array([len(d) for d in docs]),
            starts,
            ends,
        )

    per_sentence = [
        (lg[r], b.word_ids[r], int(b.num_words[r]))
        for b, lg in zip(batches, logits, strict=True)
        for r in range(len(b.windows))
    ]

    def numpy_python() -> list:
        return [numpy_postprocess(lg, wid, n, names) for lg, wid, n in per_sentence]

    def pure_python() -> list:
        out = []
        for lg, wid, n in per_sentence:
            predictions = reference.align_row(lg.tolist(), wid.tolist(), n, "first")
            out.append(reference.decode_row([p[0] for p in predictions], [p[1] for p in predictions], names))
        return out

    import torch

    model, tokenizer = build_hf_model(default_bundle("fp32"))
    pipe = TokenClassificationPipeline(model=model, tokenizer=tokenizer)
    hf_inputs = []
    for (lg, _, _), words in zip(per_sentence, docs, strict=True):
        inputs = next(pipe.preprocess(words, is_split_into_words=True, delimiter=" "))
        length = int(inputs["input_ids"].shape[1])
        hf_inputs.append(
            {
                **{
                    k: inputs[k]
                    for k in (
                        "input_ids",
                        "special_tokens_mask",
                        "offset_mapping",
                        "sentence",
                        "is_last",
                        "word_ids",
                        "word_to_chars_map",
                    )
                },
                "logits": torch.from_numpy(lg[None, :length]),
            }
        )

    def hf(strategy: AggregationStrategy) -> Callable[[], list]:
        # postprocess adds word offsets into offset_mapping in place (transformers 5.24): fresh copy per call.
        return lambda: [
            pipe.postprocess([{**o, "offset_mapping": o["offset_mapping"].clone()}], aggregation_strategy=strategy)
            for o in hf_inputs
        ]

    seconds = interleaved(
        {
            "nertron C++ (align + decode)": native,
            "nertron C++, labels constrained (the SDK's)": functools.partial(native, sdk_decoder),
            "nertron C++ align alone": functools.partial(align_only, postprocessor),
            "nertron C++ align alone, labels constrained": functools.partial(align_only, sdk_decoder),
            "nertron C++ + char offsets, one call": native_with_offsets,
            "numpy + Python": numpy_python,
            "pure-Python reference": pure_python,
            "HF pipeline postprocess (first)": hf(AggregationStrategy.FIRST),
            "HF pipeline postprocess (simple)": hf(AggregationStrategy.SIMPLE),
        },
        repeats,
    )
    # Identical spans: C++ vs numpy vs reference (exact), and vs HF "first" (character spans).
    spans = native_with_offsets()
    ours: list[set[tuple[int, int, str]]] = [set() for _ in docs]
    for r, t, s, e in zip(spans.row, spans.type, spans.start_char, spans.end_char, strict=True):
        ours[r].add((int(s), int(e), postprocessor.types[t]))
    numpy_spans = numpy_python()
    same_numpy = all(
        {(w.starts[f], w.ends[e - 1], t) for t, f, e, _ in spans_np} == o
        for spans_np, w, o in zip(numpy_spans, offsets, ours, strict=True)
    )
    hf_first = hf(AggregationStrategy.FIRST)()
    same_hf = sum(
        {(e["start"], e["end"], e["entity_group"]) for e in entities} == o
        for entities, o in zip(hf_first, ours, strict=True)
    )
    n = len(docs)
    us = {name: 1e6 * s / n for name, s in seconds.items()}
    return {
        "sentences": n,
        "us_per_sentence": us,
        "speedup_vs_hf_first": us["HF pipeline postprocess (first)"] / us["nertron C++ (align + decode)"],
        "speedup_vs_numpy": us["numpy + Python"] / us["nertron C++ (align + decode)"],
        "identical_to_numpy": same_numpy,
        "identical_to_hf_first_sentences": same_hf / n,
    }


# ----------------------------------------------------------------------------------------- end to end
def bench_e2e(sentences: list, repeats: int, ners: dict[str, NER]) -> dict[str, Any]:
    import torch
    from hf_reference import build_hf_model
    from transformers import pipeline

    texts = [as_text(words)[0] for words, _ in sentences]
    gold = gold_spans(sentences)
    model, tokenizer = build_hf_model(default_bundle("fp32"))
    hf = pipeline(
        "token-classification",
        model=model,
        tokenizer=tokenizer,
        aggregation_strategy="first",
        batch_size=32,
        device=-1,
    )
    systems: dict[str, Callable[[], Any]] = {
        f"nertron {name}": functools.partial(ner.batch, texts) for name, ner in ners.items()
    }
    systems["HF pipeline, torch fp32"] = lambda: hf(texts)
    with torch.inference_mode():
        seconds = interleaved(systems, repeats)
        outputs = {name: fn() for name, fn in systems.items()}
    words = sum(len(w) for w, _ in sentences)
    results = {}
    for name, out in outputs.items():
        if name.startswith("HF"):
            predicted = [{(e["start"], e["end"], e["entity_group"]) for e in ents} for ents in out]
        else:
            predicted = [{(e.start, e.end, e.label) for e in ents} for ents in out]
        results[name] = {
            "seconds": seconds[name],
            "sentences_per_s": len(texts) / seconds[name],
            "words_per_s": words / seconds[name],
            "entity_f1": f1(gold, predicted),
        }
    base = results["HF pipeline, torch fp32"]["sentences_per_s"]
    for r in results.values():
        r["speedup_vs_hf"] = r["sentences_per_s"] / base
    return {"sentences": len(texts), "words": words, "systems": results}


# ------------------------------------------------------------------------------------------- pipeline
class InputRecorder:
    """A backend that keeps the inputs of every batch it runs (the model's share of an end-to-end run)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.runtime, self.concurrency = backend.runtime, backend.concurrency
        self.inputs: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.inputs.append((input_ids, attention_mask))
        return self.backend(input_ids, attention_mask)

    def map(self, batches: Any) -> Any:
        def recorded() -> Any:
            for batch in batches:
                self.inputs.append(batch)
                yield batch

        return self.backend.map(recorded())

    def close(self) -> None:
        pass


def model_only(backend: Backend, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """The logits of ``batches``, from the model alone."""
    return list(backend.map(batches))


def bench_pipeline(sentences: list, repeats: int, ners: dict[str, NER]) -> dict[str, Any]:
    """End to end (``ner.batch``) vs the model alone (``backend.map`` over the batches that run sent),
    interleaved; the entities of the overlapped pipeline vs one that tokenises, runs and decodes in turn."""
    texts = [as_text(words)[0] for words, _ in sentences]
    systems: dict[str, Callable[[], Any]] = {}
    inputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    same: dict[str, bool] = {}
    for name, ner in ners.items():
        recorder = InputRecorder(ner.backend)
        list(ner.pipeline.replace(backend=recorder).entities(texts, ner.batch_size))
        inputs[name] = recorder.inputs
        in_turn = ner.pipeline.replace(backend=SequentialBackend(ner.backend))
        same[name] = list(in_turn.entities(texts, ner.batch_size)) == ner.batch(texts)
        systems[f"{name} end to end"] = functools.partial(ner.batch, texts)
        systems[f"{name} model only"] = functools.partial(model_only, ner.backend, recorder.inputs)
    seconds = interleaved(systems, repeats)
    rows = {}
    for name in ners:
        e2e, model = seconds[f"{name} end to end"], seconds[f"{name} model only"]
        rows[name] = {
            "end_to_end_sentences_per_s": len(texts) / e2e,
            "model_only_sentences_per_s": len(texts) / model,
            "end_to_end_of_model_only": model / e2e,
            "batches": len(inputs[name]),
            "same_entities_as_in_turn": same[name],
        }
    return {"sentences": len(texts), "repeats": repeats, "systems": rows}


class SequentialBackend(InputRecorder):
    """The backend run one batch at a time, each when asked: the pipeline waits for every batch."""

    def map(self, batches: Any) -> Any:
        for input_ids, attention_mask in batches:
            yield self.backend(input_ids, attention_mask)


# -------------------------------------------------------------------------------------------- ceiling
def matmul_peaks(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measured square-matmul peaks: numpy fp32, onnxruntime fp32 MatMul and int8 MatMulInteger, and
    OpenVINO's MatMul with bf16 inference precision (where the CPU has native bf16)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def ort_session(op: str, a_type: int, b_type: int, y_type: int) -> ort.InferenceSession:
        graph = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])],
            op,
            [
                helper.make_tensor_value_info("A", a_type, [size, size]),
                helper.make_tensor_value_info("B", b_type, [size, size]),
            ],
            [helper.make_tensor_value_info("Y", y_type, [size, size])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def rate(fn: Callable[[], Any]) -> float:
        fn()
        return 2 * size**3 / min(timed(fn) for _ in range(repeats)) / 1e9

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    fp32_session = ort_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT)
    int8_session = ort_session("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
    int8_feed = {
        "A": rng.integers(0, 255, (size, size), dtype=np.uint8),
        "B": rng.integers(-127, 127, (size, size), dtype=np.int8),
    }
    peaks = {
        "fp32_numpy_gflops": rate(lambda: a @ a),
        "fp32_ort_matmul_gflops": rate(lambda: fp32_session.run(None, {"A": a, "B": a})),
        "int8_ort_matmulinteger_gops": rate(lambda: int8_session.run(None, int8_feed)),
    }
    if has_native_bf16():
        import openvino as ov

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "W"], ["Y"])],
            "bf16",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])],
            initializer=[numpy_helper.from_array(a, "W")],  # a constant weight, as in the model
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}
        )
        request = compiled.create_infer_request()
        peaks["bf16_openvino_matmul_gflops"] = rate(lambda: request.infer({"A": a}))
    return peaks


def encoder_flops_per_token(ner: NER, mean_length: float) -> float:
    """Matmul FLOPs per token of an XLM-R encoder of the default model's shape at a given length."""
    hidden, ffn, layers = 384, 1536, 12
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * 2 * mean_length * hidden
    return layers * per_layer + 2 * hidden * len(ner.labels)


def bench_ceiling(ner_tokens: dict[str, float], flops_per_token: float) -> dict[str, Any]:
    peaks = matmul_peaks()
    achieved = {name: tokens * flops_per_token / 1e9 for name, tokens in ner_tokens.items()}
    return {
        "flops_per_token_mflop": flops_per_token / 1e6,
        "peaks": peaks,
        "achieved_gflops": achieved,
        "percent_of_peak": {name: 100 * g / peaks[_peak_of(name)] for name, g in achieved.items()},
    }


def _peak_of(system: str) -> str:
    if "int8" in system:
        return "int8_ort_matmulinteger_gops"
    return "bf16_openvino_matmul_gflops" if "bf16" in system else "fp32_ort_matmul_gflops"


# -------------------------------------------------------------------------------------------- scaling
SCALING_SIZES = (10, 100, 1000, 10_000, 100_000, 1_000_000)


def bench_scaling(repeats: int) -> list[dict[str, float]]:
    """Each size in a fresh process, so that its peak RSS is nertron's alone; documents of 100,000 words
    and more run once (a 1,000,000-word document is about 5.3 MB of text and takes minutes)."""
    rows = []
    for size in SCALING_SIZES:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--scaling-child",
                str(size),
                "--repeats",
                str(repeats if size < 100_000 else 1),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(child.stdout.splitlines()[-1]))
    return rows


def scaling_child(size: int, repeats: int) -> None:
    ner = NER()  # the default precision (int8)
    pool = [w for words, _ in load_sentences(4000) for w in words]
    text = " ".join((pool * (size // len(pool) + 1))[:size])
    loading_peak, loaded = peak_rss_mib(), rss_mib()
    reset_peak_rss()  # from here the peak is the document's, on top of the loaded model
    ner(text[:100_000])  # warm-up
    seconds = statistics.median(timed(lambda: ner(text)) for _ in range(repeats))
    print(
        json.dumps(
            {
                "words": size,
                "megabytes": len(text.encode()) / 1e6,
                "precision": ner.precision,
                "seconds": seconds,
                "words_per_s": size / seconds,
                "peak_rss_mib": peak_rss_mib(),
                "rss_after_load_mib": loaded,
                "loading_peak_rss_mib": loading_peak,
            }
        )
    )


STARTUP_CHILD = """
import json, sys, time
started = time.perf_counter()
from nertron import NER
imported = time.perf_counter()
ner = NER()
loaded = time.perf_counter()
ner("Angela Merkel met Emmanuel Macron in Paris.")
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
mib = lambda field: int(status[field].split()[0]) / 1024
print(json.dumps({"import_s": imported - started, "ner_s": loaded - imported, "rss_mib": mib("VmRSS"),
                  "peak_mib": mib("VmHWM"), "bundle": str(ner.bundle.path)}))
"""


def bench_startup(repeats: int) -> dict[str, Any]:
    """First use into an empty cache once, then NER() from that cache and the CLI on one sentence, each
    ``repeats`` times in fresh processes (medians)."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NERTRON_CACHE": cache}
        env.pop("NERTRON_MODEL", None)
        first = _child(STARTUP_CHILD, env)
        warm = [_child(STARTUP_CHILD, env) for _ in range(repeats)]
        bundle = Path(first["bundle"])
        cli = [sys.executable, "-m", "nertron.cli", "ner", "Angela Merkel met Emmanuel Macron in Paris."]
        runs = [_timed_process(cli, env) for _ in range(repeats)]
        return {
            "first_use_s": first["import_s"] + first["ner_s"],
            "first_use_peak_mib": first["peak_mib"],
            "ner_s": statistics.median(w["ner_s"] for w in warm),
            "import_s": statistics.median(w["import_s"] for w in warm),
            "rss_mib": statistics.median(w["rss_mib"] for w in warm),
            "peak_mib": statistics.median(w["peak_mib"] for w in warm),
            "bundle_mb": sum(f.stat().st_size for f in bundle.iterdir()) / 1e6,
            "cli_wall_s": statistics.median(r[0] for r in runs),
            "cli_peak_mib": statistics.median(r[1] for r in runs),
        }


def _child(code: str, env: dict[str, str]) -> dict[str, Any]:
    return _child_run([sys.executable, "-c", code], env)


# Runs a command and reports its wall time and peak RSS. A separate small process: Linux carries a parent's
# RSS high-water mark into a forked child, so measured from this (large) process the peak would be ours.
TIMED_RUN = """
import json, os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(json.dumps({"wall_s": time.perf_counter() - started, "peak_mib": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


def _timed_process(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of ``command``."""
    run = _child_run([sys.executable, "-c", TIMED_RUN, *command], env)
    if run["code"] != 0:
        raise RuntimeError(f"{command} exited with {run['code']}")
    return run["wall_s"], run["peak_mib"]


def _child_run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's RSS high-water mark (VmHWM; unlike ru_maxrss it does not survive exec)."""
    return _status_mib("VmHWM:")


def rss_mib() -> float:
    """This process's resident memory now."""
    return _status_mib("VmRSS:")


def reset_peak_rss() -> None:
    """Resets VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------- report
def write_report(name: str, results: dict[str, Any]) -> str:
    out = ROOT / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# nertron benchmark `{name}`",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}  ",
        f"Date: {results['date']}",
        "",
    ]
    if "earlier" in results:
        e = results["earlier"]
        on = f" on {e['machine']}" if e.get("machine") else ""
        lines += [f"Sections {', '.join(e['sections'])} from an earlier run{on}: `{e['command']}`, {e['date']}.", ""]
    if "postprocess" in results:
        p = results["postprocess"]
        lines += [
            f"## Post-processing ({p['sentences']} CoNLL test sentences, same logits)",
            "",
            "| implementation | us / sentence |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.2f} |" for k, v in p["us_per_sentence"].items()]
        lines += [
            "",
            f"C++ vs HF postprocess (first): **{p['speedup_vs_hf_first']:.0f}x**; vs numpy + Python: "
            f"**{p['speedup_vs_numpy']:.1f}x**. Spans identical to numpy + Python: {p['identical_to_numpy']}; "
            f"sentences with spans identical to HF 'first': {100 * p['identical_to_hf_first_sentences']:.1f}%",
            "",
        ]
    if "e2e" in results:
        e = results["e2e"]
        lines += [
            f"## End to end, local CPU ({e['sentences']} sentences, {e['words']} words, raw text in)",
            "",
            "| system | sentences/s | words/s | x HF pipeline | entity F1 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['sentences_per_s']:.1f} | {v['words_per_s']:.0f} | {v['speedup_vs_hf']:.2f} "
            f"| {v['entity_f1']:.2f} |"
            for k, v in e["systems"].items()
        ]
        lines.append("")
    if "pipeline" in results:
        pl = results["pipeline"]
        lines += [
            f"## The pipeline vs its model alone ({pl['sentences']} sentences, medians of {pl['repeats']})",
            "",
            "| model | end to end, sentences/s | model only, sentences/s | end to end / model only | batches "
            "| same entities as in turn |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['end_to_end_sentences_per_s']:.1f} | {v['model_only_sentences_per_s']:.1f} "
            f"| {100 * v['end_to_end_of_model_only']:.1f}% | {v['batches']} | {v['same_entities_as_in_turn']} |"
            for k, v in pl["systems"].items()
        ]
        lines.append("")
    if "ceiling" in results:
        c = results["ceiling"]
        lines += [
            "## Ceiling",
            "",
            f"Encoder: {c['flops_per_token_mflop']:.1f} MFLOP per token. Peaks: numpy fp32 "
            f"{c['peaks']['fp32_numpy_gflops']:.0f} GFLOP/s, ORT fp32 MatMul "
            f"{c['peaks']['fp32_ort_matmul_gflops']:.0f} GFLOP/s, ORT int8 MatMulInteger "
            f"{c['peaks']['int8_ort_matmulinteger_gops']:.0f} GOP/s"
            + (
                f", OpenVINO bf16 MatMul {c['peaks']['bf16_openvino_matmul_gflops']:.0f} GFLOP/s."
                if "bf16_openvino_matmul_gflops" in c["peaks"]
                else "."
            ),
            "",
            "| system | achieved GFLOP/s | % of its peak |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v:.1f} | {c['percent_of_peak'][k]:.1f}% |" for k, v in c["achieved_gflops"].items()]
        lines.append("")
    if "scaling" in results:
        lines += [
            f"## Scaling (nertron {results['scaling'][0]['precision']}, the default precision; one document, "
            "each size in a fresh process)",
            "",
            "RSS after loading the model, the peak while tagging the document (VmHWM reset after loading), and the "
            "difference: what the document costs on top of the loaded model.",
            "",
            "| words | MB of text | seconds | words/s | RSS after loading MiB | peak while tagging MiB | document "
            "MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['words']:,} | {r['megabytes']:.2f} | {r['seconds']:.3f} | {r['words_per_s']:.0f} | "
            f"{r['rss_after_load_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_mib'] - r['rss_after_load_mib']:.0f} |"
            for r in results["scaling"]
        ]
        lines.append("")
    if "startup" in results:
        r = results["startup"]
        lines += [
            "## Start-up and memory (the default model, fresh processes, medians)",
            "",
            "| what | measured |",
            "|---|---|",
            f"| first use (assembly into an empty cache), `NER()` | {r['first_use_s']:.1f} s, "
            f"peak {r['first_use_peak_mib']:.0f} MiB |",
            f"| `NER()` from the cache (after importing nertron in {r['import_s']:.2f} s) | {r['ner_s']:.2f} s |",
            f"| resident memory after `NER()` and one sentence / peak | {r['rss_mib']:.0f} MiB / "
            f"{r['peak_mib']:.0f} MiB |",
            f"| the assembled bundle on disk | {r['bundle_mb']:.0f} MB |",
            f'| `nertron ner "one sentence"` | {r["cli_wall_s"]:.2f} s wall, peak {r["cli_peak_mib"]:.0f} MiB |',
            "",
        ]
    text = "\n".join(lines)
    (out / f"{name}.md").write_text(text)
    _plot(out / f"{name}.png", results)
    return text


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if "e2e" in results:
        systems = results["e2e"]["systems"]
        axes[0].barh(list(systems), [v["sentences_per_s"] for v in systems.values()], color="tab:blue")
        axes[0].set_xlabel("sentences / s (higher is better)")
        axes[0].set_title("end to end, CoNLL test sentences")
    if "scaling" in results:
        rows = results["scaling"]
        axes[1].loglog([r["words"] for r in rows], [r["seconds"] for r in rows], "o-")
        axes[1].set_xlabel("document length (words)")
        axes[1].set_ylabel("seconds")
        axes[1].set_title("scaling with document length")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="local")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--update", action="store_true", help="keep the other sections of an earlier run of --name")
    parser.add_argument("--scaling-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scaling_child:
        scaling_child(args.scaling_child, args.repeats)
        return
    warnings.filterwarnings("ignore", message="Tokenizer does not support real words")
    sections = set(args.sections.split(","))
    sentences = load_sentences(args.sentences)
    ners: dict[str, NER] = {}
    if sections & {"postprocess", "e2e", "pipeline", "ceiling"}:
        ners = {"int8": NER(precision="int8"), "fp32": NER(precision="fp32")}
        if has_native_bf16():
            ners["bf16"] = NER(precision="bf16")
    results: dict[str, Any] = {
        "command": "python perf/bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if "postprocess" in sections:
        results["postprocess"] = bench_postprocess(ners["int8"], sentences, args.repeats)
    if "e2e" in sections:
        results["e2e"] = bench_e2e(sentences, max(1, args.repeats // 2), ners)
    if "pipeline" in sections:
        results["pipeline"] = bench_pipeline(sentences, args.repeats, {k: v for k, v in ners.items() if k != "bf16"})
    if "ceiling" in sections and "e2e" in sections:
        windows = list(ners["int8"].pipeline.windows(words for words, _ in sentences))
        tokens = sum(w.input_ids.size for w in windows)
        mean_length = tokens / len(windows)
        per_second = {f"nertron {k}": tokens / results["e2e"]["systems"][f"nertron {k}"]["seconds"] for k in ners}
        results["ceiling"] = bench_ceiling(per_second, encoder_flops_per_token(ners["int8"], mean_length))
    if "scaling" in sections:
        results["scaling"] = bench_scaling(args.repeats)
    if "startup" in sections:
        results["startup"] = bench_startup(args.repeats)
    earlier = ROOT / "perf" / "results" / f"{args.name}.json"
    if args.update and earlier.is_file():  # the sections not re-run, with the run that measured them
        previous = json.loads(earlier.read_text())
        kept = {k: previous[k] for k in SECTIONS if k in previous and k not in results}
        results["earlier"] = {
            "command": previous["command"],
            "date": previous["date"],
            "machine": previous.get("earlier", {}).get("machine", previous["machine"]),
            "sections": sorted(kept),
        }
        results.update(kept)
    print(write_report(args.name, results))


if __name__ == "__main__":
    main()
