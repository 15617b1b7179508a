"""Fits the temperature of a bundle's entity scores on held-out CoNLL data and writes it into the bundle's
``manifest.json`` (``nertron calibrate``, ``nertron export --temperature-data``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path


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
