"""``nertron calibrate``: fits the temperature of a bundle's entity scores on held-out CoNLL data (dev, never
test) and stores it in the bundle's ``manifest.json``, where every way of running the bundle reads it."""

from __future__ import annotations

import argparse
from pathlib import Path

from nertron.cli.options import add_batch_size_option, add_model_options
from nertron.errors import InvalidValue
from nertron.model.calibrate import calibrate_bundle


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
