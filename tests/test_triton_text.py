"""The text-level model ``nertron_text`` (text in, entities out) on a real ``tritonserver``, from clients in
several languages: curl (KServe v2 HTTP/JSON), tritonclient (gRPC), Node's fetch, Java's java.net.http (the JDK
only), and nertron's own SDK.

One server serves the default model's CPU repository (``nertron`` and ``nertron_text``) for the module. Every
client must get exactly the entities that in-process ``NER()`` gives on 200 CoNLL dev sentences.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from nertron import NER, Entity, ServedRows
from nertron.backends import Triton
from nertron.errors import TritonError
from nertron.io.conll import read_conll
from nertron.model.bundle import Bundle, Manifest
from nertron.serving.config import describe_models, parse_config
from nertron.serving.options import MODEL_NAME, TEXT_MODEL_NAME
from nertron.serving.repository import write_repository
from nertron.serving.server import TritonServer
from tritonclient.utils import InferenceServerException

from tests.languages import WHOLE_WORD_ENTITIES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV = REPO_ROOT.parent / "shared" / "data" / "conll2003" / "dev.txt"
NODE_CLIENT = REPO_ROOT / "examples" / "clients" / "ner.mjs"
JAVA_CLIENT = REPO_ROOT / "examples" / "clients" / "Ner.java"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs java (JDK 17+) on PATH")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [" ".join(s.words) for d in read_conll(DEV) for s in d.sentences][:200]


@pytest.fixture(scope="module")
def expected(default_int8: Path, sentences: list[str]) -> list[list[dict[str, Any]]]:
    with NER(default_int8) as ner:
        return [[e.to_dict() for e in found] for found in ner.batch(sentences)]


@pytest.fixture(scope="module")
def repository(default_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-repository")
    write_repository(default_int8, root, link=True)  # the defaults of `nertron serve`
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[TritonServer]:
    with TritonServer(repository, startup_timeout=120, stop_timeout=15) as served:
        yield served
        code = served.stop()
        log = served.log()
    assert code == 0, f"tritonserver exited with {code} on SIGTERM:\n{log[-3000:]}"


def entity_keys(found: list[list[dict[str, Any]]]) -> list[list[tuple[str, str, int, int]]]:
    return [[(e["text"], e["label"], e["start"], e["end"]) for e in entities] for entities in found]


def http_infer(server: TritonServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POSTs ``body`` with curl to the text model; the HTTP status and the JSON reply."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
         f"{server.http_url}/v2/models/{TEXT_MODEL_NAME}/infer", "--data-binary", "@-"],
        input=json.dumps(body), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    reply, status = out.stdout.rsplit("\n", 1)
    return int(status), json.loads(reply)


def tensor_json(name: str, shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def texts_body(texts: list[str], **parameters: str | float) -> dict[str, Any]:
    return {
        "inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}],
        **({"parameters": parameters} if parameters else {}),
    }


# -- clients in other languages ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_gets_the_entities_of_ner(server: TritonServer, sentences: list[str], expected: list[Any]) -> None:
    found = []
    for start in range(0, len(sentences), 50):  # requests of 50 texts (max_batch_size is 64)
        status, reply = http_infer(server, texts_body(sentences[start : start + 50]))
        assert status == 200, reply
        (output,) = reply["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("ENTITIES", "BYTES", [50, 1])
        found += [json.loads(value) for value in output["data"]]
    assert found == expected
    assert sum(map(len, found)) > 300  # real entities, not empty lists


def test_node_fetch_client_gets_the_entities_of_ner(
    server: TritonServer, sentences: list[str], expected: list[Any]
) -> None:
    out = subprocess.run(
        ["node", str(NODE_CLIENT), server.http_url], input=json.dumps(sentences), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected


def java_client(server: TritonServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs Ner.java with Java's single-file source launcher (it compiles it: ~2 s), in a UTF-8 locale."""
    return subprocess.run(
        ["java", str(JAVA_CLIENT), "--url", server.http_url.removeprefix("http://"), *args], input=stdin,
        capture_output=True, text=True, encoding="utf-8", timeout=120, check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )  # fmt: skip


