"""A server that provably serves the model the client means: bundle fingerprints, the configs and served models
that carry them, and clients that refuse another model (``ModelMismatch``) instead of mixing two in one stream.

Two tiny bundles: A, the tiny model, and B, the same model at another temperature (another fingerprint, and as
cheap to serve). One real ``tritonserver`` serves A for the module (and ``foreign``, A's model under a config
that names no bundle); the mid-stream test swaps a server of its own from A to B on one port.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from nertron import NER, ModelMismatch, TritonError, TritonUnavailable
from nertron.backends import OnnxRuntime, Triton
from nertron.backends.triton import TritonClient
from nertron.backends.triton_text import TritonTextClient
from nertron.cli import main
from nertron.model.bundle import Bundle, Calibration, Manifest
from nertron.serving.config import CONFIG_FILE, config_text, parse_config
from nertron.serving.options import ConfigOptions
from nertron.serving.repository import MODEL_TEMPLATE, write_repository
from nertron.serving.server import TritonServer
from tritonclient.utils import InferenceServerException

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "EU rejects German call to boycott British lamb.",
    "Der Bundestag in Berlin stimmte am Dienstag zu, sagte Olaf Scholz.",
    "x",
]
TEXT_MODEL = "nertron_text"
OPTIONS = ConfigOptions(instances=1, threads=1)


def recalibrated(source: Path, target: Path, temperature: float) -> Path:
    """A copy of the bundle ``source`` with ``temperature`` in its manifest."""
    shutil.copytree(source, target)
    manifest = Manifest.read(target / "manifest.json")
    dataclasses.replace(manifest, calibration=Calibration(temperature)).write(target)
    return target


@pytest.fixture(scope="module")
def bundles(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fingerprint-bundles")
    a = root / "bundle-a"
    shutil.copytree(tiny_bundle, a)
    return a, recalibrated(tiny_bundle, root / "bundle-b", 2.5)


@pytest.fixture(scope="module")
def server(bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server of bundle A (both models)."""
    repository = tmp_path_factory.mktemp("fingerprint-repository")
    write_repository(bundles[0], repository, options=OPTIONS, link=True)
    # "foreign": A's model under a config that names no bundle, as a model not written by nertron
    foreign = write_repository(bundles[0], repository, name="foreign", options=OPTIONS, text_model=False, link=True)
    config = parse_config((foreign / CONFIG_FILE).read_text())
    del config.parameters["nertron_fingerprint"], config.parameters["nertron_bundle"]
    (foreign / CONFIG_FILE).write_text(config_text(config))
    with TritonServer(repository, startup_timeout=60, stop_timeout=15) as served:
        yield served


def mismatch(url: str, served: Path, local: Path) -> str:
    """The message of the ``ModelMismatch`` of a client of ``local`` at a server of ``served``."""
    return (
        f"the server at {url} serves model {Bundle.load(served).fingerprint} (bundle {served}), "
        f"not {Bundle.load(local).fingerprint} (bundle {local})"
    )


def entity_dicts(found: list[list[Any]]) -> list[list[dict[str, Any]]]:
    return [[entity.to_dict() for entity in entities] for entities in found]


# -- the fingerprint ---------------------------------------------------------------------------------


