"""Static int8 (the default model's format): fixed activation scales make a row's logits independent of
its batch-mates, the result stays close to fp32, and the 4-bit embedding lookup is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from nertron.model.bundle import Bundle
from nertron.model.quantization import WEIGHT_LEVELS, calibrate, embed_q4_table, quantize_static, weight_matmuls
from onnx import numpy_helper


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def batch(rng: np.random.Generator, rows: int, length: int) -> dict[str, np.ndarray]:
    ids = rng.integers(4, 190, size=(rows, length))
    mask = np.ones_like(ids)
    for row in range(rows):
        mask[row, int(rng.integers(1, length + 1)) :] = 0  # rows of different lengths, as padded batches are
    return {"input_ids": np.where(mask == 1, ids, 1), "attention_mask": mask}


@pytest.fixture(scope="module")
def fp32(tiny_bundle: Path) -> onnx.ModelProto:
    return onnx.load(str(Bundle.load(tiny_bundle).model_path))


@pytest.fixture(scope="module")
def int8(fp32: onnx.ModelProto) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    ranges = calibrate(fp32, [batch(rng, 8, 40) for _ in range(10)])
    assert set(ranges) == {n.input[0] for n in weight_matmuls(fp32)}
    assert all(low <= 0 <= high for low, high in ranges.values())
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    quantize_static(model, ranges)
    return model


def test_static_int8_rows_do_not_depend_on_their_batch(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> None:
    quantized, reference = session(int8), session(fp32)
    rng = np.random.default_rng(1)
    feed = batch(rng, 12, 48)
    together = quantized.run(None, feed)[0]
    for row in range(12):
        length = int(feed["attention_mask"][row].sum())
        alone = quantized.run(None, {k: v[row : row + 1, :length] for k, v in feed.items()})[0]
        np.testing.assert_allclose(alone[0], together[row, :length], rtol=0, atol=1e-5)
        # and in a batch of other texts, padded longer
        others = batch(rng, 5, 60)
        mixed = {
            name: np.concatenate([np.pad(values[row : row + 1], ((0, 0), (0, 12)), constant_values=pad), others[name]])
            for (name, values), pad in zip(feed.items(), (1, 0), strict=True)
        }
        np.testing.assert_allclose(quantized.run(None, mixed)[0][0, :length], alone[0], rtol=0, atol=1e-5)
    expected = reference.run(None, feed)[0]
    mask = feed["attention_mask"].astype(bool)
    assert (together.argmax(-1) == expected.argmax(-1))[mask].mean() > 0.95
    assert np.abs(together - expected)[mask].max() < 0.25 * np.abs(expected[mask]).max()


def test_static_int8_weights_fit_the_avx2_kernels(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> None:
    weights = [numpy_helper.to_array(i) for i in int8.graph.initializer if i.name.endswith("/int8")]
    assert weights and all(
        w.dtype == np.int8 and w.min() >= -WEIGHT_LEVELS - 1 and w.max() <= WEIGHT_LEVELS for w in weights
    )
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("MatMulIntegerToFloat") == len(weight_matmuls(fp32)) and not weight_matmuls(int8)
    assert ops.count("QuantizeLinear") == len({n.input[0] for n in weight_matmuls(fp32)})  # Q, K, V share one
    with pytest.raises(ValueError, match="no calibrated range for"):
        quantize_static(onnx.load_from_string(fp32.SerializeToString()), {})


def test_folded_biases_give_the_results_of_a_separate_add(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> None:
    folded = [n for n in int8.graph.node if n.op_type == "MatMulIntegerToFloat" and len(n.input) == 7]
    adds = [sum(n.op_type == "Add" for n in m.graph.node) for m in (fp32, int8)]
    assert folded and adds[1] == adds[0] - len(folded)
    nodes = []
    for node in int8.graph.node:
        nodes.append(onnx.NodeProto())
        nodes[-1].CopyFrom(node)
        if node.op_type == "MatMulIntegerToFloat" and len(node.input) == 7:  # the bias back in an Add of its own
            bias, output = nodes[-1].input.pop(), node.output[0]
            nodes[-1].output[0] = f"{output}/unbiased"
            nodes.append(onnx.helper.make_node("Add", [f"{output}/unbiased", bias], [output]))
    unfolded = onnx.ModelProto()
    unfolded.CopyFrom(int8)
    del unfolded.graph.node[:]
    unfolded.graph.node.extend(nodes)
    feed = batch(np.random.default_rng(3), 6, 40)
    np.testing.assert_array_equal(session(int8).run(None, feed)[0], session(unfolded).run(None, feed)[0])


def test_q4_table_lookup_is_exact(fp32: onnx.ModelProto, tiny_bundle: Path) -> None:
    (gather,) = [n for n in fp32.graph.node if n.op_type == "Gather" and "word_embeddings" in n.input[0]]
    table = next(i for i in fp32.graph.initializer if i.name == gather.input[0])
    rows, columns = table.dims
    rng = np.random.default_rng(2)
    nibbles = rng.integers(0, 16, size=(rows, columns), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(rows, columns // 32)).astype(np.float32)
    exact = ((nibbles.astype(np.float32) - 8) * np.repeat(scales, 32, axis=1)).astype(np.float32)
    reference = onnx.ModelProto()
    reference.CopyFrom(fp32)
    next(i for i in reference.graph.initializer if i.name == table.name).CopyFrom(
        numpy_helper.from_array(exact, table.name)
    )
    quantized = onnx.ModelProto()
    quantized.CopyFrom(fp32)
    embed_q4_table(quantized, table.name, nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scales)
    assert any(n.op_type == "GatherBlockQuantized" for n in quantized.graph.node)
    feed = batch(rng, 4, 30)
    np.testing.assert_allclose(
        session(quantized).run(None, feed)[0], session(reference).run(None, feed)[0], rtol=0, atol=1e-5
    )
