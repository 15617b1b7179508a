"""What an export did and measured (``ExportReport``), and its summary in words."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
