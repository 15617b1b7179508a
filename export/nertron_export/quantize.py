"""The int8 steps of an export: static (fixed activation ranges calibrated on text, int8 word-embedding rows) or
dynamic (activations scaled per batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nertron.model.quantization import (
    quantize_dynamic_int8,
    quantize_embedding_rows,
    quantize_static,
    word_embedding_table,
)

from . import static_int8
from .static_int8 import CalibrationText, activation_ranges


def quantize_static_int8(path: Path, fp32_bundle: Path, calibration: CalibrationText) -> tuple[Path, dict[str, Any]]:
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


def quantize_dynamic(path: Path) -> tuple[Path, dict[str, Any]]:
    """The model at ``path`` with dynamic int8 MatMuls; and what was done."""
    target = path.with_name("model.int8.onnx")
    quantize_dynamic_int8(path, target)
    return target, {
        "method": "dynamic",
        "activations": "scaled per batch at run time: a text's scores depend on its batch-mates",
        "weights": "int8 per output channel",
        "word_embeddings": "fp32",
    }
