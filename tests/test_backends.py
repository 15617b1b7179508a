"""Backend specs and NERConfig: typed, frozen, hashable, picklable; contradictions raise ValueError."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
from nertron import NER, NERConfig
from nertron.backends import TLS, OnnxRuntime, OpenVINO, Triton, create_backend
from nertron.backends.fallback import FallbackBackend
from nertron.backends.onnxruntime import OnnxRuntimeBackend
from nertron.model.bundle import Bundle


def test_specs_are_frozen_hashable_and_picklable() -> None:
    specs = [
        OnnxRuntime(),
        OnnxRuntime(threads=2, providers=["CPUExecutionProvider"], concurrent_batches=1),
        OnnxRuntime(providers=[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
        OpenVINO(precision="fp32", threads=1),
        Triton("host:8001", timeout=5, headers={"authorization": "Bearer x"}, tls=TLS(root_certificates="ca.pem")),
        Triton("host:8001", fallback=None),
    ]
    assert len(set(specs)) == len(specs)
    for spec in specs:
        assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(pickle.loads(pickle.dumps(spec)))
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.threads = 3  # type: ignore[misc, union-attr]
    assert Triton(headers={"b": "2", "a": "1"}) == Triton(headers=(("a", "1"), ("b", "2")))
    cuda = OnnxRuntime(providers=[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert cuda.provider_list() == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    config = NERConfig(model="bundle", backend=specs[4])
    assert pickle.loads(pickle.dumps(config)) == config and {config: 1}[config] == 1


def test_specs_are_values_that_replace_and_normalise() -> None:
    cuda = OnnxRuntime(providers=[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert dataclasses.replace(cuda, threads=3) == OnnxRuntime(threads=3, providers=cuda.provider_list())
    assert dataclasses.replace(cuda, threads=3).providers == cuda.providers
    listed = Triton(headers=[("b", "2"), ("a", "1")])  # a list of pairs, as gRPC takes them
    assert hash(listed) == hash(Triton(headers={"a": "1", "b": "2"})) and listed.headers == (("a", "1"), ("b", "2"))
    assert dataclasses.replace(listed, timeout=3).headers == listed.headers
    assert Triton(timeout=5).timeout == 5.0 and isinstance(Triton(timeout=5).timeout, float)
    assert Triton("[::1]:8001").url == "[::1]:8001" and Triton("triton.internal:443").url == "triton.internal:443"


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: OnnxRuntime(threads=0), ValueError, "threads must be between 1 and 256"),
        (lambda: OnnxRuntime(threads=1.5), TypeError, "threads must be an int"),  # type: ignore[arg-type]
        (lambda: OnnxRuntime(providers="CPUExecutionProvider"), TypeError, "providers must be a sequence"),
        (lambda: OpenVINO(precision="int8"), ValueError, "OpenVINO precision must be 'bf16' or 'fp32'"),
        (lambda: Triton(""), ValueError, "url must be 'host:port'"),
        (lambda: Triton("127.0.0.1"), ValueError, "url must be 'host:port'"),
        (lambda: Triton("::1:8001"), ValueError, "url must be 'host:port'"),
        (lambda: Triton("127.0.0.1:99999"), ValueError, "the port must be a number from 1 to 65535, got '99999'"),
        (lambda: Triton("127.0.0.1:0"), ValueError, "the port must be"),
        (lambda: Triton(8001), TypeError, "url must be 'host:port'"),  # type: ignore[arg-type]
        (lambda: Triton(retries=1.5), TypeError, "retries must be an int, got float"),  # type: ignore[arg-type]
        (lambda: Triton(timeout=float("nan")), ValueError, "timeout must be > 0"),
        (lambda: Triton(timeout="5"), TypeError, "timeout must be a number"),  # type: ignore[arg-type]
        (lambda: Triton(headers={"Authorization": "x"}), ValueError, "header keys must be lowercase"),
        (lambda: Triton(headers=[("a",)]), TypeError, "headers must hold"),  # type: ignore[list-item]
        (lambda: OnnxRuntime(threads=100_000), ValueError, "threads must be between 1 and 256, got 100000"),
        (lambda: OpenVINO(threads=1000), ValueError, "threads must be between 1 and 256"),
        (lambda: OnnxRuntime(providers=[3]), TypeError, r"providers\[0\] must be a name"),  # type: ignore[list-item]
        (lambda: Triton(timeout=0), ValueError, "timeout must be > 0"),
        (lambda: Triton(retries=-1), ValueError, "retries"),
        (lambda: Triton(max_in_flight=0), ValueError, "max_in_flight must be between 1 and 1024"),
        (lambda: Triton(fallback=Triton()), TypeError, "fallback must be"),  # type: ignore[arg-type]
        (lambda: NERConfig(precision="fp64"), ValueError, r"precision must be one of \('int8', 'fp32', 'bf16'\)"),
        (lambda: NERConfig(aggregation="mean"), ValueError, "aggregation must be one of"),
        (lambda: NERConfig(batch_size=0), ValueError, "batch_size must be >= 1"),
        (lambda: NERConfig(max_length=2), ValueError, "max_length must be at least 3"),
        (lambda: NERConfig(max_length=0), ValueError, "max_length must be at least 3"),
        (lambda: NERConfig(stride=-1), ValueError, r"stride must be in \[0, max_length - 2\), got -1"),
        (lambda: NERConfig(max_length=10, stride=8), ValueError, r"stride must be in \[0, 8\), got 8"),
        (lambda: NERConfig(max_length=8.0), TypeError, "max_length must be an int"),  # type: ignore[arg-type]
        (lambda: NERConfig(model=3), TypeError, "model must be a bundle path"),  # type: ignore[arg-type]
        (lambda: OnnxRuntime(2), TypeError, "positional"),  # type: ignore[misc]
        (lambda: NERConfig(backend="onnxruntime"), TypeError, "backend must be"),  # type: ignore[arg-type]
        (lambda: NERConfig(precision="bf16", backend=OnnxRuntime()), ValueError, "precision='bf16' runs on OpenVINO"),
        (lambda: NERConfig(precision="bf16", backend=OpenVINO(precision="fp32")), ValueError, "runs on OpenVINO"),
        (lambda: NERConfig(precision="int8", backend=OpenVINO()), ValueError, "contradicts backend=OpenVINO"),
        (lambda: NERConfig(precision="fp32", backend=Triton(fallback=OpenVINO())), ValueError, "contradicts"),
    ],
)
def test_contradictions_and_bad_values_raise(make: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


def test_config_decides_the_backend_and_the_variant() -> None:
    assert NERConfig().backend_spec == OnnxRuntime() and NERConfig().variant is None
    assert NERConfig(precision="bf16").backend_spec == OpenVINO(precision="bf16")
    assert NERConfig(precision="bf16").variant == "fp32"  # OpenVINO runs the fp32 weights
    assert NERConfig(backend=OpenVINO(precision="fp32")).variant == "fp32"
    assert NERConfig(precision="int8", backend=Triton(fallback=OnnxRuntime(threads=1))).variant == "int8"
    assert NERConfig(precision="bf16", backend=Triton(fallback=OpenVINO())).local_spec == OpenVINO()


def test_config_builds_the_same_ner(tiny_bundle: Path) -> None:
    config = NERConfig(model=str(tiny_bundle), aggregation="max", batch_size=3, backend=OnnxRuntime(threads=1))
    with config.build() as built, NER(tiny_bundle, aggregation="max", batch_size=3) as direct:
        assert built.config == config
        text = "Angela Merkel met Emmanuel Macron in Paris."
        assert built(text) == direct(text)
        assert isinstance(built.backend, OnnxRuntimeBackend) and built.backend.concurrency == 1


def test_factory_builds_each_kind(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    with create_backend(OnnxRuntime(threads=1), bundle) as local:
        assert local.runtime == "onnxruntime"
    with create_backend(Triton("127.0.0.1:1", probe_interval=5), bundle) as remote:
        assert isinstance(remote, FallbackBackend) and not remote.on_server and remote.runtime == "triton"
    with pytest.raises(TypeError, match="backend must be"):
        create_backend("onnxruntime", bundle)  # type: ignore[arg-type]
