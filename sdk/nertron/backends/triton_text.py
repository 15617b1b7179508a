"""Texts to the text-level model on a Triton server (``nertron_text``: text in, entities out), with a local
fallback: the server does everything, the client only sends texts and reads entities.

``TritonTextClient`` shares ``TritonClient``'s connection, TLS, headers, timeouts and retries.
``ServerSideTexts`` runs a stream of texts through it, ``max_in_flight`` requests of up to ``batch_size``
texts at a time; a request the server does not answer (after retries) is computed by ``local`` instead, and
so are the following ones, until it answers a probe (every ``probe_interval`` s): the policy of
``nertron.backends.failover``, shared with the token-id path.
Every text gets exactly one result, in input order.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from nertron.backends.failover import Failover, ServedRows
from nertron.backends.grpc_channel import dispatch, grpcclient
from nertron.backends.served_model import ModelInfo
from nertron.backends.specs import Triton
from nertron.backends.triton import Resend, TritonClient
from nertron.entity import Entity
from nertron.errors import InvalidValue, TritonError, TritonUnavailable

INPUT, OUTPUT = "TEXT", "ENTITIES"
ENTITY_KEYS = ("text", "label", "start", "end", "score")


class TritonTextClient(TritonClient):
    """Texts -> entities from the model ``spec.text_model``; ``TritonError`` when a request fails,
    ``ModelMismatch`` when the server's text model is not the bundle of ``fingerprint`` (see ``TritonClient``)."""

    def __init__(
        self, spec: Triton, *, fingerprint: str | None = None, bundle: str | os.PathLike[str] | None = None
    ) -> None:
        if spec.text_model is None:
            raise InvalidValue("Triton(text_model=None) sends token ids, not texts")
        super().__init__(spec, fingerprint=fingerprint, bundle=bundle)
        self.model = spec.text_model

    def _model_info(self, config: Mapping[str, Any]) -> ModelInfo:
        inputs = tuple(str(i["name"]) for i in config.get("input", []))
        outputs = tuple(str(o["name"]) for o in config.get("output", []))
        if inputs != (INPUT,) or OUTPUT not in outputs:
            raise TritonError(
                self.describe(f"takes {list(inputs)}, gives {list(outputs)}; a text model takes TEXT, gives ENTITIES")
            )
        return ModelInfo(inputs, -1, int(config.get("max_batch_size", 0)))

    def submit_texts(
        self, texts: list[str], parameters: Mapping[str, Any], *, blocking: bool = False
    ) -> list[tuple[list[str], Future[Any]]]:
        """Sends the texts with the request ``parameters`` (``aggregation``, ``min_score``), in requests of at
        most the model's max batch size: each request's texts and its reply's future. Errors surface in
        ``wait_texts``."""
        self.check_open()
        try:
            client, info = self._connected()
        except TritonError as error:
            failed: Future[Any] = Future()
            failed.set_exception(error)
            return [(texts, failed)]
        step = info.max_batch_size if info.max_batch_size > 0 else max(len(texts), 1)
        chunks = [texts[start : start + step] for start in range(0, len(texts), step)]
        blocking = blocking and len(chunks) == 1
        return [(chunk, self._send_texts(client, chunk, parameters, blocking)) for chunk in chunks]

    def wait_texts(
        self, sent: list[tuple[list[str], Future[Any]]], parameters: Mapping[str, Any]
    ) -> list[list[Entity]]:
        """The entities of submitted texts; transient failures are sent again. ``TritonError`` if it fails."""
        found: list[list[Entity]] = []
        for texts, future in sent:
            resend: Resend = lambda client, info, texts=texts: self._send_texts(client, texts, parameters)  # noqa: E731
            found.extend(self._result(future, resend))
        return found

    def _send_texts(
        self, client: Any, texts: Sequence[str], parameters: Mapping[str, Any], blocking: bool = False
    ) -> Future[Any]:
        future: Future[Any] = Future()

        def done(result: Any = None, error: Exception | None = None) -> None:  # in a gRPC thread: never raises
            try:
                if error is not None:
                    raise error
                entities = self._entities(result, len(texts))
            except Exception as failure:
                future.set_exception(failure)
            else:
                future.set_result(entities)

        tensor = grpcclient.InferInput(INPUT, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode("utf-8", "surrogatepass") for t in texts], np.object_)[:, None])
        request = {
            "model_name": self.model,
            "inputs": [tensor],
            "model_version": self.spec.model_version,
            "outputs": [grpcclient.InferRequestedOutput(OUTPUT)],
            "client_timeout": self.spec.timeout,
            "headers": self.headers,
            "parameters": {**parameters, **self.parameters},
        }
        return dispatch(client, request, done, future, blocking)

    def _entities(self, result: Any, count: int) -> list[list[Entity]]:
        """The reply's entities, checked: one JSON array of entity objects per text."""
        array = None if result is None else result.as_numpy(OUTPUT)
        if array is None or array.shape != (count, 1):
            shape = None if array is None else list(array.shape)
            raise TritonError(self.describe(f"malformed reply: {OUTPUT} is {shape}, expected [{count}, 1]"))
        try:
            return [[Entity(**_entity(item)) for item in json.loads(value)] for value in array[:, 0]]
        except (ValueError, TypeError) as error:
            raise TritonError(self.describe(f"malformed reply: {OUTPUT} is not entity JSON ({error})")) from None