@needs_java
def test_java_client_gets_the_entities_of_ner(server: TritonServer, sentences: list[str], expected: list[Any]) -> None:
    out = java_client(server, stdin="".join(f"{text}\n" for text in sentences))  # one text a line
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == expected


@needs_java
def test_java_client_parameters_and_fingerprint(server: TritonServer, default_int8: Path, sentences: list[str]) -> None:
    texts = [*sentences[:20], "東京で会議が開かれた。 😀 Angela Merkel in Zürich.", ""]
    fingerprint = Bundle.load(default_int8).fingerprint
    args = ["--aggregation", "max", "--min-score", "0.5", "--batch", "8", "--fingerprint", fingerprint]
    out = java_client(server, *args, "--", *texts)  # texts as arguments
    assert out.returncode == 0, out.stderr
    with NER(default_int8, aggregation="max", min_score=0.5) as ner:
        assert [json.loads(line) for line in out.stdout.splitlines()] == [
            [e.to_dict() for e in found] for found in ner.batch(texts)
        ]
    # a job that expects another model is refused: exit 2, the server's error on one line
    out = java_client(server, "--fingerprint", "0" * 16, "Angela Merkel visited Paris.")
    assert (out.returncode, out.stdout) == (2, ""), out
    (line,) = out.stderr.splitlines()
    assert "HTTP 400" in line and "nertron_fingerprint mismatch" in line, line
    assert fingerprint in line and "0" * 16 in line, line


def test_grpc_tritonclient_one_text_per_request(
    server: TritonServer, sentences: list[str], expected: list[Any]
) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:

        def entities(text: str) -> list[dict[str, Any]]:
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            result = client.infer(TEXT_MODEL_NAME, [tensor], client_timeout=60)
            return json.loads(result.as_numpy("ENTITIES")[0, 0])

        with ThreadPoolExecutor(8) as pool:  # concurrent requests: the server batches them
            found = list(pool.map(entities, sentences))
    assert found == expected


# -- what the text model does ------------------------------------------------------------------------


def test_aggregation_is_a_request_parameter(server: TritonServer, default_int8: Path, sentences: list[str]) -> None:
    texts = sentences[:40]
    for aggregation in ("average", "max"):
        status, reply = http_infer(server, texts_body(texts, aggregation=aggregation))
        assert status == 200, reply
        with NER(default_int8, aggregation=aggregation) as ner:
            assert [json.loads(v) for v in reply["outputs"][0]["data"]] == [
                [e.to_dict() for e in found] for found in ner.batch(texts)
            ]


def test_min_score_is_a_request_parameter_and_scores_are_calibrated(
    server: TritonServer, repository: Path, default_int8: Path, sentences: list[str]
) -> None:
    bundle = Bundle.load(default_int8)
    assert bundle.manifest.calibration is not None and bundle.temperature != 1.0
    # the calibration travels with the bundle into both models of the repository
    for model in (MODEL_NAME, TEXT_MODEL_NAME):
        assert Manifest.read(repository / model / "1" / "manifest.json").calibration == bundle.manifest.calibration
    texts = sentences[:60]
    status, reply = http_infer(server, texts_body(texts, min_score=0.9))
    assert status == 200, reply
    with NER(default_int8, min_score=0.9) as ner:
        strict = [[e.to_dict() for e in found] for found in ner.batch(texts)]
    assert [json.loads(v) for v in reply["outputs"][0]["data"]] == strict
    with NER(default_int8) as ner:
        everything = ner.batch(texts)
    assert sum(map(len, strict)) < sum(map(len, everything))  # some entities are under 0.9
    assert strict == [[e.to_dict() for e in found if e.score >= 0.9] for found in everything]
    for bad in ("high", 1.5):
        status, reply = http_infer(server, texts_body(["x"], min_score=bad))
        assert status == 400 and "min_score" in reply["error"], reply


