"""Model inference on a Triton server over gRPC, with a local fallback.

``TritonBackend`` is a ``Backend`` (see ``pipeline.py``): with
``NER(bundle, backend=TritonBackend.for_bundle(bundle, url))`` the client tokenises and the server runs
the model. When the server is unreachable or not ready, or a request fails, times out or gets a
malformed reply (after ``retries``), that batch is computed by the fallback, a warning is logged once,
and a daemon thread re-probes the server every ``probe_interval`` s; requests go back to the server
when it is healthy. Every batch gives exactly one result, in order. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from .bundle import Bundle
from .errors import TritonError
from .extras import require
from .onnx_backend import OnnxRuntimeBackend

grpcclient = require("tritonclient.grpc", "Triton inference (NER(url=...))")
grpcclient_aio = require("tritonclient.grpc.aio", "Triton inference (NER(url=...))")
InferenceServerException = require("tritonclient.utils", "Triton inference (NER(url=...))").InferenceServerException

logger = logging.getLogger("nertron.triton")

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"
# Errors worth sending again (the server is restarting or overloaded). A request that timed out
# is not sent again: the caller has already waited ``timeout``.
RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")


class LocalBackend(Protocol):
    """What a fallback needs: ``(input_ids, attention_mask) -> logits``, e.g. ``OnnxRuntimeBackend``."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class _Unusable(Exception):
    """A probe failed or a reply is malformed; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """What the client reads from the served model's config."""

    inputs: tuple[str, ...]
    num_labels: int  # -1 when the config leaves it variable
    max_batch_size: int  # 0: the model does not batch; requests go as they are


