"""Triton python-backend model for a nertron bundle (copied to ``<repository>/<name>/1/model.py``).

Runs the bundle's ONNX model with onnxruntime on CPU. With ``allow_ragged_batch`` on the inputs, Triton's
dynamic batcher groups requests of different lengths into one execution. The execution's requests are
sorted by length and split into the groups that cost least to run (see :func:`plan_runs`); each group is
one onnxruntime run, padded to its longest request (pad id, mask 0), and the logits are split back per
request and cut to its length.

A config naming a bundle (``nertron_fingerprint``) that is not the one in the version directory fails the
load; a request whose parameter ``nertron_fingerprint`` expects another bundle is refused
(``nertron.serving.identity``).

Runs inside Triton's python-backend stub, in an environment where nertron is installed (``nertron serve``
runs the stub in nertron's own venv).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from nertron.backends.onnxruntime import OnnxRuntimeBackend
from nertron.errors import InvalidValue
from nertron.serving import identity
from nertron.serving.options import threads_per_instance
from nertron.windows import pad_rows

OUTPUT = "logits"
# The cost of one onnxruntime run, in tokens of work: measured on CPU for the int8 default model
# (1 thread, batches 1-16 x lengths 8-128), a run costs about 1.5 ms + 77 us per padded token, the
# attention adding ~0.14 us per token per token of length. Padding 4 short sentences to a long one
# costs more than a separate run, so an execution's requests are split by these numbers.
RUN_OVERHEAD_TOKENS = 20.0
ATTENTION_PER_LENGTH = 1 / 550


class TritonPythonModel:
    """One instance per Triton model instance; ``execute`` gets all requests of one execution."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        self.pad_id = int(manifest["special_tokens"]["pad"])
        self.inputs = [entry["name"] for entry in config["input"]]
        self.fingerprint, self.bundle = identity.checked(config, version_dir)
        # the bundle's file, if linked: a model that cannot load names it
        model_path = (version_dir / manifest["model_file"]).resolve()
        self.backend = OnnxRuntimeBackend(
            model_path, threads=threads_per_instance(config), providers=["CPUExecutionProvider"], concurrent_batches=1
        )
        self.session = self.backend.session
        session_inputs = {i.name for i in self.session.get_inputs()}
        self.feed_inputs = [name for name in self.inputs if name in session_inputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        batch: list[tuple[int, dict[str, np.ndarray]]] = []
        for index, request in enumerate(requests):
            try:
                batch.append((index, self._read(request)))
            except ValueError as error:
                responses[index] = _error(str(error))
        if batch:
            try:
                outputs = self._run([arrays for _, arrays in batch])
            except Exception as error:  # an onnxruntime failure fails this execution's requests only
                outputs = [_error(f"onnxruntime failed: {error}")] * len(batch)
            for (index, _), output in zip(batch, outputs, strict=True):
                responses[index] = output
        return responses

    def _read(self, request: Any) -> dict[str, np.ndarray]:
        refusal = identity.mismatch(json.loads(request.parameters() or "{}"), self.fingerprint, self.bundle)
        if refusal is not None:
            raise InvalidValue(refusal)
        arrays = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise InvalidValue(f"input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != np.int64 or array.ndim != 2:
                raise InvalidValue(f"{name} must be int64 [batch, seq], got {array.dtype} {list(array.shape)}")
            arrays[name] = array
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) != 1:
            raise InvalidValue(f"inputs must have one shape, got {sorted(shapes)}")
        return arrays

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[Any]:
        shapes = [next(iter(arrays.values())).shape for arrays in batch]
        outputs: list[Any] = [None] * len(batch)
        for group in plan_runs(shapes):
            feed = {
                name: pad_rows([batch[i][name] for i in group], self.pad_id if name == "input_ids" else 0)
                for name in self.feed_inputs
            }
            logits = self.backend(feed["input_ids"], feed.get("attention_mask", np.ones_like(feed["input_ids"])))
            start = 0
            for i in group:
                count, seq = shapes[i]
                part = np.ascontiguousarray(logits[start : start + count, :seq])
                outputs[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, part)])
                start += count
        return outputs

    def finalize(self) -> None:
        self.backend.close()


def plan_runs(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Splits requests of shapes ``(rows, length)`` into runs of least total cost: each run is a range of
    the requests sorted by length, padded to its longest, and costs ``RUN_OVERHEAD_TOKENS`` plus its
    padded tokens (each weighted by its length's attention). Returns lists of request indices."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][1])
    best = [0.0] * (len(order) + 1)  # best[j]: least cost of the first j sorted requests
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        length = shapes[order[end - 1]][1]
        row_cost = length * (1 + length * ATTENTION_PER_LENGTH)  # this run's longest request sets its length
        best[end], rows = float("inf"), 0
        for start in range(end - 1, -1, -1):
            rows += shapes[order[start]][0]
            cost = best[start] + RUN_OVERHEAD_TOKENS + rows * row_cost
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    runs = []
    end = len(order)
    while end > 0:
        runs.append(order[start_of[end] : end])
        end = start_of[end]
    return runs[::-1]


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
