"""The compiled post-processing equals the pure-Python reference, and rejects bad input cleanly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from nertron._native import (
    WORD_FREE,
    WORD_JOINED,
    WORD_NAME_DOT,
    WORD_ORG_ENDING,
    WORD_PARTICLE,
    WORD_PLACE_ENDING,
    Aggregation,
    PostProcessor,
    WindowMerger,
)
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from tests import reference
from tests.properties import examples

LABELS = ("O", *(f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC") for p in "BIES"))
DECODER = PostProcessor(LABELS)
AGGREGATIONS = ("first", "average", "max")


def postprocessor(num_labels: int, aggregation: str = "first", temperature: float = 1.0) -> PostProcessor:
    """A post-processor for ``num_labels`` labels (their names do not matter to alignment)."""
    labels = ["O", *(f"B-T{k}" for k in range(1, num_labels))]
    return PostProcessor(labels, Aggregation[aggregation.upper()], temperature)


# Logits on a coarse grid: exact ties are frequent (tie-breaking is tested) and near-ties rare.
logit = st.integers(-16, 16).map(lambda x: x / 4)


@st.composite
def aligned_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = draw(st.integers(1, 4))
    seq = draw(st.integers(1, 12))
    num_labels = draw(st.integers(1, 5))
    logits = np.array(
        draw(st.lists(logit, min_size=batch * seq * num_labels, max_size=batch * seq * num_labels)),
        dtype=np.float32,
    ).reshape(batch, seq, num_labels)
    num_words = np.array(draw(st.lists(st.integers(0, 6), min_size=batch, max_size=batch)), np.int64)
    word_ids = np.array(
        [[draw(st.integers(-1, int(num_words[b]) - 1)) for _ in range(seq)] for b in range(batch)],
        dtype=np.int64,
    )
    return logits, word_ids, num_words


def near_tie(logits: np.ndarray, word_ids: np.ndarray, aggregation: str) -> bool:
    """Whether float32 vs float64 rounding could flip a decision (average and max only)."""
    if aggregation == "first":
        return False
    for b in range(logits.shape[0]):
        for word in set(word_ids[b].tolist()) - {-1}:
            dists = [reference.softmax(logits[b, t]) for t in np.flatnonzero(word_ids[b] == word)]
            values = np.mean(dists, axis=0) if aggregation == "average" else [max(d) for d in dists]
            ordered = sorted(values, reverse=True)
            if len(ordered) > 1 and 0 < ordered[0] - ordered[1] < 1e-5:
                return True
            if aggregation == "average" and len(ordered) > 1 and ordered[0] == ordered[1]:
                return True  # an exact tie in float64 need not be one in float32
    return False


@settings(max_examples=examples(300))
@given(aligned_batches(), st.sampled_from(AGGREGATIONS), st.sampled_from([1.0, 0.7, 1.6]))
def test_align_words_matches_reference(data: tuple, aggregation: str, temperature: float) -> None:
    logits, word_ids, num_words = data
    assume(not near_tie(logits, word_ids, aggregation))
    labels, scores = postprocessor(logits.shape[2], aggregation, temperature).align(logits, word_ids, num_words)
    expected = [
        p
        for b in range(logits.shape[0])
        for p in reference.align_row(
            logits[b].tolist(), word_ids[b].tolist(), int(num_words[b]), aggregation, temperature
        )
    ]
    assert labels.tolist() == [p[0] for p in expected]
    np.testing.assert_allclose(scores, [p[1] for p in expected], atol=1e-6)


SCHEMES = {
    "IOB2": ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"),
    "BIOES": ("O", "B-PER", "I-PER", "E-PER", "S-PER"),
    "BIOES, two types": ("O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"),
    "IOB2 without O": ("B-PER", "I-PER"),
    "I- without B-": ("O", "I-PER", "B-LOC"),
    "O alone": ("O",),
}
# Logits on a fine grid: the best label sequence is almost always unique.
fine_logit = st.integers(-800, 800).map(lambda x: x / 100)


@st.composite
def scheme_batches(draw: st.DrawFn) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    labels = SCHEMES[draw(st.sampled_from(sorted(SCHEMES)))]
    batch, seq = draw(st.integers(1, 2)), draw(st.integers(1, 7))
    size = batch * seq * len(labels)
    logits = np.array(draw(st.lists(fine_logit, min_size=size, max_size=size)), np.float32)
    most = 4 if len(labels) > 5 else 5  # the brute force tries len(labels) ** words sequences
    num_words = np.array(draw(st.lists(st.integers(0, most), min_size=batch, max_size=batch)), np.int64)
    word_ids = np.array(
        [[draw(st.integers(-1, int(num_words[b]) - 1)) for _ in range(seq)] for b in range(batch)], np.int64
    )
    return labels, logits.reshape(batch, seq, len(labels)), word_ids, num_words


@settings(max_examples=examples(200))
@given(scheme_batches(), st.sampled_from(AGGREGATIONS), st.sampled_from([1.0, 1.6]))
def test_constrained_align_is_the_best_sequence_the_scheme_allows(
    data: tuple, aggregation: str, temperature: float
) -> None:
    labels, logits, word_ids, num_words = data
    assume(not near_tie(logits, word_ids, aggregation))
    decoder = PostProcessor(labels, Aggregation[aggregation.upper()], temperature, constrained=True)
    found, scores = decoder.align(logits, word_ids, num_words)
    expected: list[tuple[int, float]] = []
    for b in range(logits.shape[0]):
        words = reference.word_distributions(
            logits[b].tolist(), word_ids[b].tolist(), int(num_words[b]), aggregation, temperature
        )
        ranked = reference.best_sequences(reference.path_steps(words, labels), labels)
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        assume(second is None or best[:2] != second[:2] or second[2] - best[2] > 1e-6)  # one best sequence
        expected += reference.labels_on_words(words, best[3], labels)
    assert found.tolist() == [label for label, _ in expected]
    np.testing.assert_allclose(scores, [score for _, score in expected], atol=1e-6)


@settings(max_examples=examples(200))
@given(scheme_batches(), st.sampled_from(AGGREGATIONS), st.sampled_from([1.0, 0.7]))
def test_constrained_align_matches_the_reference_viterbi(data: tuple, aggregation: str, temperature: float) -> None:
    """The reference's Viterbi, which test_sdk's PyTorch reference uses on whole texts, is the compiled one."""
    labels, logits, word_ids, num_words = data
    assume(not near_tie(logits, word_ids, aggregation))
    decoder = PostProcessor(labels, Aggregation[aggregation.upper()], temperature, constrained=True)
    found, scores = decoder.align(logits, word_ids, num_words)
    expected = [
        p
        for b in range(logits.shape[0])
        for p in reference.constrained_row(
            logits[b].tolist(), word_ids[b].tolist(), labels, int(num_words[b]), aggregation, temperature
        )
    ]
    assert found.tolist() == [p[0] for p in expected]
    np.testing.assert_allclose(scores, [p[1] for p in expected], atol=1e-6)


@settings(max_examples=examples(200))
@given(scheme_batches(), st.sampled_from(AGGREGATIONS))
# B-PER, a word without subwords (read as O), I-PER: not allowed, so not kept (found by CI before the test read -1 as O)
@example(
    (
        SCHEMES["IOB2"],
        np.array([[[0, 0.01, 0, 0, 0], [0] * 5, [0, 0, 0.01, 0, 0], [0] * 5]], np.float32),
        np.array([[0, 0, 2, 0]]),
        np.array([3]),
    ),
    "first",
)
def test_constrained_align_keeps_labels_the_scheme_already_allows(data: tuple, aggregation: str) -> None:
    labels, logits, word_ids, num_words = data
    plain = PostProcessor(labels, Aggregation[aggregation.upper()], 1.3).align(logits, word_ids, num_words)
    forbidden, no_start, no_end = reference.scheme_allows(labels)
    outside = labels.index("O") if "O" in labels else None  # a word without subwords reads as O, if there is one
    start = 0
    for words in num_words.tolist():
        read = [label if label >= 0 else outside for label in plain[0][start : start + words].tolist()]
        row = [label for label in read if label is not None]
        start += words
        assume(not row or (row[0] not in no_start and row[-1] not in no_end))
        assume(all(pair not in forbidden for pair in itertools.pairwise(row)))
    constrained = PostProcessor(labels, Aggregation[aggregation.upper()], 1.3, constrained=True)
    found = constrained.align(logits, word_ids, num_words)
    assert found[0].tolist() == plain[0].tolist()
    np.testing.assert_allclose(found[1], plain[1], atol=1e-6)


def reencoded(tags: list[str], scheme: str) -> list[str]:
    """The tags of ``tags``' entities (as seqeval reads them) written again in ``scheme``."""
    out = ["O"] * len(tags)
    for type_, first, last in reference.get_entities(tags):
        if scheme == "BIOES" and first == last:
            out[first] = f"S-{type_}"
            continue
        out[first : last + 1] = [f"B-{type_}"] + [f"I-{type_}"] * (last - first)
        if scheme == "BIOES":
            out[last] = f"E-{type_}"
    return out


