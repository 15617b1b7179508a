"""Fallback policy without a server: a fake gRPC client decides what the server does.

Only transport failures go to the fallback; bugs and rejected requests propagate. Switches are logged and
counted; ``NER`` may be shared by threads and closed under them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from nertron import NER, ServedRows, TritonError, TritonUnavailable
from nertron.backends import OnnxRuntime, Triton
from nertron.backends.fallback import FallbackBackend
from nertron.backends.triton import TritonClient, is_transport_error
from nertron.backends.triton_text import ServerSideTexts, TritonTextClient
from nertron.entity import Entity
from nertron.serving.processes import free_port
from tritonclient.utils import InferenceServerException

LABELS = 9
CONFIG = {
    "config": {
        "input": [{"name": "input_ids"}, {"name": "attention_mask"}],
        "output": [{"name": "logits", "dims": [-1, -1, LABELS]}],
        "max_batch_size": 0,
    }
}
TEXT_CONFIG = {"config": {"input": [{"name": "TEXT"}], "output": [{"name": "ENTITIES"}], "max_batch_size": 0}}
TEXTS = ["Angela Merkel met Emmanuel Macron in Paris.", "EU rejects German call.", "x"] * 4


def unavailable(status: str = "UNAVAILABLE") -> InferenceServerException:
    return InferenceServerException("from the fake server", status=f"StatusCode.{status}")


class FakeServer:
    """What every fake gRPC client answers: ``failure`` (an exception to raise) or zeros."""

    def __init__(self, config: dict[str, Any] = CONFIG) -> None:
        self.config = config
        self.failure: Exception | None = None
        self.live = threading.Event()
        self.live.set()
        self.clients: list[FakeGrpcClient] = []


class FakeResult:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def as_numpy(self, name: str) -> np.ndarray:
        return self.array


class FakeGrpcClient:
    """The part of ``tritonclient.grpc.InferenceServerClient`` that nertron uses."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed = False
        server.clients.append(self)

    def is_server_live(self, **options: Any) -> bool:
        self.server.live.wait()
        if self.server.failure is not None and is_transport_error(self.server.failure):
            raise self.server.failure
        return True

    def is_model_ready(self, *args: Any, **options: Any) -> bool:
        return True

    def get_model_config(self, *args: Any, **options: Any) -> dict[str, Any]:
        return self.server.config

    def infer(self, model_name: str, inputs: list[Any], **options: Any) -> FakeResult:
        if self.server.failure is not None:
            raise self.server.failure
        shape = inputs[0].shape()
        if self.server.config is TEXT_CONFIG:
            return FakeResult(np.array([[b"[]"]] * shape[0], dtype=np.object_))
        return FakeResult(np.zeros((*shape, LABELS), np.float32))

    def async_infer(self, callback: Callable[..., None], **request: Any) -> None:
        try:
            result = self.infer(**request)
        except InferenceServerException as error:
            callback(result=None, error=error)
        else:
            callback(result=result, error=None)

    def close(self) -> None:
        self.closed = True


class Local:
    """A fallback backend that answers ones and counts its builds."""

    runtime, concurrency = "onnxruntime", 1
    builds = 0

    def __init__(self) -> None:
        Local.builds += 1
        time.sleep(0.05)  # a slow build: threads that need it meanwhile wait, and it happens once

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.ones((*input_ids.shape, LABELS), np.float32)

    def map(self, batches: Any) -> Iterator[np.ndarray]:
        return (self(*batch) for batch in batches)

    def close(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(TritonClient, "_new_client", lambda self: FakeGrpcClient(fake))
    Local.builds = 0
    return fake


def spec(**options: Any) -> Triton:
    return Triton("fake:1", retries=0, probe_interval=0.02, **options)


def fallback_backend() -> FallbackBackend:
    return FallbackBackend(TritonClient(spec()), Local, probe_interval=0.02)


def batch(rows: int = 2, length: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, length), 5, np.int64), np.ones((rows, length), np.int64)


