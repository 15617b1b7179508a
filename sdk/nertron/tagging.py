"""The tagging loop: documents -> windows -> length-sorted batches -> model -> one label per word.

Documents stream through: their windows are collected ``lookahead`` at a time, sorted by length (little
padding), run in batches, aligned to words and merged into their documents by the native post-processor.
A document is handed back, in input order, as soon as all its windows have run, so a long document is
held only as its offsets and per-word predictions, and the windows of a few batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

import numpy as np

from nertron._native import PostProcessor, Spans, WindowMerger
from nertron.backends.base import Backend
from nertron.entity import Entity
from nertron.text import SegmentedText
from nertron.windows import SubwordEncoder, Window

# Windows sorted together: enough for batches of similar lengths, few enough that documents come back
# soon (a failure loses at most this much work; progress moves at least this often).
LOOKAHEAD_WINDOWS = 256
# Padded subwords per batch, at most, for a model of hidden size 384: long windows go in smaller batches. On
# CPU that is faster (int8, `python perf/ort_tuning.py --sections 4`: 518 CoNLL sentences/s at 768 vs 376
# unbounded; a 10,000-word document 3,703 vs 3,381 words/s), and it bounds the activations, so memory no
# longer grows with the batch. Wider models get proportionally fewer (`max_batch_tokens`).
MAX_BATCH_TOKENS = 768
HIDDEN_SIZE_OF_MAX_BATCH_TOKENS = 384


def max_batch_tokens(hidden_size: int | None) -> int:
    """Padded subwords per batch for a model of ``hidden_size`` (None, unknown: as for 384): the same
    activation budget, so 384 subwords at XLM-R base's 768 (``perf/base_bench.py``, int8: 12.2x the HF pipeline
    instead of 10.5x at 768 subwords)."""
    return max(
        64, MAX_BATCH_TOKENS * HIDDEN_SIZE_OF_MAX_BATCH_TOKENS // (hidden_size or HIDDEN_SIZE_OF_MAX_BATCH_TOKENS)
    )


@dataclass
class TaggedDocuments:
    """Consecutive documents with one prediction per word, flat over their words."""

    documents: list[SegmentedText]
    labels: np.ndarray  # int32 label id per word, -1 for a word that produced no subword
    scores: np.ndarray  # float32 probability of that label

    def spans(self, postprocessor: PostProcessor) -> Spans:
        """Entity spans, one row per sentence of each document, with character offsets in its text."""
        docs = self.documents
        return postprocessor.decode(
            self.labels,
            self.scores,
            np.concatenate([d.sentence_lengths for d in docs]) if docs else np.zeros(0, np.int64),
            np.concatenate([d.starts for d in docs]) if docs else np.zeros(0, np.int64),
            np.concatenate([d.ends for d in docs]) if docs else np.zeros(0, np.int64),
            self.links(),
        )

    def links(self) -> np.ndarray | None:
        """The segmenter's word links of all documents, flat (None: every word free)."""
        if all(d.links is None for d in self.documents):
            return None
        return np.concatenate([np.zeros(len(d), np.uint8) if d.links is None else d.links for d in self.documents])

    def entities(self, postprocessor: PostProcessor, min_score: float = 0.0) -> list[list[Entity]]:
        """The entities of each document (never across a sentence), those scored below ``min_score`` left out."""
        spans = self.spans(postprocessor)
        doc_of_row = np.repeat(
            np.arange(len(self.documents)), [len(d.sentence_lengths) for d in self.documents]
        ).tolist()
        found: list[list[Entity]] = [[] for _ in self.documents]
        types = postprocessor.types
        for row, type_id, start, end, score in zip(
            spans.row.tolist(),
            spans.type.tolist(),
            spans.start_char.tolist(),
            spans.end_char.tolist(),
            spans.score.tolist(),
            strict=True,
        ):
            if score < min_score:
                continue
            doc = doc_of_row[row]
            found[doc].append(Entity(self.documents[doc].text[start:end], types[type_id], start, end, score))
        return found

    @classmethod
    def take(cls, merger: WindowMerger, waiting: deque[SegmentedText], count: int) -> TaggedDocuments:
        """The ``count`` oldest documents of ``merger`` (and of ``waiting``, the same documents)."""
        labels, scores, _ = merger.take(count)
        return cls([waiting.popleft() for _ in range(count)], labels, scores)

    def tags(self, postprocessor: PostProcessor) -> list[list[str]]:
        """The model's tag of each word of each document (a word without subwords reads as ``O``)."""
        names = np.array([*postprocessor.labels, "O"])  # label -1 reads as O
        tags = names[self.labels].tolist()
        bounds = np.cumsum([0, *(len(d) for d in self.documents)]).tolist()
        return [tags[bounds[d] : bounds[d + 1]] for d in range(len(self.documents))]


Entry = tuple[str, Any]  # ("document", SegmentedText), ("batch", PaddedBatch), ("done", int)


