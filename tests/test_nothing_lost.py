"""Nothing a user owns is overwritten or lost: every file and folder nertron writes is built beside its target
and moved into place, outputs that overlap their inputs are refused, and each caller's mistake is a
``NertronError`` naming the file, line or index."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from nertron import NER, __version__
from nertron.cli import main
from nertron.errors import FileNotPermitted, InvalidFile, MissingFile, NertronError
from nertron.io import atomic
from nertron.io.atomic import PARTIAL_SUFFIX, check_apart, replacing_file, replacing_folder, write_file

from tests.test_errors import one_line_error, run


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (links not followed) and the sha256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def no_partials(folder: Path) -> bool:
    return not [path for path in folder.rglob("*") if PARTIAL_SUFFIX in path.name]


# -- the writers themselves -----------------------------------------------------------------------------------


def test_a_replaced_file_keeps_its_permissions_and_a_link_keeps_pointing_at_it(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_file(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    write_file(tmp_path / "fresh.txt", b"bytes")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o666 & ~umask
    assert no_partials(tmp_path)


def test_a_device_or_a_pipe_is_written_in_place(tiny_bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    write_file(link, "gone\n")
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["null"]
    # /dev/stdout when stdout is a pipe: a link to "pipe:[N]", which no folder holds
    done = subprocess.run(
        [sys.executable, "-m", "nertron.cli", "ner", "-m", str(tiny_bundle), "-o", "/dev/stdout", "Paris"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "Paris"


def test_a_failed_write_leaves_the_file_as_it_was_until_it_is_committed(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("a\nb\nc\n")
    with pytest.raises(RuntimeError), replacing_file(target) as pending:
        pending.stream.write("partial\n")
        assert target.read_text() == "a\nb\nc\n"  # built beside it
        raise RuntimeError("the run failed")
    assert target.read_text() == "a\nb\nc\n"
    with pytest.raises(KeyboardInterrupt), replacing_file(target) as pending:
        pending.stream.write("row 1\n")
        pending.commit()  # in place from now on
        assert target.read_text() == "row 1\n"
        pending.stream.write("row 2\n")
        raise KeyboardInterrupt
    assert target.read_text() == "row 1\nrow 2\n"
    assert no_partials(tmp_path)


def test_a_read_only_file_is_refused_and_a_file_in_a_read_only_folder_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    # Tests run as root, for whom permissions do not hold: os.access and the folder's refusal are stood in for.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(FileNotPermitted, match=r"out\.txt: Permission denied \(a read-only file\)"):
        write_file(target, "new")
    monkeypatch.setattr(os, "access", lambda path, mode: True)

    def read_only_folder(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic, "_new_file", read_only_folder)
    write_file(target, "new")
    assert target.read_text() == "new"


def test_without_an_atomic_exchange_a_folder_is_swapped_by_two_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "_renameat2", None)  # as on macOS or musl
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replacing_folder(target) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(target) as work:
        (work / "new.txt").write_text("new")
        raise RuntimeError("a check failed")
    assert fingerprint(target) == {"old.txt": hashlib.sha256(b"old").hexdigest()}
    with replacing_folder(target) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the old content and the work folder gone


def test_overlapping_paths_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "inner").mkdir(parents=True)
    for out, why in ((model, "is the same path as"), (model / "inner", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(ValueError, match=f"--out {out} {why} --model {model}"):
            check_apart(("--out", out), {"--model": model})
    check_apart(("--out", tmp_path / "elsewhere"), {"--model": model, "--data": None})
    data = [tmp_path / "a.txt", model / "inner" / "b.txt"]  # an option of several files: each is checked
    for path in data:
        path.write_text("x")
    with pytest.raises(ValueError, match=f"--out {model} contains --data {data[1]}"):
        check_apart(("--out", model), {"--data": data})


# -- the commands ---------------------------------------------------------------------------------------------


def test_repository_refuses_to_copy_a_model_out_of_the_folder_it_replaces(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "R"
    assert run(capsys, "repository", "-m", str(tiny_bundle), "--out", str(root), "--deployment", "cpu")[0] == 0
    (root / "cpu" / "users_model").mkdir()  # a model of the user's own in the same repository
    (root / "cpu" / "nertron" / "2").mkdir()  # and a version of the user's own
    (root / "cpu" / "nertron" / "2" / "model.onnx").write_bytes(b"theirs")
    before = fingerprint(root)
    inner = root / "cpu" / "nertron" / "1"
    code, _, err = run(capsys, "repository", "-m", str(inner), "--out", str(root), "--deployment", "cpu")
    assert code == 2
    one_line_error(err, f"--out {root} (its cpu/nertron) contains -m {inner}")
    assert fingerprint(root) == before and (inner / "model.onnx").is_file()
    # Written again over itself: the nertron models are replaced, the user's model stays, nothing half-built.
    assert run(capsys, "repository", "-m", str(tiny_bundle), "--out", str(root), "--deployment", "cpu")[0] == 0
    assert fingerprint(root) == before and (root / "cpu" / "users_model").is_dir()
    assert no_partials(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["R"]
    # A bundle beside the repository, not in what it replaces, is fine.
    beside = root / "bundle"
    shutil.copytree(tiny_bundle, beside)
    assert run(capsys, "repository", "-m", str(beside), "--out", str(root), "--deployment", "cpu")[0] == 0


def test_export_refuses_to_write_into_its_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    before = fingerprint(checkpoint)
    for out, why in ((checkpoint, "is the same path as"), (checkpoint / "bundle", "lies inside")):
        code, _, err = run(capsys, "export", "--model", str(checkpoint), "--out", str(out))
        assert code == 2
        one_line_error(err, f"--out {out} {why} --model {checkpoint}")
    data = checkpoint / "dev.txt"
    data.write_text("Paris B-LOC\n")
    code, _, err = run(capsys, "export", "--model", str(tiny_checkpoint), "--out", str(checkpoint),
                       "--temperature-data", str(data))  # fmt: skip
    assert code == 2
    one_line_error(err, f"--out {checkpoint} contains --temperature-data {data}")
    data.unlink()
    assert fingerprint(checkpoint) == before


def test_export_into_a_folder_of_other_files_needs_force(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "export", "--model", str(tiny_checkpoint), "--out", str(out))
    assert code == 2
    one_line_error(err, f"--out {out} is a folder that is not a nertron bundle (it holds notes.txt)", "--force")
    assert fingerprint(out) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}
    code, printed, err = run(capsys, "export", "--model", str(tiny_checkpoint), "--out", str(out), "--force")
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "manifest.json").is_file()
    # A bundle is replaced without --force, and says so.
    code, printed, err = run(capsys, "export", "--model", str(tiny_checkpoint), "--out", str(out))
    assert code == 0, err
    assert f"replaced the bundle that was in {out}" in printed
    # A bundle with a file of the user's beside it: that file would go, so --force again.
    (out / "README.md").write_text("my notes")
    code, _, err = run(capsys, "export", "--model", str(tiny_checkpoint), "--out", str(out))
    assert code == 2
    one_line_error(err, f"--out {out} is a nertron bundle with other files (it holds README.md)", "--force")
    assert (out / "README.md").read_text() == "my notes"
    assert no_partials(tmp_path)


@pytest.mark.parametrize("failure", ["gate refuses", "gate breaks"])
def test_a_failed_export_leaves_the_bundle_that_was_there(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    from nertron_export import onnx_export
    from nertron_export.onnx_export import ExportError, export_bundle

    from tests.test_export import CALIBRATION_TEXT, GATE_DATA

    out = tmp_path / "bundle"
    export_bundle(tiny_checkpoint, out)
    before = fingerprint(out)
    (tmp_path / "gate.txt").write_text(GATE_DATA)
    (tmp_path / "calibration.txt").write_text(CALIBRATION_TEXT)
    options = {"quantize": "int8", "calibration_data": tmp_path / "calibration.txt", "gate_data": tmp_path / "gate.txt"}
    if failure == "gate refuses":
        with pytest.raises(ExportError, match="the int8 model loses"):
            export_bundle(tiny_checkpoint, out, **options, max_f1_loss=-1.0)
    else:  # an error in the gate other than its verdict: no ungated int8 bundle may be left behind

        def broken(*args: object) -> None:
            raise RuntimeError("evaluation failed")

        monkeypatch.setattr(onnx_export, "_f1_gate", broken)
        with pytest.raises(RuntimeError, match="evaluation failed"):
            export_bundle(tiny_checkpoint, out, **options)
    assert fingerprint(out) == before
    assert no_partials(tmp_path)


def test_a_run_that_fails_before_its_first_row_leaves_the_output_as_it_was(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, page = tmp_path / "out.jsonl", tmp_path / "page.html"
    out.write_text("one\ntwo\nthree\n")
    page.write_text("<p>mine</p>")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text\n")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(binary), "-o", str(out), "--html", str(page))
    assert code == 2
    one_line_error(err, f"{binary}:1: not valid UTF-8")
    assert out.read_text() == "one\ntwo\nthree\n" and page.read_text() == "<p>mine</p>"
    # A failure after the first row keeps the rows finished before it (and replaces the file).
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes(b"Angela Merkel in Paris\n\xff\n")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(mixed), "-o", str(out), "--batch-size", "1")
    assert code == 2
    one_line_error(err, f"{mixed}:2: not valid UTF-8")
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == ["Angela Merkel in Paris"]
    assert no_partials(tmp_path)


def test_sigterm_keeps_the_rows_finished_before_it(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    command = [sys.executable, "-m", "nertron.cli", "ner", "-m", str(tiny_bundle), "-o", str(out)]
    fed = threading.Event()  # stdin never ends: only the signal can stop the run
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        stdin, stderr = process.stdin, process.stderr
        assert stdin is not None and stderr is not None

        def feed() -> None:
            with contextlib.suppress(OSError, ValueError):
                while not fed.is_set():
                    stdin.write("Angela Merkel in Paris\n" * 100)
                    stdin.flush()

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            deadline = time.monotonic() + 120  # a guard, not the condition
            while time.monotonic() < deadline and out.read_text() == "old\n":
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 128 + signal.SIGTERM
            assert stderr.read().strip().endswith("nertron ner: terminated")
        finally:
            fed.set()
            process.kill()
            feeder.join()
            with contextlib.suppress(OSError):
                stdin.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["text"] == "Angela Merkel in Paris" for row in rows)
    assert no_partials(tmp_path)


def test_a_lone_surrogate_is_a_malformed_record_that_skip_skips(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"text": "Angela Merkel \\ud800 in Paris"}\n{"text": "Angela Merkel in Paris"}\n')
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "-o", str(out))
    assert code == 2
    one_line_error(err, f"{source}:1: field 'text' holds a lone surrogate \\ud800 at index 14")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "-o", str(out), "--on-error", "skip")
    assert code == 0, err
    assert f"skipped {source}:1: field 'text' holds a lone surrogate" in err
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [2]
    source.write_text('{"text": "Paris", "id": "\\udc80"}\n')  # in a field carried to the output
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "--on-error", "skip")
    assert code == 0 and "field 'id' holds a lone surrogate" in err
    # Text arguments that are not UTF-8 reach Python as lone surrogates (surrogateescape).
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), os.fsdecode(b"\xed\xa0\x80 Paris"), "Paris")
    assert code == 2
    one_line_error(err, "<arguments>:1: not valid UTF-8 (byte 0xed at character 0)")


def test_a_broken_json_line_is_reported_whole(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a\tb"}\n')
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source))
    assert code == 2
    one_line_error(err, f"{source}:1: not valid JSON: Invalid control character (column 12)")


def test_sdk_path_and_text_mistakes_are_nertron_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(NertronError, match="model /nonexistent does not exist") as missing:
        NER("/nonexistent")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, MissingFile)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidFile, match="is a file; a bundle is a directory"):
        NER(tmp_path / "file")
    with NER(tiny_bundle) as ner:
        with pytest.raises(ValueError, match=r"^texts\[1\] holds a lone surrogate U\+D800 at index 14"):
            ner.batch(["Paris", "Angela Merkel \ud800 in Paris"])
        with pytest.raises(ValueError, match=r"^text holds a lone surrogate U\+DC80 at index 0"):
            ner("\udc80")
        with pytest.raises(ValueError, match=r"^docs\[0\]\[1\] holds a lone surrogate"):
            ner.tag([["Paris", "\ud800"]])


# -- what a new user meets ------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"nertron {__version__}\n"


class Terminal(io.StringIO):
    """Lines typed on a terminal (stdin is a tty)."""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no file behind it")


def test_ner_on_a_terminal_says_it_reads_stdin(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("Angela Merkel in Paris\n"))
    code, printed, err = run(capsys, "ner", "-m", str(tiny_bundle))
    assert code == 0 and json.loads(printed)["text"] == "Angela Merkel in Paris"
    assert "reading texts from stdin, one per line; Ctrl-D ends" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("Paris\n"))  # a pipe or a file: nothing to say
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle))
    assert code == 0 and "reading texts" not in err


def test_a_min_score_above_every_score_warns_once(
    default_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "The EU and Germany."]
    code, printed, _ = run(capsys, "ner", "-m", str(default_int8), *texts)
    highest = max(entity["score"] for line in printed.splitlines() for entity in json.loads(line)["entities"])
    assert highest < 1.0
    above = f"{(highest + 1.0) / 2:.6f}"
    at_most = f"{math.floor(highest * 1e6) / 1e6:.6f}"  # rounded down: no entity is left out
    code, printed, err = run(capsys, "ner", "-m", str(default_int8), "--min-score", above, *texts)
    assert code == 0 and all(not json.loads(line)["entities"] for line in printed.splitlines())
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "is above every score the model gave" in warnings[0]
    assert f"{highest:.4f}" in warnings[0]
    code, _, err = run(capsys, "ner", "-m", str(default_int8), "--min-score", at_most, *texts)
    assert code == 0 and "warning" not in err


def test_serve_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "repository"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "bf16" not in text  # the server runs int8 or fp32
        blocks = re.split(r"\n(?=  -)", text.split("options:")[1])  # one block per option
        for block in filter(str.strip, blocks):
            flag = block.split()[0].rstrip(",")
            if flag in ("-h", "--out", "--deployment", "--tritonserver") or flag.startswith("-m"):
                continue  # no default (a required path, a help flag) or one said in words
            assert "default" in block, block
