"""The export step: ONNX parity with PyTorch, dynamic axes, manifest, optimisation and quantisation (static
int8 by default: batch-independent results, calibration text in three formats, the F1 gate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from nertron import NER
from nertron.entity import Entity
from nertron.model.bundle import Bundle, Manifest, sha256_of
from nertron.serving.repository import write_repositories
from nertron.tagging import max_batch_tokens
from nertron_export.gate import check_f1_loss
from nertron_export.onnx_export import ExportError, export_bundle
from nertron_export.static_int8 import read_calibration_text, read_calibration_texts
from nertron_export.tiny import CONLL_LABELS
from onnx import numpy_helper
from transformers import AutoModelForTokenClassification

CALIBRATION_TEXT = """\
Angela Merkel met Emmanuel Macron in Paris on Tuesday.
EU rejects German call to boycott British lamb.
Peter Blackburn reported from Brussels for Reuters.
Der Bundestag in Berlin stimmte am Dienstag dem Gesetz zu.
El presidente de México visitó Madrid y Barcelona la semana pasada con su ministro de Hacienda.
De minister sprak in Amsterdam met vertegenwoordigers van Philips en Shell over de nieuwe plannen.
"""
GATE_DATA = "Angela B-PER\nMerkel I-PER\nmet O\nMacron B-PER\nin O\nParis B-LOC\n. O\n"
# Texts of many lengths (the last is windowed), to be tagged alone and in batches padded to other lengths.
TEXTS = [
    "Paris",
    "Angela Merkel met Emmanuel Macron in Paris.",
    "EU rejects German call to boycott British lamb . " * 3,
    "Der Bundestag in Berlin stimmte am Dienstag zu.",
    "Peter Blackburn reported from Brussels for Reuters on Thursday, the European Commission said. " * 12,
]


@pytest.fixture(scope="module")
def static_int8(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with ``--quantize int8`` (static); the gate is measured, not enforced."""
    tmp = tmp_path_factory.mktemp("static-int8")
    (tmp / "calibration.txt").write_text(CALIBRATION_TEXT)
    (tmp / "gate.txt").write_text(GATE_DATA)
    report = export_bundle(
        tiny_checkpoint,
        tmp / "bundle",
        quantize="int8",
        calibration_data=tmp / "calibration.txt",
        gate_data=tmp / "gate.txt",
        max_f1_loss=100.0,
    )
    assert "int8 static:" in report.summary() and "gate on gate.txt" in report.summary()
    return report.bundle


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


def test_batches_are_sized_by_the_models_width(tiny_bundle: Path, tiny_checkpoint: Path, default_int8: Path) -> None:
    hidden = json.loads((tiny_checkpoint / "config.json").read_text())["hidden_size"]
    assert Bundle.load(tiny_bundle).manifest.hidden_size == hidden
    assert Bundle.load(default_int8).manifest.hidden_size == 384
    with NER(tiny_bundle) as tiny, NER(default_int8) as default:
        assert tiny.pipeline.max_batch_tokens == max_batch_tokens(hidden)
        assert default.pipeline.max_batch_tokens == 768
    assert max_batch_tokens(None) == max_batch_tokens(384) == 768  # bundles of older exports: as before
    assert max_batch_tokens(768) == 384 and max_batch_tokens(10**6) == 64


def test_a_manifest_needs_a_tokenizer(tiny_bundle: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "tokenizer_file": None}))
    with pytest.raises(ValueError, match="needs a tokenizer: tokenizer_file, sentencepiece or both"):
        Manifest.read(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "tokenizer_file": 7}))
    with pytest.raises(ValueError, match="'tokenizer_file' must be str"):
        Manifest.read(tmp_path / "manifest.json")


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
    ("options", "precision"), [({"optimize": True, "quantize": "int8-dynamic"}, "int8"), ({"fp16": True}, "fp16")]
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
    with pytest.raises(ValueError, match="quantize='int8' needs calibration_data and gate_data: "):
        export_bundle(tiny_checkpoint, tmp_path, quantize="int8")
    with pytest.raises(ValueError, match="calibration_data sets the activation ranges of quantize='int8'"):
        export_bundle(tiny_checkpoint, tmp_path, calibration_data=tmp_path / "text.txt")
    with pytest.raises(ValueError, match="gate_data checks an int8 model against fp32; it needs quantize"):
        export_bundle(tiny_checkpoint, tmp_path, gate_data=tmp_path / "dev.txt")
    with pytest.raises(ValueError, match="tag scheme must be one of"):
        export_bundle(tiny_checkpoint, tmp_path, scheme="IO")