def test_long_and_unusual_texts_equal_ner(server: TritonServer, default_int8: Path, sentences: list[str]) -> None:
    texts = [
        " ".join(sentences[:150]),  # thousands of subwords: windowed, not truncated
        "",
        "   ",
        "東京で会議が開かれた。 Москва и Санкт-Петербург. 😀 Angela Merkel in Zürich.",
        "Paris\n\nBerlin\tLondon",
        *WHOLE_WORD_ENTITIES,  # Chinese, Japanese, Thai, Korean: word links, in the server too
    ]
    status, reply = http_infer(server, texts_body(texts))
    assert status == 200, reply
    with NER(default_int8) as ner:
        assert [json.loads(v) for v in reply["outputs"][0]["data"]] == [
            [e.to_dict() for e in found] for found in ner.batch(texts)
        ]
    long_entities = json.loads(reply["outputs"][0]["data"][0])
    assert long_entities[-1]["end"] > len(texts[0]) * 0.9  # the end of the long text was tagged too
    for text, served in zip(texts[5:], reply["outputs"][0]["data"][5:], strict=True):
        assert set(WHOLE_WORD_ENTITIES[text]) <= {(e["text"], e["label"]) for e in json.loads(served)}


def test_bad_requests_get_their_own_error_and_the_server_stays_up(
    server: TritonServer, sentences: list[str], expected: list[Any]
) -> None:
    status, reply = http_infer(server, texts_body(["x"], aggregation="mean"))
    assert status == 400 and "aggregation" in reply["error"] and "mean" in reply["error"]
    status, reply = http_infer(server, {"inputs": [tensor_json("TEXT", [1], "BYTES", ["x"])]})
    assert status == 400 and "shape" in reply["error"], reply
    status, reply = http_infer(server, {"inputs": [tensor_json("TEXT", [1, 1], "INT64", [1])]})
    assert status == 400 and ("TYPE_STRING" in reply["error"] or "BYTES" in reply["error"]), reply
    status, reply = http_infer(server, {"inputs": [tensor_json("IDS", [1, 1], "BYTES", ["x"])]})
    assert status == 400, reply
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"Paris"], [b"caf\xc3 \xff"]], dtype=np.object_))
        with pytest.raises(InferenceServerException, match=r"TEXT\[1\] is not valid UTF-8"):
            client.infer(TEXT_MODEL_NAME, [tensor], client_timeout=30)
        # requests in flight beside the bad ones are answered
        good = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        good.set_data_from_numpy(np.array([[sentences[0].encode()]], dtype=np.object_))
        results: list[Any] = []
        done = threading.Event()

        def collect(result: Any, error: Exception | None) -> None:
            results.append(error or json.loads(result.as_numpy("ENTITIES")[0, 0]))
            if len(results) == 20:
                done.set()

        for index in range(20):
            client.async_infer(TEXT_MODEL_NAME, [tensor if index % 2 else good], collect, client_timeout=30)
        assert done.wait(60)
        assert sum(isinstance(r, InferenceServerException) for r in results) == 10
        assert [r for r in results if not isinstance(r, Exception)] == [expected[0]] * 10
        assert client.is_server_live() and client.is_model_ready(TEXT_MODEL_NAME)


def test_labels_and_scheme_are_published(server: TritonServer, default_int8: Path) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        config = client.get_model_config(TEXT_MODEL_NAME, as_json=True)["config"]
    assert json.loads(config["parameters"]["labels"]["string_value"]) == NER(default_int8).labels
    assert config["parameters"]["scheme"]["string_value"] == "IOB2"


