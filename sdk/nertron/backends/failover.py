"""When work goes to the server and when to the local fallback: one policy for token ids
(``FallbackBackend``) and for texts (``ServerSideTexts``).

Work goes to the server until a request fails with ``TritonUnavailable`` (a transport failure; any other
error propagates). Then the channel is closed (requests in flight fail at once and are computed locally
too), a warning is logged, and a daemon thread reconnects every ``probe_interval`` s; once it succeeds,
work goes to the server again and that is logged too. Counts of rows answered by each are kept. A server that
comes back with another model (``ModelMismatch``) ends the probing, and ``check()`` raises it: the stream
stops rather than go on beside a server that no longer serves its model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nertron.errors import ModelMismatch, TritonError

if TYPE_CHECKING:  # not imported at run time: ServedRows needs no tritonclient
    from nertron.backends.triton import TritonClient

logger = logging.getLogger("nertron.triton")


@dataclass(frozen=True)
class ServedRows:
    """Rows answered by the server and by the local fallback: model batch rows (windows) for token ids,
    texts for a server-side text model."""

    server: int = 0
    fallback: int = 0

    @property
    def total(self) -> int:
        return self.server + self.fallback


class Failover:
    """Where ``client``'s work goes now (``on_server``), the prober that brings it back, and the counts.

    Thread-safe: any thread may ``degrade``, ``count`` and read; ``close`` stops and joins the prober.
    """

    def __init__(self, client: TritonClient, *, probe_interval: float) -> None:
        self.client = client
        self.probe_interval = probe_interval
        self._lock = threading.Lock()  # guards everything below; held only for a few assignments
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._on_server = True
        self._server_rows = self._fallback_rows = 0
        self._mismatch: ModelMismatch | None = None  # what the prober found instead of the model

    @property
    def on_server(self) -> bool:
        """Whether work goes to the server (False: to the fallback, until a probe succeeds)."""
        return self._on_server

    @property
    def rows(self) -> ServedRows:
        with self._lock:
            return ServedRows(self._server_rows, self._fallback_rows)

    def count(self, where: Literal["server", "fallback"], rows: int) -> None:
        with self._lock:
            if where == "server":
                self._server_rows += rows
            else:
                self._fallback_rows += rows

    def check(self) -> None:
        """Raises ``ModelMismatch`` if the prober found the server back with another model."""
        mismatch = self._mismatch
        if mismatch is not None:
            raise ModelMismatch(str(mismatch))

    def degrade(self, reason: str) -> None:
        """Sends work to the fallback and starts probing; logs a warning when it was on the server."""
        with self._lock:
            if self._stop.is_set():
                return
            was_on_server, self._on_server = self._on_server, False
        if was_on_server:
            self.client.disconnect()  # its requests still in flight fail at once, and go to the fallback
        with self._lock:  # the prober starts after the disconnect, so it never loses a channel it opened
            if self._prober is None and not self._stop.is_set():
                self._prober = threading.Thread(target=self._probe, name="nertron-triton-probe", daemon=True)
                self._prober.start()
        if was_on_server:
            logger.warning(
                "%s; computing locally with the fallback and re-probing every %g s", reason, self.probe_interval
            )

    def _probe(self) -> None:
        while not self._stop.wait(self.probe_interval):
            try:
                self.client.connect()
            except ModelMismatch as error:  # raised by check(), to whoever computes locally next
                with self._lock:
                    self._mismatch, self._prober = error, None
                logger.info("%s; probing stops", error)
                return
            except (TritonError, RuntimeError) as error:  # RuntimeError: closed meanwhile
                logger.debug("still unusable: %s", error)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self._on_server, self._prober = True, None
            logger.info("Triton at %s answers again; work goes to the server", self.client.url)
            return

    def close(self) -> None:
        """Stops the prober (waits for a probe in progress)."""
        with self._lock:
            self._stop.set()
            prober, self._prober = self._prober, None
        if prober is not None and prober is not threading.current_thread():
            prober.join(timeout=self.client.spec.probe_timeout * 3 + 1.0)
