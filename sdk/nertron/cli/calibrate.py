"""``nertron calibrate``: fits the temperature of a bundle's entity scores on held-out CoNLL data (dev, never
test) and stores it in the bundle's ``manifest.json``, where every way of running the bundle reads it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nertron.cli.options import add_batch_size_option, add_model_options
from nertron.errors import InvalidValue


def add(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--data", required=True, type=Path, help="held-out CoNLL file to fit on (e.g. dev)")
    add_batch_size_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.model is None:
        raise InvalidValue("-m/--model: the bundle to calibrate (the embedded model is calibrated when it is shipped)")
    calibrate_bundle(Path(args.model), args.data, batch_size=args.batch_size)
    return 0


def calibrate_bundle(path: Path, data: Path, *, batch_size: int = 16, shown: Path | None = None) -> None:
    """Fits the temperature of the bundle at ``path`` on ``data``, writes it to its manifest, prints the ECE;
    ``shown``: the path to name in what it prints (where a bundle being built will be)."""
    from nertron import NER
    from nertron.evaluation import fit_calibration
    from nertron.io.conll import read_conll
    from nertron.model.bundle import Bundle

    bundle = Bundle.load(path)
    documents = read_conll(data)
    with NER(bundle.path, batch_size=batch_size) as ner:
        fit = fit_calibration(ner, documents, batch_size=batch_size)
    calibration = fit.calibration(f"{data.name}: sentences alone and documents whole")
    dataclasses.replace(bundle.manifest, calibration=calibration).write(bundle.path)
    for context in fit.before:
        print(
            f"{context:>8}: {fit.after[context].n} entities, ECE {fit.before[context].ece():.4f} uncalibrated, "
            f"{fit.after[context].ece():.4f} at temperature {fit.temperature:g}"
        )
    print(f"wrote temperature {fit.temperature:g} to {(shown or bundle.path) / 'manifest.json'}")
