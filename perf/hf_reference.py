"""The default model as an HF PyTorch checkpoint, rebuilt from its assembled fp32 ONNX graph.

The benchmark compares nertron with the HF ``pipeline`` on the same weights; this recovers them: named
initializers map to their HF names, and each MatMul weight takes the name of the bias its output is
added to (transposed back). The rebuilt model is checked against onnxruntime before use.

    python perf/hf_reference.py --out artifacts/default-hf

writes it as an HF checkpoint, the model a user would bring, e.g. to check static int8 through the export path:
``nertron export --model artifacts/default-hf --out artifacts/default-int8 --quantize int8 --calibration-data
../shared/data/conll2003/train.txt --gate-data ../shared/data/conll2003/dev.txt``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from nertron.model.bundle import Bundle
from onnx import numpy_helper
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer


def state_dict_from_onnx(model_path: Path) -> dict[str, torch.Tensor]:
    graph = onnx.load(str(model_path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {}
    for name, array in values.items():
        if name.startswith("model."):
            state[name.removeprefix("model.")] = torch.from_numpy(array.copy())
            continue
        for node in consumers.get(name, []):
            if node.op_type != "MatMul":
                continue
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            biases = [i for n in adds for i in n.input if i.startswith("model.") and i.endswith(".bias")]
            if len(biases) == 1:
                state[biases[0].removeprefix("model.").replace(".bias", ".weight")] = torch.from_numpy(array.T.copy())
    return state


def build_hf_model(bundle_path: Path) -> tuple[XLMRobertaForTokenClassification, XLMRobertaTokenizer]:
    """The fp32 bundle's model and tokenizer in transformers, checked against onnxruntime (1e-4)."""
    bundle = Bundle.load(bundle_path)
    state = state_dict_from_onnx(bundle.model_path)
    vocab, hidden = state["roberta.embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("roberta.encoder.layer."))
    ffn = state["roberta.encoder.layer.0.intermediate.dense.weight"].shape[0]
    labels = bundle.labels
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        intermediate_size=ffn,
        max_position_embeddings=state["roberta.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=1,
        layer_norm_eps=1e-12,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = XLMRobertaForTokenClassification(config).eval()
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids") and "token_type_ids" not in m]
    if missing:
        raise RuntimeError(f"weights not recovered from the ONNX graph: {missing}")
    tokenizer = XLMRobertaTokenizer(tokenizer_file=str(bundle.tokenizer_path), model_max_length=bundle.max_length)
    _check(model, tokenizer, bundle)
    return model, tokenizer


def _check(model: XLMRobertaForTokenClassification, tokenizer: XLMRobertaTokenizer, bundle: Bundle) -> None:
    encoded = tokenizer(
        ["Angela Merkel met Emmanuel Macron in Paris.", "EU rejects German call."],
        padding=True,
        return_tensors="np",
    )
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    feed = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    expected = session.run(["logits"], feed)[0]
    with torch.inference_mode():
        got = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    diff = float(np.abs(got - expected)[feed["attention_mask"] == 1].max())
    if diff > 1e-4:
        raise RuntimeError(f"rebuilt HF model differs from the ONNX model by {diff:.2e}")


def main() -> None:
    from nertron.model.default import default_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory of the HF checkpoint to write")
    args = parser.parse_args()
    bundle = Bundle.load(default_bundle("fp32"))
    model, tokenizer = build_hf_model(bundle.path)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    if bundle.manifest.sentencepiece is not None:  # as XLM-R checkpoints on the hub have it
        shutil.copyfile(bundle.path / bundle.manifest.sentencepiece.file, args.out / "sentencepiece.bpe.model")
    print(f"the default model's fp32 weights as an HF checkpoint: {args.out}")


if __name__ == "__main__":
    main()
