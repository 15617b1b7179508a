"""Triton serving against a real ``tritonserver`` (nvidia-pytriton's binary, python backend, CPU).

One server serves the tiny model's CPU repository for the module, with three extra models: the same
model without ragged batching, one that replies with the wrong shape and one that replies too late.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from nertron import NER, ServedRows
from nertron.backends import TLS, OnnxRuntime, Triton, create_backend
from nertron.backends.fallback import FallbackBackend
from nertron.backends.onnxruntime import OnnxRuntimeBackend
from nertron.backends.triton import TritonClient, TritonError
from nertron.model.bundle import Bundle
from nertron.model.default import embedded_spec
from nertron.serving.config import CONFIG_FILE, config_text, model_config, parse_config, text_model_config
from nertron.serving.options import DEPLOYMENTS, TEXT_MODEL_NAME, ConfigOptions, Signature
from nertron.serving.processes import free_port, private_tempdir, remove_stale
from nertron.serving.repository import (
    BUILD_SCRIPT,
    MODEL_TEMPLATE,
    TEXT_MODEL_TEMPLATE,
    build_script,
    write_repositories,
    write_repository,
)
from nertron.serving.server import TritonServer, TritonServerError
from nertron_export.tiny import CONLL_LABELS
from tritonclient.grpc.model_config_pb2 import TYPE_STRING

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "EU rejects German call to boycott British lamb.",
    "Der Bundestag in Berlin stimmte am Dienstag zu, sagte Olaf Scholz.",
    "東京で会議が開かれた。 Москва и Санкт-Петербург.",
    "x",
]

BROKEN_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            logits = np.zeros((ids.shape[0], ids.shape[1] + 1, 9), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", logits)]))
        return responses
"""

SLOW_MODEL_SUFFIX = """

import time

_execute = TritonPythonModel.execute


def _slow_execute(self, requests):
    time.sleep(1.5)
    return _execute(self, requests)


TritonPythonModel.execute = _slow_execute
"""


def add_model(repository: Path, bundle: Path, name: str, model_py: str | None, options: ConfigOptions) -> None:
    model_dir = write_repository(bundle, repository, name=name, options=options, text_model=False)
    if model_py is not None:
        (model_dir / "1" / "model.py").write_text(model_py)


@pytest.fixture(scope="module")
def repository(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton-repository")
    # One instance and a 10 ms window: the batching tests count executions of requests all in flight at once,
    # and 2 ms was too short for the client to queue 64 of them on a loaded machine (17 executions seen in CI).
    batching = {"threads": 1, "instances": 1, "max_queue_delay_us": 10000}
    add_model(root, tiny_bundle, "nertron", None, ConfigOptions(**batching))
    add_model(root, tiny_bundle, "nertron_fixed", None, ConfigOptions(ragged=False, **batching))
    add_model(root, tiny_bundle, "broken", BROKEN_MODEL, ConfigOptions())
    add_model(root, tiny_bundle, "slow", MODEL_TEMPLATE.read_text() + SLOW_MODEL_SUFFIX, ConfigOptions(threads=1))
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[TritonServer]:
    server = TritonServer(repository, startup_timeout=60, stop_timeout=15)
    try:
        server.start()
        yield server
    finally:
        code, log = server.stop(), server.log()
        server.close()
    assert code == 0, f"tritonserver exited with {code} on SIGTERM:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def local(tiny_bundle: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(Bundle.load(tiny_bundle).model_path, threads=1)


def statistics(server: TritonServer, model: str) -> dict[str, int]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True, client_timeout=5)["model_stats"][0]
    return {
        "inferences": int(stats.get("inference_count", 0)),
        "executions": int(stats.get("execution_count", 0)),
    }


def random_batches(count: int, seed: int, rows: tuple[int, int] = (1, 4)) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        n, length = int(rng.integers(*rows)), int(rng.integers(3, 64))
        ids = rng.integers(4, 190, size=(n, length))
        mask = np.ones_like(ids)
        mask[0, length - int(rng.integers(0, length - 1)) :] = 0  # a padded row
        batches.append((ids, mask))
    return batches


def client(url: str, max_length: int | None = None, **options: object) -> TritonClient:
    """A client without fallback: failures raise ``TritonError``."""
    return TritonClient(Triton(url, fallback=None, **options), max_length=max_length)  # type: ignore[arg-type]


def with_fallback(url: str, local: OnnxRuntimeBackend, **options: object) -> FallbackBackend:
    """A client that computes what the server does not answer with a backend like ``local`` (its own: the
    fallback backend is closed with the client)."""
    primary = TritonClient(Triton(url, **options))  # type: ignore[arg-type]
    model = local.model_path
    return FallbackBackend(
        primary, lambda: OnnxRuntimeBackend(model, threads=1), probe_interval=primary.spec.probe_interval
    )


def triton_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nertron.triton" and r.levelno == logging.WARNING]


