"""Calibrated entity scores: how often an entity with score s is right, measured and fitted.

An entity's score is the mean probability of its words' labels. Temperature scaling divides the logits by
``T`` before the softmax: it moves scores, never labels, so the entities found stay the same. ``T`` is
fitted on held-out data (dev) by minimising the log-loss of "this entity is right" (type and span exactly
as gold, conlleval's sense) and stored in the bundle's manifest as a ``Calibration``; every way of running
the bundle (in-process, Triton, Spark) reads it from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nertron.extras import require

BINS = 10  # equal-width score bins of the reliability diagram and the ECE
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class ScoredEntities:
    """The predicted entities of a run: each one's score and whether it is right; ``gold``: gold entities."""

    scores: np.ndarray  # float64
    correct: np.ndarray  # bool
    gold: int

    @classmethod
    def concatenate(cls, parts: Sequence[ScoredEntities]) -> ScoredEntities:
        return cls(
            np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
            np.concatenate([p.correct for p in parts]) if parts else np.zeros(0, bool),
            sum(p.gold for p in parts),
        )

    def ece(self, bins: int = BINS) -> float:
        """Expected calibration error: the count-weighted mean of |accuracy - mean score| over score bins."""
        return float(sum(b.count * abs(b.accuracy - b.mean_score) for b in self.reliability(bins)) / max(1, self.n))

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def reliability(self, bins: int = BINS) -> list[ReliabilityBin]:
        """The non-empty equal-width score bins: how many entities, their mean score, how many are right."""
        index = np.minimum((self.scores * bins).astype(np.int64), bins - 1)
        out = []
        for b in range(bins):
            members = index == b
            count = int(members.sum())
            if count:
                out.append(
                    ReliabilityBin(
                        b / bins,
                        (b + 1) / bins,
                        count,
                        float(self.scores[members].mean()),
                        float(self.correct[members].mean()),
                    )
                )
        return out

    def log_loss(self) -> float:
        """Mean binary cross-entropy of the scores as probabilities of being right."""
        p = np.clip(self.scores, 1e-7, 1 - 1e-7)
        return float(-np.mean(np.where(self.correct, np.log(p), np.log1p(-p)))) if self.n else 0.0

    def at_thresholds(self, thresholds: Iterable[float] = THRESHOLDS) -> list[ThresholdScores]:
        """Entity precision, recall and F1 keeping only entities scored at least each threshold."""
        out = []
        for threshold in thresholds:
            kept = self.scores >= threshold
            found, correct = int(kept.sum()), int(self.correct[kept].sum())
            precision = correct / found if found else 0.0
            recall = correct / self.gold if self.gold else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append(ThresholdScores(float(threshold), found, precision, recall, f1))
        return out


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_score: float
    accuracy: float


@dataclass(frozen=True)
class ThresholdScores:
    threshold: float
    found: int
    precision: float
    recall: float
    f1: float


def fit_temperature(
    score_at: Callable[[float], ScoredEntities], *, low: float = 0.25, high: float = 8.0, tolerance: float = 0.002
) -> float:
    """The temperature in ``[low, high]`` whose entities have the least log-loss (golden-section search over
    log T; the loss is unimodal in T for a fixed set of entities). ``score_at(T)``: the entities at ``T``."""
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = score_at(math.exp(c)).log_loss(), score_at(math.exp(d)).log_loss()
    while b - a > tolerance:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = score_at(math.exp(c)).log_loss()
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = score_at(math.exp(d)).log_loss()
    return round(math.exp((a + b) / 2), 4)


class RecordingBackend:
    """Wraps a backend and keeps every batch's logits, in order, so that post-processing can be re-run
    (``replay``) without running the model again."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.runtime = backend.runtime
        self.concurrency = backend.concurrency
        self.logits: list[np.ndarray] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = self.backend(input_ids, attention_mask)
        self.logits.append(logits)
        return logits

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        for logits in self.backend.map(batches):
            self.logits.append(logits)
            yield logits

    def replay(self) -> ReplayBackend:
        return ReplayBackend(self.logits, self.runtime, self.concurrency)

    def close(self) -> None:
        self.backend.close()


class ReplayBackend:
    """Gives back recorded logits in the order they were recorded (the same inputs give the same batches)."""

    def __init__(self, logits: list[np.ndarray], runtime: str, concurrency: int) -> None:
        self._logits = iter(logits)
        self.runtime = runtime
        self.concurrency = concurrency

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = next(self._logits)
        if logits.shape[:2] != input_ids.shape:
            raise RuntimeError(f"replayed logits {logits.shape} do not fit the batch {input_ids.shape}")
        return logits

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        for input_ids, attention_mask in batches:
            yield self(input_ids, attention_mask)

    def close(self) -> None:
        pass


def plot_reliability(path: str | Path, curves: dict[str, ScoredEntities], *, title: str = "", bins: int = BINS) -> None:
    """Writes a reliability diagram (PNG): accuracy against mean score per bin for each named curve, with
    the ECE in the legend, and the share of entities per bin below. Needs matplotlib."""
    matplotlib = require("matplotlib", "a reliability diagram")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    width = 0.8 / bins / max(1, len(curves))
    for k, (name, entities) in enumerate(curves.items()):
        points = entities.reliability(bins)
        top.plot(
            [p.mean_score for p in points],
            [p.accuracy for p in points],
            marker="o",
            label=f"{name} (ECE {entities.ece(bins):.3f})",
        )
        bottom.bar(
            [(p.low + p.high) / 2 + (k - (len(curves) - 1) / 2) * width for p in points],
            [p.count / max(1, entities.n) for p in points],
            width=width,
            label=name,
        )
    top.set(ylabel="fraction of entities that are right", xlim=(0, 1), ylim=(0, 1.02), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="entity score", ylabel="share of entities", yscale="log")
    figure.savefig(path, dpi=120)
    plt.close(figure)
