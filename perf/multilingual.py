"""Entity F1 of models on a small hand-annotated probe in twelve languages other than English.

    python perf/multilingual.py [--model BUNDLE ...]     # default: the embedded model (int8)

``perf/data/multilingual_probe.jsonl`` holds 72 news-style sentences (de, es, nl, fr, it, pt, ru, and zh, ja,
ar, hi, th; six each) written for this check and annotated with CoNLL's types; none comes from any training
data. Chinese, Japanese and Thai are written without spaces: they test the word segmentation too. An entity
counts as right when its text and type equal a gold one in the same sentence. The probe is small: it is
there to catch a model that loses other languages while it gains English, not to rank close models.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from nertron import NER

PROBE = Path(__file__).parent / "data" / "multilingual_probe.jsonl"


def score(model: str | None, rows: list[dict]) -> dict[str, tuple[int, int, int]]:
    """Per language (correct, found, gold) counts; ``"all"`` sums them."""
    counts: dict[str, Counter] = {}
    with NER(model) as ner:
        found_all = ner.batch([r["text"] for r in rows])
    for row, found in zip(rows, found_all, strict=True):
        gold = Counter(tuple(e) for e in row["entities"])
        predicted = Counter((e.text, e.label) for e in found)
        for key in (row["lang"], "all"):
            c = counts.setdefault(key, Counter())
            c["correct"] += sum((gold & predicted).values())
            c["found"] += sum(predicted.values())
            c["gold"] += sum(gold.values())
    return {k: (c["correct"], c["found"], c["gold"]) for k, c in counts.items()}


def f1(correct: int, found: int, gold: int) -> float:
    return 200 * correct / (found + gold) if found + gold else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle directory (repeatable); default: embedded int8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [json.loads(line) for line in PROBE.read_text(encoding="utf-8").splitlines() if line.strip()]
    models = args.model or [None]
    results = {str(m or "embedded"): score(m, rows) for m in models}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    languages = [*dict.fromkeys(r["lang"] for r in rows), "all"]
    print(f"{'model':<60} " + " ".join(f"{lang:>6}" for lang in languages))
    for name, counts in results.items():
        print(f"{name[-60:]:<60} " + " ".join(f"{f1(*counts[lang]):6.1f}" for lang in languages))
    gold = sum(len(r["entities"]) for r in rows)
    print(f"(entity F1 on {len(rows)} sentences, {gold} gold entities; text and type must match)")


if __name__ == "__main__":
    main()
