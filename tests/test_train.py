"""`nertron train` on the tiny model: a real (short) fine-tuning run, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

from nertron import NER
from nertron.cli import main
from nertron.io.conll import read_conll
from nertron.tags import to_iob2
from nertron_export.onnx_export import export_bundle
from nertron_export.pseudo_label import main as pseudo_label_main

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


def test_self_training_on_pseudo_labels_selected_on_several_dev_sets(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A teacher tags unlabeled text (a sentence per line, a blank line between documents); the student trains
    on gold + those tags and is selected on the mean F1 of several dev files, each reported under its folder."""
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text(
        "Peter Blackburn reported from Brussels .\nEU rejects German call .\n\nAngela Merkel met Macron .\n"
    )
    pseudo = tmp_path / "pseudo" / "xx.conll"
    assert pseudo_label_main(["--model", str(tiny_bundle), "--text", str(unlabeled), "--out", str(pseudo)]) == 0
    documents = read_conll(pseudo)
    assert [[s.words for s in d.sentences] for d in documents] == [
        [["Peter", "Blackburn", "reported", "from", "Brussels", "."], ["EU", "rejects", "German", "call", "."]],
        [["Angela", "Merkel", "met", "Macron", "."]],
    ]
    with NER(tiny_bundle) as teacher:  # the teacher's own tags, each sentence alone (read back as IOB2)
        tags = teacher.tag([s.words for d in documents for s in d.sentences])
    assert [s.tags for d in documents for s in d.sentences] == [to_iob2(t) for t in tags]
    (tmp_path / "xx").mkdir()
    other_dev = write_conll(tmp_path / "xx" / "dev.txt", 1)
    out = tmp_path / "student"
    argv = [
        "train",
        "--model",
        str(tiny_checkpoint),
        "--train",
        str(write_conll(tmp_path / "train.txt", 4)),
        str(pseudo),
    ]
    argv += ["--dev", str(write_conll(tmp_path / "dev.txt", 2)), str(other_dev), "--select", "mean", "--out", str(out)]
    argv += ["--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--head-lr", "3e-3", "--fp32", "--threads", "1"]
    assert main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    record = log["history"][log["best_epoch"] - 1]
    scores = {k: v for k, v in record.items() if "_f1_" in k}
    assert set(scores) == {f"{d}_f1_{c}" for d in ("dev", "xx") for c in ("sentence", "document")}
    assert log["best_f1"] == sum(scores.values()) / 4 > 0