@settings(max_examples=examples(200))
@given(scheme_batches(), st.sampled_from(AGGREGATIONS))
def test_constrained_labels_read_back_as_the_same_entities(data: tuple, aggregation: str) -> None:
    """Independent of the transition rules: with a full IOB2 or BIOES table, each row's labels (words without
    subwords read as O) are their own entities written again in the scheme, so no tag is read otherwise."""
    labels, logits, word_ids, num_words = data
    scheme = {SCHEMES["IOB2"]: "IOB2", SCHEMES["BIOES"]: "BIOES", SCHEMES["BIOES, two types"]: "BIOES"}.get(labels)
    assume(scheme is not None)
    found, _ = PostProcessor(labels, Aggregation[aggregation.upper()], constrained=True).align(
        logits, word_ids, num_words
    )
    start = 0
    for words in num_words.tolist():
        tags = [labels[k] if k >= 0 else "O" for k in found[start : start + words].tolist()]
        start += words
        assert tags == reencoded(tags, scheme)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_constrained_align_keeps_tiny_probabilities(aggregation: str) -> None:
    """One subword per word: every aggregation reads the same distribution, even where a logit gap of 100 or more
    leaves probabilities far below float's range (Average once took logs of float sums and lost them)."""
    labels = SCHEMES["IOB2"]
    far = {"B-LOC": -300, "I-LOC": -300}
    logits = one_hot_logits(
        labels, [[{"O": 0, "B-PER": -120, "I-PER": -300, **far}, {"O": -200, "B-PER": -200, "I-PER": 0, **far}]]
    )
    # word 0: O, then B-PER (e^-120); word 1: I-PER; the best allowed path is B-PER I-PER
    found, _ = PostProcessor(labels, Aggregation[aggregation.upper()], constrained=True).align(
        logits, np.array([[0, 1]]), np.array([2])
    )
    assert [labels[k] for k in found.tolist()] == ["B-PER", "I-PER"]


