"""``nertron eval``: a model scored on a CoNLL file (token-level table and conlleval's entity lines)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nertron.cli.options import add_engine_options, config_from_args


def add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="CoNLL file (token first, tag last)")
    add_engine_options(parser, remote=False)
    parser.add_argument(
        "--context",
        choices=["sentence", "document", "both"],
        default="both",
        help="tag sentences alone, whole documents (cross-sentence context), or report both",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nertron.evaluation import evaluate
    from nertron.io.conll import read_conll

    documents = read_conll(args.data)
    contexts = ["sentence", "document"] if args.context == "both" else [args.context]
    with config_from_args(args).build() as ner:
        reports = [evaluate(ner, documents, context=c, batch_size=args.batch_size) for c in contexts]
    if args.json:
        print(
            json.dumps(
                {
                    "data": str(args.data),
                    "model": str(ner.bundle.path),
                    "precision": ner.precision,
                    "reports": [r.to_dict() for r in reports],
                },
                indent=2,
            )
        )
        return 0
    for report in reports:
        title = {"sentence": "each sentence alone", "document": "whole documents (cross-sentence context)"}
        print(f"== {args.data} — {title[report.context]} — model {ner.bundle.path} ({ner.precision})\n")
        print(report.format() + "\n")
    return 0
