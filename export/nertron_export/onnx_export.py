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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from nertron._native import PostProcessor
from nertron.errors import InvalidValue
from nertron.io.atomic import replacing_folder
from nertron.io.conll import Document, read_conll
from nertron.model.bundle import Manifest, SentencePiece, SpecialTokens, check_bundle_target
from nertron.tags import check_scheme, detect_scheme
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedTokenizerFast

from .errors import ExportError
from .gate import check_f1_loss
from .gate import f1_gate as _f1_gate  # a name of this module, so that a test can replace the gate
from .model_info import model_max_length, special_tokens
from .model_source import check_model_source
from .onnx_graph import export_onnx, optimize_onnx, save_onnx
from .parity import SAMPLE_TEXTS, max_diff, run_onnx, sample_inputs
from .quantize import quantize_dynamic, quantize_static_int8
from .report import ExportReport
from .sentencepiece_detect import SENTENCEPIECE_FILE, detect_sentencepiece
from .static_int8 import CalibrationText, read_calibration_text, read_calibration_texts

__all__ = [
    "QUANTIZATIONS",
    "ExportError",
    "ExportReport",
    "check_f1_loss",
    "export_bundle",
    "model_max_length",
]

QUANTIZATIONS = ("int8", "int8-dynamic")


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
    calibration_data: str | Path | Sequence[str | Path] | None = None,
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
    (text like what the model will see: plain text, JSONL or CoNLL, e.g. the training set; one file or several,
    e.g. one per language, each sampled alike; see ``nertron_export.static_int8``) and ``gate_data`` (a labelled
    CoNLL file, e.g. dev): the int8 model is refused
    (``ExportError``, no bundle left) when its entity F1, sentences alone or documents whole, is more than
    ``max_f1_loss`` points below fp32's. ``"int8-dynamic"`` is gated when ``gate_data`` is given.
    """
    calibration_files = _files(calibration_data, "calibration_data")
    _check_options(opset, quantize, fp16, calibration_files, gate_data)
    check_model_source(model, "model")
    check_bundle_target(
        Path(out),
        {
            "model": model,
            "calibration_data": calibration_files,
            "gate_data": gate_data,
            "temperature_data": temperature_data,
        },
        force=force,
    )
    # The data files are read before the export, which takes minutes on a large model.
    if calibration_files is None:
        calibration = None
    elif len(calibration_files) == 1:  # described by its name alone, as before several files were taken
        calibration = read_calibration_text(calibration_files[0])
    else:  # each described with its folder (es/unlabeled.txt, nl/unlabeled.txt)
        calibration = read_calibration_texts(calibration_files)
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
            from nertron.model.calibrate import calibrate_bundle

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
    inputs = sample_inputs(tokenizer, length)
    with torch.inference_mode():
        reference = hf_model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()

    precision = "int8" if quantize else "fp16" if fp16 else "fp32"
    manifest = Manifest(
        labels=tuple(labels),
        scheme=scheme,
        max_length=length,
        special_tokens=SpecialTokens(**special_tokens(tokenizer)),
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
        sentencepiece, sentencepiece_note = detect_sentencepiece(Path(str(model)), tokenizer, words, Path(tmp))
        if sentencepiece is not None:  # it replaces tokenizer.json (17 MB for XLM-R's vocabulary)
            manifest = dataclasses.replace(manifest, sentencepiece=sentencepiece[1], tokenizer_file=None)
        fp32_path = Path(tmp) / "model.fp32.onnx"
        export_onnx(hf_model, fp32_path, opset)
        del hf_model  # the PyTorch weights are not needed any more (1.1 GB for XLM-R base)
        diff_fp32 = max_diff(run_onnx(fp32_path, inputs), reference, inputs["attention_mask"])
        if diff_fp32 > atol:
            raise ExportError(f"ONNX logits differ from PyTorch by {diff_fp32:.2e} > atol {atol:.0e}")
        final_path = fp32_path
        fused: dict[str, int] = {}
        if optimize or fp16:
            final_path, fused = optimize_onnx(fp32_path, config, fp16=fp16, static_int8=quantize == "int8")
        if not fp16 and final_path != fp32_path:
            diff_opt = max_diff(run_onnx(final_path, inputs), reference, inputs["attention_mask"])
            if diff_opt > atol:
                raise ExportError(f"optimized logits differ by {diff_opt:.2e} > atol {atol:.0e}")
        reference_bundle = Path(tmp) / "fp32-bundle"
        if quantize:
            fp32_manifest = dataclasses.replace(manifest, precision="fp32")
            _write_bundle(reference_bundle, final_path, tokenizer, fp32_manifest, sentencepiece)
            if quantize == "int8":
                assert calibration is not None
                final_path, quantization = quantize_static_int8(final_path, reference_bundle, calibration)
            else:
                final_path, quantization = quantize_dynamic(final_path)
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
    final_logits = run_onnx(model_file, inputs)
    mask = inputs["attention_mask"].astype(bool)
    agreement = float((final_logits.argmax(-1) == reference.argmax(-1))[mask].mean())
    return ExportReport(
        bundle=out,
        precision=precision,
        max_abs_diff_fp32=diff_fp32,
        max_abs_diff_final=max_diff(final_logits, reference, inputs["attention_mask"]),
        argmax_agreement=agreement,
        fused_ops=fused,
        quantization=quantization,
        tokenizer=sentencepiece_note,
    )


def _files(value: str | Path | Sequence[str | Path] | None, name: str) -> list[Path] | None:
    """``value`` (a path, several, or None) as a list of paths; an empty list is refused."""
    if value is None:
        return None
    paths = [Path(value)] if isinstance(value, str | Path) else [Path(p) for p in value]
    if not paths:
        raise InvalidValue(f"{name}: give at least one file (or None)")
    return paths


def _check_options(
    opset: int, quantize: str | None, fp16: bool, calibration_data: list[Path] | None, gate_data: str | Path | None
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
    save_onnx(model_path, out / "model.onnx")
    if manifest.tokenizer_file is not None:
        tokenizer.backend_tokenizer.save(str(out / manifest.tokenizer_file))
    if sentencepiece is not None:
        shutil.copyfile(sentencepiece[0], out / SENTENCEPIECE_FILE)
    manifest.with_model(out / "model.onnx").write(out)