def test_the_fingerprint_is_a_function_of_the_content(tiny_bundle: Path, tmp_path: Path) -> None:
    original = Bundle.load(tiny_bundle, verify=True)
    assert re.fullmatch(r"[0-9a-f]{16}", original.fingerprint)
    assert json.loads((tiny_bundle / "manifest.json").read_text())["fingerprint"] == original.fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    assert Bundle.load(copy).fingerprint == original.fingerprint  # where it is does not count

    def changed(name: str, **changes: Any) -> str:
        bundle = tmp_path / name
        shutil.copytree(tiny_bundle, bundle)
        dataclasses.replace(Manifest.read(bundle / "manifest.json"), **changes).write(bundle)
        loaded = Bundle.load(bundle, verify=True)  # the manifest carries the new fingerprint
        assert loaded.manifest.fingerprint == loaded.fingerprint
        return loaded.fingerprint

    labels = list(original.labels)
    labels[1], labels[3] = labels[3], labels[1]
    fingerprints = {
        original.fingerprint,
        changed("temperature", calibration=Calibration(1.5)),
        changed("labels", labels=tuple(labels)),
        changed("length", max_length=original.max_length - 8),
        changed("provenance", provenance={"source": "elsewhere"}),  # informative only
    }
    assert len(fingerprints) == 4
    assert changed("calibration-data", calibration=Calibration(1.5, "dev.txt")) == changed(
        "same-temperature", calibration=Calibration(1.5, "test.txt")
    )

    weights = tmp_path / "weights"
    shutil.copytree(tiny_bundle, weights)
    with (weights / "model.onnx").open("ab") as model:
        model.write(b"\0")
    Manifest.read(weights / "manifest.json").with_model(weights / "model.onnx").write(weights)
    assert Bundle.load(weights, verify=True).fingerprint not in fingerprints

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tiny_bundle, tokenizer)
    path = tokenizer / "tokenizer.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=1))  # the same content, other bytes
    assert Bundle.load(tokenizer).fingerprint not in fingerprints
    with pytest.raises(ValueError, match=r"manifest.json: fingerprint \w+ does not match the bundle's files"):
        Bundle.load(tokenizer, verify=True)  # the stored fingerprint is the old one


def test_repositories_carry_the_fingerprint(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    a = Bundle.load(bundles[0])
    model_dir = write_repository(a, tmp_path / "repository", deployment="cpu")
    for directory in (model_dir, tmp_path / "repository" / TEXT_MODEL):
        config = parse_config((directory / CONFIG_FILE).read_text())
        assert config.parameters["nertron_fingerprint"].string_value == a.fingerprint
        assert config.parameters["nertron_bundle"].string_value == str(a.path)
        assert Bundle.load(directory / "1", verify=True).fingerprint == a.fingerprint  # the version dirs are A
    text = parse_config((tmp_path / "repository" / TEXT_MODEL / CONFIG_FILE).read_text())
    assert text.parameters["max_length"].string_value == str(a.max_length)
    assert text.parameters["stride"].string_value == str((a.max_length - 2) // 4)


# -- a server of A, a client of B ----------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [None, OnnxRuntime(threads=1)], ids=["no fallback", "fallback"])
def test_a_client_of_another_bundle_gets_no_row(
    server: TritonServer, bundles: tuple[Path, Path], fallback: OnnxRuntime | None
) -> None:
    a, b = bundles
    message = mismatch(server.grpc_url, a, b)
    for spec in (Triton(server.grpc_url, fallback=fallback), Triton(server.grpc_url, text_model=TEXT_MODEL)):
        with pytest.raises(ModelMismatch) as raised:
            NER(b, backend=spec)
        assert str(raised.value) == message
        assert not isinstance(raised.value, TritonUnavailable)
    with TritonTextClient(
        Triton(server.grpc_url, text_model=TEXT_MODEL), fingerprint=Bundle.load(b).fingerprint, bundle=b
    ) as client:
        with pytest.raises(ModelMismatch, match=re.escape(message)):
            client.connect()
        assert client.info is None


@pytest.mark.parametrize("options", [[], ["--no-fallback"]], ids=["fallback", "no fallback"])
def test_the_cli_says_so_in_one_line(
    server: TritonServer, bundles: tuple[Path, Path], options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = bundles
    code = main(["ner", "-m", str(b), "--url", server.grpc_url, *options, *TEXTS])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"nertron ner: error: {mismatch(server.grpc_url, a, b)}\n"


def test_each_request_names_the_model_it_expects(server: TritonServer, bundles: tuple[Path, Path]) -> None:
    """Whatever the client read at connect, the served models refuse a request for another bundle."""
    a, b = bundles
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for model in (TEXT_MODEL, "nertron"):
            config = client.get_model_config(model, as_json=True)["config"]["parameters"]
            assert config["nertron_fingerprint"]["string_value"] == Bundle.load(a).fingerprint
            assert config["nertron_bundle"]["string_value"] == str(a)
        text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"Angela Merkel"]], dtype=object))
        ids = [grpcclient.InferInput(name, [1, 3], "INT64") for name in ("input_ids", "attention_mask")]
        ids[0].set_data_from_numpy(np.array([[0, 5, 2]], dtype=np.int64))
        ids[1].set_data_from_numpy(np.ones((1, 3), dtype=np.int64))
        refusal = re.escape(f"nertron_fingerprint mismatch: this model is {Bundle.load(a).fingerprint} (bundle {a})")
        for model, inputs in ((TEXT_MODEL, [text]), ("nertron", ids)):
            client.infer(model, inputs)  # no fingerprint: any client is served
            client.infer(model, inputs, parameters={"nertron_fingerprint": Bundle.load(a).fingerprint})
            with pytest.raises(InferenceServerException, match=refusal):
                client.infer(model, inputs, parameters={"nertron_fingerprint": Bundle.load(b).fingerprint})


