"""The F1 gate of an int8 export: the int8 bundle is refused when its entity F1 falls too far below fp32's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nertron.io.conll import Document

from .errors import ExportError


def check_f1_loss(fp32_f1: float, quantized_f1: float, max_loss: float, *, raise_error: bool = True) -> str | None:
    """None if the quantised F1 (points) is within ``max_loss`` of fp32's, else the reason (or raises)."""
    # rounded: F1s are given to 2 decimals, and 94.79 - 94.49 is 0.30000000000001 in binary floating point
    loss = round(fp32_f1 - quantized_f1, 6)
    if loss <= max_loss:
        return None
    reason = (
        f"the int8 model loses {loss:.2f} F1 points (fp32 {fp32_f1:.2f}, int8 {quantized_f1:.2f}), "
        f"more than the allowed {max_loss:.2f}; ship fp32 or raise --max-f1-loss"
    )
    if raise_error:
        raise ExportError(reason)
    return reason


def f1_gate(fp32_bundle: Path, int8_bundle: Path, documents: list[Document], max_loss: float) -> dict[str, Any]:
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
