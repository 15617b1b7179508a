"""The export step: ONNX parity with PyTorch, dynamic axes, manifest, optimisation and quantisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from nertron import NER
from nertron.model.bundle import Bundle, sha256_of
from nertron_export.onnx_export import ExportError, export_bundle
from nertron_export.tiny import CONLL_LABELS
from transformers import AutoModelForTokenClassification


def test_manifest_describes_the_bundle(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["labels"] == list(CONLL_LABELS)
    assert manifest["scheme"] == "IOB2"
    assert manifest["max_length"] == 64
    assert manifest["special_tokens"] == {"bos": 0, "eos": 2, "pad": 1}
    assert manifest["inputs"] == ["input_ids", "attention_mask"] and manifest["outputs"] == ["logits"]
    assert manifest["sha256"] == sha256_of(tiny_bundle / "model.onnx")
    model = onnx.load(str(tiny_bundle / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == manifest["opset"] >= 17


def test_dynamic_axes_match_pytorch(tiny_bundle: Path, tiny_checkpoint: Path) -> None:
    session = ort.InferenceSession(str(tiny_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    model = AutoModelForTokenClassification.from_pretrained(tiny_checkpoint).eval()
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 3), (5, 64), (3, 17)]:
        ids = rng.integers(4, model.config.vocab_size - 1, size=(batch, seq))
        mask = np.ones_like(ids)
        mask[0, seq // 2 :] = 0  # padding in one row
        ids[mask == 0] = 1
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        with torch.inference_mode():
            expected = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
        assert logits.shape == (batch, seq, len(CONLL_LABELS))
        assert np.abs(logits - expected.numpy())[mask == 1].max() < 1e-4


def test_parity_failure_is_an_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differ from PyTorch"):
        export_bundle(tiny_checkpoint, tmp_path, atol=0.0)


@pytest.mark.parametrize(
    ("options", "precision"), [({"optimize": True, "quantize": "int8"}, "int8"), ({"fp16": True}, "fp16")]
)
def test_optimized_variants_load_and_agree(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path, options: dict, precision: str
) -> None:
    report = export_bundle(tiny_checkpoint, tmp_path, **options)
    assert report.precision == precision == Bundle.load(tmp_path, verify=True).manifest.precision
    assert report.max_abs_diff_fp32 < 1e-4
    assert report.argmax_agreement > 0.9
    assert report.fused_ops.get("SkipLayerNormalization", 0) >= 2  # residual + LayerNorm fused per layer
    words = [["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "Paris", "."]]
    tags = NER(tmp_path).tag(words)
    assert len(tags[0]) == len(words[0])
    agreement = np.mean(np.array(tags[0]) == np.array(NER(tiny_bundle).tag(words)[0]))
    assert agreement >= 0.75


def test_bad_options_are_rejected(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_bundle(tiny_checkpoint, tmp_path, opset=13)
    with pytest.raises(ValueError, match="quantize must be"):
        export_bundle(tiny_checkpoint, tmp_path, quantize="int4")
    with pytest.raises(ValueError, match="tag scheme must be one of"):
        export_bundle(tiny_checkpoint, tmp_path, scheme="IO")


def test_int8_f1_gate_refuses_a_lossy_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "gate.txt"
    data.write_text("Angela B-PER\nMerkel I-PER\nmet O\nMacron B-PER\nin O\nParis B-LOC\n. O\n")
    # A negative allowance makes any int8 model fail the gate: the refusal path must leave no bundle.
    with pytest.raises(ExportError, match=r"the int8 model loses .* more than the allowed -1\.00"):
        export_bundle(tiny_checkpoint, tmp_path / "b", quantize="int8", gate_data=data, max_f1_loss=-1.0)
    assert not (tmp_path / "b" / "manifest.json").exists()
    assert not (tmp_path / "b" / "model.onnx").exists()
    report = export_bundle(tiny_checkpoint, tmp_path / "ok", quantize="int8", gate_data=data, max_f1_loss=100.0)
    assert Bundle.load(report.bundle).manifest.precision == "int8"
