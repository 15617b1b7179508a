"""The ``Backend`` protocol that every backend follows, and the lifetime they share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """A built backend. ``concurrency``: batches it computes at once (the tagger spreads a few windows over
    them); ``runtime``: ``"onnxruntime"``, ``"openvino"`` or ``"triton"``."""

    runtime: str
    concurrency: int

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` of one batch."""
        ...

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order (several may be computed or in flight at once)."""
        ...

    def close(self) -> None:
        """Releases what the backend holds (sessions, threads, channels); it cannot be used afterwards."""
        ...


_Self = TypeVar("_Self", bound="Closable")


class Closable:
    """``close()`` once, then every use raises; a context manager that closes on exit."""

    _closed = False

    def close(self) -> None:
        self._closed = True

    def check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