def test_a_word_without_subwords_reads_as_o_in_the_path() -> None:
    """decode reads a word without subwords (label -1) as O, so the path must not have I-PER right after it."""
    labels = SCHEMES["IOB2"]
    logits = one_hot_logits(labels, [[{"B-PER": 5}, {"I-PER": 6, "B-PER": 5}]])
    found, scores = PostProcessor(labels, constrained=True).align(logits, np.array([[0, 2]]), np.array([3]))
    assert [labels[k] if k >= 0 else None for k in found.tolist()] == ["B-PER", None, "B-PER"]
    assert scores[1] == 0.0


def one_hot_logits(labels: tuple[str, ...], rows: list[list[dict[str, float]]]) -> np.ndarray:
    """Logits [rows, words, labels]: 0 except the given label: value entries."""
    out = np.zeros((len(rows), max(map(len, rows)), len(labels)), np.float32)
    for r, row in enumerate(rows):
        for w, values in enumerate(row):
            for name, value in values.items():
                out[r, w, labels.index(name)] = value
    return out


def test_constrained_align_mends_what_argmax_breaks() -> None:
    labels = SCHEMES["IOB2"]
    # "O I-PER I-PER": an entity that starts inside; "B-PER I-LOC": one that changes type.
    logits = one_hot_logits(
        labels,
        [
            [{"O": 5}, {"I-PER": 4, "B-PER": 3}, {"I-PER": 5}],
            [{"B-PER": 5}, {"I-LOC": 3, "I-PER": 2.5}, {"O": 5}],
        ],
    )
    word_ids = np.array([[0, 1, 2], [0, 1, 2]], np.int64)
    num_words = np.array([3, 3], np.int64)
    plain, _ = PostProcessor(labels).align(logits, word_ids, num_words)
    found, scores = PostProcessor(labels, constrained=True).align(logits, word_ids, num_words)
    names = [labels[k] for k in found.tolist()]
    assert [labels[k] for k in plain.tolist()] == ["O", "I-PER", "I-PER", "B-PER", "I-LOC", "O"]
    assert names == ["O", "B-PER", "I-PER", "B-PER", "I-PER", "O"]
    # The score is the chosen label's probability, not the top one's.
    assert scores[1] == pytest.approx(reference.softmax(logits[0, 1].tolist())[labels.index("B-PER")], abs=1e-6)
    spans = PostProcessor(labels).decode(found, scores, num_words)
    assert list(zip(spans.row.tolist(), spans.first_word.tolist(), spans.end_word.tolist(), strict=True)) == [
        (0, 1, 3),
        (1, 0, 2),
    ]


