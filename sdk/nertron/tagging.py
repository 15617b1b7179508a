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
        )

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

    def tags(self, postprocessor: PostProcessor) -> list[list[str]]:
        """The model's tag of each word of each document (a word without subwords reads as ``O``)."""
        names = np.array([*postprocessor.labels, "O"])  # label -1 reads as O
        tags = names[self.labels].tolist()
        bounds = np.cumsum([0, *(len(d) for d in self.documents)]).tolist()
        return [tags[bounds[d] : bounds[d + 1]] for d in range(len(self.documents))]


class Tagger:
    """Runs documents through ``backend`` and merges their windows; ``tag`` streams the results."""

    def __init__(
        self,
        encoder: SubwordEncoder,
        backend: Backend,
        postprocessor: PostProcessor,
        *,
        concurrent_batches: int = 1,
        lookahead: int = LOOKAHEAD_WINDOWS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
    ) -> None:
        self.encoder = encoder
        self.backend = backend
        self.postprocessor = postprocessor
        self.concurrent_batches = concurrent_batches
        self.lookahead = lookahead
        self.max_batch_tokens = max_batch_tokens

    def tag(
        self,
        documents: Iterable[SegmentedText],
        batch_size: int,
        on_words: Callable[[int], object] | None = None,
    ) -> Iterator[TaggedDocuments]:
        """Word predictions of ``documents``, in input order, in groups of consecutive documents as they
        finish. ``on_words(n)`` is called after each batch with the number of words it finished."""
        merger = WindowMerger()
        waiting: deque[SegmentedText] = deque()  # added to the merger, not handed back yet
        windows: list[Window] = []
        for document in documents:
            doc_id = merger.add_document(len(document))
            waiting.append(document)
            for window in self.encoder.windows(doc_id, document, document.unmarked):
                windows.append(window)
                if len(windows) >= self.lookahead:
                    self._run(windows, merger, batch_size, on_words)
                    windows = []
                    if len(waiting) > 1:  # all but this document, which may have more windows
                        yield self._take(merger, waiting, len(waiting) - 1)
            if not windows:  # its last window has run (or it has none)
                yield self._take(merger, waiting, len(waiting))
        if windows:
            self._run(windows, merger, batch_size, on_words)
        if waiting:
            yield self._take(merger, waiting, len(waiting))

    def _run(
        self, windows: list[Window], merger: WindowMerger, size: int, on_words: Callable[[int], object] | None
    ) -> None:
        # Few windows (one long document) are spread over the batches the backend computes at once.
        size = max(1, min(size, -(-len(windows) // self.concurrent_batches)))
        windows = sorted(windows, key=lambda w: w.input_ids.size)
        groups: list[list[Window]] = []
        for window in windows:  # up to `size` windows and `max_batch_tokens` padded tokens per batch
            if (
                not groups
                or len(groups[-1]) == size
                or (len(groups[-1]) + 1) * window.input_ids.size > self.max_batch_tokens
            ):
                groups.append([])
            groups[-1].append(window)
        batches = [self.encoder.pad(group) for group in groups]
        if len(batches) == 1:  # a direct call: for Triton one blocking round trip instead of a callback
            all_logits: Iterable[np.ndarray] = [self.backend(batches[0].input_ids, batches[0].attention_mask)]
        else:
            all_logits = self.backend.map((b.input_ids, b.attention_mask) for b in batches)
        for group, batch, logits in zip(groups, batches, all_logits, strict=True):
            labels, scores = self.postprocessor.align(logits, batch.word_ids, batch.num_words)
            merger.merge(*_layout(group), labels, scores)
            if on_words is not None:
                on_words(sum(w.new_words for w in group))

    @staticmethod
    def _take(merger: WindowMerger, waiting: deque[SegmentedText], count: int) -> TaggedDocuments:
        labels, scores, _ = merger.take(count)
        return TaggedDocuments([waiting.popleft() for _ in range(count)], labels, scores)


def _layout(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = len(windows)
    return (
        np.fromiter((w.doc for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.word_start for w in windows), dtype=np.int64, count=count),
        np.fromiter((w.num_words for w in windows), dtype=np.int64, count=count),
    )
