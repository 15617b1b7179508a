"""The public entry point: ``NER``, raw text or pre-split words in, entities or tags out."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from nertron._native import Aggregation, PostProcessor
from nertron.backends import Backend, BackendSpec, OnnxRuntime, OpenVINO, Triton, create_backend
from nertron.backends.base import Closable
from nertron.backends.failover import ServedRows
from nertron.entity import Entity
from nertron.model.bundle import Bundle
from nertron.subwords import load_tokenizer
from nertron.tagging import TaggedDocuments, Tagger
from nertron.text import SegmentedText
from nertron.windows import SubwordEncoder

if TYPE_CHECKING:
    from nertron.backends.triton_text import ServerSideTexts

AGGREGATIONS = ("first", "average", "max")
PRECISIONS = ("int8", "fp32", "bf16")


@dataclass(frozen=True)
class NERConfig:
    """Everything that makes an ``NER``, hashable and picklable (Spark ships it to its executors, the CLI
    builds one from its options). ``NER(**fields)`` and ``NERConfig(**fields).build()`` are the same."""

    model: str | None = None
    precision: str | None = None
    aggregation: str = "first"
    batch_size: int = 16
    max_length: int | None = None
    stride: int | None = None
    backend: BackendSpec | None = None
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            object.__setattr__(self, "model", os.fspath(self.model))
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        check_batch_size(self.batch_size)
        object.__setattr__(self, "min_score", check_min_score(self.min_score))
        if self.backend is not None and not isinstance(self.backend, (OnnxRuntime, OpenVINO, Triton)):
            raise TypeError(f"backend must be OnnxRuntime(...), OpenVINO(...) or Triton(...), got {self.backend!r}")
        local = self.local_spec
        if self.precision == "bf16" and self.backend is not None and not _runs_bf16(local):
            raise ValueError(
                f"precision='bf16' runs on OpenVINO(precision='bf16'); backend={self.backend!r} contradicts it"
            )
        if isinstance(local, OpenVINO) and self.precision not in (None, local.precision):
            raise ValueError(f"precision={self.precision!r} contradicts backend={self.backend!r}")

    @property
    def backend_spec(self) -> BackendSpec:
        """What runs the model: ``backend``, else OpenVINO for ``precision="bf16"``, else onnxruntime."""
        if self.backend is not None:
            return self.backend
        return OpenVINO(precision="bf16") if self.precision == "bf16" else OnnxRuntime()

    @property
    def local_spec(self) -> OnnxRuntime | OpenVINO | None:
        """What computes in this process: the backend, or a Triton backend's fallback."""
        spec = self.backend_spec
        return spec.fallback if isinstance(spec, Triton) else spec

    @property
    def variant(self) -> str | None:
        """The embedded model's variant to load: OpenVINO runs the fp32 weights."""
        return "fp32" if isinstance(self.local_spec, OpenVINO) or self.precision == "bf16" else self.precision

    def build(self) -> NER:
        return NER(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def resolve_model(model: str | os.PathLike[str] | None, variant: str | None = None) -> Path:
    """``model``, else ``$NERTRON_MODEL``, else the embedded default model's ``variant`` (``"int8"``, the
    default, or ``"fp32"``), assembled into the cache at first use."""
    if model is None and os.environ.get("NERTRON_MODEL"):
        model = os.environ["NERTRON_MODEL"]
    if model is not None:
        return Path(model)
    from nertron.model.default import default_bundle

    return default_bundle(variant)


def _runs_bf16(spec: OnnxRuntime | OpenVINO | None) -> bool:
    return isinstance(spec, OpenVINO) and spec.precision == "bf16"


class NER(Closable):
    """Named-entity recogniser over a bundle (default: the embedded model); ``ner(text)`` gives entities.

    ``backend`` is what runs the model: ``OnnxRuntime(...)`` (default), ``OpenVINO(...)`` or
    ``Triton(url, ...)`` (``nertron.backends``), or a built ``Backend``. ``precision`` picks the embedded
    model's variant (``"int8"``, the default, or ``"fp32"``; ``"bf16"`` runs fp32 weights in bfloat16 on
    OpenVINO). ``aggregation`` makes a word's prediction from its subwords' (``"first"``, ``"average"``,
    ``"max"``); ``max_length`` and ``stride`` set the window and its overlap, in subwords. ``min_score``
    drops entities scored below it; scores are calibrated where the bundle says how (its manifest's
    ``calibration``: the embedded model's is fitted on CoNLL-2003 dev), so a score of 0.9 means about 9 in
    10 such entities are right. Close it (or use it as a context manager) to release the backend.

    With ``Triton(...)`` and a fallback, work the server does not answer (unreachable, overloaded, late) is
    computed locally until it answers again; each switch is logged (logger ``"nertron.triton"``: a warning
    when it degrades, an info line when it returns) and ``served_rows`` counts what each answered. Any
    other error (a malformed reply, a bug) propagates: the fallback never hides it.

    Threads: one ``NER`` may be called from several threads at once (``__call__``, ``batch``, ``pipe``,
    ``tag``, ``stream``); they share its backend. ``close()`` may be called from any thread at any time,
    also more than once; it waits at most for model runs already under way, not for whole calls. Each call
    in progress either completes or raises ``RuntimeError`` ("... is closed"), and every call that starts
    after ``close()`` raises ``RuntimeError``.

    >>> with NER() as ner:
    ...     ner("Angela Merkel met Emmanuel Macron in Paris.")  # doctest: +SKIP
    [Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.98...), ...]
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        precision: str | None = None,
        aggregation: str = "first",
        batch_size: int = 16,
        max_length: int | None = None,
        stride: int | None = None,
        backend: BackendSpec | Backend | None = None,
        min_score: float = 0.0,
    ) -> None:
        built = backend if backend is not None and not isinstance(backend, (OnnxRuntime, OpenVINO, Triton)) else None
        if built is not None and not isinstance(built, Backend):
            raise TypeError(f"backend must be a spec (OnnxRuntime, OpenVINO, Triton) or a Backend, got {backend!r}")
        self.config = NERConfig(
            None if model is None else os.fspath(model),
            precision,
            aggregation,
            batch_size,
            max_length,
            stride,
            None if built is not None else backend,  # type: ignore[arg-type]
            min_score,
        )
        self.batch_size = batch_size
        self.aggregation = aggregation
        self.min_score: float = self.config.min_score
        """Entities scored below it are dropped (0: none are)."""
        self.bundle = Bundle.load(resolve_model(self.config.model, self.config.variant))
        if self.config.variant is not None and self.bundle.precision != self.config.variant:
            raise ValueError(
                f"{self.bundle.path} is a {self.bundle.precision} bundle; precision={precision!r} picks a variant "
                "of the embedded model (a bundle has its own)"
            )
        self.postprocessor = PostProcessor(
            self.bundle.labels, Aggregation[aggregation.upper()], self.bundle.temperature
        )
        length = max_length or self.bundle.max_length
        if length > self.bundle.max_length:
            raise ValueError(f"max_length {length} exceeds the model's {self.bundle.max_length}")
        special = self.bundle.special_tokens
        self.encoder = SubwordEncoder(
            load_tokenizer(self.bundle),
            bos=special.bos,
            eos=special.eos,
            pad=special.pad,
            max_length=length,
            stride=(length - 2) // 4 if stride is None else stride,
        )
        self.backend: Backend = built or create_backend(self.config.backend_spec, self.bundle)
        spec = self.config.backend_spec
        self.precision: str = spec.precision if isinstance(spec, OpenVINO) and built is None else self.bundle.precision
        """What the model computes in: ``"int8"``, ``"fp32"``, ``"bf16"`` (OpenVINO), ``"fp16"``."""
        self.runtime: str = self.backend.runtime
        """What runs the model: ``"onnxruntime"``, ``"openvino"`` or ``"triton"``."""
        self.tagger = Tagger(
            self.encoder, self.backend, self.postprocessor, concurrent_batches=self.backend.concurrency
        )
        self.server_side: ServerSideTexts | None = None
        """Where texts go whole to the server's text model (``Triton(text_model=...)``)."""
        if isinstance(spec, Triton) and spec.text_model is not None and built is None:
            from nertron.backends.triton_text import ServerSideTexts, TritonTextClient

            local = None if spec.fallback is None else lambda texts: list(self._pipe_here(texts))
            self.server_side = ServerSideTexts(TritonTextClient(spec), local, probe_interval=spec.probe_interval)

    def close(self) -> None:
        """Releases the backend (sessions, threads, channels); the recogniser cannot be used afterwards."""
        super().close()
        self.backend.close()
        if self.server_side is not None:
            self.server_side.close()

    @property
    def served_rows(self) -> ServedRows | None:
        """What the Triton server and the local fallback answered so far, ``ServedRows(server, fallback)``:
        texts where the server runs the text model, model batch rows (windows) otherwise. None where no
        server with a fallback is involved."""
        if self.server_side is not None:
            return self.server_side.rows
        rows = getattr(self.backend, "rows", None)
        return rows if isinstance(rows, ServedRows) else None

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
        self.check_open()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        # a bar only when asked: building one costs ~40 us per call
        with tqdm(desc="ner", unit=" words", unit_scale=True) if progress else nullcontext() as bar:
            checked = (_check_str(text, index) for index, text in enumerate(texts))
            if self.server_side is None:
                yield from self._pipe_here(checked, size, None if bar is None else bar.update)
                return
            words: deque[int] = deque()  # of the texts sent and not yet answered, for the progress bar

            def counted(texts: Iterable[str]) -> Iterator[str]:
                for text in texts:
                    words.append(len(text.split()))
                    yield text

            parameters = {"aggregation": self.aggregation, "min_score": self.min_score}
            for entities in self.server_side.pipe(counted(checked), parameters, size):
                if bar is not None:
                    bar.update(words.popleft())
                yield entities

    def _pipe_here(
        self, texts: Iterable[str], batch_size: int | None = None, on_words: Callable[[int], object] | None = None
    ) -> Iterator[list[Entity]]:
        """Entities per text, tokenised and decoded in this process (the model runs wherever the backend does)."""
        segmented = (SegmentedText.split(text) for text in texts)
        for tagged in self.tagger.tag(segmented, batch_size or self.batch_size, on_words):
            yield from tagged.entities(self.postprocessor, self.min_score)

    def stream(
        self,
        documents: Iterable[SegmentedText],
        *,
        batch_size: int | None = None,
        on_words: Callable[[int], object] | None = None,
    ) -> Iterator[TaggedDocuments]:
        """Word predictions for segmented documents, in input order, in groups as they finish;
        ``on_words(n)`` after each model batch with the words it finished (for progress)."""
        self.check_open()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        return self.tagger.tag(documents, size, on_words)

    def tag(self, docs: Sequence[Sequence[str]], *, batch_size: int | None = None) -> list[list[str]]:
        """Word-level tags (the model's scheme) for pre-split documents, e.g. for evaluation; the model's own
        tags, whatever ``min_score`` is."""
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


def check_min_score(min_score: Any) -> float:
    """``min_score`` as a float if it is a number in [0, 1]; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)):
        raise TypeError(f"min_score must be a number, got {type(min_score).__name__} {min_score!r}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    return float(min_score)


def _check_str(text: object, index: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
    return text
