"""Triton python-backend model ``nertron_text``: text in, entities out (copied to ``<repository>/nertron_text/1/
model.py``), so that clients in any language (``curl``, Java, Go, JavaScript) get entities from Triton.

- Input ``TEXT``: BYTES ``[batch, 1]``, one UTF-8 text per row. Output ``ENTITIES``: BYTES ``[batch, 1]``, per
  text a JSON array of ``{"text", "label", "start", "end", "score"}``, ``start``/``end`` in code points (as
  ``nertron.Entity``).
- Optional request parameters: ``aggregation``, ``"first"`` (default), ``"average"`` or ``"max"``;
  ``min_score``, a number in [0, 1]: entities scored below it are left out (default 0). Scores are
  calibrated as the bundle's manifest says.
- It runs what ``NER`` runs (segmentation, windows, tokenizer, the C++ post-processing) on the bundle in its
  version directory, so its entities equal in-process ``NER()``'s. The encoder runs in this process
  (onnxruntime on CPU), or, where the config parameter ``encoder_model`` names a model of the same server
  (the GPU repositories: TensorRT or onnxruntime on the GPU), there through BLS.
- It windows as the config parameters ``max_length`` and ``stride`` say (``NER``'s defaults where absent). A
  config naming a bundle (``nertron_fingerprint``) that is not the one in the version directory fails the load;
  a request whose parameter ``nertron_fingerprint`` expects another bundle is refused (``nertron.serving.identity``).
- A request with bad input (not BYTES ``[n, 1]``, invalid UTF-8, a bad parameter) gets its own error;
  the other requests of the execution, and the server, are unaffected.

Runs inside Triton's python-backend stub, in an environment where nertron is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from nertron import NER
from nertron.backends.onnxruntime import OnnxRuntimeBackend
from nertron.checks import check_min_score
from nertron.errors import InvalidValue
from nertron.model.bundle import Bundle
from nertron.ner import AGGREGATIONS
from nertron.serving import identity
from nertron.serving.options import threads_per_instance

INPUT, OUTPUT = "TEXT", "ENTITIES"


class TritonPythonModel:
    """One instance per Triton model instance; ``execute`` gets all requests of one execution."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.bundle = Bundle.load(Path(args["model_repository"]) / args["model_version"])
        self.served = identity.checked(config, self.bundle.path)
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # the windows the config publishes (NER's defaults for the bundle where it names none)
        self.windows = {name: int(parameters[name]) for name in ("max_length", "stride") if parameters.get(name)}
        encoder = parameters.get("encoder_model", "")
        if encoder:
            self.backend: Any = BLSBackend(encoder)
        else:
            threads = threads_per_instance(config)
            self.backend = OnnxRuntimeBackend(
                self.bundle.model_path, threads=threads, providers=["CPUExecutionProvider"], concurrent_batches=1
            )
        self.ners: dict[str, NER] = {}

    def ner(self, aggregation: str) -> NER:
        """The recogniser for an aggregation; all share the one backend."""
        if aggregation not in self.ners:
            self.ners[aggregation] = NER(
                self.bundle.path, aggregation=aggregation, backend=self.backend, **self.windows
            )
        return self.ners[aggregation]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        by_aggregation: dict[str, list[tuple[int, list[str], float]]] = {}
        for index, request in enumerate(requests):
            try:
                texts, aggregation, min_score = _read(request, self.served)
            except ValueError as error:  # the client's mistake: 400 over HTTP, INVALID_ARGUMENT over gRPC
                responses[index] = _error(str(error), pb_utils.TritonError.INVALID_ARG)
            else:
                by_aggregation.setdefault(aggregation, []).append((index, texts, min_score))
        for aggregation, group in by_aggregation.items():
            try:  # one pass over the texts of all requests, length-sorted batches across requests
                found = self.ner(aggregation).batch([text for _, texts, _ in group for text in texts])
            except Exception as error:  # e.g. the encoder model failed: these requests fail, the server stays up
                for index, _, _ in group:
                    responses[index] = _error(f"nertron_text failed: {error}", pb_utils.TritonError.INTERNAL)
                continue
            rows = iter(found)
            for index, texts, min_score in group:
                entities = [
                    json.dumps([e.to_dict() for e in next(rows) if e.score >= min_score], ensure_ascii=False)
                    for _ in texts
                ]
                output = np.array(entities, dtype=np.object_).reshape(len(texts), 1)
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, output)])
        return responses

    def finalize(self) -> None:
        self.backend.close()


class BLSBackend:
    """The encoder as another model of the same server, called through BLS (a ``Backend``)."""

    runtime = "triton-bls"
    concurrency = 1

    def __init__(self, model: str) -> None:
        self.model = model

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.model,
            requested_output_names=["logits"],
            inputs=[pb_utils.Tensor("input_ids", input_ids), pb_utils.Tensor("attention_mask", attention_mask)],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"model {self.model!r}: {response.error().message()}")
        return np.ascontiguousarray(pb_utils.get_output_tensor_by_name(response, "logits").as_numpy(), np.float32)

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        for input_ids, attention_mask in batches:
            yield self(input_ids, attention_mask)

    def close(self) -> None:
        pass


def _read(request: Any, served: tuple[str | None, str]) -> tuple[list[str], str, float]:
    """The request's texts, aggregation and min_score; ``ValueError`` saying what is wrong (also when it
    expects another model than the ``served`` one, see ``nertron.serving.identity``)."""
    tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
    if tensor is None:
        raise InvalidValue(f"input {INPUT!r} is missing")
    array = tensor.as_numpy()
    if array.dtype != np.object_ or array.ndim != 2 or array.shape[1] != 1:
        raise InvalidValue(f"{INPUT} must be BYTES [batch, 1], got {array.dtype} {list(array.shape)}")
    texts = []
    for row, value in enumerate(array[:, 0]):
        try:
            texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as error:
            raise InvalidValue(f"{INPUT}[{row}] is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    parameters = json.loads(request.parameters() or "{}")
    refusal = identity.mismatch(parameters, *served)
    if refusal is not None:
        raise InvalidValue(refusal)
    aggregation = parameters.get("aggregation", "first")
    if aggregation not in AGGREGATIONS:
        raise InvalidValue(f"parameter 'aggregation' must be one of {AGGREGATIONS}, got {aggregation!r}")
    try:
        min_score = check_min_score(parameters.get("min_score", 0.0))
    except (TypeError, ValueError) as error:
        raise InvalidValue(f"parameter {error}") from None
    return texts, aggregation, min_score


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