def tag_documents(
    documents: Iterable[SegmentedText],
    encoder: SubwordEncoder,
    backend: Backend,
    decoder: PostProcessor,
    *,
    batch_size: int,
    lookahead: int = LOOKAHEAD_WINDOWS,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    on_words: Callable[[int], object] | None = None,
) -> Iterator[TaggedDocuments]:
    """Word predictions of ``documents``, in input order, in groups of consecutive documents as they finish.
    ``on_words(n)`` is called after each batch with the number of words it finished.

    One stream of batches feeds the backend from first to last: while it computes the batches in flight,
    this thread cuts the next documents into windows (``backend.map`` draws the next batch as it hands
    back a result), so the model does not wait for tokenisation at each ``lookahead`` of windows. The merge
    step alone touches the merger, in the order the feed made its entries."""
    entries: deque[Entry] = deque()
    feed = _batches(documents, encoder, entries, backend.concurrency, batch_size, lookahead, max_batch_tokens)
    merger = WindowMerger()
    waiting: deque[SegmentedText] = deque()  # added to the merger, not handed back yet
    done = 0  # documents handed back

    def settle() -> Iterator[TaggedDocuments]:
        """Applies the entries up to the next batch: adds documents, hands back the finished ones."""
        nonlocal done
        while entries and entries[0][0] != "batch":
            kind, value = entries.popleft()
            if kind == "document":
                merger.add_document(len(value))
                waiting.append(value)
            elif value > done:
                yield TaggedDocuments.take(merger, waiting, value - done)
                done = value

    first = list(islice(feed, 2))
    # One batch in all (one short text): a direct call, for Triton one blocking round trip, not a callback.
    all_logits = [backend(*first[0])] if len(first) == 1 else backend.map(chain(first, feed))
    try:
        for logits in all_logits:
            yield from settle()
            _, batch = entries.popleft()
            labels, scores = decoder.align(logits, batch.word_ids, batch.num_words)
            merger.merge(*_layout(batch.windows), labels, scores)
            if on_words is not None:
                on_words(sum(w.new_words for w in batch.windows))
            yield from settle()
    except Exception:  # e.g. the documents' iterable failed: the documents finished before it still come back
        yield from settle()
        raise
    yield from settle()


def _batches(
    documents: Iterable[SegmentedText],
    encoder: SubwordEncoder,
    entries: deque[Entry],
    concurrency: int,
    batch_size: int,
    lookahead: int,
    max_batch_tokens: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The model inputs of ``documents``: their windows, ``lookahead`` at a time, sorted by length and cut
    into batches of ``batch_size`` windows and ``max_batch_tokens`` padded subwords at most; each batch, each
    document and each point where documents are finished is recorded in ``entries`` before it is yielded."""
    windows: list[Window] = []
    added = 0
    # The first windows go to the model as soon as there are enough for the batches it runs at once (two at
    # least: the first call decides between one direct call and a stream); the chunks then double up to
    # `lookahead` (the model starts sooner, and a short stream is not held back).
    chunk = min(lookahead, batch_size * max(2, concurrency))
    for document in documents:
        entries.append(("document", document))
        cut = encoder.windows(added, document, document.unmarked)
        window = next(cut, None)
        while window is not None:
            following = next(cut, None)  # one window ahead: whether this document ends with the chunk
            windows.append(window)
            if len(windows) >= chunk:
                finished = added + 1 if following is None else added
                yield from _sorted_batches(
                    windows, encoder, entries, concurrency, batch_size, max_batch_tokens, finished
                )
                windows = []
                chunk = min(lookahead, 2 * chunk)
            window = following
        added += 1
        if not windows:  # its last window is on its way (or it has none)
            entries.append(("done", added))
    if windows:
        yield from _sorted_batches(windows, encoder, entries, concurrency, batch_size, max_batch_tokens, added)
    entries.append(("done", added))


def _sorted_batches(
    windows: list[Window],
    encoder: SubwordEncoder,
    entries: deque[Entry],
    concurrency: int,
    size: int,
    max_batch_tokens: int,
    finished: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of one chunk of windows. All of them, and then ``finished`` (the documents complete once they
    have run), are recorded before the first is yielded: a backend that draws the next batch only after handing
    back a result still gets the documents back as soon as their last batch is merged."""
    # Few windows (one long document) are spread over the batches the backend computes at once.
    size = max(1, min(size, -(-len(windows) // concurrency)))
    windows = sorted(windows, key=lambda w: w.input_ids.size)
    groups: list[list[Window]] = []
    for window in windows:  # up to `size` windows and `max_batch_tokens` padded tokens per batch
        if not groups or len(groups[-1]) == size or (len(groups[-1]) + 1) * window.input_ids.size > max_batch_tokens:
            groups.append([])
        groups[-1].append(window)
    batches = [encoder.pad(group) for group in groups]
    entries.extend(("batch", batch) for batch in batches)
    entries.append(("done", finished))
    for batch in batches:
        yield batch.input_ids, batch.attention_mask


def _layout(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = len(windows)
    return (
        np.fromiter((w.doc for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.word_start for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.num_words for w in windows), dtype=np.int64, count=count),
    )
