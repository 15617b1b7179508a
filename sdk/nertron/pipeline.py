"""The public entry point: ``NER``, raw text or pre-split words in, entities or tags out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from . import _native
from .bundle import Bundle
from .entity import Entity
from .onnx_backend import OnnxRuntimeBackend
from .tags import LabelSet
from .text import split_words
from .windows import SubwordEncoder, Window

AGGREGATIONS = ("first", "average", "max")
RUNTIMES = ("onnxruntime", "openvino")


class Backend(Protocol):
    """What runs the model: (input_ids, attention_mask) int64 [batch, seq] -> logits float32."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Logits of each batch, in order (a remote backend may keep several in flight)."""
        ...


@dataclass
class WordPredictions:
    """Per-word predictions for a batch of documents, flat (CSR) over documents."""

    labels: np.ndarray  # int32 label id per word, -1 for a word that produced no subword
    scores: np.ndarray  # float32 probability of that label
    doc_words: np.ndarray  # int64 number of words per document


def resolve_model(model: str | Path | None, precision: str | None = None) -> Path:
    """The bundle to load: ``model``, else ``$NERTRON_MODEL``, else the embedded default model
    (assembled into the cache at first use; ``precision`` bf16 runs its fp32 bundle)."""
    if model is None and os.environ.get("NERTRON_MODEL"):
        model = os.environ["NERTRON_MODEL"]
    if model is not None:
        if precision not in (None, "bf16"):
            raise ValueError("precision picks a variant of the embedded model; a bundle has its own (or bf16)")
        return Path(model)
    from .default_model import default_bundle

    return default_bundle("fp32" if precision == "bf16" else precision)


