"""Local inference with OpenVINO (``pip install "nertron[openvino]"``): the same exported ONNX model, run
in bfloat16 on CPUs with native bf16 (AVX512-BF16, AMX), where it is faster than onnxruntime's int8 at
fp32-like accuracy."""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from nertron.backends.base import Closable
from nertron.backends.onnxruntime import unloadable
from nertron.errors import InvalidValue
from nertron.extras import require


def _openvino() -> Any:
    return require("openvino", "OpenVINO inference (precision='bf16', runtime='openvino')")


@cache
def has_native_bf16() -> bool:
    """Whether OpenVINO is installed and reports native bfloat16 on this CPU (AVX512-BF16 or AMX)."""
    try:
        openvino = _openvino()
    except ImportError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOBackend(Closable):
    """Runs an exported token-classification model with OpenVINO: (input_ids, attention_mask) -> logits.

    ``precision`` sets OpenVINO's ``INFERENCE_PRECISION_HINT``: ``"bf16"`` (matrix multiplies in bfloat16,
    accumulation in fp32) or ``"fp32"``. Thread-safe: concurrent calls use separate infer requests.
    """

    runtime = "openvino"
    concurrency = 1

    def __init__(
        self, model_path: str | Path, *, threads: int | None = None, precision: str = "bf16", device: str = "CPU"
    ) -> None:
        if precision not in ("bf16", "fp32"):
            raise InvalidValue(f"precision must be 'bf16' or 'fp32', got {precision!r}")
        if threads is not None and threads < 1:
            raise InvalidValue(f"threads must be >= 1, got {threads}")
        openvino = _openvino()
        core = openvino.Core()
        hint = "bf16" if precision == "bf16" else "f32"
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        except RuntimeError as error:
            raise unloadable(model_path, "OpenVINO", error) from None
        self.precision = precision
        self.input_names = {name for port in self.compiled.inputs for name in port.get_names()}
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` as float32."""
        compiled = self.compiled  # close() may drop it meanwhile
        if compiled is None:
            self.check_open()
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        inputs = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in feed.items() if k in self.input_names}
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            request.infer(inputs)
            logits = np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request is reused
        finally:
            self._requests.put(request)
        if logits.shape[:2] != input_ids.shape:
            raise RuntimeError(f"OpenVINO returned logits of shape {logits.shape} for inputs of {input_ids.shape}")
        return logits

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order."""
        for input_ids, attention_mask in batches:
            yield self(input_ids, attention_mask)

    def close(self) -> None:
        """Releases the compiled model and its infer requests."""
        super().close()
        self._requests = queue.SimpleQueue()
        self.compiled = None
