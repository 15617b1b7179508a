"""Type stub of the compiled module built from csrc/ (see csrc/postprocess.hpp for the semantics)."""

import numpy as np
import numpy.typing as npt

def align_words(
    logits: npt.NDArray[np.float32],
    word_ids: npt.NDArray[np.integer],
    num_words: npt.NDArray[np.integer],
    aggregation: str = "first",
    with_probs: bool = False,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """Subword logits [batch, seq, labels] -> flat per-word (labels, scores, probs or None)."""

def merge_windows(
    window_doc: npt.NDArray[np.integer],
    word_start: npt.NDArray[np.integer],
    window_words: npt.NDArray[np.integer],
    labels: npt.NDArray[np.int32],
    scores: npt.NDArray[np.float32],
    doc_words: npt.NDArray[np.integer],
    probs: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """Windows' flat word predictions -> documents' flat word predictions (most-context rule)."""

def decode_spans(
    labels: npt.NDArray[np.integer],
    scores: npt.NDArray[np.float32],
    row_words: npt.NDArray[np.integer],
    label_prefix: npt.NDArray[np.integer],
    label_type: npt.NDArray[np.integer],
    word_start_char: npt.NDArray[np.integer] | None = None,
    word_end_char: npt.NDArray[np.integer] | None = None,
) -> dict[str, npt.NDArray[np.generic]]:
    """Per-word labels -> spans: row, first_word, end_word, type, score (+ start_char, end_char)."""
