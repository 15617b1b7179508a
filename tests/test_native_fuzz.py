"""Every entry point of the compiled module, fed any dtype, shape and value: a result or a Python exception.

A crash (a segfault, an abort) is a bug in csrc/. Each property starts from arguments that are nearly valid
(so the calls get past the first check) and mixes in wrong dtypes, layouts, shapes, and the edge values of
every integer width. A call that succeeds must have had valid input, checked here in plain Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nertron._native import Aggregation, PostProcessor, WindowMerger

from tests.properties import examples

REJECTED = (TypeError, ValueError, IndexError, OverflowError)
LABELS = ("O", "B-PER", "I-PER", "E-LOC", "S-LOC")
INT_DTYPES = [np.dtype(t) for t in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i4", ">i8", ">u8")]
OTHER_DTYPES = [np.dtype(t) for t in ("f2", "f4", "f8", ">f4", "?", "c8", "O", "U2", "S2", "M8[s]")]
# The limits of every integer width, and just past the words limit; nothing in between, where a size that
# is valid but large would allocate gigabytes.
EDGES = sorted({-1, 0, 1, 2**30 + 1, *(int(getattr(np.iinfo(t), end)) for t in INT_DTYPES for end in ("min", "max"))})


def elements_of(dtype: np.dtype, edges: bool) -> st.SearchStrategy[Any] | None:
    """Small values of the dtype, with its edge values too if edges."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        small = st.integers(max(info.min, -2), 6)
        return small | st.sampled_from([v for v in EDGES if info.min <= v <= info.max]) if edges else small
    if dtype.kind == "f":
        info = np.finfo(dtype)
        small = st.floats(-4, 4, width=16 if dtype.itemsize == 2 else 32)
        extremes = [np.nan, np.inf, -np.inf, -0.0, float(info.max), float(info.min), float(info.smallest_subnormal)]
        return small | st.sampled_from(extremes) if edges else small
    if dtype.kind == "O":
        return st.none() | st.integers(-2, 6) | st.text(max_size=2)
    return None  # hypothesis's own values for the dtype


