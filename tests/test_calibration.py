"""Calibrated entity scores: the ECE and threshold tables, the temperature fit, the manifest's calibration,
``min_score``, and the ``calibrate`` / ``eval --reliability`` commands (tiny random model)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from nertron import NER
from nertron.calibration import ScoredEntities, fit_temperature
from nertron.cli import main
from nertron.model.bundle import Bundle, Calibration, Manifest

CONLL = """-DOCSTART- -X- -X- O

EU B-ORG
rejects O
German B-MISC
call O
. O

Peter B-PER
Blackburn I-PER

BRUSSELS B-LOC
1996-08-22 O
"""


def test_ece_and_thresholds_by_hand() -> None:
    scored = ScoredEntities(np.array([0.95, 0.95, 0.55, 0.15]), np.array([True, False, True, False]), gold=5)
    bins = scored.reliability()
    assert [(b.low, b.count, b.accuracy) for b in bins] == [(0.1, 1, 0.0), (0.5, 1, 1.0), (0.9, 2, 0.5)]
    # |0 - .15| * 1 + |1 - .55| * 1 + |.5 - .95| * 2, over 4 entities
    assert scored.ece() == pytest.approx((0.15 + 0.45 + 0.9) / 4)
    rows = {t.threshold: t for t in scored.at_thresholds([0.0, 0.5, 0.99])}
    assert (rows[0.0].found, rows[0.0].precision, rows[0.0].recall) == (4, 0.5, 0.4)
    assert (rows[0.5].found, rows[0.5].precision, rows[0.5].recall) == (3, pytest.approx(2 / 3), 0.4)
    assert (rows[0.99].found, rows[0.99].f1) == (0, 0.0)
    assert ScoredEntities(np.array([1.0]), np.array([True]), 1).ece() == 0.0  # a score of 1 is in the last bin


def test_fit_temperature_recovers_the_temperature_that_made_the_data() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=20000)  # binary "right / wrong" margins
    truth = 2.5  # the data was made overconfident by this factor
    correct = rng.random(logits.size) < 1 / (1 + np.exp(-logits / truth))

    def scored_at(temperature: float) -> ScoredEntities:
        return ScoredEntities(1 / (1 + np.exp(-logits / temperature)), correct, int(correct.sum()))

    fitted = fit_temperature(scored_at)
    assert fitted == pytest.approx(truth, rel=0.05)
    assert scored_at(fitted).ece() < 0.01 < scored_at(1.0).ece()


def test_manifest_calibration_round_trip_and_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = Manifest.read(bundle / "manifest.json")
    assert manifest.calibration is None and Bundle.load(bundle).temperature == 1.0
    calibrated = dataclasses.replace(manifest, calibration=Calibration(1.5, "dev.txt", 0.01, 0.04))
    calibrated.write(bundle)
    assert Manifest.read(bundle / "manifest.json") == calibrated
    assert Bundle.load(bundle).temperature == 1.5
    data = json.loads((bundle / "manifest.json").read_text())
    for bad, message in (
        ({"temperature": 0}, "finite number > 0"),
        ({"temperature": "hot"}, "must be a number"),
        ({"data": "dev"}, "calibration.temperature' is missing"),
        ({"temperature": 1.2, "bins": 10}, "unknown keys"),
    ):
        (bundle / "manifest.json").write_text(json.dumps({**data, "calibration": bad}))
        with pytest.raises(ValueError, match=message):
            Manifest.read(bundle / "manifest.json")


@pytest.fixture
def hot_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle with a temperature of 3 in its manifest."""
    bundle = tmp_path / "hot"
    shutil.copytree(tiny_bundle, bundle)
    manifest = Manifest.read(bundle / "manifest.json")
    dataclasses.replace(manifest, calibration=Calibration(3.0)).write(bundle)
    return bundle


TEXTS = ["Peter Blackburn visited BRUSSELS and the EU.", "German call rejected by Angela Merkel in Paris", ""]


def test_temperature_moves_scores_never_entities(tiny_bundle: Path, hot_bundle: Path) -> None:
    for aggregation in ("first", "average", "max"):
        with NER(tiny_bundle, aggregation=aggregation) as plain, NER(hot_bundle, aggregation=aggregation) as hot:
            assert hot.temperature == 3.0
            before, after = plain.batch(TEXTS), hot.batch(TEXTS)
            spans = [[(e.start, e.end, e.label) for e in found] for found in before]
            assert spans == [[(e.start, e.end, e.label) for e in found] for found in after]
            scores = [e.score for found in before for e in found]
            assert scores and all(
                a != b for a, b in zip(scores, [e.score for found in after for e in found], strict=True)
            )


def test_min_score_drops_low_scored_entities(tiny_bundle: Path) -> None:
    with NER(tiny_bundle) as ner:
        everything = ner.batch(TEXTS)
    scores = sorted(e.score for found in everything for e in found)
    assert len(scores) >= 2
    threshold = scores[len(scores) // 2]
    with NER(tiny_bundle, min_score=threshold) as ner:
        assert ner.batch(TEXTS) == [[e for e in found if e.score >= threshold] for found in everything]
    for bad, error in (
        ("0.5", TypeError),
        (True, TypeError),
        (-0.1, ValueError),
        (1.01, ValueError),
        (math.nan, ValueError),
    ):
        with pytest.raises(error, match="min_score"):
            NER(tiny_bundle, min_score=bad)  # type: ignore[arg-type]


def test_cli_min_score(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ner", "-m", str(tiny_bundle), TEXTS[0]]) == 0
    everything = json.loads(capsys.readouterr().out)["entities"]
    assert everything
    top = max(e["score"] for e in everything)
    assert main(["ner", "-m", str(tiny_bundle), "--min-score", str(top), TEXTS[0]]) == 0
    kept = json.loads(capsys.readouterr().out)["entities"]
    assert kept == [e for e in everything if e["score"] >= top] and len(kept) < len(everything)
    assert main(["ner", "-m", str(tiny_bundle), "--min-score", "2", TEXTS[0]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --min-score: must be from 0.0 to 1.0, got 2" in err


def test_calibrate_command_writes_the_manifest_and_eval_reports_it(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    data = tmp_path / "dev.txt"
    data.write_text(CONLL * 3)
    assert main(["calibrate", "-m", str(bundle), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "ECE" in out and "wrote temperature" in out
    calibration = Manifest.read(bundle / "manifest.json").calibration
    assert calibration is not None and 0.25 <= calibration.temperature <= 8
    assert calibration.ece is not None and calibration.ece <= calibration.ece_uncalibrated + 1e-9

    png = tmp_path / "reliability.png"
    assert main(["eval", "-m", str(bundle), "--data", str(data), "--json", "--reliability", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["temperature"] == pytest.approx(calibration.temperature)  # float32 in the C++ core
    for report in result["reports"]:
        scores = report["entity_scores"]
        assert scores["thresholds"][0]["found"] == report["entity"]["found"]
        assert sum(b["count"] for b in scores["reliability"]) == report["entity"]["found"]
        if calibration.temperature != 1.0:
            assert "entity_scores_uncalibrated" in report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_needs_a_bundle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "dev.txt"
    data.write_text(CONLL)
    assert main(["calibrate", "--data", str(data)]) == 2
    assert "-m/--model" in capsys.readouterr().err
