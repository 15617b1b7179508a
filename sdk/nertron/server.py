"""A real ``tritonserver`` process: the binary bundled in nvidia-pytriton (CPU, python backend), or any
given binary (e.g. NVIDIA's container on GPU hosts).

The bundled binary needs a private backend directory (see :func:`python_backend_directory`) and an
environment in which the python-backend stub embeds this interpreter: the venv's ``bin`` first on
``PATH`` (the stub ignores ``PYTHONPATH``; it finds ``pyvenv.cfg`` from ``PATH``) and the interpreter's
libpython on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from .errors import TritonServerError
from .extras import missing, require

# What start-up errors quote from the log: its error lines (but the one every CPU-only start logs)
# and its last lines, without the wide configuration tables.
ERROR_LINE = re.compile(r"E\d{4} ")
HARMLESS = "CudaDriverHelper has not been initialized"
TAIL_LINES = 12
LINE_LIMIT = 600


def bundled_tritonserver() -> Path:
    """The ``tritonserver`` binary of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise missing("pytriton", "the bundled tritonserver (or pass the path of a tritonserver binary)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no tritonserver binary at {binary}")
    return binary


def python_backend_directory(target: str | Path, tritonserver: str | Path | None = None) -> Path:
    """Makes ``target/python/`` with links to the bundled python backend, its utils and the stub for
    this Python version (the stub must sit beside ``libtriton_python.so``); returns ``target``."""
    root = Path(tritonserver or bundled_tritonserver()).resolve().parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"the Triton python backend lacks {source} (Python {version})")
    backend = Path(target) / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in sources:
        link = backend / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return Path(target)


def stub_environment() -> dict[str, str]:
    """The environment in which the python-backend stub runs this interpreter and its site-packages."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise TritonServerError(
            f"{sys.executable} was built without a shared libpython, which the Triton python backend "
            "stub needs; use a Python built with --enable-shared"
        )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (or holds) ``host:port``, so that a server could not bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket in TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has Linux kill the child when the thread that started it dies (even by
    SIGKILL), so that a server never outlives its supervisor."""

    def set_death_signal() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guarantee
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_death_signal


class TritonServer:
    """Runs ``tritonserver`` on ``host`` with a model repository; a context manager.

    >>> with TritonServer("model_repository/cpu") as server:  # doctest: +SKIP
    ...     backend = TritonBackend(server.grpc_url)

    Ports left at 0 are picked free; a given port that is in use is an error before anything starts.
    ``tritonserver=None`` runs the nvidia-pytriton binary with a private python backend directory; another
    binary uses ``backend_directory`` or its own default. ``start`` waits up to ``startup_timeout`` s for
    the server and all its models to be ready; ``stop`` sends SIGTERM and, after ``stop_timeout`` s,
    SIGKILL. The server dies with the thread that started it (Linux): start it from one that lives as
    long as the server, e.g. the main thread.
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
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
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
        self._private_backends: Path | None = None
        self._log_path: Path | None = None
        self._starts = 0
        # Names the python backend's shared-memory regions (bundled binary), so that stop() and kill()
        # can remove those that a killed server leaves in /dev/shm.
        self.shm_prefix = f"nertron_triton_{uuid.uuid4().hex[:16]}_"
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
            self._workdir = tempfile.TemporaryDirectory(prefix="nertron-triton-")
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
            with self._log_path.open("wb") as log, _signals_deferred():
                # A session of its own: a terminal's Ctrl-C reaches only the caller, which stops the
                # server; and kill() can take the python-backend stubs along.
                self.process = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
            try:
                self._wait_ready(started + self.startup_timeout)
            except TritonServerError as error:
                exited = self.process.poll() is not None
                self.stop()
                if attempt == 2 or not (pick and exited and "already in use" in self.log()):
                    raise TritonServerError(f"{error}\n(whole log: {self._keep_log()})") from None
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
                    raise TritonServerError(f"tritonserver exited with code {code} during start-up{self._log_tail()}")
                with contextlib.suppress(Exception):  # not listening yet, or not ready
                    if client.is_server_ready():
                        return
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"tritonserver was not ready within {self.startup_timeout:.0f} s{self._log_tail()}"
                    )
                time.sleep(0.1)

    def _log_tail(self) -> str:
        """Error lines and the last lines of the log, for exception messages."""
        lines = self.log().splitlines()
        errors = [line[:LINE_LIMIT] for line in lines if ERROR_LINE.match(line) and HARMLESS not in line]
        tail = [
            line[:LINE_LIMIT]
            for line in lines[-TAIL_LINES:]
            if line[:LINE_LIMIT] not in errors and not line.startswith(("|", "+"))
        ]
        text = "\n".join([*errors, "...", *tail] if errors and tail else errors or tail)
        return f"; from its log:\n{text}" if text else ""

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
        # stubs, which would linger for seconds. While one lives, the group id is still theirs.
        if _group_members(process.pid):
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
            self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        """Unlinks the python backend's shared-memory regions, which a killed server leaves behind."""
        shm = Path("/dev/shm")
        if self.bundled and shm.is_dir():
            for region in shm.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)

    def serve(self, ready: Callable[[TritonServer], object] | None = None) -> int:
        """Starts the server, calls ``ready(self)`` (e.g. to print the ports) and blocks until SIGINT or
        SIGTERM; then stops it, removes its files and returns its exit code (0 after a clean stop). If the
        server exits by itself, raises ``TritonServerError`` quoting the end of its log (the whole log is
        kept in a file the message names). Call from the main thread: the signal handlers are in place
        before the server starts, so a signal at any time stops it."""
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, _interrupt) for s in signals}
        died: TritonServerError | None = None
        try:
            self.start()
            if ready is not None:
                ready(self)
            while self.process is not None and self.process.poll() is None:
                time.sleep(0.2)
            assert self.process is not None
            died = TritonServerError(
                f"tritonserver exited by itself with code {self.process.returncode}{self._log_tail()}"
                f"\n(whole log: {self._keep_log()})"
            )
        except KeyboardInterrupt:
            pass
        finally:
            for s in signals:  # the stop has its own timeouts; a second Ctrl-C must not cut it short
                signal.signal(s, signal.SIG_IGN)
            code = self.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if died is not None:
            raise died
        return 0 if code is None else code

    def _keep_log(self) -> Path:
        """A copy of the log that outlives the server's private files."""
        with tempfile.NamedTemporaryFile("w", prefix="nertron-tritonserver-", suffix=".log", delete=False) as kept:
            kept.write(self.log())
        return Path(kept.name)

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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM back, then re-raises them: a KeyboardInterrupt raised inside ``Popen``
    would lose the handle of a server that has already started."""
    signals = (signal.SIGINT, signal.SIGTERM)
    handlers = [signal.getsignal(s) for s in signals]
    if threading.current_thread() is not threading.main_thread() or None in handlers:
        yield
        return
    received: list[int] = []
    for s in signals:
        signal.signal(s, lambda signum, _: received.append(signum))
    try:
        yield
    finally:
        for s, handler in zip(signals, handlers, strict=True):
            signal.signal(s, handler)
        for signum in received:
            signal.raise_signal(signum)


def _group_members(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` (none where there is no /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(stat.parent.name))
    return members