def _entity(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or tuple(item) != ENTITY_KEYS:
        raise InvalidValue(f"an entity must be an object with keys {list(ENTITY_KEYS)}, got {item!r}")
    return item


class ServerSideTexts:
    """Streams texts through a ``TritonTextClient`` in requests of ``batch_size``; requests the server does
    not answer (``TritonUnavailable``) go to ``local`` under ``Failover``'s policy (``local=None``: they
    raise). Other errors propagate. Thread-safe; ``close()`` closes the client and stops the prober."""

    def __init__(
        self,
        client: TritonTextClient,
        local: Callable[[list[str]], list[list[Entity]]] | None,
        *,
        probe_interval: float,
    ) -> None:
        self.client = client
        self.local = local
        self.failover = Failover(client, probe_interval=probe_interval)

    @property
    def rows(self) -> ServedRows:
        """Texts answered so far by the server and by ``local``."""
        return self.failover.rows

    def pipe(self, texts: Iterable[str], parameters: Mapping[str, Any], batch_size: int) -> Iterator[list[Entity]]:
        """Entities per text, in input order; ``parameters`` go with every request."""
        source = iter(texts)
        chunks = iter(lambda: list(itertools.islice(source, batch_size)), [])
        waiting: deque[tuple[list[str], list[tuple[list[str], Future[Any]]] | None]] = deque()
        chunk = next(chunks, None)
        while chunk is not None:
            following = next(chunks, None)
            alone = following is None and not waiting  # the only request: one blocking call
            if len(waiting) >= self.client.spec.max_in_flight:
                yield from self._collect(*waiting.popleft(), parameters)
            waiting.append((chunk, self._submit(chunk, parameters, blocking=alone)))
            chunk = following
        while waiting:
            yield from self._collect(*waiting.popleft(), parameters)

    def _submit(
        self, chunk: list[str], parameters: Mapping[str, Any], *, blocking: bool = False
    ) -> list[tuple[list[str], Future[Any]]] | None:
        if self.local is not None and not self.failover.on_server:
            return None  # local until a probe reaches the server
        return self.client.submit_texts(chunk, parameters, blocking=blocking)

    def _collect(
        self, chunk: list[str], sent: list[tuple[list[str], Future[Any]]] | None, parameters: Mapping[str, Any]
    ) -> list[list[Entity]]:
        if sent is not None:
            try:
                found = self.client.wait_texts(sent, parameters)
            except TritonUnavailable as error:
                if self.local is None:
                    raise
                self.client.check_open()  # closed under the request: not the server's failure
                self.failover.degrade(str(error))
            else:
                self.failover.count("server", len(chunk))
                return found
        assert self.local is not None
        self.failover.check()  # the server came back with another model: stop here
        found = self.local(chunk)
        self.failover.count("fallback", len(chunk))
        return found

    def close(self) -> None:
        self.failover.close()
        self.client.close()
