"""The engines of a Python worker: one ``NER`` per configuration, built at first use and kept for the
life of the process (Spark reuses Python workers across tasks)."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections import Counter
from typing import Any

from nertron.backends import OnnxRuntime, Triton
from nertron.backends.specs import MAX_THREADS
from nertron.integrations.spark.shipping import BundleNotShipped, ShippedBundle
from nertron.ner import NER, NERConfig

_engines: dict[tuple[NERConfig, ShippedBundle | None], NER] = {}
_builds: Counter[tuple[NERConfig, ShippedBundle | None]] = Counter()  # stays 1 per key while engines are reused
_engines_lock = threading.Lock()


def executor_config(config: NERConfig) -> NERConfig:
    """``config`` as an executor runs it: onnxruntime threads not given default to ``spark.task.cpus``, so
    that concurrent tasks on one executor do not oversubscribe its cores."""
    cpus = _task_cpus()
    spec = config.backend_spec

    def with_task_threads(local: Any) -> Any:
        if isinstance(local, OnnxRuntime) and local.threads is None and cpus is not None:
            return dataclasses.replace(local, threads=min(cpus, MAX_THREADS))
        return local

    if isinstance(spec, Triton):
        spec = dataclasses.replace(spec, fallback=with_task_threads(spec.fallback))
    return dataclasses.replace(config, backend=with_task_threads(spec))


def engine(config: NERConfig, shipped: ShippedBundle | None = None) -> NER:
    """This process's engine for ``config`` (its model the ``shipped`` bundle, when given), built at its
    first use and kept for the life of the process."""
    with _engines_lock:
        key = (config, shipped)
        if key not in _engines:
            local = config if shipped is None else dataclasses.replace(config, model=str(shipped.local_path()))
            try:
                _engines[key] = executor_config(local).build()
            except FileNotFoundError as error:  # a model path the driver could not ship and this host lacks
                raise BundleNotShipped(f"{error} on executor {socket.gethostname()}") from None
            _builds[key] += 1
        return _engines[key]


def engine_builds(config: NERConfig, shipped: ShippedBundle | None = None) -> int:
    """How many engines this process has built for ``config`` and ``shipped`` (counted as they happen)."""
    with _engines_lock:
        return _builds[(config, shipped)]


def _task_cpus() -> int | None:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else None
