"""Entity F1 of models on a small hand-annotated probe in thirteen languages other than English.

    python perf/multilingual.py [--model BUNDLE | --package DIR ...] [--without-links]   # default: embedded int8

``perf/data/multilingual_probe.jsonl`` holds 134 news-style sentences written for this check and annotated
with CoNLL's types; none comes from any data set. Twenty each in the languages whose words a user's text does
not separate by spaces, or not fully: Chinese, Japanese, Thai (cut by ICU's dictionaries) and Korean (spaces,
with case particles glued to nouns); six each in de, es, nl, fr, it, pt, ru, ar, hi. An entity counts as
right when its text and type equal a gold one in the same sentence (whole-entity F1).

Besides F1, per language: **cut**, found entities that lie inside a gold name and are shorter (华 for 华为),
and **overrun**, found entities that hold a gold name and more (부산을 for 부산). ``--without-links`` adds the
same model with its segmenter's word links dropped (``SegmentedText.links``), which is what nertron did
before entities were kept whole across the segmenter's cuts and particles left out. The probe is small: it
catches a model or a rule that loses a language, it does not rank close models.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from nertron import NER
from nertron._native import WORD_PARTICLE
from nertron.model.default import default_bundle
from nertron.pipeline import segment
from nertron.text import SegmentedText

PROBE = Path(__file__).parent / "data" / "multilingual_probe.jsonl"


def without_links(text: str) -> SegmentedText:
    """nertron's segmentation as it was before word links: every word free (entities end wherever the model's
    tags say), and Korean particles left on their nouns."""
    segmented = segment(text)
    if segmented.links is None:
        return segmented
    keep = segmented.links != WORD_PARTICLE
    ends = segmented.ends.copy()
    particles = np.flatnonzero(~keep)
    ends[particles - 1] = ends[particles]  # a particle's noun ends where the particle did
    unmarked = segmented.unmarked[keep] if segmented.unmarked is not None else None
    lengths = np.add.reduceat(keep, np.r_[0, np.cumsum(segmented.sentence_lengths)[:-1]])
    return SegmentedText(
        text,
        segmented.starts[keep],
        ends[keep],
        lengths.astype(np.int64),
        unmarked if unmarked is not None and unmarked.any() else None,
    )


def gold_spans(row: dict[str, Any]) -> list[tuple[int, int]]:
    """Character spans of the gold entities (each gold text's first occurrence in the sentence)."""
    return [(row["text"].index(text), row["text"].index(text) + len(text)) for text, _ in row["entities"]]


def score(ner: NER, rows: list[dict[str, Any]], links: bool = True) -> dict[str, Counter[str]]:
    """Per language (and ``"all"``): correct, found, gold, cut and overrun counts."""
    pipeline = ner.pipeline if links else ner.pipeline.replace(segmenter=without_links)
    counts: dict[str, Counter[str]] = {}
    for row, found in zip(rows, pipeline.entities(r["text"] for r in rows), strict=True):
        gold = Counter(tuple(e) for e in row["entities"])
        predicted = Counter((e.text, e.label) for e in found)
        spans = gold_spans(row)
        cut = sum(any(s <= e.start and e.end <= t and e.end - e.start < t - s for s, t in spans) for e in found)
        overrun = sum(any(e.start <= s and t <= e.end and e.end - e.start > t - s for s, t in spans) for e in found)
        for key in (row["lang"], "all"):
            c = counts.setdefault(key, Counter())
            c["correct"] += sum((gold & predicted).values())
            c["found"] += sum(predicted.values())
            c["gold"] += sum(gold.values())
            c["cut"] += cut
            c["overrun"] += overrun
    return counts


def f1(c: Counter[str]) -> float:
    return 200 * c["correct"] / (c["found"] + c["gold"]) if c["found"] + c["gold"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle directory (repeatable); default: embedded int8")
    parser.add_argument(
        "--package", action="append", type=Path, help="an embedded-model package (nertron_export.ship), int8"
    )
    parser.add_argument("--without-links", action="store_true", help="also each model with word links dropped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [json.loads(line) for line in PROBE.read_text(encoding="utf-8").splitlines() if line.strip()]
    results: dict[str, dict[str, Counter[str]]] = {}
    models: list[tuple[str | None, str | Path | None]] = [(m, m) for m in args.model or []]
    models += [(str(p), default_bundle("int8", package_dir=p)) for p in args.package or []]
    for shown, model in models or [(None, None)]:
        with NER(model) as ner:
            name = shown or f"embedded ({ner.precision})"
            results[name] = score(ner, rows)
            if args.without_links:
                results[f"{name}, without word links"] = score(ner, rows, links=False)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    languages = [*dict.fromkeys(r["lang"] for r in rows), "all"]
    print("| model | " + " | ".join(languages) + " |")
    print("|---|" + "---:|" * len(languages))
    for name, counts in results.items():
        print(f"| {name} | " + " | ".join(f"{f1(counts[lang]):.1f}" for lang in languages) + " |")
    print("\ncut (inside a gold name, shorter) / overrun (a gold name and more), per language:\n")
    print("| model | " + " | ".join(languages) + " |")
    print("|---|" + "---:|" * len(languages))
    for name, counts in results.items():
        cells = (f"{counts[lang]['cut']} / {counts[lang]['overrun']}" for lang in languages)
        print(f"| {name} | " + " | ".join(cells) + " |")
    gold = sum(len(r["entities"]) for r in rows)
    print(f"\nentity F1 on {len(rows)} sentences, {gold} gold entities; text and type must match")


if __name__ == "__main__":
    main()