def relaid(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout: Fortran order, strided, reversed, or read-only."""
    if a.ndim == 0 or layout == "c":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if layout == "reversed":
        return a[::-1]
    a = a.copy()
    a.flags.writeable = False
    return a


@st.composite
def arrays(draw: st.DrawFn, dtypes: list[np.dtype], shape: tuple[int, ...]) -> np.ndarray:
    dtype = draw(st.sampled_from(dtypes))
    a = draw(hnp.arrays(dtype, shape, elements=elements_of(dtype, edges=draw(st.booleans()))))
    return relaid(a, draw(st.sampled_from(["c", "fortran", "strided", "reversed", "readonly"])))


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
anything = st.one_of(
    shapes.flatmap(lambda shape: arrays(INT_DTYPES + OTHER_DTYPES, shape)),
    st.none(),
    st.sampled_from(EDGES),
    st.floats(),
    st.text(max_size=3),
    st.lists(st.integers(-1, 3), max_size=3),
)


def int_arrays(*shape: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(INT_DTYPES, shape)


def float32_arrays(*shape: int) -> st.SearchStrategy[np.ndarray]:
    return arrays([np.dtype(np.float32), np.dtype(">f4")], shape)


def break_one(draw: st.DrawFn, *args: Any) -> tuple[Any, ...]:
    """The arguments, one of them (half the time) replaced by anything at all (e.g. of another shape)."""
    if draw(st.booleans()):
        return args
    which = draw(st.integers(0, len(args) - 1))
    return (*args[:which], draw(anything), *args[which + 1 :])


def as_ints(a: Any) -> list[int] | None:
    """The values of an integer array as Python ints (no overflow), else None."""
    if isinstance(a, np.ndarray) and a.dtype.kind in "iu":
        return [int(v) for v in a.ravel()]
    return None


@given(
    st.lists(st.sampled_from(["O", "B-PER", "I-LOC", "E-X", "S-Y", "X-PER", "B-", "", "O-", "BB-X"]), max_size=4)
    | anything,
    st.sampled_from(list(Aggregation)) | anything,
    st.floats() | st.sampled_from([1e-39, 3.5e38, 1e39, 10**400]) | anything,
)
@settings(max_examples=examples(300))
@example(["O"], Aggregation.FIRST, 1e39)  # a double beyond float's range, narrowed to float
@example(["O"], Aggregation.FIRST, 1e-39)  # a float whose inverse overflows
def test_postprocessor_construction(labels: Any, aggregation: Any, temperature: Any) -> None:
    try:
        made = PostProcessor(labels, aggregation, temperature, constrained=True)
    except REJECTED:
        return
    float_max = float(np.finfo(np.float32).max)
    assert 0 < made.temperature <= float_max and 1 / made.temperature <= float_max
    assert isinstance(made.aggregation, Aggregation) and made.labels and made.constrained


@st.composite
def align_args(draw: st.DrawFn) -> tuple[Any, ...]:
    batch, seq = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    logits = draw(float32_arrays(batch, seq, len(LABELS)))
    word_ids = draw(int_arrays(batch, seq))
    num_words = draw(int_arrays(batch))
    return break_one(draw, logits, word_ids, num_words)


@given(st.sampled_from(list(Aggregation)), align_args(), st.booleans())
@settings(max_examples=examples(300))
# A uint64 array once became a null array: a segfault.
@example(Aggregation.FIRST, (np.zeros((1, 1, 5), np.float32), np.zeros((1, 1), np.uint64), np.array([1])), False)
def test_align(aggregation: Aggregation, args: tuple[Any, ...], constrained: bool) -> None:
    try:
        labels, scores = PostProcessor(LABELS, aggregation, 0.5, constrained=constrained).align(*args)
    except REJECTED:
        return
    words = as_ints(args[2])
    assert words is not None and all(n >= 0 for n in words)
    assert labels.shape == scores.shape == (sum(words),)
    assert all(-1 <= label < len(LABELS) for label in labels.tolist())


@st.composite
def decode_args(draw: st.DrawFn) -> tuple[Any, ...]:
    rows = draw(st.lists(st.integers(0, 4), max_size=3))
    words = sum(rows)
    row_words = draw(st.sampled_from(INT_DTYPES).map(lambda t: np.array(rows, t)) | int_arrays(len(rows)))
    labels = draw(int_arrays(words))
    scores = draw(float32_arrays(words))
    starts = draw(st.none() | int_arrays(words))
    ends = draw(st.just(starts) | int_arrays(words))
    return break_one(draw, labels, scores, row_words, starts, ends)


@given(decode_args())
@settings(max_examples=examples(300))
@example((np.array([0], np.uint64), np.zeros(1, np.float32), np.array([1]), None, None))  # a segfault
def test_decode(args: tuple[Any, ...]) -> None:
    try:
        spans = PostProcessor(LABELS).decode(*args)
    except REJECTED:
        return
    labels, row_words = as_ints(args[0]), as_ints(args[2])
    assert labels is not None and row_words is not None and sum(row_words) == len(labels)
    ends = spans.end_word.tolist()
    assert all(0 < end <= row_words[row] for row, end in zip(spans.row.tolist(), ends, strict=True))


@st.composite
def merge_args(draw: st.DrawFn) -> tuple[Any, ...]:
    windows = draw(st.integers(0, 3))
    window_doc = draw(int_arrays(windows))
    word_start = draw(int_arrays(windows))
    window_words = draw(int_arrays(windows))
    counts = as_ints(window_words)
    words = sum(n for n in counts if 0 <= n <= 8) if counts else 0
    labels = draw(arrays([np.dtype(np.int32), np.dtype(">i4")], (words,)))
    scores = draw(float32_arrays(words))
    return break_one(draw, window_doc, word_start, window_words, labels, scores)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=3), merge_args())
@settings(max_examples=examples(300))
# word_start + window_words wrapped around, passed the check, and the window was written out of bounds.
@example([3], (np.array([0]), np.array([2**63 - 1]), np.array([2]), np.zeros(2, np.int32), np.zeros(2, np.float32)))
def test_merge(documents: list[int], args: tuple[Any, ...]) -> None:
    merger = WindowMerger()
    for n in documents:
        merger.add_document(n)
    try:
        merger.merge(*args)
    except REJECTED:
        return
    # It merged: every window was inside its document.
    docs, starts, counts = (as_ints(a) for a in args[:3])
    assert docs is not None and starts is not None and counts is not None
    for d, start, n in zip(docs, starts, counts, strict=True):
        assert 0 <= d < len(documents) and 0 <= start <= start + n <= documents[d]


@given(st.lists(st.sampled_from(EDGES) | st.integers(-2, 6) | anything, max_size=4), st.sampled_from(EDGES) | anything)
@settings(max_examples=examples(300))
def test_add_document_and_take(sizes: list[Any], count: Any) -> None:
    merger = WindowMerger()
    added = 0
    for n in sizes:
        try:
            merger.add_document(n)
            added += 1
        except REJECTED:
            assert not isinstance(n, int) or not 0 <= n <= 2**30
    assert merger.pending == added
    try:
        _, _, doc_words = merger.take(count)
    except REJECTED:
        return
    assert merger.pending == added - len(doc_words)


@pytest.mark.parametrize("n", [-1, 2**30 + 1, 2**63 - 1])
def test_sizes_beyond_the_limits_are_rejected(n: int) -> None:
    with pytest.raises(ValueError, match="num_words"):
        WindowMerger().add_document(n)
