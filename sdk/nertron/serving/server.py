"""A real ``tritonserver`` process, supervised: the binary bundled in nvidia-pytriton (CPU, python backend,
see ``nertron.serving.binary``), or any given binary (e.g. NVIDIA's container on GPU hosts)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from nertron.errors import MissingFile, TritonServerError
from nertron.extras import require
from nertron.serving.binary import bundled_tritonserver, python_backend_directory, stub_environment
from nertron.serving.processes import (
    Watchdog,
    die_with_parent,
    free_port,
    group_members,
    interrupt,
    port_in_use,
    private_tempdir,
    remove_stale,
    signals_deferred,
)

# Names the python backend's shared-memory regions: this prefix, the owner's pid, a random part.
SHM_PREFIX = "nertron_triton_"
# What start-up errors quote from the log: its error lines (but the one every CPU-only start logs)
# and its last lines, without the wide configuration tables.
ERROR_LINE = re.compile(r"E\d{4} ")
HARMLESS = "CudaDriverHelper has not been initialized"
TAIL_LINES = 12
LINE_LIMIT = 600


class TritonServer:
    """Runs ``tritonserver`` on ``host`` with a model repository; a context manager.

    >>> with TritonServer("model_repository/cpu") as server:  # doctest: +SKIP
    ...     ner = NER(backend=Triton(server.grpc_url))

    Ports left at 0 are picked free; a given port that is in use is an error before anything starts.
    ``tritonserver=None`` runs the nvidia-pytriton binary with a private python backend directory; another
    binary uses ``backend_directory`` or its own default. ``start`` waits up to ``startup_timeout`` s for
    the server and all its models to be ready; ``stop`` sends SIGTERM and, after ``stop_timeout`` s,
    SIGKILL.

    The server and its python-backend stubs die with this process, however it ends (Linux): the server
    runs in a process group of its own with a ``Watchdog`` that SIGKILLs the group once this process is
    gone, and is SIGKILLed itself when the thread that started it dies (start it from one that lives as
    long as the server, e.g. the main thread). Its private files are named after this process's id, and
    a start removes those of processes that no longer exist.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        tritonserver: str | Path | None = None,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        backend_directory: str | Path | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository)
        if not self.model_repository.is_dir():
            raise MissingFile(f"model repository {self.model_repository} does not exist")
        self.binary = Path(tritonserver) if tritonserver else bundled_tritonserver()
        self.bundled = tritonserver is None
        self.host = host
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.backend_directory = Path(backend_directory) if backend_directory else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._watchdog: Watchdog | None = None
        self._private_backends: Path | None = None
        self._log_path: Path | None = None
        self._starts = 0
        # Names the python backend's shared-memory regions (bundled binary), so that stop() and kill()
        # can remove those that a killed server leaves in /dev/shm.
        self.shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:16]}_"
        self.startup_seconds = 0.0

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what ``TritonBackend`` takes)."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log(self) -> str:
        """The server's output so far (stdout and stderr)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def command(self) -> list[str]:
        """The command line ``start`` runs (ports as chosen)."""
        command = [
            str(self.binary),
            f"--model-repository={self.model_repository.resolve()}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout) - 2)}",
        ]
        if self.bundled:  # the wheel's server runs without CUDA here
            command += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
            command.append(f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}")
        backends = self.backend_directory or self._private_backends
        if backends:
            command.append(f"--backend-directory={backends}")
        return command + self.extra_args

    def start(self) -> TritonServer:
        """Starts the server (again, after ``stop``/``kill``: same ports) and waits until it and its
        models are ready. If it exits or is not ready in time: stops it, removes its files and raises
        ``TritonServerError`` quoting the log."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("this server is already running")
        env = stub_environment() if self.bundled else None
        if self._workdir is None:
            self._workdir = private_tempdir("triton")
            if Path("/dev/shm").is_dir():
                remove_stale(Path("/dev/shm"), SHM_PREFIX)
        try:
            self._launch(Path(self._workdir.name), env)
        except BaseException:  # also Ctrl-C while waiting: no server is left running
            self.close()
            raise
        return self

    def _launch(self, workdir: Path, env: dict[str, str] | None) -> None:
        if self.bundled and self.backend_directory is None:
            self._private_backends = python_backend_directory(workdir / "backends", self.binary)
        names = ("grpc_port", "http_port", "metrics_port")
        pick = [name for name in names if not getattr(self, name)]
        for name in names:
            port = getattr(self, name)
            if port and port_in_use(self.host, port):
                option = "--" + name.replace("_", "-")
                raise TritonServerError(
                    f"port {port} on {self.host} is in use (another server?); pick another with {option}, "
                    "or 0 for a free one"
                )
        started = time.monotonic()
        for attempt in range(3):  # a picked port can be taken before the server binds it
            for name in pick:
                setattr(self, name, free_port(self._client_host))
            self._log_path = workdir / f"tritonserver-{self._starts}.log"
            self._starts += 1
            with self._log_path.open("wb") as log, signals_deferred():
                # A process group of its own: a terminal's Ctrl-C reaches only the caller, which stops the
                # server; and kill() and the watchdog can take the python-backend stubs along.
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=die_with_parent(os.getpid(), process_group=0),
                )
                self._watchdog = Watchdog(self.process.pid, self.shm_prefix if self.bundled else "")
            try:
                self._wait_ready(started + self.startup_timeout)
            except TritonServerError as error:
                exited = self.process.poll() is not None
                self.stop()
                if attempt == 2 or not (pick and exited and "already in use" in self.log()):
                    raise TritonServerError(f"{error}\n(whole log: {kept_copy(self.log())})") from None
            else:
                self.startup_seconds = time.monotonic() - started
                return

    def _wait_ready(self, deadline: float) -> None:
        """Until the server says it and its models are ready (tritonclient, over HTTP, which stays plain
        when gRPC uses TLS)."""
        assert self.process is not None
        httpclient = require("tritonclient.http", "a tritonserver's readiness check")
        url = self.http_url.removeprefix("http://")
        with httpclient.InferenceServerClient(url, connection_timeout=1.0, network_timeout=1.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise TritonServerError(
                        f"tritonserver exited with code {code} during start-up{log_excerpt(self.log())}"
                    )
                with contextlib.suppress(Exception):  # not listening yet, or not ready
                    if client.is_server_ready():
                        return
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"tritonserver was not ready within {self.startup_timeout:.0f} s{log_excerpt(self.log())}"
                    )
                time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` s; returns the exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # A server stopped while loading its models (or crashed) can exit before its python-backend
        # stubs, which would linger for seconds: the watchdog kills them. While one lives (or the
        # watchdog), the group id is still theirs.
        self._release_watchdog()
        if group_members(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self._remove_shared_memory()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL to the server and its python-backend stubs at once (a crash, for tests)."""
        process = self.process
        if process is not None and process.returncode is None:
            # Not reaped yet, so the process group id cannot have been reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            self._release_watchdog()
            self._remove_shared_memory()

    def _release_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.release()

    def _remove_shared_memory(self) -> None:
        """Unlinks the python backend's shared-memory regions, which a killed server leaves behind."""
        shm = Path("/dev/shm")
        if self.bundled and shm.is_dir():
            for region in shm.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)

    def close(self) -> int | None:
        """Stops the server and removes its private files (log, backend directory); returns the exit
        code (as ``stop``)."""
        code = self.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
            self._private_backends = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def serve(server: TritonServer, ready: Callable[[TritonServer], object] | None = None) -> int:
    """Starts ``server``, calls ``ready(server)`` (e.g. to print the ports) and blocks until SIGINT or
    SIGTERM; then stops it, removes its files and returns its exit code (0 after a clean stop). If the
    server exits by itself, raises ``TritonServerError`` quoting the end of its log (the whole log is
    kept in a file the message names). Call from the main thread: the signal handlers are in place
    before the server starts, so a signal at any time stops it."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, interrupt) for s in signals}
    died: TritonServerError | None = None
    try:
        server.start()
        if ready is not None:
            ready(server)
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
        assert server.process is not None
        died = TritonServerError(
            f"tritonserver exited by itself with code {server.process.returncode}{log_excerpt(server.log())}"
            f"\n(whole log: {kept_copy(server.log())})"
        )
    except KeyboardInterrupt:
        pass
    finally:
        for s in signals:  # the stop has its own timeouts; a second Ctrl-C must not cut it short
            signal.signal(s, signal.SIG_IGN)
        code = server.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if died is not None:
        raise died
    return 0 if code is None else code


def log_excerpt(log: str) -> str:
    """Error lines and the last lines of a server log, for exception messages."""
    lines = log.splitlines()
    errors = [line[:LINE_LIMIT] for line in lines if ERROR_LINE.match(line) and HARMLESS not in line]
    tail = [
        line[:LINE_LIMIT]
        for line in lines[-TAIL_LINES:]
        if line[:LINE_LIMIT] not in errors and not line.startswith(("|", "+"))
    ]
    text = "\n".join([*errors, "...", *tail] if errors and tail else errors or tail)
    return f"; from its log:\n{text}" if text else ""


def kept_copy(log: str) -> Path:
    """A copy of a server log that outlives the server's private files."""
    with tempfile.NamedTemporaryFile("w", prefix="nertron-tritonserver-", suffix=".log", delete=False) as kept:
        kept.write(log)
    return Path(kept.name)
