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

from nertron._native import Aggregation as NativeAggregation
from nertron._native import PostProcessor
from nertron.backends import Backend, BackendSpec, OnnxRuntime, OpenVINO, Triton, create_backend
from nertron.backends.base import Closable
from nertron.backends.failover import ServedRows
from nertron.entity import Entity
from nertron.errors import InvalidType, InvalidValue, reraise_files
from nertron.model.bundle import Bundle
from nertron.subwords import load_tokenizer
from nertron.tagging import TaggedDocuments, Tagger, max_batch_tokens
from nertron.text import SegmentedText, lone_surrogate
from nertron.windows import SubwordEncoder

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
        backend = options.get("backend")
        built = backend if isinstance(backend, Backend) else None
        if backend is not None and built is None and not isinstance(backend, (OnnxRuntime, OpenVINO, Triton)):
            raise InvalidType(f"backend must be a spec (OnnxRuntime, OpenVINO, Triton) or a Backend, got {backend!r}")
        self._config = NERConfig(model, **{**options, "backend": None if built is not None else backend})
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
        self._postprocessor = PostProcessor(
            self._bundle.labels, NativeAggregation[config.aggregation.upper()], self._bundle.temperature
        )
        length = self._bundle.max_length if config.max_length is None else config.max_length
        if length > self._bundle.max_length:
            raise InvalidValue(f"max_length {length} exceeds the model's {self._bundle.max_length}")
        special = self._bundle.special_tokens
        with reraise_files("model"):
            tokenizer = load_tokenizer(self._bundle)
        self._encoder = SubwordEncoder(
            tokenizer,
            bos=special.bos,
            eos=special.eos,
            pad=special.pad,
            max_length=length,
            stride=(length - 2) // 4 if config.stride is None else config.stride,
        )
        self._backend: Backend = built or create_backend(config.backend_spec, self._bundle)
        spec = config.backend_spec
        self._precision = spec.precision if isinstance(spec, OpenVINO) and built is None else self._bundle.precision
        self._tagger = Tagger(
            self._encoder,
            self._backend,
            self._postprocessor,
            concurrent_batches=self._backend.concurrency,
            max_batch_tokens=max_batch_tokens(self._bundle.manifest.hidden_size),
        )
        self._server_side: ServerSideTexts | None = None  # texts go whole to the server's text model
        if isinstance(spec, Triton) and spec.text_model is not None and built is None:
            from nertron.backends.triton_text import ServerSideTexts, TritonTextClient

            local = None if spec.fallback is None else lambda texts: list(self._pipe_here(texts))
            self._server_side = ServerSideTexts(TritonTextClient(spec), local, probe_interval=spec.probe_interval)

    @property
    def config(self) -> NERConfig:
        """The options this recogniser was made with (a built ``Backend`` reads as ``backend=None``)."""
        return self._config

    @property
    def bundle(self) -> Bundle:
        """The model bundle: its directory, manifest and labels."""
        return self._bundle

    @property
    def backend(self) -> Backend:
        """What runs the model."""
        return self._backend

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
        return self._postprocessor.temperature

    @property
    def runtime(self) -> str:
        """What runs the model: ``"onnxruntime"``, ``"openvino"`` or ``"triton"``."""
        return self._backend.runtime

    def close(self) -> None:
        """Releases the backend (sessions, threads, channels); the recogniser cannot be used afterwards."""
        super().close()
        self._backend.close()
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
        rows = getattr(self._backend, "rows", None)
        return rows if isinstance(rows, ServedRows) else None

    @property
    def labels(self) -> list[str]:
        """The model's tag set, e.g. ``["O", "B-PER", ...]``."""
        return list(self._postprocessor.labels)

    def __call__(self, text: str) -> list[Entity]:
        """Entities in one text."""
        check_text(text, "text")
        return self.batch([text])[0]

    def batch(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> list[list[Entity]]:
        """Entities for each text, in input order. Raises ``TypeError`` naming a non-str item."""
        _check_texts(texts, "a sequence")
        texts = list(texts)
        for index, text in enumerate(texts):
            _check_str(text, index)
        return list(self.pipe(texts, batch_size=batch_size, progress=progress))

    def pipe(
        self, texts: Iterable[str], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[list[Entity]]:
        """Streams the entities of each text, in input order; holds only a few batches of windows."""
        _check_texts(texts, "an iterable")
        self.check_open()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        # a bar only when asked: building one costs ~40 us per call
        with tqdm(desc="ner", unit=" words", unit_scale=True) if progress else nullcontext() as bar:
            checked = (_check_str(text, index) for index, text in enumerate(texts))
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
        segmented = (SegmentedText.split(text) for text in texts)
        for tagged in self._tagger.tag(segmented, batch_size or self.batch_size, on_words):
            yield from tagged.entities(self._postprocessor, self.min_score)

    def _stream(
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
        return self._tagger.tag(documents, size, on_words)

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
        documents = (SegmentedText.join([words]) for words in docs)
        return [
            tags
            for tagged in self._stream(documents, batch_size=batch_size)
            for tags in tagged.tags(self._postprocessor)
        ]


_OPTIONS = frozenset(f.name for f in dataclasses.fields(NERConfig))


def check_options(options: Iterable[str], caller: str) -> None:
    """Raises ``TypeError`` naming the first of ``options`` that is not one of ``NERConfig``'s fields."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise InvalidType(
            f"{caller} got an unknown option {unknown[0]!r}; the options are {', '.join(sorted(_OPTIONS))}"
        )


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is an int >= 1; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidType(f"batch_size must be an int, got {type(batch_size).__name__} {batch_size!r}")
    if batch_size < 1:
        raise InvalidValue(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def check_min_score(min_score: Any) -> float:
    """``min_score`` as a float if it is a number in [0, 1]; else ``TypeError``/``ValueError`` naming it."""
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)):
        raise InvalidType(f"min_score must be a number, got {type(min_score).__name__} {min_score!r}")
    if not 0.0 <= min_score <= 1.0:
        raise InvalidValue(f"min_score must be in [0, 1], got {min_score}")
    return float(min_score)


def _check_texts(texts: object, kind: str) -> None:
    """Raises ``TypeError`` naming ``texts`` unless it is an iterable and not a single ``str``."""
    if isinstance(texts, (str, bytes)):
        raise InvalidType(f"texts must be {kind} of str, got a single {type(texts).__name__}; use ner(text)")
    if not isinstance(texts, Iterable):
        raise InvalidType(f"texts must be {kind} of str, got {type(texts).__name__}")


def _check_str(text: object, index: int) -> str:
    return check_text(text, f"texts[{index}]")


def check_text(text: object, name: str) -> str:
    """``text`` if it is a ``str`` that is valid Unicode; else ``TypeError``/``ValueError`` naming ``name``. A
    lone surrogate (U+D800 to U+DFFF: from JSON's ``"\\ud800"``, or bytes decoded with ``surrogateescape``)
    is not a character and no tokenizer takes it."""
    if not isinstance(text, str):
        raise InvalidType(f"{name} must be str, got {type(text).__name__}")
    index = lone_surrogate(text)
    if index is not None:
        raise InvalidValue(
            f"{name} holds a lone surrogate U+{ord(text[index]):04X} at index {index}, which is "
            "not a character (text decoded with errors='surrogateescape', or a JSON \\ud800 escape); "
            "decode the bytes as UTF-8 with errors='replace'"
        )
    return text
