"""The parity checks of an export: sample inputs, the logits of an ONNX model on them, and their largest
difference from PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import PreTrainedTokenizerFast

SAMPLE_TEXTS = (
    "Angela Merkel met Emmanuel Macron in Paris.",
    "EU rejects German call to boycott British lamb .",
    "Der Bundestag in Berlin stimmte am Dienstag zu.",
    "El presidente de México visitó Madrid y Barcelona la semana pasada con su ministro.",
    "東京で会議が開かれた。",
    "x",
)


def sample_inputs(tokenizer: PreTrainedTokenizerFast, max_length: int) -> dict[str, np.ndarray]:
    """``SAMPLE_TEXTS``, tokenised and padded into one batch."""
    encoded = tokenizer(list(SAMPLE_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
    }


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The logits of the ONNX model at ``path`` on ``inputs`` (onnxruntime, CPU)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(["logits"], {k: v for k, v in inputs.items() if k in names})[0], np.float32)


def max_diff(logits: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """The largest |difference| of two logits arrays over the unmasked positions."""
    return float(np.abs(logits - reference)[mask.astype(bool)].max())
