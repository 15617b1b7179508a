"""Triton python-backend model for a nertron bundle (copied to ``<repository>/<name>/1/model.py``).

Runs the bundle's ONNX model with onnxruntime on CPU. Every request of an execution goes through the
model in one batch: inputs are padded to the longest request (pad id, mask 0), the logits are split
back per request and cut to its length. With ``allow_ragged_batch`` on the inputs, Triton's dynamic
batcher groups requests of different lengths into one execution.

Runs inside Triton's python-backend stub, not in the SDK: it imports nothing from nertron.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

OUTPUT = "logits"


class TritonPythonModel:
    """One instance per Triton model instance; ``execute`` gets all requests of one execution."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        self.pad_id = int(manifest["special_tokens"]["pad"])
        self.inputs = [entry["name"] for entry in config["input"]]
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(parameters.get("intra_op_threads", "0"))
        if threads <= 0:  # the CPUs shared among the instances, so that they do not oversubscribe the cores
            instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
            threads = max(1, (os.cpu_count() or 1) // instances)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_path = str(version_dir / manifest["model_file"])
        self.session = ort.InferenceSession(
            model_path,
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["SkipLayerNormFusion"],  # slower on CPU, see nertron.onnx_backend
        )
        self.session_inputs = {i.name for i in self.session.get_inputs()}

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
        arrays = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != np.int64 or array.ndim != 2:
                raise ValueError(f"{name} must be int64 [batch, seq], got {array.dtype} {list(array.shape)}")
            arrays[name] = array
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) != 1:
            raise ValueError(f"inputs must have one shape, got {sorted(shapes)}")
        return arrays

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[Any]:
        rows = [next(iter(arrays.values())).shape for arrays in batch]
        longest = max(seq for _, seq in rows)
        feed = {}
        for name in self.inputs:
            if name in self.session_inputs:
                fill = self.pad_id if name == "input_ids" else 0
                padded = [
                    np.pad(a[name], ((0, 0), (0, longest - a[name].shape[1])), constant_values=fill) for a in batch
                ]
                feed[name] = np.concatenate(padded)
        logits = self.session.run([OUTPUT], feed)[0].astype(np.float32, copy=False)
        outputs = []
        start = 0
        for count, seq in rows:
            part = np.ascontiguousarray(logits[start : start + count, :seq])
            outputs.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, part)]))
            start += count
        return outputs

    def finalize(self) -> None:
        self.session = None


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
