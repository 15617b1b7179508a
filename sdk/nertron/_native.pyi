"""Type stub of the compiled module built from csrc/ (see csrc/postprocess.hpp for the semantics)."""

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

class Aggregation(enum.Enum):
    """How the subword predictions of a word become one prediction."""

    FIRST = ...  # the word's first subword
    AVERAGE = ...  # mean of the subwords' softmax distributions
    MAX = ...  # the subword whose top probability is highest

# decode's word_links: how a word stands to the word before it (csrc/postprocess.hpp, WordLink)
WORD_FREE: int  # a word of its own
WORD_JOINED: int  # cut from the previous word in a run without spaces: an entity goes on across the cut (first type)
WORD_PARTICLE: int  # a grammatical ending split off the previous word (Korean 부산|을): never in an entity
WORD_PLACE_ENDING: int  # a place name's ending (温州|市): a LOC entity goes on over it, whatever its tag
WORD_ORG_ENDING: int  # an organisation's ending (北京|大学): a LOC, ORG or MISC entity goes on over it as an ORG
WORD_NAME_DOT: int  # a dot in a person's name (卡洛斯·阿马特): joins the PER before it and a PER-tagged word after

class Spans:
    """Entity spans as arrays, one entry per span; ``start_char``/``end_char`` are empty arrays unless
    ``decode`` was given word offsets."""

    @property
    def row(self) -> npt.NDArray[np.int64]: ...
    @property
    def first_word(self) -> npt.NDArray[np.int64]: ...
    @property
    def end_word(self) -> npt.NDArray[np.int64]: ...
    @property
    def type(self) -> npt.NDArray[np.int32]: ...
    @property
    def score(self) -> npt.NDArray[np.float32]: ...
    @property
    def start_char(self) -> npt.NDArray[np.int64]: ...
    @property
    def end_char(self) -> npt.NDArray[np.int64]: ...
    def __len__(self) -> int: ...

class PostProcessor:
    """Alignment and span decoding for one model: its labels (validated once), the aggregation, the
    temperature that calibrates scores (``softmax(logits / temperature)``; labels never depend on it), and
    whether ``align`` constrains labels: each window's most likely label sequence that the tag scheme (IOB2 or
    BIOES) allows, not each word's most likely label (not for IOB1 models)."""

    def __init__(
        self,
        labels: Sequence[str],
        aggregation: Aggregation = Aggregation.FIRST,
        temperature: float = 1.0,
        *,
        constrained: bool = False,
    ) -> None: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def types(self) -> list[str]:
        """Entity types in the order of their first label."""
    @property
    def aggregation(self) -> Aggregation: ...
    @property
    def temperature(self) -> float: ...
    @property
    def constrained(self) -> bool:
        """``align`` gives each window the most likely label sequence the tag scheme allows."""
    def align(
        self,
        logits: npt.NDArray[np.float32],
        word_ids: npt.NDArray[np.integer],
        num_words: npt.NDArray[np.integer],
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """Subword logits [batch, seq, labels] -> flat per-word (labels, scores); label -1: no subword."""
    def decode(
        self,
        labels: npt.NDArray[np.integer],
        scores: npt.NDArray[np.float32],
        row_words: npt.NDArray[np.integer],
        word_start_char: npt.NDArray[np.integer] | None = None,
        word_end_char: npt.NDArray[np.integer] | None = None,
        word_links: npt.NDArray[np.uint8] | None = None,
    ) -> Spans:
        """Per-word labels (flat over rows of ``row_words`` words) -> spans (conlleval/seqeval semantics);
        ``word_links`` (a ``WORD_*`` value per word) keep an entity whole across the segmenter's cuts."""

class WindowMerger:
    """Merges overlapping windows' word predictions into documents, in any order of arrival (the most-context
    rule; ties to the window that starts first). Not for concurrent use."""

    def __init__(self) -> None: ...
    @property
    def pending(self) -> int:
        """Documents added and not yet taken."""
    def add_document(self, num_words: int) -> int:
        """Adds a document of ``num_words`` (at most 2**30) words; returns its id (0, 1, 2, ... in the order added)."""
    def merge(
        self,
        window_doc: npt.NDArray[np.integer],
        word_start: npt.NDArray[np.integer],
        window_words: npt.NDArray[np.integer],
        labels: npt.NDArray[np.int32],
        scores: npt.NDArray[np.float32],
    ) -> None:
        """Window ``w`` covers words ``[word_start[w], word_start[w] + window_words[w])`` of document
        ``window_doc[w]``; its word predictions are its part of the flat ``labels``/``scores``."""
    def take(self, count: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``count`` oldest documents' flat (labels, scores) and words per document; they leave the merger."""
