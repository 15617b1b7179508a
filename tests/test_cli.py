"""The ``nertron`` command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from nertron.cli import main


def test_ner_on_arguments(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ner", "-m", str(tiny_bundle), "Angela Merkel met Emmanuel Macron.", ""]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in lines] == ["Angela Merkel met Emmanuel Macron.", ""]
    assert lines[1]["entities"] == []
    for entity in lines[0]["entities"]:
        assert lines[0]["text"][entity["start"] : entity["end"]] == entity["text"]


def test_ner_on_jsonl_file_keeps_ids_and_order(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    records = [{"id": i, "body": f"Document {i} about Paris and Berlin."} for i in range(50)]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["ner", "-m", str(tiny_bundle), "-i", str(source), "--field", "body", "-o", str(out)]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == list(range(50))
    assert [r["text"] for r in results] == [r["body"] for r in records]


def test_ner_on_stdin(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("first line\n\nthird line in Paris\n"))
    assert main(["ner", "-m", str(tiny_bundle)]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == [
        "first line",
        "",
        "third line in Paris",
    ]


def test_malformed_jsonl_names_the_line(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "ok"}\n{not json\n')
    assert main(["ner", "-m", str(tiny_bundle), "-i", str(source), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ner", "-m", str(tmp_path), "text"]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


def test_export_and_ner_as_commands(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "nertron.cli"]
    dev = tmp_path / "dev.txt"
    dev.write_text("EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n. O\n\nPeter B-PER\nBlackburn I-PER\n")
    export = subprocess.run(
        [*cli, "export", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--temperature-data", str(dev)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "fp32 ONNX vs PyTorch: max |diff|" in export.stdout
    assert "wrote temperature" in export.stdout
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["calibration"]["data"].startswith("dev.txt")
    ner = subprocess.run(
        [*cli, "ner", "-m", str(tmp_path / "b"), "EU rejects German call."],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(ner.stdout)["text"] == "EU rejects German call."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--quantize", "int8"], "--quantize int8 needs --calibration-data FILE and --gate-data FILE: "),
        (["--quantize", "int8", "--calibration-data", "{text}"], "--quantize int8 needs --gate-data FILE: "),
        (["--calibration-data", "{text}"], "--calibration-data sets the activation ranges of --quantize int8"),
        (["--gate-data", "{text}"], "--gate-data checks an int8 model against fp32: it needs --quantize"),
        (["--quantize", "int8", "--calibration-data", "{missing}", "--gate-data", "{text}"], "is not a file"),
        (  # each of several calibration files is checked
            ["--quantize", "int8", "--calibration-data", "{text}", "{missing}", "--gate-data", "{text}"],
            "--calibration-data {missing} is not a file",
        ),
        (  # the model, before minutes of export
            ["--quantize", "int8", "--calibration-data", "{text}", "--gate-data", "{text}"],
            "nertron export: error: --model {never_read}: no such folder in ",
        ),
    ],
)
def test_export_names_what_static_int8_lacks_and_a_missing_model(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("Angela Merkel met Emmanuel Macron .\n")
    argv = ["export", "--model", str(tmp_path / "never-read"), "--out", str(tmp_path / "b")]
    argv += [o.format(text=text, missing=tmp_path / "missing.txt") for o in options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = message.format(missing=tmp_path / "missing.txt", never_read=tmp_path / "never-read")
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_repository_precision_picks_the_embedded_variant(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nertron.cli.serve

    asked: list[str | None] = []

    def resolve(model: str | None, precision: str | None) -> Path:  # the embedded model, without assembling it
        asked.append(precision)
        return tiny_bundle

    monkeypatch.setattr(nertron.cli.serve, "resolve_model", resolve)
    argv = ["repository", "--out", str(tmp_path), "--deployment", "cpu", "--deployment", "onnx-gpu"]
    assert main([*argv, "--precision", "fp32"]) == 0 and asked == ["fp32", "fp32"]
    assert main(argv) == 0 and asked[2:] == ["int8", "fp32"]  # the defaults: int8 on CPU, fp32 on GPUs
    capsys.readouterr()
    assert main([*argv, "--precision", "int8"]) == 2
    assert "--precision int8 is for the cpu deployment" in capsys.readouterr().err
    assert main([*argv, "-m", str(tiny_bundle), "--precision", "fp32"]) == 2
    assert "a bundle (-m) has its own" in capsys.readouterr().err
