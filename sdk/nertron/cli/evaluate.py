"""``nertron eval``: a model scored on a CoNLL file (token-level table, conlleval's entity lines, and how well
its entity scores are calibrated: ECE, a reliability diagram, precision/recall above score thresholds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nertron.cli.options import add_engine_options, config_from_args
from nertron.errors import InvalidValue, MissingFile


def add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="CoNLL file (token first, tag last)")
    add_engine_options(parser, remote=False)
    parser.add_argument(
        "--context",
        choices=["sentence", "document", "both"],
        default="both",
        help="tag sentences alone, whole documents (cross-sentence context), or report both",
    )
    parser.add_argument(
        "--input",
        choices=["words", "raw", "both"],
        default="words",
        help="tag the gold words, or raw text (the gold words joined by spaces, segmented by nertron, scored "
        "on character spans), or report both",
    )
    parser.add_argument(
        "--join",
        choices=["space", "nothing"],
        default="space",
        help="what goes between the gold words of --input raw: a space, or nothing (a file of characters of a "
        "script written without spaces, e.g. Chinese: scored as the text a user has, on character spans)",
    )
    parser.add_argument(
        "--types",
        type=entity_types,
        metavar="TYPE,...",
        help="score only these entity types, gold and found (e.g. PER,ORG,LOC for data annotated without MISC)",
    )
    parser.add_argument(
        "--reliability",
        type=Path,
        metavar="PNG",
        help="write a reliability diagram of the entity scores (calibrated and uncalibrated); needs matplotlib",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def entity_types(value: str) -> frozenset[str]:
    """``PER,ORG,LOC`` -> the set of types."""
    types = frozenset(t.strip() for t in value.split(","))
    if "" in types:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of entity types")
    return types


def run(args: argparse.Namespace) -> int:
    from nertron.calibration import RecordingBackend, ScoredEntities, plot_reliability
    from nertron.evaluation import calibration_dict, evaluate, format_calibration, rescore
    from nertron.io.conll import read_conll
    from nertron.raw_evaluation import evaluate_raw

    if args.reliability is not None and not args.reliability.parent.is_dir():
        raise MissingFile(f"--reliability {args.reliability}: its directory does not exist")
    documents = read_conll(args.data)
    contexts = ["sentence", "document"] if args.context == "both" else [args.context]
    on_words, on_raw = args.input in ("words", "both"), args.input in ("raw", "both")
    if args.reliability is not None and not on_words:
        raise InvalidValue("--reliability needs --input words or both (entity scores are measured on the gold words)")
    if args.join == "nothing" and args.input != "raw":
        raise InvalidValue("--join nothing needs --input raw (it says how raw text is made from the gold words)")
    joiner = "" if args.join == "nothing" else " "
    with config_from_args(args).build() as ner:
        model_types = ner.pipeline.decoder.types
        unknown = sorted((args.types or frozenset()) - set(model_types))
        if unknown:
            raise InvalidValue(
                f"--types {','.join(unknown)}: the model has no such type (it has {', '.join(model_types)})"
            )
        temperature = ner.temperature
        reports, uncalibrated = [], {}
        raw_reports = [
            evaluate_raw(ner, documents, context=c, batch_size=args.batch_size, joiner=joiner, types=args.types)
            for c in contexts
            if on_raw
        ]
        for context in contexts if on_words else []:
            recorder = RecordingBackend(ner.backend)
            reports.append(
                evaluate(
                    ner, documents, context=context, batch_size=args.batch_size, backend=recorder, types=args.types
                )
            )
            if temperature != 1.0:  # the same logits, scored without the bundle's temperature
                uncalibrated[context] = rescore(
                    ner, documents, recorder, 1.0, context=context, batch_size=args.batch_size, types=args.types
                )
    if args.reliability is not None:
        curves: dict[str, ScoredEntities] = {}
        for report in reports:
            if report.scored is None:  # evaluate() scores entities on the gold words, as --reliability asks
                continue
            if report.context in uncalibrated:
                curves[f"{report.context}, uncalibrated"] = uncalibrated[report.context]
            curves[f"{report.context}, T={temperature:g}" if temperature != 1.0 else report.context] = report.scored
        plot_reliability(args.reliability, curves, title=f"{args.data.name}, {ner.precision} model")
    if args.json:
        out = []
        for report in reports:
            entry = report.to_dict()
            if report.context in uncalibrated:
                entry["entity_scores_uncalibrated"] = calibration_dict(uncalibrated[report.context])
            out.append(entry)
        print(
            json.dumps(
                {
                    "data": str(args.data),
                    "model": str(ner.bundle.path),
                    "precision": ner.precision,
                    "temperature": temperature,
                    "reports": out + [r.to_dict() for r in raw_reports],
                },
                indent=2,
            )
        )
        return 0
    title = {"sentence": "each sentence alone", "document": "whole documents (cross-sentence context)"}
    for report in reports:
        print(f"== {args.data} — {title[report.context]} — model {ner.bundle.path} ({ner.precision})\n")
        print(report.format())
        if report.context in uncalibrated:
            print(f"(scores calibrated with temperature {temperature:g}; uncalibrated, the same entities:)")
            print("\n".join(format_calibration(uncalibrated[report.context], "uncalibrated entity scores")[:1]))
        print()
    for raw_report in raw_reports:
        print(f"== {args.data} — raw text, {title[raw_report.context]} — model {ner.bundle.path} ({ner.precision})\n")
        print(raw_report.format() + "\n")
    if args.reliability is not None:
        print(f"reliability diagram: {args.reliability}")
    return 0
