"""Triton model repositories for a bundle: one repository per deployment, the model named ``nertron``.

Deployments (all serve the same signature: ``input_ids``/``attention_mask`` int64 ``[batch, seq]`` in,
``logits`` fp32 ``[batch, seq, labels]`` out, so the client does not depend on the deployment):

- ``cpu``: ``backend: "python"``; ``model.py`` (``triton_model.py``) runs onnxruntime and batches every
  request of an execution; ``allow_ragged_batch`` lets requests of different lengths share one.
  This is what runs with the ``tritonserver`` of nvidia-pytriton, which has only the python backend.
- ``onnx-gpu``: ``platform: "onnxruntime_onnx"`` on ``KIND_GPU``, optionally with the TensorRT
  execution accelerator (FP16, engine cache).
- ``tensorrt``: ``platform: "tensorrt_plan"``; ``build_engine.sh`` builds ``1/model.plan`` with
  trtexec (min/opt/max shape profiles) in NVIDIA's TensorRT container.
"""

from __future__ import annotations

import dataclasses
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .bundle import Bundle
from .extras import require

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

DEPLOYMENTS = ("cpu", "onnx-gpu", "tensorrt")
MODEL_NAME = "nertron"
CONFIG_FILE = "config.pbtxt"
BUILD_SCRIPT = "build_engine.sh"
MODEL_TEMPLATE = Path(__file__).with_name("triton_model.py")
# The TensorRT container whose TensorRT (10.5) matches Triton 24.10 (2.51): a plan only loads
# into the TensorRT version (and GPU type) that built it.
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"


@dataclass(frozen=True)
class Signature:
    """What a config needs to know about the model."""

    num_labels: int
    max_length: int
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")

    @classmethod
    def of(cls, bundle: Bundle) -> Signature:
        return cls(len(bundle.labels), bundle.max_length, bundle.manifest.inputs)


@dataclass(frozen=True)
class ConfigOptions:
    """Serving knobs. ``dynamic_batching=False`` runs each request alone. ``ragged`` (cpu): requests
    of different lengths share an execution; ``threads`` (cpu): onnxruntime intra-op threads per
    instance (default: the server's CPUs divided among the instances, at load time);
    ``tensorrt``/``fp16``/``engine_cache`` (onnx-gpu): the TensorRT execution accelerator;
    ``fp16`` (tensorrt): trtexec ``--fp16``."""

    max_batch_size: int = 64
    # Measured on 2 CPU cores (perf/triton_bench.py): two single-threaded instances and no queue delay served
    # single-sentence requests fastest. Requests that queue while both instances are busy still batch; a
    # delay only holds a free instance back (at 2 clients 300 us cost 30% throughput, 2 ms more).
    max_queue_delay_us: int = 0
    dynamic_batching: bool = True
    instances: int = 2
    ragged: bool = True
    threads: int | None = None
    tensorrt: bool = True
    fp16: bool = True
    engine_cache: str = "/tmp/nertron-trt-cache"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1:
            raise ValueError("max_batch_size and instances must be >= 1")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """Parses config.pbtxt text into Triton's ``ModelConfig``; raises ``text_format.ParseError``."""
    text_format = require("google.protobuf.text_format", "Triton model repositories")
    protos = require("tritonclient.grpc.model_config_pb2", "Triton model repositories")
    return text_format.Parse(text, protos.ModelConfig())


def model_config(
    deployment: str, signature: Signature, options: ConfigOptions | None = None, *, name: str = MODEL_NAME
) -> str:
    """The config.pbtxt text of ``deployment`` (see the module docstring); it parses into ``ModelConfig``."""
    _check_deployment(deployment)
    options = options or ConfigOptions()
    ragged_field = " allow_ragged_batch: true" if deployment == "cpu" and options.ragged else ""
    inputs = ",\n".join(
        f'  {{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ]{ragged_field} }}' for n in signature.inputs
    )
    head = {
        "cpu": 'backend: "python"',
        "onnx-gpu": 'platform: "onnxruntime_onnx"',
        "tensorrt": 'platform: "tensorrt_plan"',
    }[deployment]
    kind = "KIND_CPU" if deployment == "cpu" else "KIND_GPU"
    text = (
        f'name: "{name}"\n{head}\nmax_batch_size: {options.max_batch_size}\n'
        f"input [\n{inputs}\n]\n"
        f'output [\n  {{ name: "logits" data_type: TYPE_FP32 dims: [ -1, {signature.num_labels} ] }}\n]\n'
        + (
            f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}\n"
            if options.dynamic_batching
            else ""
        )
        + f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]\n"
    )
    if deployment == "cpu" and options.threads is not None:
        text += f'parameters {{ key: "intra_op_threads" value: {{ string_value: "{options.threads}" }} }}\n'
    if deployment == "onnx-gpu" and options.tensorrt:
        text += _tensorrt_accelerator(signature, options)
    parse_config(text)  # a config that Triton cannot parse is a bug here, not a failure at serve time
    return text


def _tensorrt_accelerator(signature: Signature, options: ConfigOptions) -> str:
    low, opt, high = shape_profiles(signature, options.max_batch_size)
    parameters = {
        "precision_mode": "FP16" if options.fp16 else "FP32",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": options.engine_cache,
        # Without profiles ORT-TRT rebuilds the engine whenever a shape exceeds those seen so far.
        "trt_profile_min_shapes": low,
        "trt_profile_opt_shapes": opt,
        "trt_profile_max_shapes": high,
    }
    lines = "".join(f'    parameters {{ key: "{k}" value: "{v}" }}\n' for k, v in parameters.items())
    return (
        "optimization { execution_accelerators {\n"
        f'  gpu_execution_accelerator: [ {{\n    name: "tensorrt"\n{lines}  }} ]\n'
        "} }\n"
    )


