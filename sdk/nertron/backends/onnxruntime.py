"""In-process inference with onnxruntime."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from nertron.backends.base import Closable
from nertron.cpus import available_cpus
from nertron.errors import InvalidValue

# onnxruntime's fused SkipLayerNormalization CPU kernel made the int8 model ~20% slower than the Add +
# LayerNormalization it replaces (measured with onnxruntime 1.32, 1 and 2 threads; fp32 unchanged).
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def unloadable(model_path: str | Path, runtime: str, error: Exception) -> InvalidValue:
    """The error for a model file that ``runtime`` cannot load: names the file and what to do."""
    reason = " ".join(str(error).split())
    return InvalidValue(
        f"{model_path}: {runtime} cannot load it ({reason[:300]}); the file is damaged or not an ONNX model: "
        "re-export the bundle (nertron export) or restore the file"
    )


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeBackend(Closable):
    """Runs an exported token-classification model: (input_ids, attention_mask) -> logits.

    ``threads`` is the number of CPU threads in all (default: every CPU). On CPU, ``map`` runs
    ``concurrent_batches`` batches at once (default 2 where there are 2 threads or more), each on
    ``threads // concurrent_batches`` threads: a small encoder keeps two single-threaded runs busier than one
    run on two threads, and the caller's Python work overlaps inference. A lone ``__call__`` then uses
    only its share of the threads; ``concurrent_batches=1`` gives every call all of them.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        concurrent_batches: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise InvalidValue(f"threads must be >= 1, got {threads}")
        if concurrent_batches is not None and concurrent_batches < 1:
            raise InvalidValue(f"concurrent_batches must be >= 1, got {concurrent_batches}")
        providers = list(providers or default_providers())
        names = [p if isinstance(p, str) else p[0] for p in providers]
        on_cpu = names == ["CPUExecutionProvider"]
        total = threads or available_cpus()
        if concurrent_batches is None:
            concurrent_batches = min(2, total) if on_cpu else 1
        self.concurrency = concurrent_batches
        self.model_path = Path(model_path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's own default counts the machine's cores, not those this process may use
        if threads is not None or concurrent_batches > 1 or total < (os.cpu_count() or 1):
            options.intra_op_num_threads = max(1, total // concurrent_batches)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(model_path),
                sess_options=options,
                providers=providers,
                disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS) if on_cpu else None,
            )
        except Exception as error:  # onnxruntime's InvalidProtobuf, InvalidGraph, Fail, ... share no base class
            raise unloadable(model_path, "onnxruntime", error) from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # the pool is built at first need, and never after close()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` as float32."""
        session = self.session  # close() may drop it meanwhile; a run in progress keeps it alive
        if session is None:
            self.check_open()
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        logits = session.run(["logits"], {k: v for k, v in feed.items() if k in self.input_names})[0]
        return np.ascontiguousarray(logits, dtype=np.float32)

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            self.check_open()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="nertron-ort")
            return self._pool

    def _submit(
        self, pool: ThreadPoolExecutor, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> Future[np.ndarray]:
        try:
            return pool.submit(self, input_ids, attention_mask)
        except RuntimeError:  # the pool was shut down by close()
            self.check_open()
            raise

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order; up to ``concurrency`` computed at once."""
        self.check_open()
        if self.concurrency == 1:
            for input_ids, attention_mask in batches:
                yield self(input_ids, attention_mask)
            return
        pool = self._workers()
        pending: deque[Future[np.ndarray]] = deque()
        for input_ids, attention_mask in batches:
            pending.append(self._submit(pool, input_ids, attention_mask))
            if len(pending) > self.concurrency:  # one queued behind the running ones keeps them busy
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        """Stops the worker threads and releases the session (a run in progress finishes first)."""
        with self._pool_lock:
            super().close()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.session = None
