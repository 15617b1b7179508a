"""The model on a Triton server, over gRPC (``pip install "nertron[triton]"``).

``TritonClient`` sends batches of subword ids and returns logits. A request the server does not answer in
time (unreachable, overloaded, deadline, channel closed) raises ``TritonUnavailable``, after ``retries`` for
the transient ones; ``FallbackBackend`` (``nertron.backends.fallback``) computes those batches locally.
Anything else is not a transport failure and is never hidden: a reply the server rejects or malforms raises
``TritonError``, and an exception of the client's own (a ``TypeError`` after a tritonclient change)
propagates unchanged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nertron.backends.base import Closable
from nertron.backends.specs import Triton
from nertron.errors import InvalidValue, TritonError, TritonUnavailable
from nertron.extras import require
from nertron.windows import pad_rows

_FEATURE = "Triton inference (backend=Triton(...))"
grpcclient = require("tritonclient.grpc", _FEATURE)
InferenceServerException = require("tritonclient.utils", _FEATURE).InferenceServerException
grpc = require("grpc", _FEATURE)

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"
# gRPC statuses of transport failures: the server is down, restarting, overloaded or late, or the channel
# was closed under the request. Any other status (INVALID_ARGUMENT, INTERNAL from a model bug, ...) is an
# answer that a fallback must not hide.
TRANSPORT = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.CANCELLED",
)
# Those worth sending again (the server is restarting or overloaded). A request that timed out is not sent
# again: the caller has already waited ``timeout``.
RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")


def grpc_status(error: BaseException) -> str | None:
    """The gRPC status of a tritonclient or grpc error, as ``"StatusCode.NAME"`` (None for other errors)."""
    if isinstance(error, InferenceServerException):
        return None if error.status() is None else str(error.status())
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        return str(error.code())
    return None


def is_transport_error(error: BaseException) -> bool:
    """Whether ``error`` is a transport failure: one that may be retried or computed by a fallback."""
    return isinstance(error, TritonUnavailable) or grpc_status(error) in TRANSPORT


class ChannelClosed(Exception):
    """A request could not be sent because this side closed the channel (``disconnect``, ``close``)."""


class Channel:
    """A tritonclient gRPC client and whether this side closed it: grpc raises a plain ``ValueError`` for a
    request on a closed channel, a transport failure only when it was us who closed it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.client.close()


@dataclass(frozen=True)
class ModelInfo:
    """What the client reads from the served model's config."""

    inputs: tuple[str, ...]
    num_labels: int  # -1 when the config leaves it variable
    max_batch_size: int  # 0: the model does not batch; requests go as they are


