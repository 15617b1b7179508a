"""What runs the model: ``(input_ids, attention_mask)`` int64 ``[batch, seq]`` in, logits float32 out.

Backends are described by specs (``OnnxRuntime``, ``OpenVINO``, ``Triton``) and built for a bundle by
``create_backend``; ``NER`` does that for you. Every backend is a context manager and has ``close()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nertron.backends.base import Backend
from nertron.backends.specs import TLS, BackendSpec, OnnxRuntime, OpenVINO, Triton
from nertron.errors import InvalidType, InvalidValue

if TYPE_CHECKING:
    from nertron.model.bundle import Bundle

__all__ = ["TLS", "Backend", "BackendSpec", "OnnxRuntime", "OpenVINO", "Triton", "create_backend"]


def create_backend(spec: BackendSpec, bundle: Bundle) -> Backend:
    """Builds the backend ``spec`` describes for ``bundle``."""
    if isinstance(spec, OnnxRuntime):
        from nertron.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            bundle.model_path,
            threads=spec.threads,
            providers=spec.provider_list(),
            concurrent_batches=spec.concurrent_batches,
        )
    if isinstance(spec, OpenVINO):
        from nertron.backends.openvino import OpenVINOBackend

        if bundle.precision != "fp32":
            raise InvalidValue(f"OpenVINO runs fp32 bundles; {bundle.path} is {bundle.precision}")
        return OpenVINOBackend(bundle.model_path, threads=spec.threads, precision=spec.precision, device=spec.device)
    if isinstance(spec, Triton):
        from nertron.backends.fallback import FallbackBackend
        from nertron.backends.triton import TritonClient

        client = TritonClient(
            spec,
            pad_id=bundle.special_tokens.pad,
            max_length=bundle.max_length,
            fingerprint=bundle.fingerprint,  # the server must serve this bundle: ModelMismatch otherwise
            bundle=bundle.path,
        )
        if spec.fallback is None:
            client.connect()  # raises TritonError now if the server is not usable
            return client
        local = spec.fallback
        if isinstance(local, OnnxRuntime) and local.concurrent_batches is None:
            # the fallback gets the client's batches one at a time, so each gets every thread
            local = OnnxRuntime(threads=local.threads, providers=local.provider_list(), concurrent_batches=1)
        return FallbackBackend(client, lambda: create_backend(local, bundle), probe_interval=spec.probe_interval)
    raise InvalidType(f"backend must be OnnxRuntime(...), OpenVINO(...) or Triton(...), got {spec!r}")
