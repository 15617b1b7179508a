"""A remote backend with a local fallback: degrade, probe, return.

Batches go to the primary (a ``TritonClient``). When one fails, that batch and the following ones are
computed by the fallback (built at first need), a warning is logged once, and a daemon thread reconnects
to the server every ``probe_interval`` s; once it succeeds, batches go to the server again. Every batch
gives exactly one result, in order.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from nertron.backends.base import Backend, Closable
from nertron.backends.triton import ModelInfo, Pending, TritonClient
from nertron.errors import TritonError

logger = logging.getLogger("nertron.triton")


class FallbackBackend(Closable):
    """``primary`` while it answers, else the backend ``make_fallback()`` builds; a ``Backend``.

    ``rows`` counts the rows answered by the ``"server"`` and by the ``"fallback"``.
    """

    runtime = "triton"

    def __init__(
        self, primary: TritonClient, make_fallback: Callable[[], Backend], *, probe_interval: float = 1.0
    ) -> None:
        self.primary = primary
        self.concurrency = primary.concurrency
        self.probe_interval = probe_interval
        self._make_fallback = make_fallback
        self._fallback: Backend | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._warned = False
        self._on_server = True
        self.rows: Counter[str] = Counter()
        try:
            primary.connect()
        except TritonError as error:
            self._degrade(str(error))

    @property
    def on_server(self) -> bool:
        """Whether batches currently go to the server (False: to the fallback)."""
        return self._on_server

    @property
    def info(self) -> ModelInfo | None:
        return self.primary.info

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.check_open()
        pending = self.primary.submit(input_ids, attention_mask, blocking=True) if self._on_server else None
        return self._collect(input_ids, attention_mask, pending)

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        self.check_open()
        waiting: deque[tuple[np.ndarray, np.ndarray, Pending | None]] = deque()
        for input_ids, attention_mask in batches:
            if len(waiting) >= self.concurrency:
                yield self._collect(*waiting.popleft())
            pending = self.primary.submit(input_ids, attention_mask) if self._on_server else None
            waiting.append((input_ids, attention_mask, pending))
        while waiting:
            yield self._collect(*waiting.popleft())

    def _collect(self, input_ids: np.ndarray, attention_mask: np.ndarray, pending: Pending | None) -> np.ndarray:
        if pending is not None:
            try:
                logits = self.primary.wait(pending)
            except TritonError as error:
                self._degrade(str(error))
            else:
                self._count("server", len(input_ids))
                return logits
        logits = np.ascontiguousarray(self._local()(input_ids, attention_mask), dtype=np.float32)
        self._count("fallback", len(input_ids))
        return logits

    def _local(self) -> Backend:
        with self._lock:
            self.check_open()
            if self._fallback is None:
                self._fallback = self._make_fallback()
            return self._fallback

    def _count(self, where: str, rows: int) -> None:
        with self._lock:
            self.rows[where] += rows

    def _degrade(self, reason: str) -> None:
        with self._lock:
            was_on_server, self._on_server = self._on_server, False
            if self._prober is None and not self._stop.is_set():
                self._prober = threading.Thread(
                    target=self._probe_until_healthy, name="nertron-triton-probe", daemon=True
                )
                self._prober.start()
            first, self._warned = not self._warned, True
        if was_on_server:
            self.primary.disconnect()  # its requests still in flight fail at once, and go to the fallback
        if first:
            logger.warning(
                "%s; computing locally with the fallback backend and re-probing every %g s", reason, self.probe_interval
            )
        elif was_on_server:
            logger.info("%s; computing locally until the server is healthy again", reason)

    def _probe_until_healthy(self) -> None:
        while not self._stop.wait(self.probe_interval):
            try:
                self.primary.connect()
            except (TritonError, RuntimeError) as error:  # RuntimeError: closed meanwhile
                logger.debug("still unusable: %s", error)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self._on_server, self._prober = True, None
            logger.info("Triton at %s is healthy again; batches go to the server", self.primary.url)
            return

    def close(self) -> None:
        """Stops the prober, closes the channel and the fallback backend."""
        super().close()
        self._stop.set()
        with self._lock:
            prober, self._prober = self._prober, None
            fallback, self._fallback = self._fallback, None
        if prober is not None:
            prober.join(timeout=self.primary.spec.probe_timeout * 3 + 1.0)
        self.primary.close()
        if fallback is not None:
            fallback.close()
