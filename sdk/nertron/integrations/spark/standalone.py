"""A Spark standalone cluster on this machine: one master and N workers as separate processes, loopback only.

For trying a job in cluster mode (executors in their own processes, files shipped to them, workers that can
die) without a cluster, and for nertron's own tests and benchmarks::

    with StandaloneCluster(workers=2) as cluster, cluster.session() as spark:
        annotate(spark.read.parquet(...), "text").write.parquet(...)

Started with pyspark's own launcher (``bin/spark-class``) on free ports; every folder (logs, work and
scratch dirs, the JVMs' and Python's temporary files, each worker's model cache) lives in one temporary
directory. ``stop()`` kills every process the cluster started, executors and Python workers included,
waits until they are gone and removes the directory; Linux kills the master and workers if the process
that started them dies first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nertron.errors import NertronError
from nertron.serving.processes import (
    all_pids,
    command_line,
    descendants,
    die_with_parent,
    parent_pid,
    running,
    start_time,
    working_dir,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"


class ClusterError(NertronError, RuntimeError):
    """The standalone cluster could not start (or a worker did not register); the message quotes its log."""


class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, on loopback; a context manager.

    ``worker_env`` is added to every worker's environment (executors and their Python workers inherit it);
    each worker also gets its own ``NERTRON_CACHE`` (``worker_cache(i)``), as separate machines would.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        cores: int = 1,
        memory: str = "2g",
        worker_env: dict[str, str] | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.worker_env = dict(worker_env or {})
        self.startup_timeout = startup_timeout
        self.url = ""
        self._root: Path | None = None
        self._last_root: Path | None = None  # after stop(), for leftover_processes()
        self._ui_port = 0
        self._master: subprocess.Popen[bytes] | None = None
        self._workers: dict[int, subprocess.Popen[bytes]] = {}  # the running ones, by index
        self._launched: list[subprocess.Popen[bytes]] = []  # every process started, killed ones too
        # (pid, start time) of the processes of killed workers: no longer descendants of a launched process
        self._orphans: list[tuple[int, int]] = []

    def __enter__(self) -> StandaloneCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def root(self) -> Path:
        """The cluster's temporary directory (exists from ``start()`` to ``stop()``)."""
        if self._root is None:
            raise ClusterError("the cluster has not been started")
        return self._root

    def start(self) -> None:
        """Starts the master and the workers and waits until every worker has registered."""
        if self._root is not None:
            raise ClusterError(f"the cluster is already running at {self.url}")
        self._root = Path(tempfile.mkdtemp(prefix="nertron-spark-cluster-"))
        (self.root / "tmp").mkdir()
        try:
            port, self._ui_port = _free_ports(2)
            self.url = f"spark://{LOOPBACK}:{port}"
            self._master = self._launch(
                "master",
                [
                    *f"org.apache.spark.deploy.master.Master --host {LOOPBACK} --port {port}".split(),
                    *["--webui-port", str(self._ui_port)],
                ],
                {"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"},
            )
            for index in range(self.workers):
                self.start_worker(index, wait=False)
            self.wait_for_workers(self.workers)
        except BaseException:
            self.stop()
            raise

    def start_worker(self, index: int, *, wait: bool = True) -> None:
        """Starts worker ``index`` (again, after ``kill_worker``); waits for it to register unless ``wait=False``."""
        expected = len(self._workers) + 1
        work = self.root / f"worker-{index}"
        for sub in ("work", "local", "cache"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        env = {
            "SPARK_LOCAL_DIRS": str(work / "local"),
            "NERTRON_CACHE": str(self.worker_cache(index)),
            **self.worker_env,
        }
        self._workers[index] = self._launch(
            f"worker-{index}",
            [
                *f"org.apache.spark.deploy.worker.Worker {self.url} --host {LOOPBACK} --cores {self.cores}".split(),
                *f"--memory {self.memory} --port 0 --webui-port 0".split(),
                *["--work-dir", str(work / "work")],
            ],
            env,
        )
        if wait:
            self.wait_for_workers(expected)

    def worker_cache(self, index: int) -> Path:
        """Worker ``index``'s model cache (its ``NERTRON_CACHE``)."""
        return self.root / f"worker-{index}" / "cache"

    def worker_pid(self, index: int) -> int:
        """The process id of worker ``index``'s JVM (``spark-class`` may still be its parent)."""
        launcher = self._workers[index].pid
        jvms = [pid for pid in descendants([launcher]) if "deploy.worker.Worker" in command_line(pid)]
        return jvms[0] if jvms else launcher

    def worker_processes(self, index: int) -> list[int]:
        """Every process of worker ``index``: its JVM and their descendants (executors, Python daemons and
        workers)."""
        return descendants([self._workers[index].pid])

    def python_workers(self, index: int) -> list[int]:
        """Worker ``index``'s Python worker processes (forked by a ``pyspark.daemon``), not the daemons."""
        forked = {pid for pid in self.worker_processes(index) if "pyspark.daemon" in command_line(pid)}
        daemons = {pid for pid in forked if parent_pid(pid) not in forked}
        return sorted(forked - daemons)

    def kill_worker(self, index: int) -> None:
        """SIGKILLs worker ``index``'s JVM only, as a machine failure would (its executors notice that their
        worker is gone and exit), and waits until the master has dropped it."""
        jvm = self.worker_pid(index)
        # Its executors outlive it a while (and their Python workers): stop() must find them without it.
        self._orphans += [(pid, start_time(pid)) for pid in self.worker_processes(index) if pid != jvm]
        process = self._workers.pop(index)
        os.kill(jvm, signal.SIGKILL)
        process.wait(timeout=30)
        self.wait_for_workers(len(self._workers))

    def alive_workers(self) -> int:
        """How many workers the master counts alive (from its status page)."""
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self._ui_port}/json/", timeout=5) as reply:
            return int(json.load(reply)["aliveworkers"])

    def wait_for_workers(self, count: int, timeout: float | None = None) -> None:
        """Waits until the master counts exactly ``count`` alive workers; raises at once if the master or a
        running worker exits."""
        limit = timeout or self.startup_timeout
        deadline = time.monotonic() + limit
        seen = -1
        while time.monotonic() < deadline:
            for name, process in [("master", self._master), *((f"worker-{i}", p) for i, p in self._workers.items())]:
                if process is not None and process.poll() is not None:
                    raise ClusterError(f"the Spark {name} exited ({process.returncode}): {self._tail(name)}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                seen = self.alive_workers()
                if seen == count:
                    return
            time.sleep(0.2)
        logs = " | ".join(self._tail(f"worker-{i}") for i in self._workers)
        raise ClusterError(f"{seen} of {count} Spark workers alive after {limit:.0f} s: {logs}")

    @contextlib.contextmanager
    def session(self, app_name: str = "nertron", **conf: str) -> Iterator[SparkSession]:
        """A SparkSession on this cluster (driver on loopback, its scratch space in the cluster's folder),
        stopped on exit. ``conf`` adds or overrides Spark settings (pass a dict with ``**``)."""
        from pyspark.sql import SparkSession

        driver = self.root / "driver"
        driver.mkdir(exist_ok=True)
        settings = {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.local.dir": str(driver),
            "spark.executor.extraJavaOptions": f"-Djava.io.tmpdir={self.root / 'tmp'}",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.executor.memory": "1g",
            **conf,
        }
        builder = SparkSession.builder.master(self.url).appName(app_name)
        for key, value in settings.items():
            builder = builder.config(key, value)
        # pyspark reads the executors' interpreter from the driver's environment when the context starts.
        added = "PYSPARK_PYTHON" not in os.environ
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        try:
            spark = builder.getOrCreate()
        finally:
            if added:
                os.environ.pop("PYSPARK_PYTHON", None)
        if spark.sparkContext.master != self.url:
            raise ClusterError(f"a Spark session on {spark.sparkContext.master} is active; stop it first")
        spark.sparkContext.setLogLevel("ERROR")
        try:
            yield spark
        finally:
            spark.stop()

    def _own_processes(self) -> list[int]:
        """The processes the cluster started that run still, and their descendants (executors, Python daemons
        and workers: a daemon leaves its executor's process group, not its parent), killed workers' too."""
        roots = [p.pid for p in self._launched if p.poll() is None]
        roots += [pid for pid, started in self._orphans if running(pid, started)]
        return descendants(roots) if roots else []

    def leftover_processes(self) -> list[int]:
        """Processes of this cluster still alive, for tests: those it started and their descendants, and any
        other whose working directory is in its folder (``stop()`` leaves those alone: a shell opened there is
        not the cluster's)."""
        found = set(self._own_processes())
        folder = self._root or self._last_root
        if folder is not None:
            found |= {pid for pid in all_pids() if working_dir(pid).startswith(str(folder))}
        return sorted(found)

    def stop(self) -> None:
        """Kills every process the cluster started and their descendants (executors and Python workers
        too), and no other; waits until they are gone, and removes its folder."""
        deadline = time.monotonic() + 30
        killed = _kill_trees(self._own_processes, deadline)
        for process in self._launched:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        while any(running(pid, started) for pid, started in killed.items()) and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL takes effect when each is next scheduled
        self._orphans.clear()
        self._workers.clear()
        self._master = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._last_root, self._root = self._root, None

    def _tail(self, name: str, lines: int = 3) -> str:
        log = self.root / f"{name}.log"
        try:
            text = log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {log})"
        return " / ".join(text[-lines:]) or f"(empty log {log})"

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        tmp = self.root / "tmp"
        environment = {
            **os.environ,
            "SPARK_HOME": str(_spark_home()),
            "SPARK_LOCAL_IP": LOOPBACK,
            "SPARK_DAEMON_JAVA_OPTS": f"-Djava.io.tmpdir={tmp}",
            "TMPDIR": str(tmp),  # the Python workers' temporary files
            **env,
        }
        with (self.root / f"{name}.log").open("ab") as out:
            popen = subprocess.Popen(
                [str(_spark_home() / "bin" / "spark-class"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self.root,
                preexec_fn=die_with_parent(os.getpid(), process_group=0),
            )
        self._launched.append(popen)
        return popen


def _kill_trees(find: Callable[[], list[int]], deadline: float) -> dict[int, int]:
    """SIGKILLs the processes ``find()`` returns: first SIGSTOPs them, again until ``find()`` names no new
    one, so that none can fork a child meanwhile that would escape. Returns them, with their start times."""
    stopped: dict[int, int] = {}
    while (new := [pid for pid in find() if pid not in stopped]) and time.monotonic() < deadline:
        for pid in new:
            stopped[pid] = start_time(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return stopped


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (held together while the OS picks them)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((LOOPBACK, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