def switches(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nertron.triton"]


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("bug", [TypeError("unexpected keyword argument"), AttributeError("no attribute")])
def test_a_bug_propagates_and_is_not_computed_by_the_fallback(
    server: FakeServer, bug: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    server.failure = bug
    with fallback_backend() as backend:
        with pytest.raises(type(bug), match=str(bug)):
            backend(*batch())  # a blocking call
        with pytest.raises(type(bug), match=str(bug)):
            list(backend.map([batch(), batch()]))  # calls back from "gRPC"
        assert backend.on_server and backend.rows == ServedRows()
    assert Local.builds == 0 and not switches(caplog)


@pytest.mark.parametrize("status", ["INVALID_ARGUMENT", "INTERNAL", "UNAUTHENTICATED"])
def test_a_request_the_server_rejects_propagates(
    server: FakeServer, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    with fallback_backend() as backend:
        server.failure = unavailable(status)
        with pytest.raises(TritonError, match=status) as raised:
            backend(*batch())
        assert raised.type is TritonError and backend.on_server
    assert Local.builds == 0 and not switches(caplog)


def test_statuses_and_grpc_errors_are_classified() -> None:
    class RpcError(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    for status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"):
        assert is_transport_error(unavailable(status))
        assert is_transport_error(RpcError(getattr(grpc.StatusCode, status)))
    for status in ("INVALID_ARGUMENT", "INTERNAL", "NOT_FOUND"):
        assert not is_transport_error(unavailable(status))
        assert not is_transport_error(RpcError(getattr(grpc.StatusCode, status)))
    assert not is_transport_error(TypeError("x")) and not is_transport_error(TritonError("x"))
    assert is_transport_error(TritonUnavailable("x"))


@pytest.mark.parametrize("status", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"])
def test_transport_failures_fall_back_and_each_switch_is_logged_and_counted(
    server: FakeServer, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nertron.triton")
    with fallback_backend() as backend:
        assert backend(*batch(3)).sum() == 0 and backend.rows == ServedRows(server=3, fallback=0)
        for round_trip in (1, 2):
            server.failure, server.live = unavailable(status), threading.Event()  # probes wait
            assert backend(*batch(2)).min() == 1 and not backend.on_server
            assert list(backend.map([batch(1), batch(1)]))[1].min() == 1  # no request sent meanwhile
            server.failure = None
            server.live.set()
            wait_for(lambda: backend.on_server)
            assert backend(*batch(3)).sum() == 0
            assert backend.rows == ServedRows(server=3 + 3 * round_trip, fallback=4 * round_trip)
    lines = switches(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO] * 2, lines
    assert status in lines[0][1] and "computing locally" in lines[0][1] and "answers again" in lines[1][1]
    assert Local.builds == 1


def test_a_closed_client_never_publishes_a_channel(server: FakeServer) -> None:
    client = TritonClient(spec())
    server.live.clear()  # connect() waits in its first probe
    raised: list[BaseException] = []

    def connect() -> None:
        try:
            client.connect()
        except BaseException as error:
            raised.append(error)

    connecting = threading.Thread(target=connect)
    connecting.start()
    wait_for(lambda: len(server.clients) == 1)
    client.close()
    server.live.set()
    connecting.join(timeout=5)
    assert not connecting.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError) and "closed" in str(raised[0])
    assert client._client is None and server.clients[0].closed


def test_the_fallback_is_built_once_outside_the_policy_lock(server: FakeServer) -> None:
    server.failure = unavailable()
    building, release = threading.Event(), threading.Event()

    class SlowLocal(Local):
        def __init__(self) -> None:
            building.set()
            release.wait(5)
            super().__init__()

    backend = FallbackBackend(TritonClient(spec()), SlowLocal, probe_interval=0.02)
    with backend, ThreadPoolExecutor(8) as pool:
        results = [pool.submit(lambda: backend(*batch(1)).min()) for _ in range(16)]
        assert building.wait(5)
        assert backend.rows == ServedRows() and not backend.on_server  # readable while it is being built
        again = threading.Thread(target=backend.failover.degrade, args=("again",))
        again.start()
        again.join(timeout=5)
        assert not again.is_alive(), "the policy's lock is held while the fallback is built"
        release.set()
        assert [result.result(timeout=5) for result in results] == [1] * 16
    assert Local.builds == 1 and backend.rows == ServedRows(server=0, fallback=16)


def test_texts_follow_the_same_policy(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    server.config = TEXT_CONFIG
    local_calls: list[int] = []

    def local(texts: list[str]) -> list[list[Entity]]:
        local_calls.append(len(texts))
        return [[] for _ in texts]

    texts = ServerSideTexts(TritonTextClient(spec(text_model="text")), local, probe_interval=0.02)
    try:
        assert len(list(texts.pipe(TEXTS, {}, 4))) == len(TEXTS) and texts.rows == ServedRows(len(TEXTS), 0)
        server.failure = TypeError("a bug")
        with pytest.raises(TypeError, match="a bug"):
            list(texts.pipe(TEXTS, {}, 4))
        server.failure = unavailable()
        assert len(list(texts.pipe(TEXTS, {}, 4))) == len(TEXTS)
        assert texts.rows == ServedRows(len(TEXTS), len(TEXTS)) and not texts.failover.on_server
        server.failure = None
        wait_for(lambda: texts.failover.on_server)
    finally:
        texts.close()
    assert sum(local_calls) == len(TEXTS)
    assert [level for level, _ in switches(caplog)] == [logging.WARNING]


def test_served_rows_on_ner(tiny_bundle: Path) -> None:
    with NER(tiny_bundle) as local:
        assert local.served_rows is None
    unreachable = Triton(f"127.0.0.1:{free_port()}", probe_interval=0.05, fallback=OnnxRuntime(threads=1))
    with NER(tiny_bundle, backend=unreachable) as ner:
        ner.batch(TEXTS)
        rows = ner.served_rows
        assert rows is not None and rows.server == 0 and rows.fallback >= len(TEXTS)


def ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("nertron")}


@pytest.mark.parametrize("where", ["onnxruntime", "fallback"])
def test_threads_calling_while_another_closes(tiny_bundle: Path, where: str) -> None:
    """Each call completes or raises RuntimeError (closed); nothing hangs; no thread is left behind."""
    before = ours()
    backend = (
        OnnxRuntime(threads=2, concurrent_batches=2)
        if where == "onnxruntime"
        else Triton(f"127.0.0.1:{free_port()}", probe_interval=0.05, fallback=OnnxRuntime(threads=2))
    )
    ner = NER(tiny_bundle, backend=backend, batch_size=2)
    with NER(tiny_bundle, batch_size=2) as reference:
        expected = reference.batch(TEXTS)
    outcomes: list[str] = []
    first_done = threading.Event()
    unexpected: list[BaseException] = []
    started = threading.Barrier(9)

    def call_until_closed() -> None:
        started.wait()
        while True:
            try:
                found = ner.batch(TEXTS)
            except RuntimeError as error:
                if "closed" not in str(error):
                    unexpected.append(error)
                outcomes.append("closed")
                return
            except BaseException as error:  # the test's point: nothing else may escape
                unexpected.append(error)
                return
            outcomes.append("done" if found == expected else "wrong")
            first_done.set()

    threads = [threading.Thread(target=call_until_closed) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    assert first_done.wait(60)  # close while calls are under way, whatever the machine's load
    ner.close()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a call hung after close()"
    assert not unexpected, unexpected
    assert outcomes.count("closed") == 8 and "wrong" not in outcomes and "done" in outcomes
    with pytest.raises(RuntimeError, match="closed"):
        ner("Paris")
    ner.close()  # twice is harmless
    wait_for(lambda: ours() <= before)
