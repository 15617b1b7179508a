"""Bad input and unusable files end in one clear line and exit status 2 (CLI) or a named TypeError/ValueError
(SDK), never a traceback; work finished before a failure is kept."""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nertron import NER
from nertron.cli import main
from nertron.serving.processes import free_port

from tests.properties import examples


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *fragments: str) -> str:
    """The single error line of ``err`` (besides progress output); checks that it holds ``fragments``."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_model_file(
    bundle_copy: Path, damage: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = bundle_copy / "model.onnx"
    data = model.read_bytes()
    model.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x07" * len(data)}[damage])
    code, _, err = run(capsys, "ner", "-m", str(bundle_copy), "Paris")
    assert code == 2
    one_line_error(err, str(model), "re-export the bundle")
    monkeypatch.setenv("NERTRON_MODEL", str(bundle_copy))  # the same through the environment
    code, _, err = run(capsys, "ner", "Paris")
    assert code == 2
    one_line_error(err, str(model))
    with pytest.raises(ValueError, match=r"model\.onnx"):
        NER(bundle_copy)


def test_garbage_tokenizer_and_manifest_name_their_file(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer = bundle_copy / "tokenizer.json"
    original = tokenizer.read_text()
    tokenizer.write_text("this is not json")
    code, _, err = run(capsys, "ner", "-m", str(bundle_copy), "Paris")
    assert code == 2
    one_line_error(err, str(tokenizer), "not a valid tokenizer file")
    tokenizer.write_text(original)
    manifest = bundle_copy / "manifest.json"
    good = json.loads(manifest.read_text())
    for content, why in [
        ("{not json", "not valid JSON"),
        (json.dumps({**good, "labels": "O"}), "field 'labels' must be a list of str"),
        (json.dumps({k: v for k, v in good.items() if k != "max_length"}), "field 'max_length' is missing"),
        (json.dumps({**good, "labels": ["O", "X-PER"]}), "label 1 ('X-PER') is not O"),
        (json.dumps({**good, "special_tokens": {"bos": 0}}), "field 'eos' is missing"),
    ]:
        manifest.write_text(content)
        code, _, err = run(capsys, "ner", "-m", str(bundle_copy), "Paris")
        assert code == 2
        one_line_error(err, str(manifest), why)


def test_missing_paths(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ner", "-m", str(tmp_path / "nonexistent"), "Paris")
    assert code == 2
    one_line_error(err, str(tmp_path / "nonexistent"), "does not exist")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(tmp_path))
    assert code == 2
    one_line_error(err, str(tmp_path), "is a directory")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(tmp_path / "missing.txt"))
    assert code == 2
    one_line_error(err, "missing.txt", "does not exist")
    (tmp_path / "in.txt").write_text("Paris\n")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path))
    assert code == 2
    one_line_error(err, "-o", "is a directory")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-o", str(tmp_path / "no" / "such" / "o.jsonl"), "x")
    assert code == 2
    one_line_error(err, "does not exist")


def test_unreachable_server_without_fallback(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "ner", "-m", str(tiny_bundle), "--url", url, "--no-fallback", "Paris")
    assert code == 2 and out == ""
    one_line_error(err, f"Triton at {url}", "nertron serve", "--no-fallback")


def test_a_busy_port_is_an_error_before_anything_starts(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(
            capsys, "serve", "-m", str(tiny_bundle), "--grpc-port", str(port), "--http-port", "0", "--metrics-port", "0"
        )
    assert code == 2
    one_line_error(err, f"port {port} on 127.0.0.1 is in use", "--grpc-port")
    assert "ready" not in err


def test_python_api_checks_its_arguments(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle)
    with pytest.raises(TypeError, match="texts must be a sequence of str, got a single str"):
        ner.batch("Angela Merkel in Paris.")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="texts must be an iterable of str"):
        list(ner.pipe("Angela Merkel in Paris."))  # type: ignore[arg-type]
    for bad, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError), ("a", TypeError), (True, TypeError)):
        with pytest.raises(error, match="batch_size"):
            ner.batch(["a"], batch_size=bad)  # type: ignore[arg-type]
        with pytest.raises(error, match="batch_size"):
            NER(tiny_bundle, batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"precision must be one of \('int8', 'fp32', 'bf16'\), got 'fp64'"):
        NER(precision="fp64")


# -- fuzzing: random input never gives a traceback, and offsets are exact ----------------------------------

# Lone surrogates (U+D800 to U+DFFF) included: JSON escapes them ("\\ud800"), raw lines hold their bytes.
PRINTABLE_AND_MORE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(string.printable)
    | st.characters(categories=("Cs",)),
    max_size=60,
)
LINES = st.one_of(
    PRINTABLE_AND_MORE,
    st.builds(lambda t, i: json.dumps({"id": i, "text": t}), PRINTABLE_AND_MORE, st.integers()),
    st.builds(lambda t: json.dumps({"text": "Paris", "id": t}), PRINTABLE_AND_MORE),
    st.sampled_from(["{", "[]", '{"text": 3}', '{"id": 1}', "null", "-DOCSTART- -X- O", "", "Paris NNP B-LOC"]),
)


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(lines=[b"\xc2\x85"], input_format="txt", on_error="fail", output_format="jsonl")  # U+0085 (NEL)
@example(lines=["a\u2028b\u2029c".encode()], input_format="txt", on_error="fail", output_format="jsonl")
@example(  # a lone surrogate, then a good line: skipped, and the good line kept
    lines=[b'{"text": "Angela Merkel \\ud800 in Paris"}', b'{"text": "Paris"}'],
    input_format="jsonl",
    on_error="skip",
    output_format="jsonl",
)
@given(
    lines=st.lists(
        st.one_of(LINES.map(lambda line: line.encode("utf-8", "surrogatepass")), st.binary(max_size=40)), max_size=8
    ),
    input_format=st.sampled_from(["txt", "jsonl", "conll"]),
    on_error=st.sampled_from(["fail", "skip"]),
    output_format=st.sampled_from(["jsonl", "conll"]),
)
def test_cli_on_random_input(
    tiny_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[bytes],
    input_format: str,
    on_error: str,
    output_format: str,
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.write_bytes(b"\n".join(lines))
    out.unlink(missing_ok=True)  # hypothesis reruns the body in one tmp_path: no output of an earlier example
    code, _, err = run(
        capsys,
        "ner", "-m", str(tiny_bundle), "-i", str(source), "--input-format", input_format,
        "--on-error", on_error, "--format", output_format, "-o", str(out),
    )  # fmt: skip
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err
    if code == 2:
        one_line_error(err, f"{source}:")
    if on_error == "skip":
        assert code == 0, err
    if not out.exists():  # a run that failed before its first row writes no file
        assert code == 2, err
        return
    if output_format == "jsonl":
        written = out.read_text(encoding="utf-8")
        assert written.splitlines() == written.split("\n")[:-1], "a Unicode line break was written unescaped"
        for row in map(json.loads, written.split("\n")[:-1]):  # JSON Lines: records end in "\n", and only there
            for entity in row["entities"]:
                assert row["text"][entity["start"] : entity["end"]] == entity["text"]


@settings(max_examples=examples(100))
@given(texts=st.lists(st.text(alphabet=st.characters() | st.characters(categories=("Cs",)), max_size=80), max_size=6))
def test_sdk_on_random_text(tiny_bundle: Path, texts: list[str]) -> None:
    ner = _fuzz_ner(tiny_bundle)
    unencodable = [i for i, text in enumerate(texts) if any("\ud800" <= c <= "\udfff" for c in text)]
    if unencodable:  # not Unicode text: a ValueError naming the first such text, never a crash
        with pytest.raises(ValueError, match=rf"^texts\[{unencodable[0]}\] holds a lone surrogate"):
            ner.batch(texts)
        return
    for text, entities in zip(texts, ner.batch(texts), strict=True):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text and entity.start < entity.end
            assert entity.text == entity.text.strip() or not entity.text.strip()


_NERS: dict[Path, NER] = {}


def _fuzz_ner(bundle: Path) -> NER:
    if bundle not in _NERS:  # hypothesis reruns the test body; one engine, with small windows to cut often
        _NERS[bundle] = NER(bundle, max_length=12, stride=3, batch_size=3)
    return _NERS[bundle]


MISSING = """
import sys
for module in sys.argv[1].split(","):
    sys.modules[module] = None  # as if not installed
