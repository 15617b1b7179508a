"""A remote backend with a local fallback: degrade, probe, return (the policy is ``Failover``'s).

Batches go to the primary (a ``TritonClient``). When one fails with ``TritonUnavailable`` (a transport
failure), that batch and the following ones are computed by the fallback (built once, at first need) until
a probe reaches the server again. Any other error propagates: a fallback never hides a bug, nor a server
that serves another model (``ModelMismatch``, also when a probe finds one). Every batch gives exactly one
result, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from nertron.backends.base import Backend, Closable
from nertron.backends.failover import Failover, ServedRows
from nertron.backends.triton import ModelInfo, Pending, TritonClient
from nertron.errors import TritonUnavailable


class FallbackBackend(Closable):
    """``primary`` while it answers, else the backend ``make_fallback()`` builds; a ``Backend``.

    ``rows`` counts the rows answered by the server and by the fallback. Thread-safe; after ``close()``
    calls raise ``RuntimeError`` (also those in flight that the server no longer answers).
    """

    runtime = "triton"

    def __init__(
        self, primary: TritonClient, make_fallback: Callable[[], Backend], *, probe_interval: float = 1.0
    ) -> None:
        self.primary = primary
        self.concurrency = primary.concurrency
        self.failover = Failover(primary, probe_interval=probe_interval)
        self._make_fallback = make_fallback
        self._fallback: Backend | None = None
        self._building = threading.Lock()  # one build of the fallback; not held by anything else
        try:
            primary.connect()
        except TritonUnavailable as error:
            self.failover.degrade(str(error))

    @property
    def on_server(self) -> bool:
        """Whether batches currently go to the server (False: to the fallback)."""
        return self.failover.on_server

    @property
    def rows(self) -> ServedRows:
        """Rows answered so far by the server and by the fallback."""
        return self.failover.rows

    @property
    def info(self) -> ModelInfo | None:
        return self.primary.info

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.check_open()
        pending = self.primary.submit(input_ids, attention_mask, blocking=True) if self.on_server else None
        return self._collect(input_ids, attention_mask, pending)

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        self.check_open()
        waiting: deque[tuple[np.ndarray, np.ndarray, Pending | None]] = deque()
        for input_ids, attention_mask in batches:
            if len(waiting) >= self.concurrency:
                yield self._collect(*waiting.popleft())
            pending = self.primary.submit(input_ids, attention_mask) if self.on_server else None
            waiting.append((input_ids, attention_mask, pending))
        while waiting:
            yield self._collect(*waiting.popleft())

    def _collect(self, input_ids: np.ndarray, attention_mask: np.ndarray, pending: Pending | None) -> np.ndarray:
        if pending is not None:
            try:
                logits = self.primary.wait(pending)
            except TritonUnavailable as error:
                self.check_open()  # closed under the request: not the server's failure
                self.failover.degrade(str(error))
            else:
                self.failover.count("server", len(input_ids))
                return logits
        self.failover.check()  # the server came back with another model: stop here
        logits = np.ascontiguousarray(self._local()(input_ids, attention_mask), dtype=np.float32)
        self.failover.count("fallback", len(input_ids))
        return logits

    def _local(self) -> Backend:
        fallback = self._fallback
        if fallback is None:
            with self._building:
                self.check_open()
                if self._fallback is None:
                    self._fallback = self._make_fallback()
                fallback = self._fallback
        return fallback

    def close(self) -> None:
        """Stops the prober, closes the channel and the fallback backend."""
        super().close()
        self.failover.close()
        self.primary.close()
        with self._building:  # waits for a build in progress; none starts after
            fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback.close()