def test_int8_f1_gate_refuses_a_lossy_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "gate.txt"
    data.write_text(GATE_DATA)
    text = tmp_path / "calibration.txt"
    text.write_text(CALIBRATION_TEXT)
    static = {"quantize": "int8", "calibration_data": text}
    # A negative allowance makes any int8 model fail the gate: the refusal path must leave no bundle.
    with pytest.raises(ExportError, match=r"sentences: the int8 model loses .* more than the allowed -1\.00"):
        export_bundle(tiny_checkpoint, tmp_path / "b", **static, gate_data=data, max_f1_loss=-1.0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["calibration.txt", "gate.txt"]  # nothing, no partial
    report = export_bundle(tiny_checkpoint, tmp_path / "ok", quantize="int8-dynamic", gate_data=data, max_f1_loss=100)
    quantization = Bundle.load(report.bundle).manifest.provenance["quantization"]
    assert Bundle.load(report.bundle).manifest.precision == "int8" and quantization["method"] == "dynamic"
    assert set(quantization["gate"]["f1_int8"]) == {"sentence", "document"}


def test_the_f1_gate_allows_a_loss_of_exactly_the_allowance() -> None:
    # 94.79 - 94.49 is 0.30000000000001 in floating point: the gate compares the loss as the F1s are given
    assert check_f1_loss(94.79, 94.49, 0.3) is None
    assert check_f1_loss(94.79, 94.48, 0.3, raise_error=False) == (
        "the int8 model loses 0.31 F1 points (fp32 94.79, int8 94.48), more than the allowed 0.30; "
        "ship fp32 or raise --max-f1-loss"
    )


def _alone_and_batched(bundle: Path) -> tuple[list[list[Entity]], list[list[list[Entity]]]]:
    with NER(bundle, batch_size=8) as ner:
        alone = [ner(text) for text in TEXTS]
        together = ner.batch(TEXTS)
        reversed_with_others = ner.batch([*TEXTS[::-1], *(t.upper() for t in TEXTS)])[: len(TEXTS)][::-1]
    return alone, [together, reversed_with_others]


def test_static_int8_export_gives_a_text_the_same_entities_in_any_batch(
    static_int8: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    alone, batched = _alone_and_batched(static_int8)
    assert any(alone)  # the tiny model finds entities, so the comparison below compares something
    for got in batched:
        for a, b in zip(alone, got, strict=True):
            assert [(e.label, e.start, e.end) for e in a] == [(e.label, e.start, e.end) for e in b]
            np.testing.assert_allclose([e.score for e in a], [e.score for e in b], rtol=0, atol=1e-5)
    # The same check fails for dynamic int8, which scales activations per batch.
    dynamic = export_bundle(tiny_checkpoint, tmp_path, quantize="int8-dynamic").bundle
    alone, batched = _alone_and_batched(dynamic)
    pairs = [pair for got in batched for a, b in zip(alone, got, strict=True) for pair in zip(a, b, strict=False)]
    assert max(abs(x.score - y.score) for x, y in pairs) > 1e-3


def test_optimized_static_int8_fuses_attention_only_and_stays_batch_independent(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "calibration.txt").write_text(CALIBRATION_TEXT)
    (tmp_path / "more.txt").write_text("Die Kanzlerin sprach in Hamburg.\n")
    (tmp_path / "gate.txt").write_text(GATE_DATA)
    report = export_bundle(
        tiny_checkpoint,
        tmp_path / "bundle",
        optimize=True,
        quantize="int8",
        calibration_data=[tmp_path / "calibration.txt", tmp_path / "more.txt"],  # several files, each sampled
        gate_data=tmp_path / "gate.txt",
        max_f1_loss=100.0,
    )
    calibrated_on = report.quantization["calibration"]["data"]
    assert f"{tmp_path.name}/calibration.txt (txt, " in calibrated_on
    assert f"; {tmp_path.name}/more.txt (txt, " in calibrated_on
    # MultiHeadAttention (its Q, K, V MatMuls quantised); SkipLayerNormalization is slower on CPU, so not fused
    assert report.fused_ops.get("MultiHeadAttention") == 2 and "SkipLayerNormalization" not in report.fused_ops
    ops = [n.op_type for n in onnx.load(str(report.bundle / "model.onnx")).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "SkipLayerNormalization" not in ops and "Softmax" not in ops
    assert ops.count("QuantizeLinear") == len(report.quantization["activation_ranges"])
    alone, batched = _alone_and_batched(report.bundle)
    assert any(alone)
    for got in batched:
        for a, b in zip(alone, got, strict=True):
            assert [(e.label, e.start, e.end) for e in a] == [(e.label, e.start, e.end) for e in b]
            np.testing.assert_allclose([e.score for e in a], [e.score for e in b], rtol=0, atol=1e-5)


def test_static_int8_bundle_records_its_ranges_and_quantises_the_word_embeddings(
    static_int8: Path, tiny_bundle: Path
) -> None:
    manifest = Bundle.load(static_int8, verify=True).manifest
    quantization = manifest.provenance["quantization"]
    assert manifest.precision == "int8" and quantization["method"] == "static"
    assert quantization["calibration"]["data"].startswith("calibration.txt (txt, sha256 ")
    model = onnx.load(str(static_int8 / "model.onnx"))
    scales = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer if not i.dims}
    for activation, (low, high) in quantization["activation_ranges"].items():
        assert low <= 0 <= high
        assert scales[f"{activation}/scale"] == pytest.approx(max(high - low, 1e-8) / 255, rel=1e-6)
    vocabulary = onnx.load(str(tiny_bundle / "model.onnx")).graph.initializer
    table = next(i for i in vocabulary if "word_embeddings" in i.name)
    rows = next(i for i in model.graph.initializer if i.name == f"{table.name}/int8_rows")
    assert rows.data_type == onnx.TensorProto.INT8 and list(rows.dims) == list(table.dims)
    assert not any(i.name == table.name for i in model.graph.initializer)
    fp32, int8 = (NER(b).tag([w.split() for w in TEXTS]) for b in (tiny_bundle, static_int8))
    agreement = np.mean([a == b for x, y in zip(fp32, int8, strict=True) for a, b in zip(x, y, strict=True)])
    assert agreement >= 0.9


def test_calibration_text_in_three_formats(tmp_path: Path) -> None:
    lines = CALIBRATION_TEXT.splitlines()
    (tmp_path / "plain.txt").write_text(CALIBRATION_TEXT)
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(lines)))
    conll = "-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} O" for w in t.split()) for t in lines) + "\n"
    (tmp_path / "conll.txt").write_text(conll)
    (tmp_path / "undocumented.txt").write_text(conll.removeprefix("-DOCSTART- O\n\n"))
    plain = read_calibration_text(tmp_path / "plain.txt")
    assert sorted(map(tuple, plain.texts)) == sorted(tuple(t.replace(".", " .").split()) for t in lines)
    assert sorted(map(tuple, read_calibration_text(tmp_path / "lines.jsonl").texts)) == sorted(map(tuple, plain.texts))
    for name in ("conll.txt", "undocumented.txt"):
        conll_text = read_calibration_text(tmp_path / name, sentences=4, documents=1)
        assert (
            "(conll, " in conll_text.description and "4 sentences alone and 1 documents whole" in conll_text.description
        )
        assert len(conll_text.texts) == 5 and len(conll_text.texts[-1]) == sum(len(t.split()) for t in lines)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected an object with a string field 'text'"):
        read_calibration_text(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.txt: no text to calibrate on"):
        read_calibration_text(tmp_path / "empty.txt")


def test_calibration_text_from_several_files_covers_each(tmp_path: Path) -> None:
    # the default model's ranges are measured on English CoNLL and unlabeled text in its other languages
    (tmp_path / "en").mkdir()
    (tmp_path / "zh").mkdir()
    english = "-DOCSTART- O\n\n" + "\n\n".join(f"Word{i} O\nhere O" for i in range(6)) + "\n"
    (tmp_path / "en" / "train.txt").write_text(english)
    (tmp_path / "zh" / "unlabeled.txt").write_text("默克尔访问北京。\n华为在深圳。\n腾讯。\n")
    both = read_calibration_texts([tmp_path / "en" / "train.txt", tmp_path / "zh" / "unlabeled.txt"], sentences=2)
    alone = [
        read_calibration_text(p, sentences=2)
        for p in (tmp_path / "en" / "train.txt", tmp_path / "zh" / "unlabeled.txt")
    ]
    assert both.texts == alone[0].texts + alone[1].texts
    assert len(alone[0].texts) == 3 and len(alone[1].texts) == 3  # 2 sentences + 1 document; all 3 lines
    assert both.description.startswith("en/train.txt (conll, ") and "; zh/unlabeled.txt (txt, " in both.description
    assert ["华", "为", "在", "深圳", "。"] in both.texts  # cut into words as the SDK cuts Chinese (ICU)
    with pytest.raises(ValueError, match="calibration data: give at least one file"):
        read_calibration_texts([])


def test_a_checkpoints_sentencepiece_model_ships_when_it_tokenises_as_tokenizer_json(
    default_int8: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from nertron.subwords import SentencePieceTokenizer
    from nertron_export.tiny import build_tiny_model
    from transformers import XLMRobertaTokenizerFast

    # A tiny model over XLM-R's real 250,002-piece vocabulary, with its SentencePiece model beside it, as
    # XLM-R checkpoints keep it.
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(default_int8 / "tokenizer.json"), model_max_length=64)
    checkpoint = build_tiny_model(tmp_path / "checkpoint", tokenizer=tokenizer)
    (checkpoint / "sentencepiece.bpe.model").write_bytes((default_int8 / "sentencepiece.model").read_bytes())
    report = export_bundle(checkpoint, tmp_path / "with")
    assert report.tokenizer.startswith("sentencepiece.model (from sentencepiece.bpe.model; equal to tokenizer.json")
    manifest = Bundle.load(report.bundle).manifest
    assert manifest.sentencepiece is not None
    assert (manifest.sentencepiece.id_offset, manifest.sentencepiece.unk_id) == (1, 3)
    # it replaces tokenizer.json, in the bundle and in the Triton repository made from it
    assert manifest.tokenizer_file is None and not (report.bundle / "tokenizer.json").exists()
    repository = write_repositories(report.bundle, tmp_path / "repository", ["cpu"])[0]
    names = ["manifest.json", "model.onnx", "model.py", "sentencepiece.model"]
    assert sorted(p.name for p in (repository / "1").iterdir()) == names
    assert Bundle.load(repository / "1").manifest.tokenizer_file is None
    (checkpoint / "sentencepiece.bpe.model").unlink()
    without = export_bundle(checkpoint, tmp_path / "without")
    assert without.tokenizer == "tokenizer.json (no SentencePiece model in the checkpoint's directory)"
    assert Bundle.load(without.bundle).manifest.sentencepiece is None
    assert (without.bundle / "tokenizer.json").is_file()
    with NER(report.bundle) as lean, NER(without.bundle) as full:
        assert isinstance(lean.pipeline.encoder.tokenizer, SentencePieceTokenizer)
        texts = [*TEXTS, "東京で会議が開かれた。 Москва café naïve 👍"]
        assert lean.batch(texts) == full.batch(texts)
    # A tokenizer with tokens added after training is not its SentencePiece model any more.
    tokenizer.add_tokens(["<new-entity-marker>"])
    tokenizer.save_pretrained(checkpoint)
    (checkpoint / "sentencepiece.bpe.model").write_bytes((default_int8 / "sentencepiece.model").read_bytes())
    added = export_bundle(checkpoint, tmp_path / "added")
    assert added.tokenizer == "tokenizer.json (the tokenizer has added tokens that its SentencePiece model lacks)"
    assert Bundle.load(added.bundle).manifest.sentencepiece is None
    # A SentencePiece model that is not the tokenizer's is left out, said.
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    for file in tiny_checkpoint.iterdir():
        (mismatched / file.name).write_bytes(file.read_bytes())
    (mismatched / "sentencepiece.bpe.model").write_bytes((default_int8 / "sentencepiece.model").read_bytes())
    refused = export_bundle(mismatched, tmp_path / "refused")
    assert "ids do not map to the tokenizer's by one offset" in refused.tokenizer
    assert Bundle.load(refused.bundle).manifest.sentencepiece is None
