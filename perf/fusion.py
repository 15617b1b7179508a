"""Which graph fusions make static int8 faster? The model alone, variants A/B on one machine, interleaved, medians.

    python perf/fusion.py [--bundle artifacts/xlmr-base/fp32] [--sentences 300] [--repeats 5]
    python perf/fusion.py --e2e BUNDLE_A BUNDLE_B [--sentences 1000]   # bundles end to end, interleaved

Variants of an fp32 bundle's graph (default: the embedded default model's), each quantised statically through
``nertron_export.static_int8`` with its own ranges (CoNLL-2003 train, 400 sentences and 50 documents):

  plain       the exported graph, as ``nertron export`` and the default model ship it (onnxruntime fuses what
              it can when it loads the model)
  fused       onnxruntime's transformer optimizer first (LayerNorm, SkipLayerNorm, BiasGelu), attention left
              unfused, so that the Q, K and V MatMuls stay MatMuls and are quantised
  fused+mha   the same with MultiHeadAttention: Q, K, V projections quantised, the attention core one operator
  fused+attn  with Attention: Q, K and V packed into one weight inside the operator, which stays fp32
  mha, attn   MultiHeadAttention or Attention alone: the residual Add and LayerNormalization left unfused
              (onnxruntime's CPU SkipLayerNormalization kernel is the slow part of ``fused``)
  fastgelu    GELU as tanh's approximation (FastGelu) instead of erf's, nothing else fused; mha+fastgelu both

Prints, per variant: sentences/s over the same length-sorted padded batches of CoNLL-2003 test sentences
(the model alone, no tokenisation), the ratio to ``plain``, the operators left after onnxruntime's own
optimisation, and the largest logit difference from fp32.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import load_sentences, machine  # noqa: E402
from nertron.cpus import available_cpus  # noqa: E402
from nertron.model.bundle import Bundle  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402
from nertron.model.quantization import quantize_static  # noqa: E402
from nertron_export.static_int8 import activation_ranges, calibration_feeds, read_calibration_text  # noqa: E402

TRAIN = ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"
SHOWN_OPS = (
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMul",
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "Attention",
    "MultiHeadAttention",
    "Softmax",
    "Transpose",
    "Reshape",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "Gelu",
    "FastGelu",
)


def variant(fp32: onnx.ModelProto, kind: str, hidden: int, heads: int, work: Path) -> onnx.ModelProto:
    """The fp32 graph after the optimizer settings of ``kind`` (``plain``: untouched)."""
    if kind == "plain":
        return fp32
    from onnxruntime.transformers.fusion_options import AttentionOpType, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = kind not in ("fused", "fastgelu")
    if not kind.startswith("fused"):
        options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    options.enable_gelu_approximation = kind.endswith("fastgelu")
    if "mha" in kind:
        options.use_multi_head_attention = True
        options.attention_op_type = AttentionOpType.MultiHeadAttention
    path = work / "fp32.onnx"
    if not path.exists():
        onnx.save_model(fp32, str(path))
    optimized = optimize_model(
        str(path), model_type="bert", num_heads=heads, hidden_size=hidden, optimization_options=options, opt_level=0
    )
    return optimized.model


def session(model: onnx.ModelProto, dump: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cpus()
    options.inter_op_num_threads = 1
    if dump is not None:
        options.optimized_model_filepath = str(dump)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def op_counts(model: onnx.ModelProto, work: Path) -> dict[str, int]:
    dump = work / "optimized.onnx"
    session(model, dump)
    counts = collections.Counter(n.op_type for n in onnx.load(str(dump), load_external_data=False).graph.node)
    return {op: counts[op] for op in SHOWN_OPS if counts[op]}


def compare_bundles(bundles: list[Path], sentences: int, repeats: int) -> None:
    """End to end (raw text in, entities out), interleaved: e.g. a bundle exported with and without --optimize."""
    from bench import as_text, interleaved
    from nertron import NER

    texts = [as_text(words)[0] for words, _ in load_sentences(sentences)]
    ners = {str(b): NER(b) for b in bundles}
    seconds = interleaved({name: functools.partial(ner.batch, texts) for name, ner in ners.items()}, repeats)
    outputs = {name: ner.batch(texts) for name, ner in ners.items()}
    first = next(iter(seconds))
    print(f"python perf/fusion.py {' '.join(sys.argv[1:])}\n{machine()}")
    print(f"{len(texts)} CoNLL-2003 test sentences end to end, medians of {repeats}")
    for name, s in seconds.items():
        same = outputs[name] == outputs[first]
        print(f"{name}: {len(texts) / s:.1f} sentences/s, {seconds[first] / s:.2f}x; entities as the first: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an fp32 bundle (default: the embedded model's fp32)")
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heads", type=int, default=12, help="attention heads (12 in XLM-R base and e5-small)")
    parser.add_argument("--variants", default="plain,fused,fused+mha,fused+attn,mha,attn")
    parser.add_argument("--e2e", type=Path, nargs="+", help="instead: these bundles end to end, interleaved")
    args = parser.parse_args()
    if args.e2e:
        compare_bundles(args.e2e, args.sentences, args.repeats)
        return
    bundle = args.bundle or default_bundle("fp32")
    fp32 = onnx.load(str(Bundle.load(bundle).model_path))
    hidden = next(i.dims[1] for i in fp32.graph.initializer if "word_embeddings" in i.name)
    heads = args.heads
    calibration = read_calibration_text(TRAIN, sentences=400, documents=50)
    texts = [words for words, _ in load_sentences(args.sentences)]
    feeds, _ = calibration_feeds(bundle, texts)
    reference = session(fp32)
    expected = [reference.run(None, feed)[0] for feed in feeds]
    sessions: dict[str, ort.InferenceSession] = {}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in args.variants.split(","):
            graph = variant(fp32, kind, hidden, heads, work)
            model = onnx.ModelProto()
            model.CopyFrom(graph)
            ranges, _ = activation_ranges(model, bundle, calibration.texts)
            quantize_static(model, ranges)
            sessions[kind] = session(model)
            got = [sessions[kind].run(None, feed)[0] for feed in feeds]
            diff = max(
                float(np.abs(g - e)[f["attention_mask"].astype(bool)].max())
                for g, e, f in zip(got, expected, feeds, strict=True)
            )
            rows[kind] = {"ops": op_counts(model, work), "max_logit_diff": diff}
    times: dict[str, list[float]] = {kind: [] for kind in sessions}
    for _ in range(args.repeats):
        for kind, s in sessions.items():
            started = time.perf_counter()
            for feed in feeds:
                s.run(None, feed)
            times[kind].append(time.perf_counter() - started)
    print(f"python perf/fusion.py {' '.join(sys.argv[1:])}\n{machine()}\n{bundle}: hidden {hidden}, {heads} heads")
    print(f"{len(texts)} CoNLL-2003 test sentences, {len(feeds)} batches; the model alone, medians of {args.repeats}")
    plain = statistics.median(times[next(iter(times))])
    print("| variant | sentences/s | x first | max logit diff vs fp32 | operators after onnxruntime's optimisation |")
    print("|---|---|---|---|---|")
    for kind, runs in times.items():
        seconds = statistics.median(runs)
        ops = ", ".join(f"{op} {n}" for op, n in rows[kind]["ops"].items())
        diff = rows[kind]["max_logit_diff"]
        print(f"| {kind} | {len(texts) / seconds:.1f} | {plain / seconds:.2f} | {diff:.3f} | {ops} |")


if __name__ == "__main__":
    main()
