"""`nertron average`: the uniform mean of fine-tuned checkpoints, what it keeps exact, and what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nertron.cli import main
from nertron_export.average import RECORD, WEIGHTS, average_checkpoints
from nertron_export.ship import training_record
from safetensors.numpy import load_file, save_file

TUNED = "classifier.weight"


def tuned_copy(checkpoint: Path, out: Path, shift: float, *, log: dict | None = None) -> Path:
    """A copy of ``checkpoint`` with its classifier moved by ``shift`` (a stand-in for another fine-tuning
    run of the same base); ``log`` becomes the run's train_log.json."""
    shutil.copytree(checkpoint, out / "best")
    weights = load_file(str(out / "best" / WEIGHTS))
    weights[TUNED] = weights[TUNED] + np.float32(shift)
    save_file(weights, str(out / "best" / WEIGHTS), metadata={"format": "pt"})
    if log is not None:
        (out / "train_log.json").write_text(json.dumps(log))
    return out / "best"


def test_average_means_what_differs_and_copies_what_is_shared(tiny_checkpoint: Path, tmp_path: Path) -> None:
    runs = [
        tuned_copy(tiny_checkpoint, tmp_path / f"run{i}", shift, log={"config": {"max_length": 64, "seed": i}})
        for i, shift in enumerate((1.0, 2.0, 6.0))
    ]
    out = average_checkpoints(runs, tmp_path / "average")
    base, averaged = load_file(str(tiny_checkpoint / WEIGHTS)), load_file(str(out / WEIGHTS))
    assert averaged.keys() == base.keys()
    np.testing.assert_allclose(averaged[TUNED], base[TUNED] + 3.0, rtol=0, atol=1e-5)
    for name in base.keys() - {TUNED}:  # the same in every run: kept bit for bit, never re-rounded
        assert averaged[name].dtype == base[name].dtype and np.array_equal(averaged[name], base[name]), name
    assert (out / "config.json").read_bytes() == (tiny_checkpoint / "config.json").read_bytes()
    assert (out / "tokenizer.json").is_file()

    record = json.loads((out / RECORD).read_text())
    assert [Path(c["checkpoint"]) for c in record["checkpoints"]] == runs
    assert all(len(c["sha256"]) == 64 and c["saved"] == "best" for c in record["checkpoints"])
    # ship keeps each run's training config, and windows as long as the runs' chunks
    training = training_record(out)
    assert training is not None and [run["config"]["seed"] for run in training["average"]] == [0, 1, 2]


def test_average_cli_and_its_errors(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tuned_copy(tiny_checkpoint, tmp_path / "a", 1.0)
    b = tuned_copy(tiny_checkpoint, tmp_path / "b", 3.0)
    assert main(["average", "--out", str(tmp_path / "ab"), str(a), str(b)]) == 0
    assert "averaged 2 checkpoints" in capsys.readouterr().out
    assert training_record(tmp_path / "ab") is None  # runs without a train_log.json: nothing to report

    # a run's checkpoint and an unpacked package differ in how transformers loaded them, not in the tokenizer
    loaded = tuned_copy(tiny_checkpoint, tmp_path / "loaded", 2.0)
    settings = json.loads((loaded / "tokenizer_config.json").read_text())
    (loaded / "tokenizer_config.json").write_text(json.dumps({**settings, "is_local": True, "local_files_only": True}))
    assert main(["average", "--out", str(tmp_path / "a-loaded"), str(a), str(loaded)]) == 0
    capsys.readouterr()
    # a run's checkpoint lacks the slow tokenizer's sentencepiece.bpe.model that an unpacked package has: either
    # order averages, and the average has it
    (loaded / "sentencepiece.bpe.model").write_bytes(b"the SentencePiece model")
    for order in ((a, loaded), (loaded, a)):
        out = tmp_path / f"without-{order[0].parent.name}"
        assert main(["average", "--out", str(out), *map(str, order)]) == 0
        assert (out / "sentencepiece.bpe.model").read_bytes() == b"the SentencePiece model"
    capsys.readouterr()
    untokenized = tuned_copy(tiny_checkpoint, tmp_path / "untokenized", 2.0)
    (untokenized / "tokenizer.json").unlink()  # only the slow tokenizer's model may be missing from one of them
    retokenized = tmp_path / "retokenized"
    shutil.copytree(tiny_checkpoint, retokenized)
    (retokenized / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 7}))

    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (other / "config.json").write_text(json.dumps(config))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    cases = [
        ([str(a)], "at least two"),
        ([str(a), str(broken)], "broken/model.safetensors is not a readable safetensors file"),
        ([str(a), str(tmp_path / "missing")], "missing is not an HF checkpoint"),
        ([str(a), str(other)], "other/config.json differs"),
        ([str(a), str(retokenized)], "retokenized/tokenizer_config.json differs"),
        ([str(a), str(untokenized)], "untokenized/best has no tokenizer.json, which"),
    ]
    for checkpoints, why in cases:
        assert main(["average", "--out", str(tmp_path / "bad"), *checkpoints]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("nertron average: error: checkpoints: ") and why in err and "\n" not in err
    assert not (tmp_path / "bad").exists()  # nothing half-written
    # An output that is, or holds, one of the checkpoints would destroy it: refused, the checkpoint intact.
    before = (a / WEIGHTS).read_bytes()
    for out, why in ((a, "is the same path as"), (tmp_path, "contains")):
        assert main(["average", "--out", str(out), str(a), str(b)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"nertron average: error: --out {out} {why} checkpoint {a}; write to a folder of its own", err
    assert (a / WEIGHTS).read_bytes() == before


def test_average_refuses_other_tensors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    a = tuned_copy(tiny_checkpoint, tmp_path / "a", 1.0)
    b = tuned_copy(tiny_checkpoint, tmp_path / "b", 1.0)
    weights = load_file(str(b / WEIGHTS))
    weights[TUNED] = weights[TUNED][:, :-1].copy()
    save_file(weights, str(b / WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"tensor {TUNED} is float32\["):
        average_checkpoints([a, b], tmp_path / "ab")
