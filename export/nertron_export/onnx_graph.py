"""The ONNX graph of an HF token classifier: PyTorch -> ONNX (logits only), onnxruntime's transformer optimizer,
and saving it as a single file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

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


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    """Writes the ONNX graph of ``model`` (inputs ``input_ids`` and ``attention_mask``, output ``logits``)."""
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


def optimize_onnx(path: Path, config: Any, *, fp16: bool, static_int8: bool = False) -> tuple[Path, dict[str, int]]:
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


def save_onnx(source: Path, target: Path) -> None:
    """Copies a model, inlining external data so that the bundle holds a single .onnx file."""
    import onnx

    model = onnx.load(str(source), load_external_data=True)
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save_model(model, str(target))
    else:
        onnx.save_model(model, str(target), save_as_external_data=True, location=target.name + ".data")