from nertron.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("absent", "argv", "extra"),
    [
        ("tritonclient", ["ner", "--url", "127.0.0.1:1", "Paris"], "triton"),
        ("pytriton", ["serve"], "server"),
        ("tritonclient,google", ["repository", "--out", "repo"], "triton"),
        ("openvino", ["ner", "--precision", "bf16", "Paris"], "openvino"),
        ("torch", ["export", "--model", "m", "--out", "o"], "export"),
    ],
)
def test_a_missing_extra_names_its_install(
    tiny_bundle: Path, tmp_path: Path, absent: str, argv: list[str], extra: str
) -> None:
    import subprocess
    import sys

    if argv[0] in ("ner", "repository"):
        argv = [*argv[:1], "-m", str(tiny_bundle), *argv[1:]]
    done = subprocess.run(
        [sys.executable, "-c", MISSING, absent, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2, done.stderr
    one_line_error(done.stderr, f'pip install "nertron[{extra}]"')


def test_serve_names_the_bundle_whose_model_cannot_load(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = bundle_copy / "model.onnx"
    model.write_bytes(b"\x07" * model.stat().st_size)  # same size: only loading it tells
    code, _, err = run(capsys, "serve", "-m", str(bundle_copy), "--grpc-port", "0", "--http-port", "0",
                       "--metrics-port", "0")  # fmt: skip
    assert code == 2 and "Traceback" not in err.splitlines()[0]
    first = err.splitlines()[0]
    assert first.startswith("nertron serve: error: tritonserver exited with code 1 during start-up"), err
    assert f"{model.resolve()}: onnxruntime cannot load it" in err and "whole log: " in err


# -- nothing lost: an output never overwrites the input, and every failure names its file --------------------


def test_an_output_that_is_the_input_is_refused_before_anything_is_written(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "same.txt"
    source.write_text("Angela Merkel in Paris.\nBerlin\n")
    (tmp_path / "link.txt").symlink_to(source)
    (tmp_path / "sub").mkdir()
    for option, target in [
        ("-o", source),
        ("-o", tmp_path / "link.txt"),  # through a link
        ("-o", tmp_path / "sub" / ".." / "same.txt"),  # another spelling
        ("--html", source),
    ]:
        code, out, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), option, str(target))
        assert code == 2 and out == ""
        one_line_error(err, f"{option} {target} is the same file as --input {source}")
        assert source.read_text() == "Angela Merkel in Paris.\nBerlin\n"
    out_file = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "-o", str(out_file),
                       "--html", str(out_file))  # fmt: skip
    assert code == 2
    one_line_error(err, "is the same file as -o")


def test_an_output_that_stdin_reads_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    source = tmp_path / "same.txt"
    source.write_text("Paris\n")
    for argv in (["-o", str(source)], ["-i", "-", "--html", str(source)]):
        with source.open("rb") as stdin:
            done = subprocess.run(
                [sys.executable, "-m", "nertron.cli", "ner", "-m", str(tiny_bundle), *argv],
                stdin=stdin, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        assert done.returncode == 2 and source.read_text() == "Paris\n"
        one_line_error(done.stderr, f"{argv[-2]} {source} is the file stdin reads")


def test_texts_and_input_exclude_each_other_and_dash_is_stdin(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    source = tmp_path / "in.txt"
    source.write_text("Berlin\n")
    code, out, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "Paris")
    assert code == 2 and out == ""
    one_line_error(err, "give texts or --input, not both")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Paris\nRome\n"))
    code, out, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", "-")
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["Paris", "Rome"]


def test_a_full_disk_names_the_output(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (Linux)")
    source = tmp_path / "in.txt"
    source.write_text("Paris\n")
    for option in ("-o", "--html"):
        code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), option, "/dev/full")
        assert code == 2
        one_line_error(err, f"cannot write {option} /dev/full: No space left on device")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "no sentences"),
        (b"-DOCSTART- -X- O\n\n", "no sentences"),
        (b"Paris B-LOC\n\xf0\x28\x8c\x28 O\n", ":2: not valid UTF-8"),
    ],
)
def test_eval_on_a_file_without_sentences_names_it(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(content)
    code, out, err = run(capsys, "eval", "-m", str(tiny_bundle), "--data", str(data))
    assert code == 2 and out == ""
    one_line_error(err, f"{data}", why)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--threads", "100000"], "argument --threads: must be from 1 to 256, got 100000"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--min-score", "nan"], "argument --min-score: must be from 0.0 to 1.0"),
        (["--url", "127.0.0.1:99999"], "--url: url '127.0.0.1:99999': the port must be a number from 1 to 65535"),
        (["--url", "localhost"], "--url: url must be 'host:port'"),
        (["--url", "h:1", "--timeout", "inf"], "argument --timeout: must be at least 0.001, and finite, got inf"),
    ],
)
def test_bounds_and_addresses_are_checked(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), *argv, "Paris")
    assert code == 2
    one_line_error(err, fragment)