def test_constrained_bioes_entities_end_with_an_end_tag() -> None:
    labels = SCHEMES["BIOES"]
    # Argmax: "B-PER O" (an entity never ended) -> the best allowed reading of the two words.
    logits = one_hot_logits(labels, [[{"B-PER": 4, "S-PER": 3}, {"O": 4, "E-PER": 1}]])
    found, _ = PostProcessor(labels, constrained=True).align(logits, np.array([[0, 1]]), np.array([2]))
    assert [labels[k] for k in found.tolist()] == ["S-PER", "O"]
    assert PostProcessor(labels, constrained=True).constrained and not PostProcessor(labels).constrained


@st.composite
def windowed_docs(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Documents and a covering set of (doc, start, length) windows, possibly overlapping."""
    doc_words = draw(st.lists(st.integers(0, 12), min_size=1, max_size=4))
    windows: list[tuple[int, int, int]] = []
    for doc, n in enumerate(doc_words):
        start = 0
        while start < n:
            length = draw(st.integers(1, n - start))
            windows.append((doc, start, length))
            if start + length >= n:
                break
            start = draw(st.integers(start + 1, start + length))
    return doc_words, draw(st.permutations(windows))


@settings(max_examples=examples(300))
@given(windowed_docs(), st.randoms(use_true_random=False), st.integers(1, 4))
def test_window_merger_matches_reference(data: tuple, rng, calls: int) -> None:
    doc_words, windows = data
    predictions = [[(rng.randrange(-1, 3), rng.random()) for _ in range(length)] for _, _, length in windows]
    merger = WindowMerger()
    assert [merger.add_document(n) for n in doc_words] == list(range(len(doc_words)))
    # The windows arrive in any order, over several calls.
    step = -(-len(windows) // calls) if windows else 1
    for first in range(0, len(windows), step):
        part = range(first, min(first + step, len(windows)))
        flat = [p for w in part for p in predictions[w]]
        merger.merge(
            np.array([windows[w][0] for w in part], np.int64),
            np.array([windows[w][1] for w in part], np.int64),
            np.array([windows[w][2] for w in part], np.int64),
            np.array([p[0] for p in flat], np.int32),
            np.array([p[1] for p in flat], np.float32),
        )
    labels, scores, taken = merger.take(len(doc_words))
    expected = reference.merge_windows(
        [(doc, start, p) for (doc, start, _), p in zip(windows, predictions, strict=True)], doc_words
    )
    flat_expected = [p for doc in expected for p in doc]
    assert taken.tolist() == doc_words and merger.pending == 0
    assert labels.tolist() == [p[0] for p in flat_expected]
    np.testing.assert_array_equal(scores, np.array([p[1] for p in flat_expected], np.float32))


tag_sequences = st.lists(st.lists(st.integers(-1, len(LABELS) - 1), max_size=15), min_size=1, max_size=5)


@settings(max_examples=examples(500))
@given(tag_sequences, st.data())
def test_decode_spans_matches_reference_and_seqeval(rows: list[list[int]], data: st.DataObject) -> None:
    flat = [label for row in rows for label in row]
    scores = data.draw(st.lists(st.floats(0, 1, width=32), min_size=len(flat), max_size=len(flat)))
    spans = DECODER.decode(
        np.array(flat, np.int32), np.array(scores, np.float32), np.array([len(r) for r in rows], np.int64)
    )
    got = list(
        zip(spans.row.tolist(), spans.type.tolist(), spans.first_word.tolist(), spans.end_word.tolist(), strict=True)
    )
    expected = []
    offset = 0
    for r, row in enumerate(rows):
        names = [LABELS[label] if label >= 0 else "O" for label in row]
        ours = reference.decode_row(row, scores[offset : offset + len(row)], LABELS)
        theirs = seqeval_entities(names)
        assert [(t, f, e - 1) for t, f, e, _ in ours] == theirs
        expected += [(r, DECODER.types.index(t), f, e) for t, f, e, _ in ours]
        np.testing.assert_allclose(spans.score[spans.row == r], [s for *_, s in ours], rtol=1e-5, atol=1e-7)
        offset += len(row)
    assert got == expected


# A table without ORG and MISC too: there, organisation endings do not apply and read as joined words.
LINK_TABLES = (LABELS, LABELS[:9])


@pytest.mark.parametrize("labels", LINK_TABLES, ids=["PER-LOC-ORG-MISC", "PER-LOC"])
@settings(max_examples=examples(500))
@given(rows=tag_sequences, data=st.data())
def test_decode_with_word_links_matches_reference(
    labels: tuple[str, ...], rows: list[list[int]], data: st.DataObject
) -> None:
    decoder = PostProcessor(labels)
    rows = [[label % len(labels) if label >= 0 else label for label in row] for row in rows]
    flat = [label for row in rows for label in row]
    links = data.draw(
        st.lists(
            st.sampled_from([WORD_FREE, WORD_JOINED, WORD_PARTICLE, WORD_PLACE_ENDING, WORD_ORG_ENDING, WORD_NAME_DOT]),
            min_size=len(flat),
            max_size=len(flat),
        )
    )
    scores = data.draw(st.lists(st.floats(0, 1, width=32), min_size=len(flat), max_size=len(flat)))
    lengths = np.array([len(r) for r in rows], np.int64)
    spans = decoder.decode(
        np.array(flat, np.int32), np.array(scores, np.float32), lengths, word_links=np.array(links, np.uint8)
    )
    expected, offset = [], 0
    for r, row in enumerate(rows):
        ours = reference.decode_row(row, scores[offset : offset + len(row)], labels, links[offset : offset + len(row)])
        expected += [(r, decoder.types.index(t), f, e) for t, f, e, _ in ours]
        np.testing.assert_allclose(spans.score[spans.row == r], [s for *_, s in ours], rtol=1e-5, atol=1e-7)
        offset += len(row)
    got = zip(spans.row.tolist(), spans.type.tolist(), spans.first_word.tolist(), spans.end_word.tolist(), strict=True)
    assert list(got) == expected


def test_word_links_keep_a_cut_name_whole_and_particles_out() -> None:
    decoder = PostProcessor(["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"])
    # 华|为 (B-ORG B-ORG, joined) 在 (O) | 부산|을 (B-LOC I-LOC, the particle) | Angela Merkel-like free B B
    labels = np.array([1, 1, 0, 3, 4, 1, 1], np.int32)
    links = np.array([WORD_FREE, WORD_JOINED, WORD_JOINED, WORD_FREE, WORD_PARTICLE, WORD_FREE, WORD_FREE], np.uint8)
    starts, ends = np.array([0, 1, 2, 4, 6, 8, 12]), np.array([1, 2, 3, 6, 7, 11, 15])
    spans = decoder.decode(labels, np.ones(7, np.float32), np.array([7]), starts, ends, word_links=links)
    assert list(zip(spans.first_word.tolist(), spans.end_word.tolist(), strict=True)) == [
        (0, 2),
        (3, 4),
        (5, 6),
        (6, 7),
    ]
    assert spans.start_char.tolist() == [0, 4, 8, 12] and spans.end_char.tolist() == [2, 6, 11, 15]
    free = decoder.decode(labels, np.ones(7, np.float32), np.array([7]))  # without links: as tagged
    assert list(zip(free.first_word.tolist(), free.end_word.tolist(), strict=True)) == [
        (0, 1),
        (1, 2),
        (3, 5),
        (5, 6),
        (6, 7),
    ]


def test_decode_spans_iob1_iob2_and_char_offsets() -> None:
    decoder = PostProcessor(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    # IOB1: I-PER I-PER B-PER I-LOC -> [PER 0-1] [PER 2] [LOC 3]; IOB2 reading of I-after-O is the same.
    labels = np.array([2, 2, 1, 4, 0], np.int32)
    starts = np.array([0, 5, 9, 14, 20], np.int64)
    ends = np.array([4, 8, 13, 19, 21], np.int64)
    spans = decoder.decode(labels, np.ones(5, np.float32), np.array([5]), starts, ends)
    assert len(spans) == 3
    assert spans.first_word.tolist() == [0, 2, 3]
    assert spans.end_word.tolist() == [2, 3, 4]
    assert [decoder.types[t] for t in spans.type] == ["PER", "PER", "LOC"]
    assert spans.start_char.tolist() == [0, 9, 14]
    assert spans.end_char.tolist() == [8, 13, 19]
    without = decoder.decode(labels, np.ones(5, np.float32), np.array([5]))
    assert without.start_char.shape == without.end_char.shape == (0,)
    assert without.start_char.dtype == without.end_char.dtype == np.int64  # was float64 when spans were found


LOGITS = np.zeros((2, 3, 4), np.float32)
WORD_IDS = np.array([[-1, 0, 1], [-1, 0, -1]], np.int64)
NUM_WORDS = np.array([2, 1], np.int64)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((LOGITS.astype(np.float64), WORD_IDS, NUM_WORDS), TypeError, "logits must be a float32"),
        ((LOGITS.tolist(), WORD_IDS, NUM_WORDS), TypeError, "logits must be a numpy array"),
        ((LOGITS, WORD_IDS.astype(np.float32), NUM_WORDS), TypeError, "word_ids must be an integer"),
        ((LOGITS[0], WORD_IDS, NUM_WORDS), ValueError, "logits must have 3 dimensions"),
        ((LOGITS, WORD_IDS[:, :2], NUM_WORDS), ValueError, "word_ids has shape"),
        ((LOGITS, WORD_IDS, NUM_WORDS[:1]), ValueError, "num_words has shape"),
        ((LOGITS, WORD_IDS + 1, NUM_WORDS), ValueError, r"word_ids\[0, 2\] = 2 is out of range"),
        ((LOGITS, WORD_IDS.astype(np.uint64), NUM_WORDS), ValueError, r"word_ids\[0, 0\] = 18446744073709551615 does"),
        ((LOGITS, WORD_IDS - 1, NUM_WORDS), ValueError, r"word_ids\[0, 0\] = -2 is out of range"),
        ((LOGITS, WORD_IDS, -NUM_WORDS), ValueError, "num_words"),
        ((np.full_like(LOGITS, np.nan), WORD_IDS, NUM_WORDS), ValueError, "logits has a non-finite"),
        ((LOGITS[:, :, :3], WORD_IDS, NUM_WORDS), ValueError, "logits have 3 labels, the model's label table has 4"),
    ],
)
def test_align_rejects_bad_input(args: tuple, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        postprocessor(4).align(*args)


def test_labels_and_aggregation_are_checked_once() -> None:
    with pytest.raises(ValueError, match=r"label 1 \('X-PER'\) is not O or <B\|I\|E\|S>-<TYPE>"):
        PostProcessor(["O", "X-PER"])
    with pytest.raises(TypeError):
        PostProcessor(["O", "B-PER"], "mean")  # type: ignore[arg-type]
    decoder = PostProcessor(["O", "B-PER", "I-PER", "S-LOC"], Aggregation.MAX)
    assert decoder.types == ["PER", "LOC"] and decoder.aggregation == Aggregation.MAX


def test_window_merger_rejects_bad_input() -> None:
    one = np.array([0], np.int64)
    labels, scores = np.zeros(2, np.int32), np.zeros(2, np.float32)
    merger = WindowMerger()
    merger.add_document(3)
    with pytest.raises(ValueError, match="outside document"):
        merger.merge(one, np.array([2]), np.array([2]), labels, scores)
    with pytest.raises(ValueError, match=r"window_doc\[0\] = 1 is not a pending document"):
        merger.merge(np.array([1]), one, np.array([2]), labels, scores)
    with pytest.raises(ValueError, match="labels has shape"):
        merger.merge(one, one, np.array([3]), labels, scores)
    with pytest.raises(TypeError, match="labels must be an int32"):
        merger.merge(one, one, np.array([2]), labels.astype(np.int64), scores)
    merger.merge(one, one, np.array([2]), labels, scores)
    with pytest.raises(ValueError, match="word 2 of document 0 is not covered"):
        merger.take(1)
    with pytest.raises(ValueError, match="count 2 is not in"):
        merger.take(2)
    with pytest.raises(ValueError, match=r"num_words = -1 is not in \[0, "):
        merger.add_document(-1)


def test_any_integer_width_and_byte_order_is_read() -> None:
    # A uint64 array once became a null array (a segfault); byte-swapped arrays were refused.
    labels = np.array([1, 2], np.uint64)
    spans = DECODER.decode(labels, np.ones(2, ">f4"), np.array([2], ">u8"), np.array([0, 3], ">i2"), np.array([2, 5]))
    assert spans.end_word.tolist() == [2] and spans.end_char.tolist() == [5]
    merger = WindowMerger()
    merger.add_document(2)
    merger.merge(
        np.zeros(1, np.uint64), np.zeros(1, np.uint8), np.array([2], ">u4"), labels.astype(">i4"), np.ones(2, ">f4")
    )
    assert merger.take(1)[0].tolist() == [1, 2]


def test_decode_rejects_bad_input() -> None:
    one = np.array([0])
    with pytest.raises(ValueError, match=r"labels\[1\] = 17 is out of range"):
        DECODER.decode(np.array([0, 17]), np.zeros(2, np.float32), np.array([2]))
    with pytest.raises(ValueError, match=r"labels\[0\] = 4294967296 is out of range"):
        DECODER.decode(np.array([2**32]), np.zeros(1, np.float32), np.array([1]))
    with pytest.raises(ValueError, match="scores has shape"):
        DECODER.decode(np.array([0, 1]), np.zeros(3, np.float32), np.array([2]))
    with pytest.raises(ValueError, match="labels has 2 words but row_words sums to 3"):
        DECODER.decode(np.array([0, 1]), np.zeros(2, np.float32), np.array([3]))
    with pytest.raises(ValueError, match="given together"):
        DECODER.decode(np.array([0]), np.zeros(1, np.float32), np.array([1]), one)
    with pytest.raises(ValueError, match="not finite"):
        DECODER.decode(np.array([0]), np.array([np.nan], np.float32), np.array([1]))
    with pytest.raises(ValueError, match="valid"):
        DECODER.decode(np.array([0]), np.zeros(1, np.float32), np.array([1]), one, one - 1)
    with pytest.raises(ValueError, match=r"word_links\[1\] = 6 is not a WordLink"):
        DECODER.decode(np.array([0, 1]), np.zeros(2, np.float32), np.array([2]), word_links=np.array([0, 6], np.uint8))
    with pytest.raises(ValueError, match="word_links has shape"):
        DECODER.decode(np.array([0, 1]), np.zeros(2, np.float32), np.array([2]), word_links=np.zeros(3, np.uint8))
    with pytest.raises(TypeError, match="word_links must be a uint8 array"):
        DECODER.decode(np.array([0]), np.zeros(1, np.float32), np.array([1]), word_links=np.zeros(1, np.int64))