@dataclass
class Pending:
    """A batch sent to the server: its rows' requests (more than one where it exceeds max_batch_size)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    parts: list[tuple[slice, Future[np.ndarray]]] = field(default_factory=list)


class Resend(Protocol):
    """Sends a request again, on the connected channel; its reply as a future."""

    def __call__(self, client: Any, info: ModelInfo) -> Future[Any]: ...


class TritonClient(Closable):
    """``(input_ids, attention_mask)`` int64 -> logits float32 from the model ``spec.model`` on a Triton
    server; a ``Backend``. ``connect()`` (also done by the first request) reads the model's config."""

    runtime = "triton"

    def __init__(self, spec: Triton, *, pad_id: int = 1, max_length: int | None = None) -> None:
        self.spec = spec
        self.model = spec.model
        self.pad_id, self.max_length = pad_id, max_length
        self.concurrency = spec.max_in_flight
        self.headers = dict(spec.headers) or None
        self._lock = threading.Lock()
        self._connecting = threading.Lock()  # one connect at a time from _connected
        self._client: Channel | None = None  # once connected
        self._info: ModelInfo | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def info(self) -> ModelInfo | None:
        """The served model's inputs, labels and batch limit (None until connected)."""
        return self._info

    def describe(self, reason: str) -> str:
        return f"Triton at {self.spec.url}, model {self.model!r}: {reason}"

    # -- connection -------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Opens a fresh channel and checks that the server and model are ready: ``TritonUnavailable`` if
        they are not (yet), ``TritonError`` if the model does not fit or the server refuses us, and
        ``RuntimeError`` once closed (also when ``close()`` comes while connecting)."""
        self.check_open()
        client = self._new_client()
        try:
            info = self._check_ready(client)
        except BaseException:
            client.close()
            raise
        old: Channel | None = None
        with self._lock:
            closed = self._closed
            if not closed:
                old, self._client, self._info = self._client, Channel(client), info
        if closed:  # a closed client never publishes a channel
            client.close()
            self.check_open()
        if old is not None:
            old.close()

    def _check_ready(self, client: Any) -> ModelInfo:
        options = {"headers": self.headers, "client_timeout": self.spec.probe_timeout}
        try:
            if not client.is_server_live(**options):
                raise TritonUnavailable(self.describe("the server is not live"))
            if not client.is_model_ready(self.model, self.spec.model_version, **options):
                raise TritonUnavailable(self.describe(f"the model is not ready; {self._repository_states(client)}"))
            config = client.get_model_config(self.model, self.spec.model_version, as_json=True, **options)
        except InferenceServerException as error:
            if is_transport_error(error):
                raise TritonUnavailable(self.describe(f"cannot reach it: {error}")) from None
            raise TritonError(self.describe(f"it refused the client: {error}")) from None
        return self._model_info(config["config"])

    def disconnect(self) -> None:
        """Closes the channel: requests in flight fail at once (``connect`` opens a new one)."""
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.close()

    def _connected(self) -> tuple[Channel, ModelInfo]:
        """The open channel, connecting first if there is none (once, however many threads ask at once)."""
        with self._lock:
            client, info = self._client, self._info
        if client is None or info is None:
            with self._connecting:
                with self._lock:
                    connected = self._client is not None and self._info is not None
                if not connected:
                    self.connect()
            return self._connected()
        return client, info

    def _new_client(self) -> Any:
        tls = self.spec.tls
        try:
            return grpcclient.InferenceServerClient(
                self.spec.url,
                channel_args=_channel_args(),
                ssl=tls is not None,
                root_certificates=None if tls is None else tls.root_certificates,
                private_key=None if tls is None else tls.private_key,
                certificate_chain=None if tls is None else tls.certificate_chain,
            )
        except Exception as error:  # e.g. unreadable certificate files
            raise TritonError(self.describe(f"cannot create a gRPC client: {error}")) from None

    def _repository_states(self, client: Any) -> str:
        try:
            index = client.get_model_repository_index(
                headers=self.headers, as_json=True, client_timeout=self.spec.probe_timeout
            )
        except InferenceServerException:
            return "the repository index is not available"
        models = index.get("models", [])
        states = ", ".join(f"{m.get('name')} {m.get('state', 'UNAVAILABLE')}" for m in models) or "none"
        return f"models in the repository: {states}"

    # -- requests ---------------------------------------------------------------------------------------

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` as float32 (one blocking gRPC call where the batch fits)."""
        return self.wait(self.submit(input_ids, attention_mask, blocking=True))

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order, with up to ``max_in_flight`` requests in flight."""
        pending: deque[Pending] = deque()
        for input_ids, attention_mask in batches:
            if len(pending) >= self.spec.max_in_flight:
                yield self.wait(pending.popleft())
            pending.append(self.submit(input_ids, attention_mask))
        while pending:
            yield self.wait(pending.popleft())

    def submit(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, blocking: bool = False) -> Pending:
        """Sends a batch (split by the model's max batch size); errors surface in ``wait``."""
        self.check_open()
        ids, mask = _checked(input_ids, attention_mask)
        pending = Pending(ids, mask)
        try:
            client, info = self._connected()
        except TritonError as error:  # surfaces in wait(), in order
            failed: Future[np.ndarray] = Future()
            failed.set_exception(error)
            pending.parts.append((slice(0, len(ids)), failed))
            return pending
        slices = _row_slices(len(ids), info.max_batch_size)
        for rows in slices:
            future = self._send(client, info, ids[rows], mask[rows], blocking and len(slices) == 1)
            pending.parts.append((rows, future))
        return pending

    def wait(self, pending: Pending) -> np.ndarray:
        """The logits of a submitted batch; transient failures are sent again. ``TritonUnavailable`` if the
        server does not answer, ``TritonError`` if its answer is unusable; other errors propagate."""
        if not len(pending.input_ids):
            return np.zeros((*pending.input_ids.shape, max(self._info.num_labels if self._info else 0, 0)), np.float32)
        parts = [
            self._result(
                future,
                lambda client, info, rows=rows: self._send(
                    client, info, pending.input_ids[rows], pending.attention_mask[rows]
                ),
            )
            for rows, future in pending.parts
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _result(self, future: Future[Any], resend: Resend) -> Any:
        """The reply of a request; one that failed transiently is sent again (``retries`` times). Only
        transport failures become ``TritonUnavailable``; an exception that is not a gRPC status propagates."""
        attempt = 0
        while True:
            try:
                return future.result(timeout=self.spec.timeout + 1.0)
            except FutureTimeout:
                raise TritonUnavailable(self.describe(f"no reply within {self.spec.timeout:g} s")) from None
            except ChannelClosed:
                raise TritonUnavailable(self.describe("the channel was closed under the request")) from None
            except (InferenceServerException, grpc.RpcError) as error:
                if not is_transport_error(error):
                    raise TritonError(self.describe(f"request failed: {error}")) from None
                if grpc_status(error) not in RETRYABLE or attempt >= self.spec.retries:
                    raise TritonUnavailable(self.describe(f"request failed: {error}")) from None
            attempt += 1
            time.sleep(self.spec.retry_backoff * 2 ** (attempt - 1))
            future = resend(*self._connected())

    def _send(
        self, client: Channel, info: ModelInfo, ids: np.ndarray, mask: np.ndarray, blocking: bool = False
    ) -> Future[np.ndarray]:
        """The request's logits as a future; with ``blocking`` it is done when this returns."""
        future: Future[np.ndarray] = Future()
        length = ids.shape[1]
        ids, mask = self._bucket(ids, mask)

        # tritonclient calls back with these keyword names, in a gRPC thread: an exception escaping from here
        # would leave the future unset.
        def done(result: Any = None, error: Exception | None = None) -> None:
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
            "model_version": self.spec.model_version,
            "outputs": [grpcclient.InferRequestedOutput(OUTPUT)],
            "client_timeout": self.spec.timeout,
            "headers": self.headers,
        }
        return dispatch(client, request, done, future, blocking)

    def _inputs(self, info: ModelInfo, ids: np.ndarray, mask: np.ndarray) -> list[Any]:
        arrays = dict(zip(INPUTS, (ids, mask), strict=True))
        inputs = []
        for name in info.inputs:
            tensor = grpcclient.InferInput(name, list(ids.shape), "INT64")
            tensor.set_data_from_numpy(arrays[name])
            inputs.append(tensor)
        return inputs

    def _bucket(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pads to a multiple of ``length_multiple`` (not beyond ``max_length``); the logits are cut back."""
        length = ids.shape[1]
        target = -(-length // self.spec.length_multiple) * self.spec.length_multiple
        if self.max_length is not None:
            target = min(target, max(self.max_length, length))
        if target == length:
            return ids, mask
        return pad_rows([ids], self.pad_id, target), pad_rows([mask], 0, target)

    def _logits(self, result: Any, shape: tuple[int, ...], info: ModelInfo, length: int) -> np.ndarray:
        """The reply's logits, checked against the request's (padded) ``shape``, cut to ``length``."""
        logits = None if result is None else result.as_numpy(OUTPUT)
        if logits is None:
            raise TritonError(self.describe(f"malformed reply: no {OUTPUT!r} output"))
        labels = info.num_labels if info.num_labels > 0 else (logits.shape[-1] if logits.ndim == 3 else -1)
        expected = (*shape, labels)
        if logits.dtype != np.float32 or logits.shape != expected:
            raise TritonError(
                self.describe(
                    f"malformed reply: {OUTPUT} is {logits.dtype} {list(logits.shape)}, "
                    f"expected float32 {list(expected)}"
                )
            )
        return logits if length == shape[1] else np.ascontiguousarray(logits[:, :length])

    def _model_info(self, config: Mapping[str, Any]) -> ModelInfo:
        """What this client needs of the served model's (JSON) config; ``TritonError`` if it does not fit."""
        return _model_info(config)

    def close(self) -> None:
        """Closes the gRPC channel; requests in flight fail (``TritonUnavailable``), later ones raise
        ``RuntimeError``. A ``connect()`` running meanwhile publishes nothing."""
        with self._lock:
            super().close()
            old, self._client = self._client, None
        if old is not None:
            old.close()


def dispatch(
    channel: Channel, request: dict[str, Any], done: Callable[..., None], future: Future[Any], blocking: bool
) -> Future[Any]:
    """Sends ``request`` (tritonclient's ``infer`` keywords); ``done`` gets the reply, in this thread when
    ``blocking``, else in a gRPC thread. A request refused by the server, or not sent because this side
    closed the channel, fails ``future``; any other exception is a bug here or in tritonclient and
    propagates."""
    try:
        if blocking:
            done(result=channel.client.infer(**request))
        else:
            channel.client.async_infer(callback=done, **request)
    except (InferenceServerException, grpc.RpcError) as error:
        future.set_exception(error)
    except Exception:
        if not channel.closed:
            raise
        future.set_exception(ChannelClosed())
    return future


def _checked(input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise InvalidValue(
            f"input_ids and attention_mask must be [batch, seq] of one shape, got {ids.shape} and {mask.shape}"
        )
    return ids, mask


def _row_slices(rows: int, max_batch_size: int) -> list[slice]:
    step = max_batch_size if max_batch_size > 0 else max(rows, 1)
    return [slice(start, start + step) for start in range(0, rows, step)]


def _model_info(config: Mapping[str, Any]) -> ModelInfo:
    names = tuple(str(i["name"]) for i in config.get("input", []))
    unknown = [n for n in names if n not in INPUTS]
    if unknown or "input_ids" not in names:
        raise TritonError(f"the served model takes {list(names)}; nertron sends {list(INPUTS)}")
    outputs = {str(o["name"]): [int(d) for d in o.get("dims", [])] for o in config.get("output", [])}
    if OUTPUT not in outputs:
        raise TritonError(f"the served model has no {OUTPUT!r} output (it has {sorted(outputs)})")
    dims = outputs[OUTPUT]
    return ModelInfo(names, dims[-1] if dims else -1, int(config.get("max_batch_size", 0)))


def _channel_args() -> list[tuple[str, Any]]:
    """tritonclient's defaults plus a short reconnect backoff: after a blip, gRPC reconnects within ~1 s
    instead of after its default backoff of up to 2 minutes."""
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