def test_a_cache_that_is_a_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.write_text("")
    monkeypatch.setenv("NERTRON_CACHE", str(cache))
    monkeypatch.delenv("NERTRON_MODEL", raising=False)
    code, _, err = run(capsys, "ner", "Paris")
    assert code == 2
    one_line_error(err, f"NERTRON_CACHE={cache} is a file")
    monkeypatch.setenv("NERTRON_CACHE", str(cache / "below"))
    code, _, err = run(capsys, "ner", "Paris")
    assert code == 2
    one_line_error(err, f"cannot create NERTRON_CACHE={cache / 'below'}")


def test_kept_fields_never_replace_the_outputs_own(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris", "n": 1}\n{"text": "Rome", "entities": ["mine"]}\n')
    code, out, err = run(capsys, "ner", "-m", str(tiny_bundle), "-i", str(source), "--keep-fields")
    assert code == 2 and [json.loads(line)["n"] for line in out.splitlines()] == [1]  # the first line is kept
    one_line_error(err, f"{source}:2: field 'entities' would be overwritten")


def test_sdk_errors_name_the_argument(tiny_bundle: Path) -> None:
    with pytest.raises(TypeError, match="model must be a bundle path"):
        NER(model=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown option 'batchsize'"):
        NER(tiny_bundle, batchsize=2)
    with NER(tiny_bundle) as ner:
        with pytest.raises(TypeError, match="texts must be a sequence of str, got NoneType"):
            ner.batch(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="texts must be an iterable of str, got int"):
            list(ner.pipe(3))  # type: ignore[arg-type]


# -- errors a user can fix (exit 2) against bugs (exit 1) ----------------------------------------------------


def test_a_bug_is_an_internal_error_not_the_users_fault(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nertron.io.corpus

    def broken(annotation: object) -> str:
        raise TypeError("'NoneType' object is not subscriptable")  # as a bug would

    monkeypatch.setattr(nertron.io.corpus, "jsonl_line", broken)
    monkeypatch.delenv("NERTRON_DEBUG", raising=False)
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "Paris")
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith("nertron ner: internal error: TypeError: 'NoneType' object is not subscriptable")
    assert "NERTRON_DEBUG=1 prints the traceback" in line
    monkeypatch.setenv("NERTRON_DEBUG", "1")
    code, _, err = run(capsys, "ner", "-m", str(tiny_bundle), "Paris")
    assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err


def test_debug_shows_the_traceback_of_a_users_error_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NERTRON_DEBUG", "1")
    code, _, err = run(capsys, "ner", "-m", str(tmp_path / "missing"), "Paris")
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("nertron ner: error: model ")


def test_an_installed_but_broken_extra_is_not_called_missing(tiny_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    fake = tmp_path / "site" / "tritonclient"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'InferInput' from 'tritonclient.grpc'\")\n"
    )
    (fake / "grpc.py").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "nertron.cli", "ner", "-m", str(tiny_bundle), "--url", "127.0.0.1:1", "Paris"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    line = one_line_error(done.stderr, "needs tritonclient, which is installed but cannot be imported")
    assert "cannot import name 'InferInput'" in line and 'pip install "nertron[triton]"' in line
