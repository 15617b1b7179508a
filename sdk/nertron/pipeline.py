"""The public entry point: ``NER``, raw text or pre-split words in, entities or tags out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ._native import Aggregation, PostProcessor
from .bundle import Bundle
from .entity import Entity
from .onnx_backend import OnnxRuntimeBackend
from .tagging import Backend, TaggedDocuments, Tagger
from .text import SegmentedText
from .windows import SubwordEncoder, load_tokenizer

AGGREGATIONS = ("first", "average", "max")
RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("int8", "fp32", "bf16")


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
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "bf16" and runtime == "onnxruntime":
            raise ValueError("precision 'bf16' runs on OpenVINO; pass runtime='openvino' or leave runtime unset")
        if precision == "bf16":
            runtime = "openvino"
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.batch_size = check_batch_size(batch_size)
        self.bundle = Bundle.load(resolve_model(model, precision))
        self.aggregation = aggregation
        self.postprocessor = PostProcessor(self.bundle.labels, Aggregation[aggregation.upper()])
        length = max_length or self.bundle.max_length
        if length > self.bundle.max_length:
            raise ValueError(f"max_length {length} exceeds the model's {self.bundle.max_length}")
        special = self.bundle.special_tokens
        self.encoder = SubwordEncoder(
            load_tokenizer(self.bundle.tokenizer_path),
            bos=special.bos,
            eos=special.eos,
            pad=special.pad,
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
        self.tagger = Tagger(
            self.encoder,
            self.backend,
            self.postprocessor,
            concurrent_batches=getattr(self.backend, "concurrent_batches", 1),
        )

    @property
    def labels(self) -> list[str]:
        """The model's tag set, e.g. ``["O", "B-PER", ...]``."""
        return list(self.postprocessor.labels)

    def __call__(self, text: str) -> list[Entity]:
        """Entities in one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.batch([text])[0]

    def batch(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> list[list[Entity]]:
        """Entities for each text, in input order. Raises ``TypeError`` naming a non-str item."""
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"texts must be a sequence of str, got a single {type(texts).__name__}; use ner(text)")
        texts = list(texts)
        for index, text in enumerate(texts):
            _check_str(text, index)
        return list(self.pipe(texts, batch_size=batch_size, progress=progress))

    def pipe(
        self, texts: Iterable[str], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[list[Entity]]:
        """Streams the entities of each text, in input order; holds only a few batches of windows."""
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"texts must be an iterable of str, got a single {type(texts).__name__}; use ner(text)")
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        # a bar only when asked: building one costs ~40 us per call
        with tqdm(desc="ner", unit=" words", unit_scale=True) if progress else nullcontext() as bar:
            segmented = (SegmentedText.split(_check_str(text, index)) for index, text in enumerate(texts))
            for tagged in self.tagger.tag(segmented, size, None if bar is None else bar.update):
                yield from tagged.entities(self.postprocessor)

    def stream(
        self,
        documents: Iterable[SegmentedText],
        *,
        batch_size: int | None = None,
        on_words: Callable[[int], object] | None = None,
    ) -> Iterator[TaggedDocuments]:
        """Word predictions for segmented documents, in input order, in groups as they finish;
        ``on_words(n)`` after each model batch with the words it finished (for progress)."""
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        return self.tagger.tag(documents, size, on_words)

    def tag(self, docs: Sequence[Sequence[str]], *, batch_size: int | None = None) -> list[list[str]]:
        """Word-level tags (the model's scheme) for pre-split documents, e.g. for evaluation."""
        if isinstance(docs, (str, bytes)):
            raise TypeError(f"docs must be a sequence of word lists, got a single {type(docs).__name__}")
        for index, words in enumerate(docs):
            if isinstance(words, str) or not isinstance(words, Sequence):
                raise TypeError(f"docs[{index}] must be a list of str, got {type(words).__name__}")
            for position, word in enumerate(words):
                if not isinstance(word, str):
                    raise TypeError(f"docs[{index}][{position}] must be str, got {type(word).__name__}")
        documents = (SegmentedText.join([words]) for words in docs)
        return [
            tags for tagged in self.stream(documents, batch_size=batch_size) for tags in tagged.tags(self.postprocessor)
        ]


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is an int >= 1; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__} {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _check_str(text: object, index: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
    return text
