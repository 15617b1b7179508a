"""The public pipeline: its pieces compose, replace one another, and the overlap of tokenisation with the
model's run never changes an entity."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nertron import NER
from nertron.backends.base import Backend
from nertron.evaluation import evaluate
from nertron.io.conll import Document, Sentence
from nertron.pipeline import Pipeline, segment
from nertron.raw_evaluation import evaluate_raw
from nertron.text import SegmentedText

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "",
    "EU rejects German call to boycott British lamb.\nPeter Blackburn",
    "Der Bundestag in Berlin stimmte am Dienstag zu, sagte Olaf Scholz. " * 40,
    "東京で会議が開かれた。",
    "x",
]


class InTurn:
    """A backend that runs each batch only when its result is asked for: nothing overlaps."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.runtime, self.concurrency = backend, backend.runtime, backend.concurrency
        self.calls = 0

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.backend(input_ids, attention_mask)

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        for input_ids, attention_mask in batches:
            yield self(input_ids, attention_mask)

    def close(self) -> None:
        pass


class DrainsInAThread(InTurn):
    """A backend that reads every batch of its input in a thread of its own before it answers the first (the
    most any backend may read ahead), then answers them in order."""

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        inputs: list[tuple[np.ndarray, np.ndarray]] = []
        reader = threading.Thread(target=lambda: inputs.extend(batches))
        reader.start()
        reader.join()
        for input_ids, attention_mask in inputs:
            yield self(input_ids, attention_mask)


@pytest.fixture(scope="module")
def ner(tiny_bundle: Path) -> Iterator[NER]:
    with NER(tiny_bundle, batch_size=2) as built:
        yield built


def test_ner_is_a_facade_over_its_pipeline(ner: NER) -> None:
    pipeline = ner.pipeline
    assert pipeline.backend is ner.backend
    assert pipeline.labels == ner.labels
    assert list(pipeline.entities(TEXTS, 2)) == ner.batch(TEXTS)
    assert list(pipeline.tags([["Angela", "Merkel"], []], 2)) == ner.tag([["Angela", "Merkel"], []])
    built = Pipeline.from_bundle(ner.bundle, ner.backend)
    assert list(built.entities(TEXTS, 2)) == ner.batch(TEXTS)


@pytest.mark.parametrize("lookahead", [1, 3, 256])
@pytest.mark.parametrize("backend", [InTurn, DrainsInAThread])
def test_overlap_never_changes_an_entity(ner: NER, lookahead: int, backend: type[InTurn]) -> None:
    expected = ner.batch(TEXTS)
    wrapped = backend(ner.backend)
    pipeline = ner.pipeline.replace(backend=wrapped, lookahead=lookahead)
    assert list(pipeline.entities(TEXTS, 2)) == expected
    assert wrapped.calls > 1


def test_documents_come_back_as_soon_as_their_windows_have_run(ner: NER) -> None:
    """A document is handed back once its last batch is merged, not at the end of the stream."""
    asked: list[int] = []

    def documents() -> Iterator[SegmentedText]:
        for index in range(40):
            asked.append(index)
            yield segment(f"Document {index} about Paris.")

    stream = ner.pipeline.replace(lookahead=4).tag(documents(), 2)
    first = next(stream)
    assert first.documents[0].text == "Document 0 about Paris."
    assert len(asked) < 40  # the rest is still unread
    rest = [d.text for tagged in stream for d in tagged.documents]
    assert [d.text for d in first.documents] + rest == [f"Document {i} about Paris." for i in range(40)]


def test_a_user_segmenter_replaces_nertrons(ner: NER) -> None:
    seen: list[str] = []

    def on_spaces(text: str) -> SegmentedText:
        seen.append(text)
        words = text.split(" ")
        starts = np.cumsum([0, *(len(w) + 1 for w in words[:-1])]).astype(np.int64)
        return SegmentedText(text, starts, starts + np.array([len(w) for w in words], np.int64))

    text = "Angela Merkel met Emmanuel Macron in Paris."
    found = next(ner.pipeline.replace(segmenter=on_spaces).entities([text], 2))
    assert seen == [text]
    assert found  # the tiny model tags nearly every word
    word_starts = {0} | {i + 1 for i, c in enumerate(text) if c == " "}
    word_ends = {i for i, c in enumerate(text) if c == " "} | {len(text)}
    for entity in found:
        assert entity.start in word_starts and entity.end in word_ends, entity
    assert not any(e.end == len(text) - 1 for e in found)  # "Paris." is one word here; nertron's cuts off "."


