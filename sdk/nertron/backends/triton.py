"""The model on a Triton server, over gRPC (``pip install "nertron[triton]"``).

``TritonClient`` sends batches of subword ids and returns logits. A request the server does not answer in
time (unreachable, overloaded, deadline, channel closed) raises ``TritonUnavailable``, after ``retries`` for
the transient ones; ``FallbackBackend`` (``nertron.backends.fallback``) computes those batches locally.
Anything else is not a transport failure and is never hidden: a reply the server rejects or malforms raises
``TritonError``, a server that serves another bundle than the client's ``ModelMismatch`` (checked on every
(re)connect and, by the served model, on every request; see ``nertron.backends.served_model``), and an
exception of the client's own (a ``TypeError`` after a tritonclient change) propagates unchanged.
"""

from __future__ import annotations

import os
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
from nertron.backends.grpc_channel import (
    RETRYABLE,
    Channel,
    ChannelClosed,
    ChannelReplaced,
    InferenceServerException,
    dispatch,
    grpc,
    grpc_status,
    grpcclient,
    is_transport_error,
)
from nertron.backends.served_model import (
    INPUTS,
    OUTPUT,
    Expected,
    ModelInfo,
    model_info,
    open_client,
    read_config,
    rejected,
)
from nertron.backends.specs import Triton
from nertron.errors import InvalidValue, TritonError, TritonUnavailable
from nertron.serving.identity import FINGERPRINT
from nertron.windows import pad_rows


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
    server; a ``Backend``. ``connect()`` (also done by the first request) reads the model's config.

    ``fingerprint``: that of the bundle the client is for (``Bundle.fingerprint``; ``bundle``, its path, for
    messages): a server whose model has another raises ``ModelMismatch``, one whose config names none a
    ``TritonError``. ``None`` checks nothing (a model not written by nertron)."""

    runtime = "triton"

    def __init__(
        self,
        spec: Triton,
        *,
        pad_id: int = 1,
        max_length: int | None = None,
        fingerprint: str | None = None,
        bundle: str | os.PathLike[str] | None = None,
    ) -> None:
        self.spec = spec
        self.model = spec.model
        self.pad_id, self.max_length = pad_id, max_length
        self.expected = Expected.of(fingerprint, bundle)
        self.concurrency = spec.max_in_flight
        self.headers = dict(spec.headers) or None
        self.parameters = {} if self.expected is None else {FINGERPRINT: self.expected.fingerprint}
        self._lock = threading.Lock()
        self._connecting = threading.Lock()  # one connect at a time from _connected and _checked_since
        self._client: Channel | None = None  # once connected
        self._info: ModelInfo | None = None
        self._checked_at = float("-inf")  # when the connect that opened the channel started

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
        """Opens a fresh channel and checks that the server and model are ready and are the bundle's:
        ``TritonUnavailable`` if they are not (yet), ``ModelMismatch`` if the server serves another bundle,
        ``TritonError`` if the model does not fit or the server refuses us, and ``RuntimeError`` once closed
        (also when ``close()`` comes while connecting). Requests in flight on the old channel are sent again."""
        self.check_open()
        started = time.monotonic()
        client = self._new_client()
        try:
            config = read_config(client, self.spec, self.model, self.describe)
            if self.expected is not None:
                self.expected.check(self.spec.url, self.model, config)
            info = self._model_info(config)
        except BaseException:
            client.close()
            raise
        old: Channel | None = None
        with self._lock:
            closed = self._closed
            if not closed:
                old, self._client, self._info = self._client, Channel(client), info
                self._checked_at = started
        if closed:  # a closed client never publishes a channel
            client.close()
            self.check_open()
        if old is not None:
            old.close(replaced=True)

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

    def _checked_since(self, moment: float) -> tuple[Channel, ModelInfo]:
        """A channel whose connect (a full check) started after ``moment``: after a transport failure, gRPC
        may have reconnected the old channel to another server on the same address."""
        with self._connecting:
            with self._lock:
                checked = self._client is not None and self._checked_at >= moment
            if not checked:
                self.connect()
        return self._connected()

    def _new_client(self) -> Any:
        return open_client(self.spec, self.describe)

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
        """The reply of a request; one that failed transiently is sent again (``retries`` times) on a channel
        checked anew. Only transport failures become ``TritonUnavailable``; a server that answers for another
        bundle raises ``ModelMismatch``; an exception that is not a gRPC status propagates."""
        attempt = 0
        while True:
            try:
                return future.result(timeout=self.spec.timeout + 1.0)
            except FutureTimeout:
                raise TritonUnavailable(self.describe(f"no reply within {self.spec.timeout:g} s")) from None
            except ChannelClosed:
                raise TritonUnavailable(self.describe("the channel was closed under the request")) from None
            except ChannelReplaced:  # by a connect that checked the server: send it there
                future = resend(*self._connected())
                continue
            except (InferenceServerException, grpc.RpcError) as error:
                if not is_transport_error(error):
                    raise rejected(error, self.spec.url, self.expected, self.describe) from None
                if grpc_status(error) not in RETRYABLE or attempt >= self.spec.retries:
                    raise TritonUnavailable(self.describe(f"request failed: {error}")) from None
                failure = error
            attempt, future = self._retry(resend, attempt, failure)

    def _retry(self, resend: Resend, attempt: int, failure: BaseException) -> tuple[int, Future[Any]]:
        """Sends a request that failed with ``failure`` again, after a backoff, on a channel checked since (a
        reconnect that fails takes a retry too); the attempts made so far and the new request's future."""
        failed_at = time.monotonic()
        while True:
            attempt += 1
            time.sleep(self.spec.retry_backoff * 2 ** (attempt - 1))
            try:
                return attempt, resend(*self._checked_since(failed_at))
            except TritonUnavailable as error:
                if attempt >= self.spec.retries:
                    raise TritonUnavailable(self.describe(f"request failed: {failure}; then {error}")) from None

    def _send(
        self, client: Channel, info: ModelInfo, ids: np.ndarray, mask: np.ndarray, blocking: bool = False
    ) -> Future[np.ndarray]:
        """The request's logits as a future; with ``blocking`` it is done when this returns."""
        future: Future[np.ndarray] = Future()
        length = ids.shape[1]
        ids, mask = _bucket(ids, mask, self.spec.length_multiple, self.max_length, self.pad_id)

        # tritonclient calls back with these keyword names, in a gRPC thread: an exception escaping from here
        # would leave the future unset.
        def done(result: Any = None, error: Exception | None = None) -> None:
            try:
                if error is not None:
                    raise error
                logits = _logits(result, ids.shape, info, length, self.describe)
            except Exception as failure:
                future.set_exception(failure)
            else:
                future.set_result(logits)

        request = {
            "model_name": self.model,
            "inputs": _inputs(info, ids, mask),
            "model_version": self.spec.model_version,
            "outputs": [grpcclient.InferRequestedOutput(OUTPUT)],
            "client_timeout": self.spec.timeout,
            "headers": self.headers,
            "parameters": self.parameters or None,
        }
        return dispatch(client, request, done, future, blocking)

    def _model_info(self, config: Mapping[str, Any]) -> ModelInfo:
        """What this client needs of the served model's (JSON) config; ``TritonError`` if it does not fit."""
        return model_info(config)

    def close(self) -> None:
        """Closes the gRPC channel; requests in flight fail (``TritonUnavailable``), later ones raise
        ``RuntimeError``. A ``connect()`` running meanwhile publishes nothing."""
        with self._lock:
            super().close()
            old, self._client = self._client, None
        if old is not None:
            old.close()


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


