"""The OpenVINO backend: the exported ONNX model run by OpenVINO equals onnxruntime (f32) or stays close
(bf16); it is thread-safe, and NER picks it only when asked or for the embedded model's bf16 default."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from nertron import NER
from nertron.backends import OnnxRuntime, OpenVINO
from nertron.backends.onnxruntime import OnnxRuntimeBackend
from nertron.backends.openvino import OpenVINOBackend, has_native_bf16
from nertron.model.bundle import Bundle


def random_batches(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        rows, length = int(rng.integers(1, 9)), int(rng.integers(3, 63))  # the tiny model's 64 positions
        ids = rng.integers(4, 190, size=(rows, length))
        mask = np.ones_like(ids)
        mask[0, length - int(rng.integers(0, length - 1)) :] = 0  # a padded row
        batches.append((ids, mask))
    return batches


@pytest.fixture(scope="module")
def onnxruntime(tiny_bundle: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(Bundle.load(tiny_bundle).model_path, threads=1)


def test_f32_equals_onnxruntime_over_dynamic_shapes(tiny_bundle: Path, onnxruntime: OnnxRuntimeBackend) -> None:
    openvino = OpenVINOBackend(Bundle.load(tiny_bundle).model_path, threads=1, precision="fp32")
    for ids, mask in random_batches(12, seed=1):
        got = openvino(ids, mask)
        assert got.dtype == np.float32 and got.shape == (*ids.shape, 9)
        np.testing.assert_allclose(got, onnxruntime(ids, mask), rtol=0, atol=1e-4)


@pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_stays_close(tiny_bundle: Path, onnxruntime: OnnxRuntimeBackend) -> None:
    openvino = OpenVINOBackend(Bundle.load(tiny_bundle).model_path, precision="bf16")
    for ids, mask in random_batches(6, seed=2):
        reference = onnxruntime(ids, mask)
        # bf16 keeps 8 bits of mantissa: relative error ~1e-2 of the logits' scale
        assert np.abs(openvino(ids, mask) - reference).max() < 0.05 * np.abs(reference).max()


def test_concurrent_calls_equal_sequential(tiny_bundle: Path) -> None:
    openvino = OpenVINOBackend(Bundle.load(tiny_bundle).model_path, threads=1, precision="fp32")
    batches = random_batches(16, seed=3)
    sequential = [openvino(*b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda b: openvino(*b), batches))
    for a, b in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [x.shape for x in openvino.map(batches[:3])] == [x.shape for x in sequential[:3]]


def test_ner_on_openvino_equals_onnxruntime(tiny_bundle: Path) -> None:
    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "", "EU rejects German call to boycott British lamb."]
    backend = OpenVINOBackend(Bundle.load(tiny_bundle).model_path, precision="fp32")
    got = NER(tiny_bundle, backend=backend).batch(texts * 20)
    expected = NER(tiny_bundle).batch(texts * 20)
    assert [[(e.text, e.label, e.start, e.end) for e in row] for row in got] == [
        [(e.text, e.label, e.start, e.end) for e in row] for row in expected
    ]
    for row, reference in zip(got, expected, strict=True):
        assert [e.score for e in row] == pytest.approx([e.score for e in reference], abs=1e-5)
    with NER(tiny_bundle, backend=OpenVINO(precision="fp32")) as ner:
        assert ner.runtime == "openvino" and ner.precision == "fp32"
    assert NER(tiny_bundle, precision="bf16").precision == "bf16"
    assert NER(tiny_bundle).runtime == "onnxruntime"  # a bundle runs on onnxruntime unless asked


def test_bad_arguments(tiny_bundle: Path) -> None:
    model = Bundle.load(tiny_bundle).model_path
    with pytest.raises(ValueError, match=r"precision='bf16' runs on OpenVINO\(precision='bf16'\); backend="):
        NER(precision="bf16", backend=OnnxRuntime())
    with pytest.raises(ValueError, match="precision='int8' contradicts backend=OpenVINO"):
        NER(precision="int8", backend=OpenVINO())
    with pytest.raises(ValueError, match="OpenVINO precision must be 'bf16' or 'fp32'"):
        OpenVINO(precision="int4")
    with pytest.raises(ValueError, match="precision must be 'bf16' or 'fp32'"):
        OpenVINOBackend(model, precision="int4")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OpenVINOBackend(model, threads=0)


def test_an_int8_bundle_on_openvino_is_refused_saying_why(default_int8: Path) -> None:
    with pytest.raises(ValueError, match=r"is an int8 bundle; OpenVINO \(and so precision=.bf16.\) runs fp32 models"):
        NER(default_int8, backend=OpenVINO(precision="fp32"))
