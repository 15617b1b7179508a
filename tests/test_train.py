"""`nertron train` on the tiny model: a real (short) fine-tuning run, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

from nertron import NER
from nertron.cli import main
from nertron_export.onnx_export import export_bundle

SENTENCES = [
    ("Angela Merkel met Emmanuel Macron in Paris .", "B-PER I-PER O B-PER I-PER O B-LOC O"),
    ("EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn reported from Brussels .", "B-PER I-PER O O B-LOC O"),
]


def write_conll(path: Path, copies: int) -> Path:
    lines = []
    for doc in range(copies):
        lines += ["-DOCSTART- -X- -X- O", ""]
        for words, tags in SENTENCES[doc % 2 :]:
            lines += [f"{w} X X {t}" for w, t in zip(words.split(), tags.split(), strict=True)] + [""]
    path.write_text("\n".join(lines))
    return path


def test_train_resume_and_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    train = write_conll(tmp_path / "train.txt", 12)
    dev = write_conll(tmp_path / "dev.txt", 2)
    out = tmp_path / "run"
    common = [
        "train",
        "--model",
        str(tiny_checkpoint),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--head-lr",
        "3e-3",
        "--fp32",
        "--threads",
        "1",
    ]
    assert main([*common, "--epochs", "1"]) == 0
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["epoch"] == 1 and (out / "best" / "config.json").is_file()

    assert main([*common, "--epochs", "3", "--resume"]) == 0  # continues with epochs 2 and 3
    log = json.loads((out / "train_log.json").read_text())
    assert [h["epoch"] for h in log["history"]] == [1, 2, 3]
    assert log["history"][-1]["train_loss"] < log["history"][0]["train_loss"]
    assert log["best_f1"] > 0.0, "the tiny model should learn a few entities of its training data"

    bundle = tmp_path / "bundle"
    export_bundle(out / "best", bundle)
    assert len(NER(bundle).tag([SENTENCES[0][0].split()])[0]) == 8