def _inputs(info: ModelInfo, ids: np.ndarray, mask: np.ndarray) -> list[Any]:
    arrays = dict(zip(INPUTS, (ids, mask), strict=True))
    inputs = []
    for name in info.inputs:
        tensor = grpcclient.InferInput(name, list(ids.shape), "INT64")
        tensor.set_data_from_numpy(arrays[name])
        inputs.append(tensor)
    return inputs


def _bucket(
    ids: np.ndarray, mask: np.ndarray, multiple: int, max_length: int | None, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pads to a multiple of ``multiple`` (not beyond ``max_length``); the logits are cut back."""
    length = ids.shape[1]
    target = -(-length // multiple) * multiple
    if max_length is not None:
        target = min(target, max(max_length, length))
    if target == length:
        return ids, mask
    return pad_rows([ids], pad_id, target), pad_rows([mask], 0, target)


def _logits(
    result: Any, shape: tuple[int, ...], info: ModelInfo, length: int, describe: Callable[[str], str]
) -> np.ndarray:
    """The reply's logits, checked against the request's (padded) ``shape``, cut to ``length``."""
    logits = None if result is None else result.as_numpy(OUTPUT)
    if logits is None:
        raise TritonError(describe(f"malformed reply: no {OUTPUT!r} output"))
    labels = info.num_labels if info.num_labels > 0 else (logits.shape[-1] if logits.ndim == 3 else -1)
    expected = (*shape, labels)
    if logits.dtype != np.float32 or logits.shape != expected:
        raise TritonError(
            describe(
                f"malformed reply: {OUTPUT} is {logits.dtype} {list(logits.shape)}, expected float32 {list(expected)}"
            )
        )
    return logits if length == shape[1] else np.ascontiguousarray(logits[:, :length])
