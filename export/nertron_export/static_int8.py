"""Static int8 for any fp32 model: the one path of the embedded default model and of ``nertron export
--quantize int8``.

1. ``read_calibration_text``: text like what the model will see (plain text, JSONL or CoNLL), cut into words
   as the SDK cuts it; sentences alone and documents whole, as users tag them.
2. ``activation_ranges``: the fp32 model over that text's windows, batched as the SDK batches them; the range
   of each activation that feeds a weight MatMul (``nertron.model.quantization.calibrate``).
3. ``quantize_static`` with those fixed ranges (a text's result no longer depends on its batch-mates) and, for
   exports, ``quantize_embedding_rows`` (the word-embedding table as int8 rows).

The ranges are statistics (two numbers per tensor); no text is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nertron import NER
from nertron.errors import InvalidValue, MissingFile
from nertron.io.corpus import ErrorPolicy, detect_format, read_corpus
from nertron.model.quantization import calibrate

PERCENTILE = 99.999
SENTENCES = 1200
DOCUMENTS = 150
BATCH = 16


@dataclass(frozen=True)
class CalibrationText:
    """The texts to calibrate on (each a list of words) and a description of where they came from."""

    texts: list[list[str]]
    description: str


def read_calibration_text(
    path: Path, *, sentences: int = SENTENCES, documents: int = DOCUMENTS, seed: int = 0
) -> CalibrationText:
    """Reads ``path``: CoNLL when its first lines are a token and columns ending in an IOB tag (or its suffix is
    ``.conll``, ``.iob``, ...), JSONL (a ``text`` field per line) for ``.jsonl``, else a text per line. Records
    are taken in a random order (``seed``). CoNLL gives ``sentences`` sentences alone and ``documents`` documents
    whole; other formats give their first ``sentences + documents`` texts. A malformed line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"calibration data {path} is not a file")
    text_format = "conll" if _looks_like_conll(path) else detect_format(path)
    with path.open("rb") as stream:
        records = [r for r in read_corpus(stream, text_format, source=str(path), errors=ErrorPolicy("fail"))]
    order = np.random.default_rng(seed).permutation(len(records))
    shuffled = [records[i] for i in order]
    if text_format == "conll":
        alone = [s for r in shuffled for s in r.sentences or []][:sentences]
        whole = [[w for s in r.sentences or [] for w in s] for r in shuffled[:documents]]
        texts = alone + whole
        what = f"{len(alone)} sentences alone and {len(whole)} documents whole"
    else:
        texts = [words for r in shuffled if (words := list(r.segmented()))][: sentences + documents]
        what = f"{len(texts)} texts"
    if not texts:
        raise InvalidValue(f"calibration data {path}: no text to calibrate on")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return CalibrationText(
        texts, f"{path.name} ({text_format}, sha256 {digest}...): {what}, in a random order (seed {seed})"
    )


def read_calibration_texts(
    paths: Sequence[Path], *, sentences: int = SENTENCES, documents: int = DOCUMENTS, seed: int = 0
) -> CalibrationText:
    """Each of ``paths`` read as ``read_calibration_text`` reads it (each file its own sample), their texts one
    after another; the description names each file with its folder (``es/unlabeled.txt``)."""
    if not paths:
        raise InvalidValue("calibration data: give at least one file")
    parts = [read_calibration_text(p, sentences=sentences, documents=documents, seed=seed) for p in paths]
    described = (f"{Path(p).parent.name}/{part.description}" for p, part in zip(paths, parts, strict=True))
    return CalibrationText([t for part in parts for t in part.texts], "; ".join(described))


_TAG = re.compile(rb"^(O|[BIES]-\S+)$")


def _looks_like_conll(path: Path, lines: int = 20) -> bool:
    """CoNLL data often has a ``.txt`` suffix (CoNLL-2003's files do): it is CoNLL if its first non-blank lines
    are ``-DOCSTART-`` or a token and more columns, the last an IOB tag."""
    seen = 0
    with path.open("rb") as stream:
        for raw in stream:
            columns = raw.lstrip(b"\xef\xbb\xbf").split()
            if not columns:
                continue
            if columns[0] != b"-DOCSTART-" and (len(columns) < 2 or not _TAG.match(columns[-1])):
                return False
            seen += 1
            if seen == lines:
                break
    return seen > 0


def calibration_feeds(bundle: Path, texts: list[list[str]]) -> tuple[list[dict[str, np.ndarray]], int]:
    """The windows of ``texts`` as the SDK cuts them for ``bundle``, in length-sorted batches of 16; returns the
    feeds and the number of windows."""
    with NER(bundle) as ner:
        batches = ner.pipeline.batches(texts, BATCH)
    windows = sum(len(b.windows) for b in batches)
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches], windows


def activation_ranges(model: Any, bundle: Path, texts: list[list[str]]) -> tuple[dict[str, list[float]], int]:
    """``[low, high]`` of each activation of ``model`` (an fp32 ``onnx.ModelProto``, the graph of ``bundle``) that
    feeds a weight MatMul, over the windows of ``texts``, rounded as stored; and the number of windows."""
    feeds, windows = calibration_feeds(bundle, texts)
    ranges = calibrate(model, feeds, percentile=PERCENTILE)
    return {name: [round(low, 6), round(high, 6)] for name, (low, high) in ranges.items()}, windows


def method() -> str:
    """How the ranges are taken, in words (stored beside them)."""
    return f"fp32 activations, the {PERCENTILE} and {100 - PERCENTILE:.3f} percentiles, widened to 0"