class NER:
    """Named-entity recogniser over a bundle (default: the embedded model).

    The model runs in-process with onnxruntime, or on a Triton server when ``url`` is given
    (``"host:port"`` of its gRPC endpoint); then batches that the server cannot answer are computed
    locally unless ``fallback=False``. ``triton_options`` go to ``TritonBackend`` (timeout, retries,
    max_in_flight, ssl, headers, ...).

    >>> ner = NER()
    >>> ner("Angela Merkel met Emmanuel Macron in Paris.")  # doctest: +SKIP
    [Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.99...), ...]
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        aggregation: str = "first",
        batch_size: int = 16,
        max_length: int | None = None,
        stride: int | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        backend: Backend | None = None,
        precision: str | None = None,
        url: str | None = None,
        fallback: bool = True,
        triton_options: dict[str, Any] | None = None,
        runtime: str | None = None,
    ) -> None:
        if runtime is not None and runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if precision == "bf16" and runtime == "onnxruntime":
            raise ValueError("precision 'bf16' runs on OpenVINO; pass runtime='openvino' or leave runtime unset")
        if precision == "bf16":
            runtime = "openvino"
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle = Bundle.load(resolve_model(model, precision))
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.label_set = LabelSet.from_labels(self.bundle.labels)
        length = max_length or self.bundle.max_length
        if length > self.bundle.max_length:
            raise ValueError(f"max_length {length} exceeds the model's {self.bundle.max_length}")
        special = self.bundle.special_tokens
        self.encoder = SubwordEncoder(
            self.bundle.tokenizer_path,
            bos=special["bos"],
            eos=special["eos"],
            pad=special["pad"],
            max_length=length,
            stride=(length - 2) // 4 if stride is None else stride,
        )
        if backend is not None and url is not None:
            raise ValueError("pass either backend or url, not both")
        if url is not None:
            from .triton_backend import TritonBackend

            backend = TritonBackend.for_bundle(
                self.bundle, url, fallback=fallback, threads=threads, providers=providers, **(triton_options or {})
            )
        if backend is None and runtime == "openvino":
            from .openvino_backend import OpenVINOBackend

            if providers is not None:
                raise ValueError("providers are onnxruntime's; runtime='openvino' takes none")
            if self.bundle.precision != "fp32":
                raise ValueError(f"runtime='openvino' runs fp32 bundles, this one is {self.bundle.precision}")
            inference = "bf16" if precision == "bf16" else "f32"
            backend = OpenVINOBackend(self.bundle.model_path, threads=threads, inference_precision=inference)
            precision = "bf16" if precision == "bf16" else "fp32"
        self.backend: Backend = backend or OnnxRuntimeBackend(
            self.bundle.model_path, threads=threads, providers=providers
        )
        self.precision: str = precision or self.bundle.precision
        """What the model computes in: ``"int8"``, ``"fp32"``, ``"bf16"`` (OpenVINO), ``"fp16"``."""
        self.runtime: str = getattr(self.backend, "runtime", type(self.backend).__name__)
        """What runs the model: ``"onnxruntime"``, ``"openvino"``, ``"triton"`` or a custom backend's class name."""

    @property
    def labels(self) -> list[str]:
        """The model's tag set, e.g. ``["O", "B-PER", ...]``."""
        return list(self.label_set.labels)

    def __call__(self, text: str) -> list[Entity]:
        """Entities in one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.batch([text])[0]

    def batch(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> list[list[Entity]]:
        """Entities for each text, in input order. Raises ``TypeError`` naming a non-str item."""
        texts = list(texts)
        for index, text in enumerate(texts):
            _check_str(text, index)
        return list(self.pipe(texts, batch_size=batch_size, progress=progress))

    def pipe(
        self,
        texts: Iterable[str],
        *,
        batch_size: int | None = None,
        chunk_size: int = 2048,
        progress: bool = False,
    ) -> Iterator[list[Entity]]:
        """Streams entities for an iterable of texts, ``chunk_size`` texts in memory at a time."""
        iterator = iter(texts)
        offset = 0
        # a bar only when asked: building one costs ~40 us per call
        with tqdm(desc="ner", unit="doc") if progress else nullcontext() as bar:
            while chunk := list(islice(iterator, chunk_size)):
                for i, text in enumerate(chunk):
                    _check_str(text, offset + i)
                yield from self._entities(chunk, batch_size or self.batch_size)
                offset += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))

    def tag(self, docs: Sequence[Sequence[str]], *, batch_size: int | None = None) -> list[list[str]]:
        """Word-level tags (the model's scheme) for pre-split documents, e.g. for evaluation."""
        for index, words in enumerate(docs):
            if isinstance(words, str) or not isinstance(words, Sequence):
                raise TypeError(f"docs[{index}] must be a list of str, got {type(words).__name__}")
            for position, word in enumerate(words):
                if not isinstance(word, str):
                    raise TypeError(f"docs[{index}][{position}] must be str, got {type(word).__name__}")
        predictions = self.predict_words(docs, batch_size=batch_size)
        names = np.array([*self.label_set.labels, "O"])  # label -1 (no subword) reads as O
        tags = names[predictions.labels].tolist()
        bounds = np.concatenate(([0], np.cumsum(predictions.doc_words)))
        return [tags[bounds[d] : bounds[d + 1]] for d in range(len(docs))]

    def predict_words(self, docs: Sequence[Sequence[str]], *, batch_size: int | None = None) -> WordPredictions:
        """Runs the model over pre-split documents; one label and score per word."""
        size = batch_size or self.batch_size
        doc_words = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        windows = [w for w in self.encoder.windows(docs) if w.num_words > 0]
        if not windows:
            empty = np.zeros(0, dtype=np.int32)
            return WordPredictions(empty, empty.astype(np.float32), doc_words)
        labels: list[np.ndarray] = [np.empty(0, np.int32)] * len(windows)
        scores: list[np.ndarray] = [np.empty(0, np.float32)] * len(windows)
        # Few windows (one long document) are spread over the batches the backend computes at once.
        parallel = getattr(self.backend, "concurrent_batches", 1)
        size = max(1, min(size, -(-len(windows) // parallel)))
        # Length-sorted batches keep padding low; results are put back in window order.
        order = sorted(range(len(windows)), key=lambda i: windows[i].input_ids.size)
        row_groups = [order[b : b + size] for b in range(0, len(order), size)]
        batches = [self.encoder.pad([windows[i] for i in rows]) for rows in row_groups]
        if len(batches) == 1:  # a direct call: for Triton one blocking round trip instead of a callback
            all_logits: Iterable[np.ndarray] = [self.backend(batches[0].input_ids, batches[0].attention_mask)]
        else:
            all_logits = self.backend.map((b.input_ids, b.attention_mask) for b in batches)
        for rows, batch, logits in zip(row_groups, batches, all_logits, strict=True):
            word_labels, word_scores, _ = _native.align_words(logits, batch.word_ids, batch.num_words, self.aggregation)
            split = np.cumsum(batch.num_words)[:-1]
            for i, row_labels, row_scores in zip(
                rows, np.split(word_labels, split), np.split(word_scores, split), strict=True
            ):
                labels[i], scores[i] = row_labels, row_scores
        merged_labels, merged_scores, _ = _native.merge_windows(
            *_window_layout(windows), np.concatenate(labels), np.concatenate(scores), doc_words
        )
        return WordPredictions(merged_labels, merged_scores, doc_words)

    def _entities(self, texts: Sequence[str], batch_size: int) -> list[list[Entity]]:
        segmented = [split_words(text) for text in texts]
        predictions = self.predict_words([s.words for s in segmented], batch_size=batch_size)
        spans = self.label_set.decode_spans(
            predictions.labels,
            predictions.scores,
            predictions.doc_words,
            np.fromiter((o for s in segmented for o in s.starts), dtype=np.int64),
            np.fromiter((o for s in segmented for o in s.ends), dtype=np.int64),
        )
        entities: list[list[Entity]] = [[] for _ in texts]
        types = self.label_set.types
        for row, type_id, start, end, score in zip(
            spans["row"].tolist(),
            spans["type"].tolist(),
            spans["start_char"].tolist(),
            spans["end_char"].tolist(),
            spans["score"].tolist(),
            strict=True,
        ):
            entities[row].append(Entity(texts[row][start:end], types[type_id], start, end, score))
        return entities


def _window_layout(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = len(windows)
    return (
        np.fromiter((w.doc for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.word_start for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.num_words for w in windows), dtype=np.int64, count=count),
    )


def _check_str(text: object, index: int) -> None:
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