def test_metrics_and_model_lines(server: TritonServer, repository: Path) -> None:
    http_infer(server, texts_body(["Angela Merkel visited Paris."]))
    out = subprocess.run(["curl", "-sS", server.metrics_url], capture_output=True, text=True, timeout=30, check=True)
    for metric in ("nv_inference_request_success", "nv_inference_queue_duration_us", "nv_inference_exec_count"):
        assert f'{metric}{{model="{TEXT_MODEL_NAME}",version="1"}}' in out.stdout, metric
    lines = describe_models(repository)
    assert [line.split(":")[0] for line in lines] == ["model 'nertron'", f"model '{TEXT_MODEL_NAME}'"]
    assert all("instance(s)" in line and "dynamic batching" in line for line in lines)
    parse_config((repository / TEXT_MODEL_NAME / "config.pbtxt").read_text())


# -- the Python SDK: text model or client-side path, with fallback ------------------------------------


@pytest.mark.parametrize("text_model", [TEXT_MODEL_NAME, None])
def test_sdk_equals_in_process(
    server: TritonServer, default_int8: Path, sentences: list[str], expected: list[Any], text_model: str | None
) -> None:
    spec = Triton(server.grpc_url, text_model=text_model, fallback=None)
    with NER(default_int8, backend=spec, batch_size=8) as served:
        found = served.batch(sentences)
        assert (served._server_side is not None) == (text_model is not None)
        if served._server_side is not None:
            assert served.served_rows == ServedRows(server=len(sentences), fallback=0)
        assert served("Angela Merkel visited Paris.") == NER(default_int8)("Angela Merkel visited Paris.")
    assert [[e.to_dict() for e in entities] for entities in found] == expected


def test_sdk_text_model_missing_fails_clearly_or_falls_back(
    server: TritonServer, default_int8: Path, caplog: pytest.LogCaptureFixture
) -> None:
    absent = Triton(server.grpc_url, text_model="absent", fallback=None)
    with NER(default_int8, backend=absent) as served, pytest.raises(TritonError, match="not ready"):
        served("Paris")
    not_text = Triton(server.grpc_url, text_model="nertron", fallback=None)
    with NER(default_int8, backend=not_text) as served, pytest.raises(TritonError, match="a text model takes TEXT"):
        served("Paris")
    text = "Angela Merkel visited Paris."
    with NER(default_int8, backend=Triton(server.grpc_url, text_model="absent")) as served:
        assert served.batch([text] * 3) == [NER(default_int8)(text)] * 3
        assert served.served_rows == ServedRows(server=0, fallback=3)
    assert any("computing locally" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text_model", [TEXT_MODEL_NAME, None])
def test_sdk_across_a_server_kill_loses_nothing(
    default_int8: Path, tmp_path: Path, sentences: list[str], expected: list[Any], text_model: str | None
) -> None:
    """SIGKILL mid-run: the texts sent to the dead server are computed locally, once each, in order."""
    texts, expected = sentences * 3, expected * 3
    write_repository(default_int8, tmp_path, link=True)
    with TritonServer(tmp_path, startup_timeout=120) as served:
        spec = Triton(served.grpc_url, text_model=text_model, probe_interval=0.2)
        with NER(default_int8, backend=spec, batch_size=8) as ner:
            stop = threading.Event()

            def kill_once_answered() -> None:
                while ner.served_rows.server < 48 and not stop.is_set():  # type: ignore[union-attr]
                    stop.wait(0.001)
                served.kill()

            killer = threading.Thread(target=kill_once_answered)
            killer.start()
            try:
                found = ner.batch(texts)
            finally:
                stop.set()
                killer.join()
            rows = ner.served_rows
    assert rows is not None and rows.server > 0 and rows.fallback > 0, rows
    if text_model is not None:
        assert rows.total == len(texts)
    assert entity_keys([[e.to_dict() for e in f] for f in found]) == entity_keys(expected)
    for mine, theirs in zip(found, expected, strict=True):
        assert [e.score for e in mine] == pytest.approx([e["score"] for e in theirs], abs=1e-5, rel=0)
    assert all(isinstance(e, Entity) for f in found for e in f)
