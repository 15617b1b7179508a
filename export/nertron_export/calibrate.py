"""Calibrates the embedded default model: the int8 variant's activation ranges (then gates it), and each
variant's score temperature.

    python -m nertron_export.calibrate --train ../shared/data/conll2003/train.txt \\
        [../shared/data/multilingual/es/unlabeled.txt ...] --dev ../shared/data/conll2003/dev.txt \\
        [--keep-ranges]

The fp32 model runs over windows of CoNLL-2003 *train* text (sentences alone and whole documents, as the
SDK cuts them; ``nertron_export.static_int8``, the path ``nertron export --quantize int8`` takes too) and of
any further files given (unlabeled text in the other languages the model serves, so their activations are
inside the ranges too); the range of each activation that feeds an int8 MatMul is stored in ``embedded.json``.
These are statistics (two numbers per tensor); no text ships. Then both variants are assembled exactly as
users get them and scored on dev in both contexts; int8 is the default only if it loses at most
``--max-f1-loss`` F1 points to fp32 in each, on this CPU (the 7-bit weights make int8 compute the same
integers on AVX2-only and AVX-512 VNNI CPUs, so the gate holds on both). Last, each variant's entity
scores are calibrated on dev (a temperature, ``nertron.evaluation.fit_calibration``), stored beside its
scores and written into its bundle's manifest at assembly. ``--keep-ranges`` keeps the stored ranges and does
the rest (scores, gate, temperatures): after a change to the decoding, which the ranges do not depend on.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from nertron import NER
from nertron.evaluation import evaluate, fit_calibration
from nertron.io.conll import read_conll
from nertron.model.default import PACKAGE_DIR, SPEC_FILE, assemble, embedded_spec

from .gate import check_f1_loss
from .static_int8 import activation_ranges, method, read_calibration_texts


def calibrate_default(
    train: Sequence[Path], dev: Path, *, package_dir: Path = PACKAGE_DIR, sentences: int = 1200, documents: int = 150,
    seed: int = 0, max_f1_loss: float = 0.3,
) -> dict[str, Any]:  # fmt: skip
    """Measures the activation ranges over ``train`` (one file or more), stores them in ``embedded.json``,
    scores both variants on ``dev`` and sets the default precision by the gate; returns the updated spec."""
    spec = embedded_spec(package_dir)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32"
        assemble(package_dir, fp32, "fp32", log=lambda m: print(m, flush=True))
        calibration = read_calibration_texts(train, sentences=sentences, documents=documents, seed=seed)
        ranges, windows = activation_ranges(onnx.load(str(fp32 / "model.onnx")), fp32, calibration.texts)
        spec["activation_ranges"] = ranges
        spec["calibration"] = {
            "data": f"{calibration.description}; {windows} windows",
            "method": method(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        _write(package_dir, spec)
    return score_and_gate(dev, package_dir=package_dir, max_f1_loss=max_f1_loss)


def score_and_gate(dev: Path, *, package_dir: Path = PACKAGE_DIR, max_f1_loss: float = 0.3) -> dict[str, Any]:
    """Scores both variants, with the stored activation ranges, on ``dev``, sets the default precision by the
    gate and fits the score temperatures; returns the updated spec."""
    spec = embedded_spec(package_dir)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "int8"):
            bundle = Path(tmp) / precision
            assemble(package_dir, bundle, precision, log=lambda m: print(m, flush=True))
            scores[precision] = score_bundle(bundle, dev)
    spec["precisions"] = scores
    reasons = [
        check_f1_loss(scores["fp32"][key], scores["int8"][key], max_f1_loss, raise_error=False)
        for key in ("dev_f1_sentence", "dev_f1_document")
    ]
    failed = next((r for r in reasons if r), None)
    spec["default_precision"] = "int8" if failed is None else "fp32"
    if failed:
        print(f"int8 is not the default: {failed}", flush=True)
    _write(package_dir, spec)
    return fit_temperatures(dev, package_dir=package_dir)


def fit_temperatures(dev: Path, *, package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """Fits each variant's score temperature on ``dev`` (both contexts), as users get the variant; stores it
    in ``embedded.json`` beside the variant's scores and returns the updated spec."""
    spec = embedded_spec(package_dir)
    documents = read_conll(dev)
    with tempfile.TemporaryDirectory() as tmp:
        for precision in spec["precisions"]:
            bundle = Path(tmp) / precision
            assemble(package_dir, bundle, precision, log=lambda m: print(m, flush=True))
            with NER(bundle) as ner:
                fit = fit_calibration(ner, documents)
            calibration = fit.calibration(f"CoNLL-2003 {dev.name}: sentences alone and documents whole")
            spec["precisions"][precision]["calibration"] = dataclasses.asdict(calibration)
            ece = f"{calibration.ece_uncalibrated} -> {calibration.ece}"
            print(f"{precision}: temperature {fit.temperature:g}, dev ECE {ece}", flush=True)
    _write(package_dir, spec)
    return spec


def score_bundle(bundle: Path, dev: Path) -> dict[str, float]:
    """Entity F1 on ``dev`` (sentences alone, whole documents) and the seconds each took."""
    documents = read_conll(dev)
    out: dict[str, float] = {}
    with NER(bundle) as ner:
        for context in ("sentence", "document"):
            started = time.perf_counter()
            report = evaluate(ner, documents, context=context)
            out[f"dev_f1_{context}"] = round(100 * report.entity.f1, 2)
            out[f"dev_seconds_{context}"] = round(time.perf_counter() - started, 1)
    return out


def _write(package_dir: Path, spec: dict[str, Any]) -> None:
    (package_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train", type=Path, nargs="+", help="CoNLL or text files the ranges are measured on (unless --keep-ranges)"
    )
    parser.add_argument("--dev", required=True, type=Path, help="CoNLL file both variants are scored on")
    parser.add_argument(
        "--sentences",
        type=int,
        default=1200,
        help="per CoNLL file: sentences alone; per text file: sentences + documents texts",
    )
    parser.add_argument("--documents", type=int, default=150, help="documents per CoNLL file, whole")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-f1-loss", type=float, default=0.3, help="F1 points int8 may lose vs fp32")
    parser.add_argument(
        "--keep-ranges",
        action="store_true",
        help="keep the stored activation ranges; score, gate and fit the temperatures again",
    )
    args = parser.parse_args()
    if args.keep_ranges:
        spec = score_and_gate(args.dev, max_f1_loss=args.max_f1_loss)
        print(json.dumps(spec["precisions"], indent=2))
        return
    if not args.train:
        parser.error("--train is required unless --keep-ranges is given")
    spec = calibrate_default(
        args.train,
        args.dev,
        sentences=args.sentences,
        documents=args.documents,
        seed=args.seed,
        max_f1_loss=args.max_f1_loss,
    )
    print(json.dumps(spec["precisions"], indent=2))


if __name__ == "__main__":
    main()