def test_evaluation_runs_a_pipeline_with_another_temperature(ner: NER) -> None:
    documents = [Document([Sentence(["Angela", "Merkel", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"])])]
    hot = ner.pipeline.with_temperature(5.0)
    assert hot.decoder.temperature == 5.0
    plain, warmed = evaluate(ner, documents), evaluate(hot, documents)
    assert plain.entity == warmed.entity  # labels never depend on the temperature
    assert plain.scored is not None and warmed.scored is not None
    assert len(plain.scored.scores) > 0
    assert not np.allclose(plain.scored.scores, warmed.scored.scores)


def test_labels_are_constrained_to_the_bundles_tag_scheme(ner: NER) -> None:
    """IOB2 and BIOES bundles get the best label sequence their scheme allows; IOB1's I-X starts an entity, so
    an IOB1 bundle keeps each word's most likely label."""
    assert ner.bundle.scheme == "IOB2"
    assert ner.pipeline.decoder.constrained
    assert ner.pipeline.with_temperature(2.0).decoder.constrained
    unconstrained = ner.pipeline.with_constrained_labels(False)
    assert not unconstrained.decoder.constrained and unconstrained.decoder.temperature == ner.temperature
    iob1 = dataclasses.replace(ner.bundle, manifest=dataclasses.replace(ner.bundle.manifest, scheme="IOB1"))
    assert not Pipeline.from_bundle(iob1, ner.backend).decoder.constrained


def test_raw_text_evaluation_runs_a_pipeline_as_its_ner(ner: NER) -> None:
    documents = [Document([Sentence(["Angela", "Merkel", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"])])]
    assert evaluate_raw(ner.pipeline, documents) == evaluate_raw(ner, documents)


def test_batches_are_the_models_inputs(ner: NER) -> None:
    documents: list[Any] = [["Angela", "Merkel"], ["x"] * 300, []]
    batches = ner.pipeline.batches(documents, 2)
    assert sum(len(b.windows) for b in batches) == len(list(ner.pipeline.windows(documents)))
    lengths = [b.input_ids.shape[1] for b in batches]
    assert lengths == sorted(lengths)


@pytest.mark.parametrize("options", [{"max_length": -8}, {"stride": 3}, {"max_length": -8, "stride": 7}])
def test_a_text_model_refuses_windows_it_cannot_honour(tiny_bundle: Path, options: dict[str, int]) -> None:
    """The server windows texts with its bundle's max_length and stride: other ones are refused at build, not
    ignored (no server is needed to know that). A max_length here is relative to the bundle's."""
    from nertron import Triton

    length = NER(tiny_bundle).bundle.max_length
    options = {k: length + v if k == "max_length" else v for k, v in options.items()}
    with pytest.raises(ValueError, match="the Triton text model windows texts with its bundle's max_length"):
        NER(tiny_bundle, backend=Triton("127.0.0.1:1", text_model="nertron_text"), **options)


def test_a_text_model_takes_the_windows_it_uses(tiny_bundle: Path) -> None:
    from nertron import Triton
    from nertron.pipeline import default_stride

    length = NER(tiny_bundle).bundle.max_length
    spec = Triton("127.0.0.1:1", text_model="nertron_text")
    with NER(tiny_bundle, backend=spec, max_length=length, stride=default_stride(length)) as ner:
        assert ner.pipeline.encoder.max_length == length


@pytest.mark.parametrize(("backend", "finished"), [(InTurn, 8), (None, 4)])
def test_documents_finished_before_a_failing_input_still_come_back(
    ner: NER, backend: type[InTurn] | None, finished: int
) -> None:
    """Chunks of 4 windows (a document each): a backend that runs each batch when asked has run the first two
    chunks when the input fails; onnxruntime, which reads a batch ahead, the first only. Either way every
    document whose windows have run comes back, in order, before the error."""

    def documents() -> Iterator[SegmentedText]:
        for index in range(10):
            yield segment(f"Document {index} about Paris.")
        raise ValueError("line 11 cannot be read")

    pipeline = ner.pipeline.replace(lookahead=4)
    if backend is not None:
        pipeline = pipeline.replace(backend=backend(ner.backend))
    got: list[str] = []
    with pytest.raises(ValueError, match="line 11"):
        for tagged in pipeline.tag(documents(), 2):
            got += [d.text for d in tagged.documents]
    assert got == [f"Document {i} about Paris." for i in range(finished)]