def test_a_model_that_names_no_bundle_is_refused(server: TritonServer, bundles: tuple[Path, Path]) -> None:
    a = bundles[0]
    message = f"the server at {server.grpc_url} serves model 'foreign' without a nertron_fingerprint config parameter"
    for fallback in (None, OnnxRuntime(threads=1)):
        with pytest.raises(TritonError, match=re.escape(message)) as raised:
            NER(a, backend=Triton(server.grpc_url, model="foreign", fallback=fallback))
        assert raised.type is TritonError
    with TritonClient(Triton(server.grpc_url, model="foreign", fallback=None)) as unchecked:
        unchecked.connect()  # a client made for no bundle checks nothing


# -- a server of A, a client of A ----------------------------------------------------------------------


def test_the_same_bundle_runs_and_equals_in_process(server: TritonServer, bundles: tuple[Path, Path]) -> None:
    a = bundles[0]
    with NER(a) as local:
        expected = entity_dicts(local.batch(TEXTS))
    for spec in (Triton(server.grpc_url, fallback=None), Triton(server.grpc_url, text_model=TEXT_MODEL)):
        with NER(a, backend=spec) as served:
            assert entity_dicts(served.batch(TEXTS)) == expected
            rows = served.served_rows
            assert rows is None or (rows.server > 0 and rows.fallback == 0)


# -- the server swapped under a stream -----------------------------------------------------------------


# A served model that reads no request parameter, as the GPU deployments' ``nertron`` (not a python model):
# only the client's checks on (re)connect can tell which bundle it is.
UNCHECKED_SUFFIX = """

identity.mismatch = lambda *args: None
"""


