"""The language table: entity F1 per language and context, for the README and the model card.

    python perf/languages.py [--model BUNDLE | --package DIR] [--precision int8|fp32] [--test] [--argmax]

Scores a model (default: the embedded model, int8) on every labelled dev set in ``../shared/data``: English
CoNLL-2003 dev, Spanish and Dutch CoNLL-2002 dev (``testa``), German CoNLL-2003 dev (``testa``); ``--test``
adds English test (measure it once, after choosing on dev). Each sentence alone, then each document whole:
the same as ``nertron eval --data FILE --context both`` per file. Chinese dev (People's Daily, per character,
PER/ORG/LOC) is scored as a user meets it: raw text, character spans, MISC left out (``nertron eval --input
raw --join nothing --types PER,ORG,LOC``; each sentence alone, the file marks no documents). Prints a
Markdown table. ``--argmax`` adds the scores with each word's most likely label, as nertron decoded before it
constrained labels to the tag scheme (``Pipeline.with_constrained_labels(False)``), in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from nertron import NER
from nertron.evaluation import evaluate
from nertron.io.conll import read_conll
from nertron.model.default import PACKAGE_DIR, default_bundle
from nertron.raw_evaluation import evaluate_raw

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV_SETS = {
    "English (CoNLL-2003 dev)": DATA / "conll2003" / "dev.txt",
    "Spanish (CoNLL-2002 dev)": DATA / "multilingual" / "es" / "dev.txt",
    "Dutch (CoNLL-2002 dev)": DATA / "multilingual" / "nl" / "dev.txt",
    "German (CoNLL-2003 dev)": DATA / "multilingual" / "de" / "dev.txt",
}
TEST_SETS = {"English (CoNLL-2003 test)": DATA / "conll2003" / "test.txt"}
CHINESE_DEV = DATA / "multilingual" / "zh" / "dev.txt"
CHINESE_TYPES = frozenset({"PER", "ORG", "LOC"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", type=Path, help="bundle directory (default: the embedded model)")
    models.add_argument("--package", type=Path, help="an embedded-model package (nertron_export.ship --out)")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="embedded model's variant")
    parser.add_argument("--test", action="store_true", help="also English test (never select on it)")
    parser.add_argument("--argmax", action="store_true", help="also each word's most likely label, unconstrained")
    args = parser.parse_args()
    model = args.model or default_bundle(args.precision, package_dir=args.package or PACKAGE_DIR)
    files = {**DEV_SETS, **(TEST_SETS if args.test else {})}
    argmax = " | argmax, sentences | argmax, documents" if args.argmax else ""
    print(f"| data | F1, sentences alone | F1, whole documents{argmax} | command |")
    print("|---|---|---|---|" + ("---|---|" if args.argmax else ""))
    with NER(model) as ner:
        precision = ner.precision
        taggers = [ner.pipeline, ner.pipeline.with_constrained_labels(False)] if args.argmax else [ner.pipeline]
        for name, path in files.items():
            documents = read_conll(path)
            columns = [
                100 * evaluate(tagger, documents, context=context).entity.f1
                for tagger in taggers
                for context in ("sentence", "document")
            ]
            shown = path.relative_to(DATA.parent.parent) if path.is_relative_to(DATA.parent.parent) else path
            figures = " | ".join(f"{f1:.2f}" for f1 in columns)
            print(f"| {name} | {figures} | `nertron eval --data ../{shown} --context both` |", flush=True)
        documents = read_conll(CHINESE_DEV)
        chinese = [
            100 * evaluate_raw(tagger, documents, joiner="", types=CHINESE_TYPES).entity.f1 for tagger in taggers
        ]
        shown = CHINESE_DEV.relative_to(DATA.parent.parent)
        figures = " | ".join(f"{f1:.2f} | -" for f1 in chinese)
        print(
            f"| Chinese (People's Daily dev, raw text, PER/ORG/LOC) | {figures} | "
            f"`nertron eval --data ../{shown} --input raw --join nothing --types PER,ORG,LOC --context sentence` |",
            flush=True,
        )
    cpu = subprocess.run(["bash", "-c", "grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo | sort -u"], capture_output=True)
    print(f"\nmodel: {model} ({precision}); CPU flags: {' '.join(cpu.stdout.decode().split())}")


if __name__ == "__main__":
    main()