class Probes:
    """Counts the connects of ``client`` from now on, those that fail and those that succeed: once a fallback
    client has degraded, each is a probe of its prober. A test waits for counts, not for time to pass."""

    def __init__(self, client: TritonClient) -> None:
        self._connect = client.connect
        self.failed = self.succeeded = 0
        self._changed = threading.Condition()
        client.connect = self._counted  # type: ignore[method-assign]

    def _counted(self) -> None:
        try:
            self._connect()
        except BaseException:
            with self._changed:
                self.failed += 1
                self._changed.notify_all()
            raise
        with self._changed:
            self.succeeded += 1
            self._changed.notify_all()

    def wait(self, *, failed: int = 0, succeeded: int = 0) -> None:
        """Until at least ``failed`` probes failed and ``succeeded`` succeeded; the deadline only keeps a prober
        that never runs from hanging the test (probes come every fraction of a second)."""
        with self._changed:
            reached = self._changed.wait_for(lambda: self.failed >= failed and self.succeeded >= succeeded, 120)
            assert reached, f"probes: {self.failed} failed, {self.succeeded} succeeded; awaited {failed}, {succeeded}"


# -- the python-backend model's run planning ------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_model(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    """``model.py`` imported outside Triton (its ``triton_python_backend_utils`` is only used to reply)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("nertron_triton_model", MODEL_TEMPLATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.undo()
    return module


def plan_cost(module: types.ModuleType, shapes: list[tuple[int, int]], runs: list[list[int]]) -> float:
    cost = 0.0
    for run in runs:
        length = max(shapes[i][1] for i in run)
        rows = sum(shapes[i][0] for i in run)
        cost += module.RUN_OVERHEAD_TOKENS + rows * length * (1 + length * module.ATTENTION_PER_LENGTH)
    return cost


def test_runs_are_planned_by_length(triton_model: types.ModuleType) -> None:
    plan = triton_model.plan_runs
    assert plan([]) == []
    assert plan([(1, 20)] * 8) == [list(range(8))]  # one shape: one run
    assert plan([(1, 5), (1, 100)]) == [[0], [1]]  # a short request is not padded to a long one
    assert plan([(1, 11), (1, 60), (1, 10), (1, 58)]) == [[2, 0], [3, 1]]
    rng = np.random.default_rng(0)
    for _ in range(200):
        shapes = [(int(rng.integers(1, 4)), int(rng.integers(1, 130))) for _ in range(int(rng.integers(1, 8)))]
        runs = plan(shapes)
        assert sorted(i for run in runs for i in run) == list(range(len(shapes)))
        # least cost over every split of the length-sorted requests into consecutive runs (brute force)
        order = sorted(range(len(shapes)), key=lambda i: shapes[i][1])
        best = min(
            plan_cost(triton_model, shapes, [order[a:b] for a, b in itertools.pairwise((0, *cuts, len(order)))])
            for k in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), k)
        )
        assert plan_cost(triton_model, shapes, runs) == pytest.approx(best)


