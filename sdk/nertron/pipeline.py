"""The pipeline: text -> words -> subword windows -> model -> window merge -> entity spans.

One ``Pipeline`` holds the pieces, each public and replaceable (``dataclasses.replace(pipeline, backend=...)``):

============  ===============================================  ==========================================
step          piece                                            module
============  ===============================================  ==========================================
segment       ``segmenter``: text -> ``SegmentedText`` (words,  ``nertron.text`` (CoNLL-style rules; ICU
              offsets, sentences); any ``Segmenter``            for scripts without spaces)
encode        ``encoder``: words -> windows of subword ids,     ``nertron.windows``, ``nertron.subwords``
              padded batches
run           ``backend``: batches -> logits                    ``nertron.backends``
merge         windows -> one prediction per word                ``nertron.tagging`` (``WindowMerger``)
decode        ``decoder``: subword logits -> word labels ->     ``nertron._native.PostProcessor``
              spans, calibrated scores
============  ===============================================  ==========================================

``NER`` is a facade over one pipeline (``ner.pipeline``); evaluation, corpus tagging, calibration, static
int8 calibration and the benchmarks compose the same pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nertron._native import Aggregation as NativeAggregation
from nertron._native import PostProcessor
from nertron.backends.base import Backend
from nertron.entity import Entity
from nertron.errors import InvalidValue, reraise_files
from nertron.subwords import load_tokenizer
from nertron.tagging import LOOKAHEAD_WINDOWS, TaggedDocuments, max_batch_tokens, tag_documents
from nertron.text import SegmentedText
from nertron.windows import PaddedBatch, SubwordEncoder, Window, default_stride

if TYPE_CHECKING:
    from nertron.model.bundle import Bundle

Segmenter = Callable[[str], SegmentedText]
"""Raw text -> its words with offsets (``SegmentedText``); nertron's own is ``segment``."""


def segment(text: str) -> SegmentedText:
    """nertron's segmentation (``nertron.text``): CoNLL-2003's cuts, ICU's dictionaries for scripts without
    spaces, a sentence per line."""
    return SegmentedText.split(text)


@dataclass(frozen=True)
class Pipeline:
    """The pieces that turn text into entities (see the module docstring); build one with ``from_bundle``."""

    segmenter: Segmenter
    encoder: SubwordEncoder
    backend: Backend
    decoder: PostProcessor
    max_batch_tokens: int
    lookahead: int = LOOKAHEAD_WINDOWS

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        backend: Backend,
        *,
        aggregation: str = "first",
        max_length: int | None = None,
        stride: int | None = None,
        segmenter: Segmenter = segment,
    ) -> Pipeline:
        """The pipeline of ``bundle`` (its tokenizer, labels, temperature, window length) run by ``backend``."""
        aggregations = tuple(name.lower() for name in NativeAggregation.__members__)
        if aggregation not in aggregations:
            raise InvalidValue(f"aggregation must be one of {aggregations}, got {aggregation!r}")
        length = bundle.max_length if max_length is None else max_length
        if length > bundle.max_length:
            raise InvalidValue(f"max_length {length} exceeds the model's {bundle.max_length}")
        special = bundle.special_tokens
        with reraise_files("model"):
            tokenizer = load_tokenizer(bundle)
        encoder = SubwordEncoder(
            tokenizer,
            bos=special.bos,
            eos=special.eos,
            pad=special.pad,
            max_length=length,
            stride=default_stride(length) if stride is None else stride,
        )
        # IOB1's I-X starts an entity, so only IOB2 and BIOES labels are read as sequences the scheme constrains.
        decoder = PostProcessor(
            bundle.labels,
            NativeAggregation[aggregation.upper()],
            bundle.temperature,
            constrained=bundle.scheme != "IOB1",
        )
        return cls(segmenter, encoder, backend, decoder, max_batch_tokens(bundle.manifest.hidden_size))

    def replace(self, **pieces: object) -> Pipeline:
        """This pipeline with some pieces replaced, e.g. ``replace(backend=recorded)``."""
        return dataclasses.replace(self, **pieces)  # type: ignore[arg-type]

    def with_temperature(self, temperature: float) -> Pipeline:
        """This pipeline with its scores at ``temperature`` (labels do not depend on it)."""
        return self._with_decoder(temperature, self.decoder.constrained)

    def with_constrained_labels(self, constrained: bool) -> Pipeline:
        """This pipeline with labels constrained to the tag scheme or not (``False``: each word's most likely label,
        as nertron decoded before 2026-12-07)."""
        return self._with_decoder(self.decoder.temperature, constrained)

    def _with_decoder(self, temperature: float, constrained: bool) -> Pipeline:
        decoder = PostProcessor(self.decoder.labels, self.decoder.aggregation, temperature, constrained=constrained)
        return self.replace(decoder=decoder)

    @property
    def labels(self) -> list[str]:
        """The model's tag set."""
        return list(self.decoder.labels)

    def windows(self, documents: Iterable[Sequence[str]]) -> Iterator[Window]:
        """The windows of pre-split documents (word lists, tokenised as ``tag`` does), numbered by their
        position, in order."""
        for index, words in enumerate(documents):
            document = SegmentedText.join([words])
            yield from self.encoder.windows(index, document, document.unmarked)

    def batches(self, documents: Iterable[Sequence[str]], batch_size: int = 16) -> list[PaddedBatch]:
        """The windows of ``documents`` sorted by length and padded in batches of ``batch_size`` (for
        calibration and benchmarks: the windows are the model's inputs; ``tag`` groups them otherwise, in
        chunks of ``lookahead`` with at most ``max_batch_tokens`` padded subwords a batch)."""
        windows = sorted(self.windows(documents), key=lambda w: w.input_ids.size)
        return [self.encoder.pad(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]

    def tag(
        self,
        documents: Iterable[SegmentedText],
        batch_size: int = 16,
        on_words: Callable[[int], object] | None = None,
    ) -> Iterator[TaggedDocuments]:
        """Word predictions of segmented documents, in input order, in groups as they finish; ``on_words(n)``
        after each model batch with the words it finished (for progress)."""
        return tag_documents(
            documents,
            self.encoder,
            self.backend,
            self.decoder,
            batch_size=batch_size,
            lookahead=self.lookahead,
            max_batch_tokens=self.max_batch_tokens,
            on_words=on_words,
        )

    def entities(
        self,
        texts: Iterable[str],
        batch_size: int = 16,
        *,
        min_score: float = 0.0,
        on_words: Callable[[int], object] | None = None,
    ) -> Iterator[list[Entity]]:
        """The entities of each text, in input order, those scored below ``min_score`` left out."""
        segmented = (self.segmenter(text) for text in texts)
        for tagged in self.tag(segmented, batch_size, on_words):
            yield from tagged.entities(self.decoder, min_score)

    def tags(self, documents: Iterable[Sequence[str]], batch_size: int = 16) -> Iterator[list[str]]:
        """The model's tag of each word of pre-split documents (word lists), whatever the scores."""
        joined = (SegmentedText.join([words]) for words in documents)
        for tagged in self.tag(joined, batch_size):
            yield from tagged.tags(self.decoder)