def shape_profiles(
    signature: Signature, max_batch_size: int, opt_batch: int = 32, opt_length: int = 128
) -> tuple[str, str, str]:
    """TensorRT min/opt/max shapes, e.g. ``input_ids:1x1,attention_mask:1x1``."""

    def shapes(batch: int, length: int) -> str:
        return ",".join(f"{n}:{batch}x{length}" for n in signature.inputs)

    return (
        shapes(1, 1),
        shapes(min(opt_batch, max_batch_size), min(opt_length, signature.max_length)),
        shapes(max_batch_size, signature.max_length),
    )


def trtexec_command(signature: Signature, options: ConfigOptions | None = None) -> list[str]:
    """The trtexec call that builds ``1/model.plan`` from ``1/model.onnx`` (run in the model directory)."""
    options = options or ConfigOptions()
    low, opt, high = shape_profiles(signature, options.max_batch_size)
    command = ["trtexec", "--onnx=1/model.onnx", "--saveEngine=1/model.plan"]
    if options.fp16:
        command.append("--fp16")
    return [*command, f"--minShapes={low}", f"--optShapes={opt}", f"--maxShapes={high}"]


def build_script(signature: Signature, options: ConfigOptions | None = None) -> str:
    """``build_engine.sh`` of the tensorrt deployment."""
    command = " \\\n  ".join(trtexec_command(signature, options))
    return (
        "#!/bin/sh\n"
        "# Builds 1/model.plan from 1/model.onnx. Run it on the GPU type that will serve the model,\n"
        "# with the TensorRT of the Triton release that loads it (10.5 for Triton 24.10 = 2.51), e.g.\n"
        f'#   docker run --rm --gpus all -v "$PWD":/model -w /model {TENSORRT_IMAGE} sh {BUILD_SCRIPT}\n'
        "# The max batch of the profile must be >= max_batch_size in config.pbtxt.\n"
        "# TensorRT >= 10 takes the int64 inputs as they are.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        f"{command}\n"
    )


def write_repository(
    bundle: str | Path | Bundle,
    repository: str | Path,
    *,
    deployment: str = "cpu",
    options: ConfigOptions | None = None,
    name: str = MODEL_NAME,
    link: bool = False,
) -> Path:
    """Writes ``repository/<name>/``: config.pbtxt and ``1/`` with the model files; returns that directory.

    The cpu deployment's ``1/`` is a complete bundle (model.onnx, tokenizer.json, manifest.json) plus
    model.py; onnx-gpu and tensorrt get model.onnx (tensorrt also ``build_engine.sh``). ``link=True``
    symlinks the bundle's files instead of copying them: for a repository served on this machine only.
    """
    _check_deployment(deployment)
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    options = options or ConfigOptions()
    signature = Signature.of(bundle)
    model_dir = Path(repository) / name
    version_dir = model_dir / "1"
    config = model_config(deployment, signature, options, name=name)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    (model_dir / CONFIG_FILE).write_text(config, encoding="utf-8")
    _place(bundle.model_path, version_dir / "model.onnx", link)
    external = bundle.model_path.with_name(bundle.model_path.name + ".data")
    if external.is_file():  # external data keeps the file name that the graph refers to
        _place(external, version_dir / external.name, link)
    if deployment == "cpu":
        shutil.copyfile(MODEL_TEMPLATE, version_dir / "model.py")
        _place(bundle.tokenizer_path, version_dir / "tokenizer.json", link)
        dataclasses.replace(bundle.manifest, model_file="model.onnx", tokenizer_file="tokenizer.json").write(
            version_dir
        )
    if deployment == "tensorrt":
        script = model_dir / BUILD_SCRIPT
        script.write_text(build_script(signature, options), encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return model_dir


def describe_models(repository: str | Path) -> list[str]:
    """One line per model of ``repository``: its backend, instances and batching settings."""
    lines = []
    for config_path in sorted(Path(repository).glob(f"*/{CONFIG_FILE}")):
        config = parse_config(config_path.read_text(encoding="utf-8"))
        kind = config.backend or config.platform
        instances = sum(group.count or 1 for group in config.instance_group) or 1
        batching = (
            f"dynamic batching (max queue delay {config.dynamic_batching.max_queue_delay_microseconds} us)"
            if config.HasField("dynamic_batching")
            else "no dynamic batching"
        )
        ragged = ", ragged batches" if any(i.allow_ragged_batch for i in config.input) else ""
        threads = config.parameters["intra_op_threads"].string_value if "intra_op_threads" in config.parameters else ""
        per_instance = f" x {threads} threads" if threads else ""
        lines.append(
            f"model {config.name!r}: {kind}, {instances} instance(s){per_instance}, max batch {config.max_batch_size}, "
            f"{batching}{ragged}"
        )
    return lines


def write_repositories(
    bundle: str | Path | Bundle,
    root: str | Path,
    deployments: Sequence[str] = DEPLOYMENTS,
    *,
    options: ConfigOptions | None = None,
    name: str = MODEL_NAME,
) -> list[Path]:
    """One repository per deployment, ``root/<deployment>/<name>/``; returns the model directories."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    return [write_repository(bundle, Path(root) / d, deployment=d, options=options, name=name) for d in deployments]


def _check_deployment(deployment: str) -> None:
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"deployment must be one of {DEPLOYMENTS}, got {deployment!r}")


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        target.symlink_to(source.resolve())
    else:
        shutil.copyfile(source, target)
