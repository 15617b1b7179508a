"""Local inference with onnxruntime."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeBackend:
    """Runs an exported token-classification model: (input_ids, attention_mask) -> logits."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=list(providers or default_providers())
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits ``[batch, seq, labels]`` as float32."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        logits = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.input_names})[0]
        return np.ascontiguousarray(logits, dtype=np.float32)

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order."""
        for input_ids, attention_mask in batches:
            yield self(input_ids, attention_mask)
