"""HF token-classification checkpoint -> nertron bundle (ONNX + tokenizer.json + manifest.json).

The fp32 graph is checked against PyTorch on sample inputs and the export fails when the logits differ
by more than ``atol``. Optional steps: onnxruntime's transformer optimizer (``optimize``), int8 (``quantize``:
``"int8"``, static, the embedded model's path: fixed activation ranges calibrated on ``calibration_data``,
int8 word-embedding rows, gated on ``gate_data``; or ``"int8-dynamic"``, activations scaled per batch) and
fp16 weights for GPUs (``fp16``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import transformers
from nertron._native import PostProcessor
from nertron.errors import InvalidValue
from nertron.io.atomic import replacing_folder
from nertron.io.conll import Document, read_conll
from nertron.model.bundle import Manifest, SentencePiece, SpecialTokens, check_bundle_target
from nertron.model.quantization import (
    quantize_dynamic_int8,
    quantize_embedding_rows,
    quantize_static,
    word_embedding_table,
)
from nertron.tags import check_scheme, detect_scheme
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedTokenizerFast

from . import static_int8
from .static_int8 import CalibrationText, activation_ranges, read_calibration_text

SAMPLE_TEXTS = (
    "Angela Merkel met Emmanuel Macron in Paris.",
    "EU rejects German call to boycott British lamb .",
    "Der Bundestag in Berlin stimmte am Dienstag zu.",
    "El presidente de México visitó Madrid y Barcelona la semana pasada con su ministro.",
    "東京で会議が開かれた。",
    "x",
)
QUANTIZATIONS = ("int8", "int8-dynamic")
# Where HF checkpoints keep their SentencePiece model (XLM-R: sentencepiece.bpe.model); bundles call it this:
SENTENCEPIECE_SOURCES = ("sentencepiece.bpe.model", "sentencepiece.model", "spiece.model")
SENTENCEPIECE_FILE = "sentencepiece.model"
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


class ExportError(RuntimeError):
    """The exported model failed a check (parity with PyTorch, a malformed checkpoint)."""


@dataclass
class ExportReport:
    """What an export did and measured."""

    bundle: Path
    precision: str
    max_abs_diff_fp32: float
    max_abs_diff_final: float
    argmax_agreement: float
    fused_ops: dict[str, int] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"bundle: {self.bundle} ({self.precision})",
            f"fp32 ONNX vs PyTorch: max |diff| = {self.max_abs_diff_fp32:.2e}",
        ]
        if self.precision != "fp32" or self.fused_ops:
            lines.append(
                f"shipped model vs PyTorch: max |diff| = {self.max_abs_diff_final:.2e}, "
                f"argmax agreement {100 * self.argmax_agreement:.2f}%"
            )
        if self.quantization:
            lines.append(_describe(self.quantization))
        if "gate" in self.quantization:
            gate = self.quantization["gate"]
            lines.append(
                f"gate on {gate['data']}: entity F1 fp32 / int8: "
                + ", ".join(f"{c}s {gate['f1_fp32'][c]:.2f} / {gate['f1_int8'][c]:.2f}" for c in gate["f1_fp32"])
                + f" (allowed loss {gate['max_f1_loss']:.2f})"
            )
        if self.tokenizer:
            lines.append(f"tokenizer: {self.tokenizer}")
        if self.fused_ops:
            lines.append("fused: " + ", ".join(f"{k} {v}" for k, v in self.fused_ops.items()))
        lines.append(f"took {self.seconds:.1f} s")
        return "\n".join(lines)


def _describe(quantization: dict[str, Any]) -> str:
    if quantization["method"] == "dynamic":
        return "int8 dynamic: activations scaled per batch, so a text's scores depend on its batch-mates"
    calibration = quantization["calibration"]
    return (
        f"int8 static: {len(quantization['activation_ranges'])} activation ranges from {calibration['windows']} "
        f"windows of {calibration['data']}; word embeddings {quantization['word_embeddings']}"
    )


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_bundle(
    model: str | Path,
    out: str | Path,
    *,
    opset: int = 17,
    optimize: bool = False,
    quantize: str | None = None,
    fp16: bool = False,
    scheme: str | None = None,
    max_length: int | None = None,
    atol: float = 1e-4,
    calibration_data: str | Path | None = None,
    gate_data: str | Path | None = None,
    max_f1_loss: float = 0.3,
    temperature_data: str | Path | None = None,
    force: bool = False,
) -> ExportReport:
    """Exports ``model`` (an HF directory or hub id) into the bundle directory ``out``.

    The bundle is built beside ``out`` and takes its place only when every step has passed: a failure leaves
    ``out`` as it was. ``out`` may be missing, empty or a bundle (which is replaced); a folder holding anything
    else is refused unless ``force`` (its content is then removed). ``out`` must not be, hold or lie inside the
    checkpoint or a data file. ``temperature_data`` (held-out CoNLL, e.g. dev) fits the scores' temperature as
    ``nertron calibrate`` does.

    ``quantize="int8"`` (static: a text's result does not depend on its batch-mates) needs ``calibration_data``
    (text like what the model will see: plain text, JSONL or CoNLL, e.g. the training set; see
    ``nertron_export.static_int8``) and ``gate_data`` (a labelled CoNLL file, e.g. dev): the int8 model is refused
    (``ExportError``, no bundle left) when its entity F1, sentences alone or documents whole, is more than
    ``max_f1_loss`` points below fp32's. ``"int8-dynamic"`` is gated when ``gate_data`` is given.
    """
    _check_options(opset, quantize, fp16, calibration_data, gate_data)
    check_bundle_target(
        Path(out),
        {
            "model": model,
            "calibration_data": calibration_data,
            "gate_data": gate_data,
            "temperature_data": temperature_data,
        },
        force=force,
    )
    # Both files are read before the export, which takes minutes on a large model.
    calibration = read_calibration_text(Path(calibration_data)) if calibration_data is not None else None
    gate_documents = read_conll(gate_data) if gate_data is not None else None
    started = time.perf_counter()
    with replacing_folder(out) as work:
        report = _build(
            model,
            work,
            opset=opset,
            optimize=optimize,
            quantize=quantize,
            fp16=fp16,
            scheme=scheme,
            max_length=max_length,
            atol=atol,
            calibration=calibration,
            gate=None if gate_data is None else (Path(gate_data).name, gate_documents or []),
            max_f1_loss=max_f1_loss,
        )
        if temperature_data is not None:
            from nertron.cli.calibrate import calibrate_bundle

            calibrate_bundle(work, Path(temperature_data), shown=Path(out))
    return dataclasses.replace(report, bundle=Path(out), seconds=time.perf_counter() - started)


def _build(
    model: str | Path,
    out: Path,
    *,
    opset: int,
    optimize: bool,
    quantize: str | None,
    fp16: bool,
    scheme: str | None,
    max_length: int | None,
    atol: float,
    calibration: CalibrationText | None,
    gate: tuple[str, list[Document]] | None,
    max_f1_loss: float,
) -> ExportReport:
    """The export's steps, writing the bundle into the empty folder ``out``; ``gate``: the gate file's name and
    documents."""
    transformers.utils.logging.disable_progress_bar()
    # Eager attention exports the plain MatMul/Softmax pattern that onnxruntime fuses into Attention
    # (SDPA exports mask handling with Where/IsNaN ops that block the fusion).
    hf_model = AutoModelForTokenClassification.from_pretrained(str(model), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ExportError(f"{model} has no fast tokenizer (tokenizer.json); nertron needs one")
    config = hf_model.config
    labels = [config.id2label[i] for i in range(config.num_labels)]
    PostProcessor(labels)  # fails on malformed labels
    scheme = check_scheme(scheme) if scheme else detect_scheme(labels)
    length = max_length or model_max_length(config, tokenizer)
    inputs = _sample_inputs(tokenizer, length)
    with torch.inference_mode():
        reference = hf_model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()

    precision = "int8" if quantize else "fp16" if fp16 else "fp32"
    manifest = Manifest(
        labels=tuple(labels),
        scheme=scheme,
        max_length=length,
        special_tokens=SpecialTokens(**_special_tokens(tokenizer)),
        precision=precision,
        opset=opset,
        hidden_size=getattr(config, "hidden_size", None),
        provenance={
            "optimized": bool(optimize or fp16),
            "source": str(model),
            "architecture": type(hf_model).__name__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    quantization: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        words = [text.split() for text in SAMPLE_TEXTS] + (calibration.texts if calibration else [])
        sentencepiece, sentencepiece_note = _sentencepiece(Path(str(model)), tokenizer, words, Path(tmp))
        if sentencepiece is not None:  # it replaces tokenizer.json (17 MB for XLM-R's vocabulary)
            manifest = dataclasses.replace(manifest, sentencepiece=sentencepiece[1], tokenizer_file=None)
        fp32_path = Path(tmp) / "model.fp32.onnx"
        _export_onnx(hf_model, fp32_path, opset)
        del hf_model  # the PyTorch weights are not needed any more (1.1 GB for XLM-R base)
        diff_fp32 = _max_diff(_run(fp32_path, inputs), reference, inputs["attention_mask"])
        if diff_fp32 > atol:
            raise ExportError(f"ONNX logits differ from PyTorch by {diff_fp32:.2e} > atol {atol:.0e}")
        final_path = fp32_path
        fused: dict[str, int] = {}
        if optimize or fp16:
            final_path, fused = _optimize(fp32_path, config, fp16=fp16, static_int8=quantize == "int8")
        if not fp16 and final_path != fp32_path:
            diff_opt = _max_diff(_run(final_path, inputs), reference, inputs["attention_mask"])
            if diff_opt > atol:
                raise ExportError(f"optimized logits differ by {diff_opt:.2e} > atol {atol:.0e}")
        reference_bundle = Path(tmp) / "fp32-bundle"
        if quantize:
            fp32_manifest = dataclasses.replace(manifest, precision="fp32")
            _write_bundle(reference_bundle, final_path, tokenizer, fp32_manifest, sentencepiece)
            if quantize == "int8":
                assert calibration is not None
                final_path, quantization = _quantize_static(final_path, reference_bundle, calibration)
            else:
                final_path, quantization = _quantize_dynamic(final_path)
            manifest = dataclasses.replace(manifest, provenance={**manifest.provenance, "quantization": quantization})
        _write_bundle(out, final_path, tokenizer, manifest, sentencepiece)
        if gate is not None:
            quantization["gate"] = {
                "data": gate[0],
                "max_f1_loss": max_f1_loss,
                **_f1_gate(reference_bundle, out, gate[1], max_f1_loss),
            }
            manifest = dataclasses.replace(manifest, provenance={**manifest.provenance, "quantization": quantization})
            manifest.with_model(out / "model.onnx").write(out)

    model_file = out / "model.onnx"
    final_logits = _run(model_file, inputs)
    mask = inputs["attention_mask"].astype(bool)
    agreement = float((final_logits.argmax(-1) == reference.argmax(-1))[mask].mean())
    return ExportReport(
        bundle=out,
        precision=precision,
        max_abs_diff_fp32=diff_fp32,
        max_abs_diff_final=_max_diff(final_logits, reference, inputs["attention_mask"]),
        argmax_agreement=agreement,
        fused_ops=fused,
        quantization=quantization,
        tokenizer=sentencepiece_note,
    )


def _check_options(
    opset: int, quantize: str | None, fp16: bool, calibration_data: str | Path | None, gate_data: str | Path | None
) -> None:
    if opset < 17:
        raise InvalidValue(f"opset must be >= 17, got {opset}")
    if quantize not in (None, *QUANTIZATIONS):
        raise InvalidValue(f"quantize must be None or one of {', '.join(map(repr, QUANTIZATIONS))}, got {quantize!r}")
    if quantize and fp16:
        raise InvalidValue("choose one of quantize and fp16")
    if quantize == "int8":
        missing = [
            name for name, value in (("calibration_data", calibration_data), ("gate_data", gate_data)) if value is None
        ]
        if missing:
            raise InvalidValue(
                f"quantize='int8' needs {' and '.join(missing)}: calibration_data, text like what the model will see "
                "(plain text, JSONL or CoNLL; e.g. the training set), fixes the activation ranges; gate_data, a "
                "labelled CoNLL file (e.g. dev), checks the int8 model's F1 against fp32's"
            )
    elif calibration_data is not None:
        raise InvalidValue("calibration_data sets the activation ranges of quantize='int8'; it is unused otherwise")
    if gate_data is not None and not quantize:
        raise InvalidValue("gate_data checks an int8 model against fp32; it needs quantize")


def _write_bundle(
    out: Path,
    model_path: Path,
    tokenizer: PreTrainedTokenizerFast,
    manifest: Manifest,
    sentencepiece: tuple[Path, SentencePiece] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _save_onnx(model_path, out / "model.onnx")
    if manifest.tokenizer_file is not None:
        tokenizer.backend_tokenizer.save(str(out / manifest.tokenizer_file))
    if sentencepiece is not None:
        shutil.copyfile(sentencepiece[0], out / SENTENCEPIECE_FILE)
    manifest.with_model(out / "model.onnx").write(out)


def _sentencepiece(
    checkpoint: Path, tokenizer: PreTrainedTokenizerFast, words: list[list[str]], tmp: Path
) -> tuple[tuple[Path, SentencePiece] | None, str]:
    """The checkpoint's SentencePiece model, if it has one that tokenises ``words`` exactly as its
    ``tokenizer.json`` does (the SDK then loads it: for XLM-R's vocabulary ~55 MiB instead of ~290 MiB); and
    what was decided, in words."""
    from nertron.subwords import HFTokenizer, SentencePieceTokenizer

    source = next((checkpoint / name for name in SENTENCEPIECE_SOURCES if (checkpoint / name).is_file()), None)
    if source is None:
        return None, "tokenizer.json (no SentencePiece model in the checkpoint's directory)"
    if any(not token.special for token in tokenizer.added_tokens_decoder.values()):
        return None, "tokenizer.json (the tokenizer has added tokens that its SentencePiece model lacks)"
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(source))
    vocabulary = tokenizer.get_vocab()
    normal = (i for i in range(processor.get_piece_size()) if not (processor.is_control(i) or processor.is_unknown(i)))
    offsets = {vocabulary.get(processor.id_to_piece(i), -1) - i for i in normal}
    if len(offsets) != 1 or tokenizer.unk_token_id is None:
        return None, f"tokenizer.json ({source.name}'s ids do not map to the tokenizer's by one offset)"
    entry = SentencePiece(SENTENCEPIECE_FILE, id_offset=offsets.pop(), unk_id=int(tokenizer.unk_token_id))
    tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    reference = HFTokenizer(tmp / "tokenizer.json")
    candidate = SentencePieceTokenizer(source, id_offset=entry.id_offset, unk_id=entry.unk_id)
    for text in words:
        expected, got = reference.encode_words(text), candidate.encode_words(text)
        if not all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True)):
            return None, f"tokenizer.json ({source.name} tokenises {' '.join(text)[:60]!r} differently)"
    return (source, entry), f"{SENTENCEPIECE_FILE} (from {source.name}; equal to tokenizer.json on {len(words)} texts)"


def check_f1_loss(fp32_f1: float, quantized_f1: float, max_loss: float, *, raise_error: bool = True) -> str | None:
    """None if the quantised F1 (points) is within ``max_loss`` of fp32's, else the reason (or raises)."""
    loss = fp32_f1 - quantized_f1
    if loss <= max_loss:
        return None
    reason = (
        f"the int8 model loses {loss:.2f} F1 points (fp32 {fp32_f1:.2f}, int8 {quantized_f1:.2f}), "
        f"more than the allowed {max_loss:.2f}; ship fp32 or raise --max-f1-loss"
    )
    if raise_error:
        raise ExportError(reason)
    return reason


def _f1_gate(fp32_bundle: Path, int8_bundle: Path, documents: list[Document], max_loss: float) -> dict[str, Any]:
    """Entity F1 (points) of both bundles on ``documents``, sentences alone and documents whole; refuses the int8
    bundle when it loses more than ``max_loss`` in either."""
    from nertron import NER
    from nertron.evaluation import evaluate

    f1: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for precision, bundle in (("fp32", fp32_bundle), ("int8", int8_bundle)):
        with NER(bundle) as ner:
            for context in ("sentence", "document"):
                f1[precision][context] = round(100 * evaluate(ner, documents, context=context).entity.f1, 2)
    for context in ("sentence", "document"):
        reason = check_f1_loss(f1["fp32"][context], f1["int8"][context], max_loss, raise_error=False)
        if reason:
            raise ExportError(f"{context}s: {reason}" if context == "sentence" else f"documents: {reason}")
    return {"f1_fp32": f1["fp32"], "f1_int8": f1["int8"]}


def _quantize_static(path: Path, fp32_bundle: Path, calibration: CalibrationText) -> tuple[Path, dict[str, Any]]:
    """The model at ``path`` (the graph of ``fp32_bundle``) with static int8 MatMuls, ranges measured on
    ``calibration``, and int8 word-embedding rows; and what was done."""
    import onnx

    graph = onnx.load(str(path))
    ranges, windows = activation_ranges(graph, fp32_bundle, calibration.texts)
    quantize_static(graph, ranges)
    table = word_embedding_table(graph)
    if table is not None:
        quantize_embedding_rows(graph, table)
    target = path.with_name("model.int8.onnx")
    onnx.save_model(graph, str(target))
    return target, {
        "method": "static",
        "activations": "uint8, fixed ranges",
        "weights": "int8 per output channel, 7 bits",
        "word_embeddings": "int8 rows, a scale per row" if table else "fp32 (no plain lookup of input_ids)",
        "calibration": {"data": calibration.description, "windows": windows, "method": static_int8.method()},
        "activation_ranges": ranges,
    }


def _quantize_dynamic(path: Path) -> tuple[Path, dict[str, Any]]:
    target = path.with_name("model.int8.onnx")
    quantize_dynamic_int8(path, target)
    return target, {
        "method": "dynamic",
        "activations": "scaled per batch at run time: a text's scores depend on its batch-mates",
        "weights": "int8 per output channel",
        "word_embeddings": "fp32",
    }


def model_max_length(config: Any, tokenizer: PreTrainedTokenizerFast) -> int:
    """Tokens one input may hold, <s> and </s> included."""
    # XLM-R style position ids start after the padding index, so 514 positions hold 512 tokens.
    positions = int(config.max_position_embeddings)
    padding_idx = getattr(config, "pad_token_id", None)
    if getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert") and padding_idx is not None:
        positions -= padding_idx + 1
    limit = tokenizer.model_max_length
    return min(positions, limit) if isinstance(limit, int) and limit < 1_000_000 else positions


def _special_tokens(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if bos is None or eos is None or pad is None:
        raise ExportError("the tokenizer must define cls/bos, sep/eos and pad tokens")
    return {"bos": int(bos), "eos": int(eos), "pad": int(pad)}


def _sample_inputs(tokenizer: PreTrainedTokenizerFast, max_length: int) -> dict[str, np.ndarray]:
    encoded = tokenizer(list(SAMPLE_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
    }


def _export_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    dummy = torch.ones((2, 8), dtype=torch.int64)
    # The TorchScript exporter: on this model family its graphs run ~15% faster in onnxruntime
    # than the dynamo exporter's. Its tracer warnings are about shapes that the parity check covers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*", category=UserWarning)
        # The legacy exporter is deprecated (and warns about its own internals), but still supported.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        _torch_export(model, path, opset, dummy)


def _torch_export(model: torch.nn.Module, path: Path, opset: int, dummy: torch.Tensor) -> None:
    torch.onnx.export(
        _LogitsOnly(model),
        (dummy, torch.ones_like(dummy)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"},
        },
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def _optimize(path: Path, config: Any, *, fp16: bool, static_int8: bool = False) -> tuple[Path, dict[str, int]]:
    """onnxruntime's transformer optimizer; for static int8 only the fusions measured faster on CPU under it
    (docs/benchmarks.md): attention as MultiHeadAttention, whose Q, K and V MatMuls stay MatMuls and are
    quantised, and no SkipLayerNormalization, whose CPU kernel is slower than the Add and LayerNormalization."""
    from onnxruntime.transformers.fusion_options import AttentionOpType, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    if static_int8:
        options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
        options.use_multi_head_attention = True
        options.attention_op_type = AttentionOpType.MultiHeadAttention
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        optimization_options=options,
    )
    stats = optimized.get_fused_operator_statistics()
    fused = {op: int(stats.get(op, 0)) for op in FUSED_OPS if stats.get(op, 0)}
    if fp16:
        optimized.convert_float_to_float16(keep_io_types=True)
    target = path.with_name("model.optimized.onnx")
    optimized.save_model_to_file(str(target))
    return target, fused


def _save_onnx(source: Path, target: Path) -> None:
    """Copies a model, inlining external data so that the bundle holds a single .onnx file."""
    import onnx

    model = onnx.load(str(source), load_external_data=True)
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save_model(model, str(target))
    else:
        onnx.save_model(model, str(target), save_as_external_data=True, location=target.name + ".data")


def _run(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(["logits"], {k: v for k, v in inputs.items() if k in names})[0], np.float32)


def _max_diff(logits: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(logits - reference)[mask.astype(bool)].max())
