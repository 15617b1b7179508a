"""The public entry point: ``NER``, raw text or pre-split words in, entities or tags out."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from tqdm import tqdm

from nertron.backends import Backend, BackendSpec, OnnxRuntime, OpenVINO, Triton, create_backend
from nertron.backends.base import Closable
from nertron.backends.failover import ServedRows
from nertron.checks import check_batch_size, check_item, check_min_score, check_text, check_texts
from nertron.entity import Entity
from nertron.errors import InvalidType, InvalidValue, reraise_files
from nertron.model.bundle import Bundle
from nertron.pipeline import Pipeline
from nertron.windows import default_stride

if TYPE_CHECKING:
    from nertron.backends.triton_text import ServerSideTexts

Precision = Literal["int8", "fp32", "bf16"]
"""The embedded model's variants: static int8 (the default), fp32, and fp32 weights computed in bfloat16."""
Aggregation = Literal["first", "average", "max"]
"""How a word's prediction is made from its subwords': the first's, their mean distribution, the most confident."""
PRECISIONS: tuple[str, ...] = get_args(Precision)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


@dataclass(frozen=True)
class NERConfig:
    """Every option of ``NER``, declared here once: hashable and picklable (Spark ships it to its executors, the
    CLI builds one from its options). ``NER(model, **options)`` and ``NERConfig(model, **options).build()``
    are the same; see ``NER`` for what each option means."""

    model: str | os.PathLike[str] | None = None  # kept as str
    precision: Precision | None = None
    aggregation: Aggregation = "first"
    batch_size: int = 16
    max_length: int | None = None
    stride: int | None = None
    backend: BackendSpec | None = None
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)):
                raise InvalidType(f"model must be a bundle path (str or os.PathLike) or None, got {self.model!r}")
            object.__setattr__(self, "model", os.fspath(self.model))
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InvalidValue(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.aggregation not in AGGREGATIONS:
            raise InvalidValue(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        check_batch_size(self.batch_size)
        for name in ("max_length", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidType(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
        # Checked here too (the encoder checks them against the model), so that Spark's driver refuses them.
        if self.max_length is not None and self.max_length < 3:
            raise InvalidValue(f"max_length must be at least 3 (<s>, one subword, </s>), got {self.max_length}")
        if self.stride is not None and not 0 <= self.stride < (self.max_length or 2**31) - 2:
            bound = "max_length - 2" if self.max_length is None else self.max_length - 2
            raise InvalidValue(f"stride must be in [0, {bound}), got {self.stride}")
        object.__setattr__(self, "min_score", check_min_score(self.min_score))
        if self.backend is not None and not isinstance(self.backend, (OnnxRuntime, OpenVINO, Triton)):
            raise InvalidType(f"backend must be OnnxRuntime(...), OpenVINO(...) or Triton(...), got {self.backend!r}")
        local = self.local_spec
        if self.precision == "bf16" and self.backend is not None and not _runs_bf16(local):
            raise InvalidValue(
                f"precision='bf16' runs on OpenVINO(precision='bf16'); backend={self.backend!r} contradicts it"
            )
        if isinstance(local, OpenVINO) and self.precision not in (None, local.precision):
            raise InvalidValue(f"precision={self.precision!r} contradicts backend={self.backend!r}")

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
        """The ``NER`` this config describes."""
        return NER(**self.options())

    def options(self) -> dict[str, Any]:
        """The fields as keyword arguments: ``NERConfig(**config.options()) == config``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def resolve_model(model: str | os.PathLike[str] | None, variant: str | None = None) -> Path:
    """``model``, else ``$NERTRON_MODEL``, else the embedded default model's ``variant`` (``"int8"``, the
    default, or ``"fp32"``), assembled into the cache at first use."""
    if model is None and os.environ.get("NERTRON_MODEL"):
        model = os.environ["NERTRON_MODEL"]
    if model is not None:
        return Path(model)
    from nertron.model.default import default_bundle

    return default_bundle(variant)


def check_text_model_options(config: NERConfig, bundle: Bundle) -> None:
    """Raises ``ValueError`` for options that a Triton text model cannot honour: it windows every text with its
    bundle's ``max_length`` and default stride (the model itself is checked by fingerprint at connect)."""
    length = bundle.max_length if config.max_length is None else config.max_length
    stride = default_stride(length) if config.stride is None else config.stride
    served = (bundle.max_length, default_stride(bundle.max_length))
    if (length, stride) != served:
        raise InvalidValue(
            f"max_length={config.max_length!r}, stride={config.stride!r}: the Triton text model windows texts with "
            f"its bundle's max_length {served[0]} and stride {served[1]}; leave them unset, or send token ids "
            "(Triton(url) without text_model) to window them here"
        )


def _runs_bf16(spec: OnnxRuntime | OpenVINO | None) -> bool:
    return isinstance(spec, OpenVINO) and spec.precision == "bf16"


class NER(Closable):
    """Named-entity recogniser over a bundle (default: the embedded model); ``ner(text)`` gives entities.

    ``NER(model=None, **options)`` takes ``NERConfig``'s options, where they are declared:

    - ``precision``: the embedded model's variant (``"int8"``, the default, or ``"fp32"``; ``"bf16"`` runs
      the fp32 weights in bfloat16 on OpenVINO); a bundle has its own.
    - ``aggregation``: how a word's prediction is made from its subwords' (``"first"``, ``"average"``, ``"max"``).
    - ``batch_size``: windows per model batch; ``max_length``, ``stride``: the window and its overlap, in subwords.
    - ``backend``: what runs the model: ``OnnxRuntime(...)`` (default), ``OpenVINO(...)`` or ``Triton(url, ...)``
      (``nertron.backends``), or a built ``Backend``.
    - ``min_score``: entities scored below it are left out. Scores are calibrated where the bundle says how
      (its manifest's ``calibration``; the embedded model's is fitted on CoNLL-2003 dev): of entities scored
      about 0.9, about 9 in 10 are right.

    The settings are read-only (``ner.config``); make another ``NER`` to change them. Close it (or use it as a
    context manager) to release the backend.

    With ``Triton(...)`` and a fallback, work the server does not answer (unreachable, overloaded, late) is
    computed locally until it answers again; each switch is logged (logger ``"nertron.triton"``: a warning
    when it degrades, an info line when it returns) and ``served_rows`` counts what each answered. Any
    other error (a malformed reply, a bug) propagates: the fallback never hides it.

    Threads: one ``NER`` may be called from several threads at once (``__call__``, ``batch``, ``pipe``,
    ``tag``); they share its backend. ``close()`` may be called from any thread at any time,
    also more than once; it waits at most for model runs already under way, not for whole calls. Each call
    in progress either completes or raises ``RuntimeError`` ("... is closed"), and every call that starts
    after ``close()`` raises ``RuntimeError``.

    >>> with NER() as ner:
    ...     ner("Angela Merkel met Emmanuel Macron in Paris.")  # doctest: +SKIP
    [Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.98...), ...]
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, **options: Any) -> None:
        check_options(options, "NER()")
        given = options.get("backend")
        built = given if isinstance(given, Backend) else None
        if given is not None and built is None and not isinstance(given, (OnnxRuntime, OpenVINO, Triton)):
            raise InvalidType(f"backend must be a spec (OnnxRuntime, OpenVINO, Triton) or a Backend, got {given!r}")
        self._config = NERConfig(model, **{**options, "backend": None if built is not None else given})
        config = self._config
        with reraise_files():  # an unusable path or cache is the caller's to fix: a NertronError
            self._bundle = Bundle.load(resolve_model(config.model, config.variant))
        if config.variant is not None and self._bundle.precision != config.variant:
            why = (
                "OpenVINO (and so precision='bf16') runs fp32 models: export one without --quantize or --fp16"
                if isinstance(config.local_spec, OpenVINO) or config.precision == "bf16"
                else f"precision={config.precision!r} picks a variant of the embedded model (a bundle has its own)"
            )
            raise InvalidValue(f"{self._bundle.path} is an {self._bundle.precision} bundle; {why}")
        if config.max_length is not None and config.max_length > self._bundle.max_length:  # before any backend
            raise InvalidValue(f"max_length {config.max_length} exceeds the model's {self._bundle.max_length}")
        spec = config.backend_spec
        if isinstance(spec, Triton) and spec.text_model is not None and built is None:
            check_text_model_options(config, self._bundle)
        backend: Backend = built or create_backend(spec, self._bundle)
        try:
            self._pipeline = Pipeline.from_bundle(
                self._bundle,
                backend,
                aggregation=config.aggregation,
                max_length=config.max_length,
                stride=config.stride,
            )
        except BaseException:
            if built is None:
                backend.close()
            raise
        self._precision = spec.precision if isinstance(spec, OpenVINO) and built is None else self._bundle.precision
        self._server_side: ServerSideTexts | None = None  # texts go whole to the server's text model
        if isinstance(spec, Triton) and spec.text_model is not None and built is None:
            from nertron.backends.triton_text import ServerSideTexts, TritonTextClient

            local = None if spec.fallback is None else lambda texts: list(self._pipe_here(texts))
            self._server_side = ServerSideTexts(
                TritonTextClient(spec, fingerprint=self._bundle.fingerprint, bundle=self._bundle.path),
                local,
                probe_interval=spec.probe_interval,
            )

    @property
    def config(self) -> NERConfig:
        """The options this recogniser was made with (a built ``Backend`` reads as ``backend=None``)."""
        return self._config

    @property
    def bundle(self) -> Bundle:
        """The model bundle: its directory, manifest and labels."""
        return self._bundle

    @property
    def pipeline(self) -> Pipeline:
        """The pieces that make the entities: segmenter, subword encoder, backend, decoder (``nertron.pipeline``)."""
        return self._pipeline

    @property
    def backend(self) -> Backend:
        """What runs the model."""
        return self._pipeline.backend

    @property
    def aggregation(self) -> Aggregation:
        return self._config.aggregation

    @property
    def batch_size(self) -> int:
        return self._config.batch_size

    @property
    def min_score(self) -> float:
        """Entities scored below it are left out (0: none are)."""
        return self._config.min_score

    @property
    def precision(self) -> str:
        """What the model computes in: ``"int8"``, ``"fp32"``, ``"bf16"`` (OpenVINO), ``"fp16"``."""
        return self._precision

    @property
    def temperature(self) -> float:
        """The temperature of the scores (``softmax(logits / T)``): the bundle's calibration, else 1."""
        return self._pipeline.decoder.temperature

    @property
    def runtime(self) -> str:
        """What runs the model: ``"onnxruntime"``, ``"openvino"`` or ``"triton"``."""
        return self._pipeline.backend.runtime

    def close(self) -> None:
        """Releases the backend (sessions, threads, channels); the recogniser cannot be used afterwards."""
        super().close()
        self._pipeline.backend.close()
        if self._server_side is not None:
            self._server_side.close()

    @property
    def served_rows(self) -> ServedRows | None:
        """What the Triton server and the local fallback answered so far, ``ServedRows(server, fallback)``:
        texts where the server runs the text model (``Triton(text_model=...)``), model batch rows (windows)
        where it gets token ids and there is a fallback. None otherwise (in-process, or token ids without a
        fallback: every row is the server's or an error)."""
        if self._server_side is not None:
            return self._server_side.rows
        rows = getattr(self._pipeline.backend, "rows", None)
        return rows if isinstance(rows, ServedRows) else None

    @property
    def labels(self) -> list[str]:
        """The model's tag set, e.g. ``["O", "B-PER", ...]``."""
        return self._pipeline.labels

    def __call__(self, text: str) -> list[Entity]:
        """Entities in one text."""
        check_text(text, "text")
        return self.batch([text])[0]

    def batch(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> list[list[Entity]]:
        """Entities for each text, in input order. Raises ``TypeError`` naming a non-str item."""
        check_texts(texts, "a sequence")
        texts = list(texts)
        for index, text in enumerate(texts):
            check_item(text, index)
        return list(self.pipe(texts, batch_size=batch_size, progress=progress))

    def pipe(
        self, texts: Iterable[str], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[list[Entity]]:
        """Streams the entities of each text, in input order; holds only a few batches of windows."""
        check_texts(texts, "an iterable")
        self.check_open()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        # a bar only when asked: building one costs ~40 us per call
        with tqdm(desc="ner", unit=" words", unit_scale=True) if progress else nullcontext() as bar:
            checked = (check_item(text, index) for index, text in enumerate(texts))
            if self._server_side is None:
                yield from self._pipe_here(checked, size, None if bar is None else bar.update)
                return
            words: deque[int] = deque()  # of the texts sent and not yet answered, for the progress bar

            def counted(texts: Iterable[str]) -> Iterator[str]:
                for text in texts:
                    words.append(len(text.split()))
                    yield text

            parameters = {"aggregation": self.aggregation, "min_score": self.min_score}
            for entities in self._server_side.pipe(counted(checked), parameters, size):
                if bar is not None:
                    bar.update(words.popleft())
                yield entities

    def _pipe_here(
        self, texts: Iterable[str], batch_size: int | None = None, on_words: Callable[[int], object] | None = None
    ) -> Iterator[list[Entity]]:
        """Entities per text, tokenised and decoded in this process (the model runs wherever the backend does)."""
        return self._pipeline.entities(
            texts, batch_size or self.batch_size, min_score=self.min_score, on_words=on_words
        )

    def tag(self, docs: Sequence[Sequence[str]], *, batch_size: int | None = None) -> list[list[str]]:
        """Word-level tags (the model's scheme) for pre-split documents, e.g. for evaluation; the model's own
        tags, whatever ``min_score`` is."""
        if isinstance(docs, (str, bytes)):
            raise InvalidType(f"docs must be a sequence of word lists, got a single {type(docs).__name__}")
        for index, words in enumerate(docs):
            if isinstance(words, str) or not isinstance(words, Sequence):
                raise InvalidType(f"docs[{index}] must be a list of str, got {type(words).__name__}")
            for position, word in enumerate(words):
                check_text(word, f"docs[{index}][{position}]")
        self.check_open()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        return list(self._pipeline.tags(docs, size))


_OPTIONS = frozenset(f.name for f in dataclasses.fields(NERConfig))


def check_options(options: Iterable[str], caller: str) -> None:
    """Raises ``TypeError`` naming the first of ``options`` that is not one of ``NERConfig``'s fields."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise InvalidType(
            f"{caller} got an unknown option {unknown[0]!r}; the options are {', '.join(sorted(_OPTIONS))}"
        )
