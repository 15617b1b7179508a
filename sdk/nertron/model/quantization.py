"""Dynamic int8 quantisation, shared by the export step and the default model's first-use assembly."""

from __future__ import annotations

import logging
from pathlib import Path


class _DropPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantiser logs a generic 'consider pre-processing' warning on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(source: Path, target: Path) -> None:
    """Quantises the weights of ``source``'s MatMuls to int8 (per channel); activations at run time.

    The word-embedding Gather stays fp32: its rows span very different scales, and a per-tensor int8
    grid costs F1 while the lookup costs no compute. Deterministic for a given onnxruntime version.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessingAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            # Shape inference cannot type the optimizer's fused (com.microsoft) outputs; all are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(advice)