class Swappable:
    """A server on fixed ports whose repository is written for one bundle, then another; besides its two
    models, ``unchecked`` (see ``UNCHECKED_SUFFIX``)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.server: TritonServer | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def serve(self, bundle: Path) -> TritonServer:
        self.stop()
        write_repository(bundle, self.repository, options=OPTIONS, link=True)
        unchecked = write_repository(bundle, self.repository, name="unchecked", options=OPTIONS, text_model=False)
        (unchecked / "1" / "model.py").write_text(MODEL_TEMPLATE.read_text() + UNCHECKED_SUFFIX)
        if self.server is None:
            self.server = TritonServer(self.repository, startup_timeout=60, stop_timeout=15)
        return self.server.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class Paused:
    """Texts that pause after the first ``before``: ``reached`` is set when the stream asks for more, and the
    rest follow once ``resume`` is set."""

    def __init__(self, texts: list[str], before: int) -> None:
        self.texts, self.before = texts, before
        self.reached, self.resume = threading.Event(), threading.Event()

    def __iter__(self) -> Iterator[str]:
        yield from self.texts[: self.before]
        self.reached.set()
        assert self.resume.wait(120)
        yield from self.texts[self.before :]


class Stream(threading.Thread):
    """Drains ``ner.pipe`` over paused texts: the entities it got, and what ended it."""

    def __init__(self, ner: NER, texts: Paused) -> None:
        super().__init__(daemon=True)
        self.ner, self.texts = ner, texts
        self.got: list[list[dict[str, Any]]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for entities in self.ner.pipe(self.texts, batch_size=8):
                self.got.append([e.to_dict() for e in entities])
        except BaseException as error:
            self.error = error
        finally:
            self.texts.reached.set()


def quiet_output(process: subprocess.Popen[str]) -> str:
    """What ``process`` writes to stdout until it has written a row and then nothing for a second; read
    unbuffered, so that ``communicate()`` reads the rest."""
    assert process.stdout is not None
    out = b""
    while select.select([process.stdout], [], [], 1.0 if out else 120)[0]:
        chunk = os.read(process.stdout.fileno(), 1 << 20)
        if not chunk:
            break
        out += chunk
    assert out, "no row from nertron ner"
    return out.decode()


def cli_process(bundle: Path, url: str) -> subprocess.Popen[str]:
    """``nertron ner`` reading texts from a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "nertron.cli", "ner", "-m", str(bundle), "--url", url, "--batch-size", "8"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_server_swapped_mid_stream_stops_the_stream(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    """Streams of A (token ids with and without fallback, the text model, the CLI) get their first rows from a
    server of A; then the server is restarted with B on the same port: each stops with ``ModelMismatch``,
    every row before it A's. (Over 512 texts before the pause: the SDK reads 2 x 256 windows ahead.) A request
    sent while the server is down is retried on a channel checked anew, so a model that checks no request
    finds B too."""
    a, b = bundles
    texts = [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(800)]
    before = 600
    with NER(a) as local:
        expected = entity_dicts(local.batch(texts))
    swappable = Swappable(tmp_path / "repository")
    ners: list[NER] = []
    cli: subprocess.Popen[str] | None = None
    try:
        url = swappable.serve(a).grpc_url
        cli = cli_process(a, url)
        assert cli.stdin is not None and cli.stdout is not None
        cli.stdin.write("".join(f"{text}\n" for text in texts[:before]))
        cli.stdin.flush()
        specs = {
            "token ids": Triton(url, probe_interval=0.1),
            "token ids, no fallback": Triton(url, fallback=None),
            "text model": Triton(url, text_model=TEXT_MODEL, probe_interval=0.1),
        }
        ners = [NER(a, backend=spec) for spec in specs.values()]
        streams = [Stream(ner, Paused(texts, before)) for ner in ners]
        for stream in streams:
            stream.start()
        for stream in streams:
            assert stream.texts.reached.wait(120)
        first = quiet_output(cli)
        time.sleep(1)  # the requests in flight are answered: a stopping server answers NOT_FOUND

        retried = TritonClient(
            Triton(url, model="unchecked", fallback=None, retries=6, retry_backoff=0.25),
            fingerprint=Bundle.load(a).fingerprint,
            bundle=a,
        )
        retried.connect()
        ners.append(NER(a, backend=retried))  # closes it
        swappable.stop()
        unchecked = Stream(ners[-1], Paused(texts[:8], 8))
        unchecked.texts.resume.set()
        unchecked.start()  # while the server is down: retried until the server is back (up to 16 s)
        swappable.serve(b)  # same ports, the other bundle
        unchecked.join(60)
        assert isinstance(unchecked.error, ModelMismatch) and not unchecked.got, unchecked.error
        assert str(unchecked.error) == mismatch(url, b, a)

        for stream in streams:
            stream.texts.resume.set()
        for name, stream in zip(specs, streams, strict=True):
            stream.join(120)
            assert isinstance(stream.error, ModelMismatch), (name, stream.error)
            assert str(stream.error) == mismatch(url, b, a), name
            assert stream.got and stream.got == expected[: len(stream.got)], name  # every row before is A's
            assert len(stream.got) < len(texts), name
        out, err = cli.communicate("".join(f"{text}\n" for text in texts[before:]), timeout=120)
        cli_rows = [json.loads(line) for line in (first + out).splitlines()]
        assert cli.returncode == 2, err
        assert err == f"nertron ner: error: {mismatch(url, b, a)}\n"
        assert [row["entities"] for row in cli_rows] == expected[: len(cli_rows)]
        assert 0 < len(cli_rows) < len(texts)
    finally:
        for ner in ners:
            ner.close()
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.communicate()
        swappable.close()