# -- model repository -------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_configs_parse_into_model_config(deployment: str) -> None:
    signature = Signature(num_labels=9, max_length=512)
    config = parse_config(config_text(model_config(deployment, signature, ConfigOptions(max_batch_size=32))))
    assert config.name == "nertron" and config.max_batch_size == 32
    assert [i.name for i in config.input] == ["input_ids", "attention_mask"]
    assert all(list(i.dims) == [-1] for i in config.input)
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [-1, 9])]
    assert config.HasField("dynamic_batching")
    kind = config.instance_group[0].kind
    if deployment == "cpu":
        assert config.backend == "python" and kind == config.instance_group[0].KIND_CPU
        assert all(i.allow_ragged_batch for i in config.input)
    else:
        assert kind == config.instance_group[0].KIND_GPU
        assert not any(i.allow_ragged_batch for i in config.input)
    if deployment == "onnx-gpu":
        assert config.platform == "onnxruntime_onnx"
        (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
        assert trt.parameters["trt_engine_cache_enable"] == "1"
        assert trt.parameters["trt_profile_max_shapes"] == "input_ids:32x512,attention_mask:32x512"
    if deployment == "tensorrt":
        assert config.platform == "tensorrt_plan"


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_text_model_configs_parse_into_model_config(deployment: str) -> None:
    signature = Signature(num_labels=3, max_length=512, labels=("O", "B-PER", "I-PER"), scheme="IOB2")
    config = parse_config(config_text(text_model_config(deployment, signature, ConfigOptions(max_batch_size=32))))
    assert (config.name, config.backend, config.max_batch_size) == (TEXT_MODEL_NAME, "python", 32)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("TEXT", TYPE_STRING, [1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("ENTITIES", TYPE_STRING, [1])]
    assert config.HasField("dynamic_batching") and config.instance_group[0].kind == config.instance_group[0].KIND_CPU
    assert json.loads(config.parameters["labels"].string_value) == ["O", "B-PER", "I-PER"]
    assert config.parameters["scheme"].string_value == "IOB2"
    # on GPU the encoder stays on the GPU, in the other model, called through BLS
    encoder = config.parameters["encoder_model"].string_value if "encoder_model" in config.parameters else None
    assert encoder == (None if deployment == "cpu" else "nertron")


def test_config_variants_parse() -> None:
    signature = Signature(num_labels=5, max_length=128, inputs=("input_ids",))
    cpu = parse_config(config_text(model_config("cpu", signature, ConfigOptions(ragged=False, threads=2, instances=2))))
    assert not cpu.input[0].allow_ragged_batch and cpu.parameters["intra_op_threads"].string_value == "2"
    assert cpu.instance_group[0].count == 2
    gpu = parse_config(config_text(model_config("onnx-gpu", signature, ConfigOptions(tensorrt=False))))
    assert not gpu.HasField("optimization")
    with pytest.raises(ValueError, match="deployment must be one of"):
        model_config("tpu", signature)
    with pytest.raises(ValueError, match="max_batch_size"):
        ConfigOptions(max_batch_size=0)


def test_tensorrt_build_step_has_shape_profiles() -> None:
    script = build_script(Signature(num_labels=9, max_length=512), ConfigOptions(max_batch_size=64))
    assert "\ntrtexec " in script and "--onnx=1/model.onnx" in script
    assert "--saveEngine=1/model.plan" in script
    assert "--fp16" in script and "nvcr.io/nvidia/tensorrt:" in script
    assert "--minShapes=input_ids:1x1,attention_mask:1x1" in script
    assert "--optShapes=input_ids:32x128,attention_mask:32x128" in script
    assert "--maxShapes=input_ids:64x512,attention_mask:64x512" in script


def test_write_repositories(tiny_bundle: Path, tmp_path: Path) -> None:
    model_dirs = write_repositories(tiny_bundle, tmp_path)
    assert [d.relative_to(tmp_path).as_posix() for d in model_dirs] == [f"{d}/nertron" for d in DEPLOYMENTS]
    for model_dir in model_dirs:
        config = parse_config((model_dir / CONFIG_FILE).read_text())
        assert list(config.output[0].dims) == [-1, len(CONLL_LABELS)]
        assert (model_dir / "1" / "model.onnx").read_bytes() == Bundle.load(tiny_bundle).model_path.read_bytes()
        text_dir = model_dir.parent / TEXT_MODEL_NAME
        text_config = parse_config((text_dir / CONFIG_FILE).read_text())
        assert text_config.name == TEXT_MODEL_NAME and json.loads(text_config.parameters["labels"].string_value) == [
            *CONLL_LABELS
        ]
        assert (text_dir / "1" / "model.py").read_text() == TEXT_MODEL_TEMPLATE.read_text()
        text_bundle = Bundle.load(text_dir / "1", verify=True)  # complete: on GPU its model.onnx links the encoder's
        assert text_bundle.model_path.read_bytes() == Bundle.load(tiny_bundle).model_path.read_bytes()
    cpu = tmp_path / "cpu" / "nertron" / "1"
    assert (cpu / "model.py").read_text() == MODEL_TEMPLATE.read_text()
    assert Bundle.load(cpu, verify=True).labels == list(CONLL_LABELS)  # the version dir is a bundle
    assert (tmp_path / "tensorrt" / "nertron" / BUILD_SCRIPT).stat().st_mode & 0o111
    linked = write_repository(tiny_bundle, tmp_path / "linked", link=True)
    assert (linked / "1" / "model.onnx").is_symlink()


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_checked_in_repository_matches_the_default_model(deployment: str) -> None:
    spec = embedded_spec()  # the default model's labels and lengths, without assembling it
    signature = Signature(len(spec["labels"]), spec["max_length"], tuple(spec["inputs"]))
    model_dir = REPO_ROOT / "model_repository" / deployment / "nertron"
    text = (model_dir / CONFIG_FILE).read_text()
    parse_config(text)
    assert text == config_text(model_config(deployment, signature)), "regenerate model_repository (see its README)"
    text_config = (REPO_ROOT / "model_repository" / deployment / TEXT_MODEL_NAME / CONFIG_FILE).read_text()
    signature = dataclasses.replace(signature, labels=tuple(spec["labels"]), scheme=spec["scheme"])
    assert text_config == config_text(text_model_config(deployment, signature)), "regenerate model_repository"
    if deployment == "tensorrt":
        assert (model_dir / BUILD_SCRIPT).read_text() == build_script(signature)


# -- the server ------------------------------------------------------------------------------------


def test_server_fails_clearly(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TritonServer(tmp_path / "missing")
    model_dir = write_repository(tiny_bundle, tmp_path / "bad", name="bad")
    (model_dir / "1" / "model.py").write_text("raise RuntimeError('this model cannot load')\n")
    started = time.monotonic()
    with pytest.raises(TritonServerError, match=r"exited with code 1(.|\n)*this model cannot load"):
        TritonServer(tmp_path / "bad", startup_timeout=30).start()
    assert time.monotonic() - started < 30


def test_serve_stops_the_server_on_sigterm(tiny_bundle: Path, tmp_path: Path) -> None:
    write_repository(tiny_bundle, tmp_path, link=True)
    script = (
        "import sys\nfrom nertron.serving.server import TritonServer, serve\n"
        "sys.exit(serve(TritonServer(sys.argv[1]), lambda server: print(server.pid, flush=True)))\n"
    )
    command = [sys.executable, "-c", script, str(tmp_path)]
    for when in ("ready", "starting"):
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as serving:
            try:
                assert serving.stdout is not None
                if when == "ready":
                    ready, _, _ = select.select([serving.stdout], [], [], 60)
                    assert ready, "the server did not start within 60 s"
                    int(serving.stdout.readline())
                else:  # tritonserver launched, still loading the model
                    deadline = time.monotonic() + 30
                    while not processes_using(tmp_path, besides=serving.pid) and time.monotonic() < deadline:
                        time.sleep(0.02)
                serving.send_signal(signal.SIGTERM)
                code = serving.wait(timeout=30)
            finally:
                serving.kill()
        assert code >= 0, f"serve() did not handle SIGTERM while {when}"
        assert code == 0 or when == "starting", serving.stderr.read() if serving.stderr else ""
        assert not processes_using(tmp_path, besides=serving.pid), f"SIGTERM while {when} left processes"


SIGNAL_DEFERRED_CHECK = """
import signal
from nertron.serving.processes import signals_deferred
reached = False
try:
    with signals_deferred():
        signal.raise_signal(signal.SIGINT)
        reached = True  # raised here, the exception would orphan a started server
except KeyboardInterrupt:
    print("KeyboardInterrupt after the block" if reached else "KeyboardInterrupt inside the block")
"""


def test_a_signal_while_the_server_process_is_created_waits_for_its_handle() -> None:
    # In a fresh interpreter: a real SIGINT must not meet signal handlers that native libraries loaded by
    # other tests (OpenVINO's, in this suite) leave in the pytest process.
    done = subprocess.run([sys.executable, "-c", SIGNAL_DEFERRED_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "KeyboardInterrupt after the block"


def processes_using(path: Path, besides: int = -1) -> list[int]:
    """Processes (but ``besides``) whose command line mentions ``path``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(path).encode() in cmdline.read_bytes() and int(cmdline.parent.name) != besides:
                found.append(int(cmdline.parent.name))
    return found


def test_triton_equals_local_inference(server: TritonServer, local: OnnxRuntimeBackend, tiny_bundle: Path) -> None:
    with client(server.grpc_url, max_in_flight=8) as backend:
        backend.connect()
        assert backend.info is not None and backend.info.num_labels == len(CONLL_LABELS)
        batches = random_batches(40, seed=1)
        batches.append((np.tile(batches[0][0][:1, :], (150, 1)), np.ones((150, batches[0][0].shape[1]), np.int64)))
        for (ids, mask), logits in zip(batches, backend.map(batches), strict=True):
            # The server pads the requests of an execution to a common length, which must not change
            # the logits of real tokens; a numpy 2 in the stub's environment would corrupt them.
            np.testing.assert_allclose(logits, local(ids, mask), rtol=0, atol=1e-5)
        np.testing.assert_allclose(backend(*batches[3]), local(*batches[3]), rtol=0, atol=1e-5)
        triton_ner = NER(tiny_bundle, backend=backend, batch_size=4)
        local_ner = NER(tiny_bundle, backend=local, batch_size=4)
        texts = [*TEXTS, " ".join(TEXTS) * 3]
        assert triton_ner.batch(texts) == local_ner.batch(texts)


def test_requests_of_different_lengths_batch(server: TritonServer, local: OnnxRuntimeBackend) -> None:
    # Single-row requests of 64 different lengths, all in flight together, sent in length order as NER
    # sends its batches (a batch without ragged batching ends at the first request of another shape).
    batches = [(np.full((1, length), 7, np.int64), np.ones((1, length), np.int64)) for length in range(1, 65)]
    cases = {
        "ragged": ("nertron", {}),
        "fixed": ("nertron_fixed", {}),
        "fixed, length buckets": ("nertron_fixed", {"length_multiple": 16, "max_length": 64}),  # type: ignore[dict-item]
    }
    executions = {}
    for case, (model, options) in cases.items():
        before = statistics(server, model)
        with client(server.grpc_url, model=model, max_in_flight=64, **options) as backend:
            for (ids, mask), logits in zip(batches, backend.map(batches), strict=True):
                np.testing.assert_allclose(logits, local(ids, mask), rtol=0, atol=1e-5)
        after = statistics(server, model)
        assert after["inferences"] - before["inferences"] == 64
        executions[case] = after["executions"] - before["executions"]
    # Dynamic batching groups only requests of one shape, unless the inputs allow ragged batches.
    assert executions["ragged"] <= 16, executions
    assert executions["fixed, length buckets"] <= 16, executions
    assert executions["fixed"] > max(executions["ragged"], executions["fixed, length buckets"]), executions


def test_server_down_from_the_start(local: OnnxRuntimeBackend, caplog: pytest.LogCaptureFixture) -> None:
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(TritonError, match=f"Triton at {url}, model 'nertron': cannot reach it"):
        client(url).connect()
    with with_fallback(url, local, probe_interval=0.2) as backend:
        assert not backend.on_server
        probes = Probes(backend.primary)
        batches = random_batches(6, seed=2)
        for (ids, mask), logits in zip(batches, backend.map(batches), strict=True):
            np.testing.assert_array_equal(logits, local(ids, mask))
        assert backend.rows == ServedRows(fallback=sum(len(ids) for ids, _ in batches))  # none sent to the server
        probes.wait(failed=3)  # the prober keeps trying: three failed re-probes, logged once
        assert not backend.on_server and probes.succeeded == 0
    assert len(triton_warnings(caplog)) == 1 and "cannot reach it" in triton_warnings(caplog)[0]


def test_wrong_port_and_missing_model_fail_clearly(server: TritonServer, local: OnnxRuntimeBackend) -> None:
    # The HTTP port speaks HTTP/1.1, not gRPC.
    with pytest.raises(TritonError, match=f"Triton at 127.0.0.1:{server.http_port}, model 'nertron': cannot reach"):
        client(f"127.0.0.1:{server.http_port}", probe_timeout=2).connect()
    with pytest.raises(
        TritonError, match=r"model 'missing': the model is not ready; models in the repository: .*nertron READY"
    ):
        client(server.grpc_url, model="missing").connect()
    with with_fallback(server.grpc_url, local, model="missing", probe_interval=0.2) as backend:
        probes = Probes(backend.primary)
        ids, mask = random_batches(1, seed=3)[0]
        np.testing.assert_array_equal(backend(ids, mask), local(ids, mask))
        assert backend.rows == ServedRows(fallback=len(ids))
        probes.wait(failed=2)  # the server answers the prober, but the model stays missing
        assert not backend.on_server and probes.succeeded == 0


def test_malformed_replies_are_not_hidden_by_the_fallback(
    server: TritonServer, local: OnnxRuntimeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    batches = random_batches(5, seed=4)
    with client(server.grpc_url, model="broken") as backend, pytest.raises(TritonError, match="malformed reply"):
        backend(*batches[0])
    with with_fallback(server.grpc_url, local, model="broken") as backend:
        with pytest.raises(TritonError, match="malformed reply") as raised:
            list(backend.map(batches))
        assert raised.type is TritonError  # not TritonUnavailable: a bug of the served model
        assert backend.on_server and backend.rows == ServedRows()
    assert not triton_warnings(caplog)


def test_late_replies_time_out(
    server: TritonServer, local: OnnxRuntimeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The slow model replies after 1.5 s: a client with a 0.3 s timeout gets gRPC's DEADLINE_EXCEEDED (its own
    deadline, not the reply), and with a fallback, the local answer; the server is up, so a probe returns to it."""
    ids, mask = random_batches(1, seed=5)[0]
    with client(server.grpc_url, model="slow", timeout=0.3) as backend, pytest.raises(TritonError, match="Deadline"):
        backend(ids, mask)
    with with_fallback(server.grpc_url, local, model="slow", timeout=0.3, probe_interval=0.2) as backend:
        probes = Probes(backend.primary)
        np.testing.assert_array_equal(backend(ids, mask), local(ids, mask))
        assert backend.rows == ServedRows(fallback=len(ids))
        (warning,) = triton_warnings(caplog)
        assert "DEADLINE_EXCEEDED" in warning, warning
        probes.wait(succeeded=1)
        assert backend.on_server


class KillAt:
    """Wraps a backend; runs ``action`` when the ``at``-th batch is taken (mid-run, requests in flight)."""

    runtime = "triton"
    concurrency = 4

    def __init__(self, backend: FallbackBackend, at: int, action: Callable[[], None]) -> None:
        self.backend, self.at, self.action = backend, at, action
        self.rows = self.batches = 0

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return next(iter(self.map([(input_ids, attention_mask)])))

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        def counted() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for batch in batches:
                if self.batches == self.at:
                    self.action()
                self.batches += 1
                self.rows += len(batch[0])
                yield batch

        return self.backend.map(counted())

    def close(self) -> None:
        self.backend.close()


def test_server_killed_mid_run_then_restarted(
    server: TritonServer, local: OnnxRuntimeBackend, tiny_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(7)
    words = " ".join(TEXTS).split()
    docs = [" ".join(rng.choice(words, size=int(rng.integers(1, 30)))) for _ in range(2000)]
    expected = NER(tiny_bundle, backend=local).batch(docs)
    spec = Triton(server.grpc_url, probe_interval=0.2, fallback=OnnxRuntime(threads=1))
    backend = create_backend(spec, Bundle.load(tiny_bundle))
    assert isinstance(backend, FallbackBackend)
    try:
        killing = KillAt(backend, at=20, action=server.kill)
        results = NER(tiny_bundle, backend=killing).batch(docs)
        assert server.process is not None and server.process.returncode is not None, "the server was killed"
        assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*")), "kill() leaves no shared memory"
        assert len(results) == 2000 and results == expected  # nothing lost, in order
        assert backend.rows.server > 0 and backend.rows.fallback > 0, backend.rows
        assert backend.rows.total == killing.rows  # each row answered once
        assert not backend.on_server
        assert len(triton_warnings(caplog)) == 1
        server.start()  # same ports
        deadline = time.monotonic() + 15
        while not backend.on_server and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backend.on_server, "the client did not return to the restarted server"
        assert NER(tiny_bundle, backend=backend).batch(docs[:200]) == expected[:200]
        assert statistics(server, "nertron")["inferences"] >= 200  # counted from the restart
        assert len(triton_warnings(caplog)) == 1, "the warning is logged once"
    finally:
        backend.close()
        if server.process is None or server.process.poll() is not None:
            server.start()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_and_auth_headers(repository: Path, tmp_path: Path, local: OnnxRuntimeBackend) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    tls = TritonServer(
        repository,
        extra_args=[
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={cert}",
            f"--grpc-server-key={key}",
            "--grpc-restricted-protocol=health,metadata,model-config,inference:x-nertron-key=secret",
        ],
    )
    with tls:
        headers = {"triton-grpc-protocol-x-nertron-key": "secret"}  # Triton prefixes gRPC keys so
        trusted = TLS(root_certificates=str(cert))
        with client(tls.grpc_url, tls=trusted, headers=headers) as backend:
            ids, mask = random_batches(1, seed=8)[0]
            np.testing.assert_allclose(backend(ids, mask), local(ids, mask), rtol=0, atol=1e-5)
        with pytest.raises(TritonError, match="cannot reach it"):
            client(tls.grpc_url, tls=trusted).connect()  # no auth header
        with pytest.raises(TritonError, match="cannot reach it"):
            client(tls.grpc_url, headers=headers, probe_timeout=1).connect()  # plaintext to a TLS port


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "dev.txt"


def test_ner_url_equals_local_on_conll_dev(server: TritonServer, tiny_bundle: Path) -> None:
    from nertron.io.conll import read_conll

    sentences = [" ".join(s.words) for d in read_conll(DEV) for s in d.sentences][:200]
    with NER(tiny_bundle, backend=Triton(server.grpc_url, fallback=None), batch_size=8) as served:
        assert served.runtime == "triton"
        assert served.batch(sentences) == NER(tiny_bundle, batch_size=8).batch(sentences)


def test_cli_ner_url_and_repository(
    server: TritonServer, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nertron.cli import main

    text = "Angela Merkel met Emmanuel Macron in Paris."
    assert main(["ner", "-m", str(tiny_bundle), "--url", server.grpc_url, "--no-fallback", text]) == 0
    served = json.loads(capsys.readouterr().out)
    assert main(["ner", "-m", str(tiny_bundle), text]) == 0
    assert served == json.loads(capsys.readouterr().out)
    assert main(["repository", "-m", str(tiny_bundle), "--out", str(tmp_path), "--deployment", "cpu"]) == 0
    parse_config((tmp_path / "cpu" / "nertron" / "config.pbtxt").read_text())
    assert (tmp_path / "cpu" / "nertron" / "1" / "model.onnx").is_file()


def test_dynamic_batching_can_be_switched_off() -> None:
    text = config_text(model_config("cpu", Signature(9, 256), ConfigOptions(dynamic_batching=False)))
    assert "dynamic_batching" not in text
    assert not parse_config(text).HasField("dynamic_batching")
    assert parse_config(config_text(model_config("cpu", Signature(9, 256)))).HasField("dynamic_batching")


def test_cli_keeps_the_rows_finished_before_the_server_dies(
    server: TritonServer, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from nertron.cli import main

    rng = np.random.default_rng(11)
    words = " ".join(TEXTS).split()
    source, out = tmp_path / "docs.txt", tmp_path / "out.jsonl"
    source.write_text("".join(" ".join(rng.choice(words, size=int(rng.integers(1, 30)))) + "\n" for _ in range(2000)))

    def kill_once_rows_are_written() -> None:
        def rows_written() -> int:  # -o takes the place of out.jsonl with its first row
            return out.read_text().count("\n") if out.exists() else 0

        deadline = time.monotonic() + 60  # a guard, not the condition
        while time.monotonic() < deadline and rows_written() < 10:
            time.sleep(0.01)
        server.kill()

    killer = threading.Thread(target=kill_once_rows_are_written)
    killer.start()
    try:
        code = main(["ner", "-m", str(tiny_bundle), "--url", server.grpc_url, "--no-fallback", "-i", str(source),
                     "-o", str(out), "--batch-size", "4"])  # fmt: skip
        killer.join()
        err = capsys.readouterr().err
        assert code == 2, err
        (line,) = [line for line in err.splitlines() if "error:" in line]
        assert f"Triton at {server.grpc_url}" in line and "were written to" in line and "--no-fallback" in line
        rows = [json.loads(row) for row in out.read_text().splitlines()]
        assert 10 <= len(rows) < 2000, len(rows)
        assert f"{len(rows)} document(s) were written" in line and f"input line {len(rows)}" in line
        assert [r["line"] for r in rows] == list(range(1, len(rows) + 1))
        texts = source.read_text().splitlines()[: len(rows)]
        assert [r["entities"] for r in rows] == [[e.to_dict() for e in d] for d in NER(tiny_bundle).batch(texts)]
    finally:
        killer.join()
        if server.process is None or server.process.poll() is not None:
            server.start()


def serve_command(bundle: Path) -> list[str]:
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    return [sys.executable, "-m", "nertron.cli", "serve", "-m", str(bundle), *ports]


def wait_until_serving(serving: subprocess.Popen[str]) -> int:
    """Reads ``nertron serve``'s stderr until it is ready; returns the pid of its tritonserver."""
    assert serving.stderr is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([serving.stderr], [], [], 1)
        if ready and "ready in" in serving.stderr.readline():
            break
    else:
        pytest.fail("nertron serve did not get ready")
    (child,) = [pid for pid in children(serving.pid) if b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return child


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_reports_a_server_that_dies(tiny_bundle: Path) -> None:
    with subprocess.Popen(serve_command(tiny_bundle), stderr=subprocess.PIPE, text=True) as serving:
        try:
            tritonserver = wait_until_serving(serving)
            os.kill(tritonserver, signal.SIGKILL)
            code = serving.wait(timeout=30)
            assert serving.stderr is not None
            err = serving.stderr.read()
        finally:
            serving.kill()
    assert code == 2, err
    assert "nertron serve: error: tritonserver exited by itself with code -9" in err
    assert "Traceback" not in err and "whole log: " in err


def descendants(pid: int) -> list[int]:
    found, parents = [], [pid]
    while parents:
        found += (kids := [kid for parent in parents for kid in children(parent)])
        parents = kids
    return found


def grpc_url_of(serving: subprocess.Popen[str]) -> str:
    """The gRPC address that ``nertron serve`` prints after its ready line."""
    assert serving.stderr is not None
    for line in serving.stderr:
        if line.strip().startswith("gRPC"):
            return line.split()[1]
    pytest.fail("nertron serve printed no gRPC address")


def load(url: str, stop: threading.Event, answered: list[int]) -> None:
    """Requests as big as the tiny model takes, back to back, until ``stop``."""
    ids = np.full((64, 60), 5, np.int64)
    inputs = [grpcclient.InferInput(name, list(ids.shape), "INT64") for name in ("input_ids", "attention_mask")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(np.ones_like(ids))
    with grpcclient.InferenceServerClient(url) as sender:
        while not stop.is_set():
            try:
                sender.infer("nertron", inputs, client_timeout=10)
                answered.append(1)
            except Exception:  # the server is gone
                stop.wait(0.05)


@pytest.mark.parametrize("loaded", [True, False], ids=["loaded", "idle"])
@pytest.mark.parametrize("target", ["pid", "group"])
def test_serve_killed_takes_every_process_it_started_along(tiny_bundle: Path, target: str, loaded: bool) -> None:
    """SIGKILL of serve (its pid, or its process group) leaves no tritonserver, no python-backend stub (a
    busy one used to outlive it for many minutes), no watchdog and no shared memory; the next start removes
    its temporary folders."""
    stop, answered = threading.Event(), []
    senders: list[threading.Thread] = []
    command = serve_command(tiny_bundle)
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True) as serving:
        started: list[int] = []
        try:
            tritonserver = wait_until_serving(serving)
            if loaded:
                url = grpc_url_of(serving)
                senders = [threading.Thread(target=load, args=(url, stop, answered)) for _ in range(4)]
                for sender in senders:
                    sender.start()
                deadline = time.monotonic() + 20
                while len(answered) < 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(answered) >= 20, "the load did not get going"
            started = descendants(serving.pid)
            stubs = [pid for pid in started if b"python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            assert tritonserver in started and stubs, started
            if target == "pid":
                serving.send_signal(signal.SIGKILL)
            else:
                os.killpg(serving.pid, signal.SIGKILL)
            serving.wait(timeout=10)
            killed = time.monotonic()
            while any(alive(pid) for pid in started) and time.monotonic() - killed < 5:
                time.sleep(0.05)
            survivors = [pid for pid in started if alive(pid)]
            assert not survivors, f"alive {time.monotonic() - killed:.1f} s after the kill: {survivors}"
        finally:
            stop.set()
            serving.kill()
            for pid in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for sender in senders:
                sender.join(timeout=15)
    assert not list(Path("/dev/shm").glob(f"nertron_triton_{serving.pid}_*"))
    left = [p for p in Path(tempfile.gettempdir()).glob(f"nertron-*-{serving.pid}-*") if p.is_dir()]
    assert sorted(p.name.split("-")[1] for p in left) == ["repository", "triton"]
    private_tempdir("triton").cleanup()  # what the next start does
    private_tempdir("repository").cleanup()
    assert not any(p.exists() for p in left)


def test_a_start_removes_only_the_files_of_dead_owners(tmp_path: Path) -> None:
    with subprocess.Popen(["true"]) as finished:
        finished.wait()
    dead, live = finished.pid, os.getpid()
    stale_folder, stale_region = tmp_path / f"nertron-triton-{dead}-abc", tmp_path / f"nertron_triton_{dead}_0123_r"
    stale_folder.mkdir()
    (stale_folder / "tritonserver-0.log").write_text("")
    stale_region.write_text("")
    kept = [f"nertron-triton-{live}-x", "nertron-triton-8zjhap02", "nertron-triton-12345678", "nertron-tritonserver-1"]
    for name in kept:
        (tmp_path / name).mkdir()
    assert remove_stale(tmp_path, "nertron-triton-") == [stale_folder]
    assert remove_stale(tmp_path, "nertron_triton_") == [stale_region]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == sorted(kept)


def established_connections(port: int) -> int:
    """TCP connections of this process to ``port`` on this machine (from /proc)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
                count += remote_port == port and state == "01" and inode in inodes
    return count


def test_closing_releases_threads_and_channels(server: TritonServer, tiny_bundle: Path) -> None:
    import threading

    def ours() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("nertron")}

    before, connections = ours(), established_connections(server.grpc_port)  # other tests' clients may be open
    served = NER(tiny_bundle, backend=Triton(server.grpc_url))
    assert served.batch(TEXTS) and established_connections(server.grpc_port) == connections + 1
    unreachable = NER(tiny_bundle, backend=Triton(f"127.0.0.1:{free_port()}", probe_interval=0.1))
    assert unreachable.batch(TEXTS) == served.batch(TEXTS)  # computed by the fallback, with its threads
    with NER(tiny_bundle) as local:
        assert local.batch(TEXTS * 10)
        assert "nertron-ort_0" in ours()
    assert "nertron-triton-probe" in ours()
    served.close()
    unreachable.close()
    assert established_connections(server.grpc_port) == connections
    assert ours() == before
    with pytest.raises(RuntimeError, match="closed"):
        served("Paris")


def test_a_fresh_client_shared_by_many_threads(server: TritonServer, local: OnnxRuntimeBackend) -> None:
    from concurrent.futures import ThreadPoolExecutor

    batches = random_batches(48, seed=9)
    with client(server.grpc_url) as shared, ThreadPoolExecutor(16) as pool:  # all connect at their first call
        results = list(pool.map(lambda batch: shared(*batch), batches))
    for (ids, mask), logits in zip(batches, results, strict=True):
        np.testing.assert_allclose(logits, local(ids, mask), rtol=0, atol=1e-5)


def test_the_default_model_through_triton_equals_in_process_across_a_kill(default_int8: Path, tmp_path: Path) -> None:
    from nertron.io.conll import read_conll

    sentences = [" ".join(s.words) for d in read_conll(DEV) for s in d.sentences][:600]
    expected = NER(default_int8).batch(sentences)
    write_repository(default_int8, tmp_path, link=True)  # the cpu deployment's defaults: 2 instances
    with TritonServer(tmp_path, startup_timeout=90) as served:
        backend = create_backend(Triton(served.grpc_url, probe_interval=0.2), Bundle.load(default_int8))
        assert isinstance(backend, FallbackBackend)
        with NER(default_int8, backend=KillAt(backend, at=8, action=served.kill), batch_size=8) as ner:
            got = ner.batch(sentences)
        assert backend.rows.server > 0 and backend.rows.fallback > 0, backend.rows
    for mine, theirs in zip(got, expected, strict=True):  # the server batched differently, and was killed
        assert [(e.text, e.label, e.start, e.end) for e in mine] == [(e.text, e.label, e.start, e.end) for e in theirs]
        assert [e.score for e in mine] == pytest.approx([e.score for e in theirs], abs=1e-5, rel=0)