class TritonBackend:
    """Runs the model on Triton over gRPC: ``(input_ids, attention_mask)`` int64 -> logits float32.

    - ``map`` keeps up to ``max_in_flight`` requests in flight; ``infer_async``/``map_async`` are the
      asyncio equivalents (``tritonclient.grpc.aio``).
    - ``timeout``: seconds per request; ``retries``: resends of a request that failed with a
      transient error, ``retry_backoff`` s apart, doubling.
    - ``fallback``: a local backend for the same bundle; ``None`` raises ``TritonError`` instead.
    - ``length_multiple`` > 1: client-side length buckets. Each request is padded (``pad_id``, mask 0;
      at most to ``max_length``) to a multiple of it and the logits are cut back, so that requests of
      nearby lengths have one shape and a server without ragged batching (the GPU deployments) can
      batch them. Padding does not change the logits of real tokens.
    - ``ssl``, ``root_certificates``, ``private_key``, ``certificate_chain`` (PEM file paths) and
      ``headers`` (gRPC metadata, lowercase keys, e.g. ``{"authorization": "Bearer ..."}``) go to
      tritonclient as they are.

    Construction probes the server (``probe_timeout`` s per call): without a fallback an unusable
    server raises ``TritonError`` at once. ``rows`` counts the rows answered by the ``"server"`` and
    by the ``"fallback"``.
    """

    runtime = "triton"

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model: str = "nertron",
        model_version: str = "",
        fallback: LocalBackend | None = None,
        max_in_flight: int = 4,
        timeout: float = 30.0,
        retries: int = 2,
        retry_backoff: float = 0.1,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        length_multiple: int = 1,
        pad_id: int = 1,
        max_length: int | None = None,
        ssl: bool = False,
        root_certificates: str | Path | None = None,
        private_key: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if retries < 0 or timeout <= 0 or probe_interval <= 0 or probe_timeout <= 0 or length_multiple < 1:
            raise ValueError(
                "retries must be >= 0, length_multiple >= 1; timeout, probe_interval and probe_timeout > 0"
            )
        self.url = url
        self.model = model
        self.model_version = model_version
        self.fallback = fallback
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.length_multiple, self.pad_id, self.max_length = length_multiple, pad_id, max_length
        self.headers = dict(headers) if headers else None
        self._tls: dict[str, Any] = {
            "ssl": ssl,
            "root_certificates": None if root_certificates is None else str(root_certificates),
            "private_key": None if private_key is None else str(private_key),
            "certificate_chain": None if certificate_chain is None else str(certificate_chain),
        }
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._client: grpcclient.InferenceServerClient | None = None
        self._info: ModelInfo | None = None
        self._generation = 0  # bumped on every return to the server (the asyncio client follows it)
        self._aio: tuple[asyncio.AbstractEventLoop, int, grpcclient_aio.InferenceServerClient] | None = None
        self._prober: threading.Thread | None = None
        self._warned = False
        self.rows: Counter[str] = Counter()  # rows answered by the "server" and by the "fallback"
        try:
            client, info = self._probe()
        except _Unusable as error:
            if fallback is None:
                raise TritonError(f"Triton at {url} is not usable: {error}") from None
            self._degrade(str(error))
        else:
            self._client, self._info = client, info

    @classmethod
    def for_bundle(
        cls,
        bundle: str | Path | Bundle,
        url: str = "127.0.0.1:8001",
        *,
        fallback: bool = True,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        **options: Any,
    ) -> TritonBackend:
        """A client for the server that serves ``bundle``: its pad id and max length for length buckets,
        and with ``fallback`` its local onnxruntime model (loaded at first use; ``threads``,
        ``providers`` as in ``OnnxRuntimeBackend``). ``options`` go to the constructor."""
        bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        local = _LazyOnnxRuntime(bundle.model_path, threads, providers) if fallback else None
        options = {"pad_id": bundle.special_tokens.pad, "max_length": bundle.max_length, **options}
        return cls(url, fallback=local, **options)

    @property
    def on_server(self) -> bool:
        """Whether requests currently go to the server (False: to the fallback)."""
        return self._client is not None

    @property
    def info(self) -> ModelInfo | None:
        """The served model's inputs, labels and batch limit (None until the server was reached)."""
        return self._info

    # -- sync API ---------------------------------------------------------------------------------

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` as float32."""
        self._check_open()
        # A blocking gRPC call: cheaper than a callback when nothing else is sent meanwhile.
        return self._collect(self._submit(*_checked(input_ids, attention_mask), blocking=True))

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order, with up to ``max_in_flight`` requests in flight."""
        self._check_open()
        pending: deque[_Batch] = deque()
        for input_ids, attention_mask in batches:
            if len(pending) >= self.max_in_flight:
                yield self._collect(pending.popleft())
            pending.append(self._submit(*_checked(input_ids, attention_mask)))
        while pending:
            yield self._collect(pending.popleft())

    def _submit(self, input_ids: np.ndarray, attention_mask: np.ndarray, blocking: bool = False) -> _Batch:
        batch = _Batch(input_ids, attention_mask)
        with self._lock:
            client, info = self._client, self._info
        if client is None or info is None or len(input_ids) == 0:
            return batch  # computed by the fallback when collected, in order
        slices = _row_slices(len(input_ids), info.max_batch_size)
        blocking = blocking and len(slices) == 1  # parts of a batch go to the server together
        for rows in slices:
            batch.parts.append((rows, self._send(client, info, input_ids[rows], attention_mask[rows], blocking)))
        return batch

    def _send(
        self,
        client: grpcclient.InferenceServerClient,
        info: ModelInfo,
        ids: np.ndarray,
        mask: np.ndarray,
        blocking: bool = False,
    ) -> Future[np.ndarray]:
        """The request's logits as a future; with ``blocking`` it is done when this returns."""
        future: Future[np.ndarray] = Future()
        length = ids.shape[1]
        ids, mask = self._bucket(ids, mask)

        # tritonclient calls back with these keyword names, in a gRPC thread: an exception escaping
        # from here would leave the future unset.
        def done(result: grpcclient.InferResult | None = None, error: Exception | None = None) -> None:
            try:
                if error is not None:
                    raise error
                logits = self._logits(result, ids.shape, info, length)
            except Exception as failure:
                future.set_exception(failure)
            else:
                future.set_result(logits)

        request = {
            "model_name": self.model,
            "inputs": self._inputs(info, ids, mask),
            "model_version": self.model_version,
            "outputs": [grpcclient.InferRequestedOutput(OUTPUT)],
            "client_timeout": self.timeout,
            "headers": self.headers,
        }
        try:
            if blocking:
                done(result=client.infer(**request))
            else:
                client.async_infer(callback=done, **request)
        except Exception as error:  # e.g. a closed channel: fails this request like a server error
            future.set_exception(error)
        return future

    def _collect(self, batch: _Batch) -> np.ndarray:
        if not batch.parts:
            return self._local(batch.input_ids, batch.attention_mask)
        results = [
            self._result(future, batch.input_ids[rows], batch.attention_mask[rows]) for rows, future in batch.parts
        ]
        return results[0] if len(results) == 1 else np.concatenate(results)

    def _result(self, future: Future[np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    client, info = self._client, self._info
                if client is None or info is None:
                    break  # another request already switched to the fallback
                time.sleep(self.retry_backoff * 2 ** (attempt - 1))
                future = self._send(client, info, ids, mask)
            try:
                logits = future.result(timeout=self.timeout + 1.0)
                self._count("server", len(ids))
                return logits
            except Exception as error:
                reason, retry = self._failure(error)
                if not retry:
                    break
        return self._fail(reason, ids, mask)

    def _fail(self, reason: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.fallback is None:
            raise TritonError(f"Triton at {self.url}, model {self.model!r}: {reason}")
        self._degrade(reason)
        return self._local(ids, mask)

    def _local(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self._check_open()
        if self.fallback is None:
            raise TritonError(f"Triton at {self.url}, model {self.model!r}: not usable and no fallback")
        logits = np.ascontiguousarray(self.fallback(ids, mask), dtype=np.float32)
        self._count("fallback", len(ids))
        return logits

    def _count(self, where: str, rows: int) -> None:
        with self._lock:
            self.rows[where] += rows

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("this TritonBackend is closed")

    # -- asyncio API ------------------------------------------------------------------------------

    async def infer_async(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` (the fallback runs in a worker thread)."""
        self._check_open()
        input_ids, attention_mask = _checked(input_ids, attention_mask)
        with self._lock:
            info = self._info if self._client is not None else None
        if info is None or len(input_ids) == 0:
            return await asyncio.to_thread(self._local, input_ids, attention_mask)
        parts = [
            self._infer_part_async(info, input_ids[rows], attention_mask[rows])
            for rows in _row_slices(len(input_ids), info.max_batch_size)
        ]
        results = await asyncio.gather(*parts)
        return results[0] if len(results) == 1 else np.concatenate(results)

    async def map_async(
        self, batches: Iterable[tuple[np.ndarray, np.ndarray]] | AsyncIterable[tuple[np.ndarray, np.ndarray]]
    ) -> AsyncIterator[np.ndarray]:
        """Logits of each batch, in order, with up to ``max_in_flight`` requests in flight."""
        pending: deque[asyncio.Task[np.ndarray]] = deque()
        try:
            async for input_ids, attention_mask in _as_async(batches):
                if len(pending) >= self.max_in_flight:
                    yield await pending.popleft()
                pending.append(asyncio.ensure_future(self.infer_async(input_ids, attention_mask)))
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()

    async def _infer_part_async(self, info: ModelInfo, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                if not self.on_server:
                    break
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
            client = await self._aio_client()
            padded_ids, padded_mask = self._bucket(ids, mask)
            try:
                request = client.infer(
                    self.model,
                    self._inputs(info, padded_ids, padded_mask),
                    model_version=self.model_version,
                    outputs=[grpcclient.InferRequestedOutput(OUTPUT)],
                    client_timeout=self.timeout,
                    headers=self.headers,
                )
                result = await asyncio.wait_for(request, self.timeout + 1.0)
                logits = self._logits(result, padded_ids.shape, info, ids.shape[1])
                self._count("server", len(ids))
                return logits
            except Exception as error:
                reason, retry = self._failure(error)
                if not retry:
                    break
        return await asyncio.to_thread(self._fail, reason, ids, mask)

    async def _aio_client(self) -> grpcclient_aio.InferenceServerClient:
        """The asyncio client of the running loop, renewed when the sync side renewed its channel."""
        loop = asyncio.get_running_loop()
        current = self._aio
        if current is not None and current[0] is loop and current[1] == self._generation:
            return current[2]
        client = grpcclient_aio.InferenceServerClient(self.url, channel_args=_channel_args(), **self._tls)
        self._aio = (loop, self._generation, client)
        if current is not None and current[0] is loop:
            await current[2].close()
        return client

    async def aclose(self) -> None:
        """Closes the asyncio client (call from the loop that used it) and stops the prober."""
        current, self._aio = self._aio, None
        if current is not None:
            await current[2].close()
        self.close()

    # -- health -----------------------------------------------------------------------------------

    def _new_client(self) -> grpcclient.InferenceServerClient:
        try:
            return grpcclient.InferenceServerClient(self.url, channel_args=_channel_args(), **self._tls)
        except Exception as error:  # e.g. unreadable certificate files
            raise _Unusable(f"cannot create a gRPC client: {error}") from None

    def _probe(self) -> tuple[grpcclient.InferenceServerClient, ModelInfo]:
        """A fresh client and the model's info if the server and model are ready; else ``_Unusable``."""
        client = self._new_client()
        options = {"headers": self.headers, "client_timeout": self.probe_timeout}
        try:
            if not client.is_server_live(**options):
                raise _Unusable("the server is not live")
            if not client.is_model_ready(self.model, self.model_version, **options):
                raise _Unusable(f"model {self.model!r} is not ready; {self._repository_states(client)}")
            config = client.get_model_config(self.model, self.model_version, as_json=True, **options)["config"]
            return client, _model_info(config)
        except InferenceServerException as error:
            client.close()
            raise _Unusable(f"cannot reach it: {error}") from None
        except _Unusable:
            client.close()
            raise

    def _repository_states(self, client: grpcclient.InferenceServerClient) -> str:
        try:
            index = client.get_model_repository_index(
                headers=self.headers, as_json=True, client_timeout=self.probe_timeout
            )
        except InferenceServerException:
            return "the repository index is not available"
        models = index.get("models", [])
        states = ", ".join(f"{m.get('name')} {m.get('state', 'UNAVAILABLE')}" for m in models) or "none"
        return f"models in the repository: {states}"

    def _degrade(self, reason: str) -> None:
        with self._lock:
            old, self._client = self._client, None
            if self._prober is None and not self._closed.is_set():
                self._prober = threading.Thread(target=self._probe_until_healthy, name="nertron-triton-probe")
                self._prober.daemon = True
                self._prober.start()
            first, self._warned = not self._warned, True
        if old is not None:
            old.close()  # its requests still in flight fail over to the fallback
        if first:
            logger.warning(
                "Triton at %s (model %r): %s; computing locally with the fallback backend and re-probing every %g s",
                self.url,
                self.model,
                reason,
                self.probe_interval,
            )
        elif old is not None:
            logger.info("Triton at %s: %s; computing locally until it is healthy again", self.url, reason)

    def _probe_until_healthy(self) -> None:
        while not self._closed.wait(self.probe_interval):
            try:
                client, info = self._probe()
            except _Unusable as error:
                logger.debug("Triton at %s is still unusable: %s", self.url, error)
                continue
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    return
                self._client, self._info, self._prober = client, info, None
                self._generation += 1
            logger.info("Triton at %s is healthy again; requests go to the server", self.url)
            return

    # -- requests and replies ---------------------------------------------------------------------

    def _inputs(self, info: ModelInfo, ids: np.ndarray, mask: np.ndarray) -> list[grpcclient.InferInput]:
        arrays = dict(zip(INPUTS, (ids, mask), strict=True))
        inputs = []
        for name in info.inputs:
            tensor = grpcclient.InferInput(name, list(ids.shape), "INT64")
            tensor.set_data_from_numpy(arrays[name])
            inputs.append(tensor)
        return inputs

    def _bucket(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        length = ids.shape[1]
        target = -(-length // self.length_multiple) * self.length_multiple
        if self.max_length is not None:
            target = min(target, max(self.max_length, length))
        if target == length:
            return ids, mask
        pad = ((0, 0), (0, target - length))
        return np.pad(ids, pad, constant_values=self.pad_id), np.pad(mask, pad)

    def _failure(self, error: BaseException) -> tuple[str, bool]:
        """Why a request failed, and whether to send it again."""
        if isinstance(error, (FutureTimeout, asyncio.TimeoutError)):
            return f"no reply within {self.timeout:g} s", False
        if isinstance(error, InferenceServerException):
            return f"request failed: {error}", str(error.status()) in RETRYABLE
        if isinstance(error, _Unusable):
            return str(error), False
        return f"request failed: {error!r}", False

    def _logits(self, result: Any, shape: tuple[int, ...], info: ModelInfo, length: int) -> np.ndarray:
        """The reply's logits, checked against the request's (padded) ``shape``, cut to ``length``."""
        logits = None if result is None else result.as_numpy(OUTPUT)
        if logits is None:
            raise _Unusable(f"malformed reply: no {OUTPUT!r} output")
        labels = info.num_labels if info.num_labels > 0 else (logits.shape[-1] if logits.ndim == 3 else -1)
        expected = (*shape, labels)
        if logits.dtype != np.float32 or logits.shape != expected:
            raise _Unusable(
                f"malformed reply: {OUTPUT} is {logits.dtype} {list(logits.shape)}, expected float32 {list(expected)}"
            )
        return logits if length == shape[1] else np.ascontiguousarray(logits[:, :length])

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the prober and closes the gRPC client (``aclose`` also closes the asyncio one)."""
        self._closed.set()
        with self._lock:
            client, self._client = self._client, None
            prober, self._prober = self._prober, None
        if prober is not None:
            prober.join(timeout=self.probe_timeout * 3 + 1.0)
        if client is not None:
            client.close()

    def __enter__(self) -> TritonBackend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class _Batch:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    parts: list[tuple[slice, Future[np.ndarray]]] = field(default_factory=list)  # none: computed locally


class _LazyOnnxRuntime:
    """An ``OnnxRuntimeBackend`` created at its first call: a fallback that may never be needed."""

    def __init__(self, model_path: Path, threads: int | None, providers: Sequence[str] | None) -> None:
        self.model_path, self.threads, self.providers = model_path, threads, providers
        self._backend: OnnxRuntimeBackend | None = None
        self._lock = threading.Lock()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._backend is None:
                # one batch at a time (the client's calls), so every call gets all threads
                self._backend = OnnxRuntimeBackend(
                    self.model_path, threads=self.threads, providers=self.providers, concurrent_batches=1
                )
        return self._backend(input_ids, attention_mask)


def _checked(input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(
            f"input_ids and attention_mask must be [batch, seq] of one shape, got {ids.shape} and {mask.shape}"
        )
    return ids, mask


def _row_slices(rows: int, max_batch_size: int) -> list[slice]:
    step = max_batch_size if max_batch_size > 0 else max(rows, 1)
    return [slice(start, start + step) for start in range(0, rows, step)] or [slice(0, 0)]


def _model_info(config: Mapping[str, Any]) -> ModelInfo:
    names = tuple(str(i["name"]) for i in config.get("input", []))
    unknown = [n for n in names if n not in INPUTS]
    if unknown or "input_ids" not in names:
        raise _Unusable(f"the served model takes {list(names)}; nertron sends {list(INPUTS)}")
    outputs = {str(o["name"]): [int(d) for d in o.get("dims", [])] for o in config.get("output", [])}
    if OUTPUT not in outputs:
        raise _Unusable(f"the served model has no {OUTPUT!r} output (it has {sorted(outputs)})")
    dims = outputs[OUTPUT]
    return ModelInfo(names, dims[-1] if dims else -1, int(config.get("max_batch_size", 0)))


def _channel_args() -> list[tuple[str, Any]]:
    """tritonclient's defaults plus a short reconnect backoff: after a blip, gRPC reconnects within
    ~1 s instead of after its default backoff of up to 2 minutes."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


async def _as_async(
    batches: Iterable[tuple[np.ndarray, np.ndarray]] | AsyncIterable[tuple[np.ndarray, np.ndarray]],
) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield batch
    else:
        for batch in batches:
            yield batch
