"""Triton model configs (``config.pbtxt``) built as ``ModelConfig`` protobufs (``pip install "nertron[triton]"``).

Every deployment serves the same signature: ``input_ids``/``attention_mask`` int64 ``[batch, seq]`` in,
``logits`` fp32 ``[batch, seq, labels]`` out, so the client does not depend on the deployment:

- ``cpu``: ``backend: "python"``; ``model.py`` (``triton_model.py``) runs onnxruntime and batches every
  request of an execution; ``allow_ragged_batch`` lets requests of different lengths share one.
  This is what runs with the ``tritonserver`` of nvidia-pytriton, which has only the python backend.
- ``onnx-gpu``: ``platform: "onnxruntime_onnx"`` on ``KIND_GPU``, optionally with the TensorRT
  execution accelerator (FP16, engine cache).
- ``tensorrt``: ``platform: "tensorrt_plan"``; ``build_engine.sh`` builds ``1/model.plan`` with
  trtexec (min/opt/max shape profiles) in NVIDIA's TensorRT container.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nertron.errors import InvalidValue
from nertron.extras import require
from nertron.serving import identity
from nertron.serving.options import DEPLOYMENTS, MODEL_NAME, TEXT_MODEL_NAME, ConfigOptions, Signature

text_format = require("google.protobuf.text_format", "Triton model configs")
model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "Triton model configs")
ModelConfig = model_config_pb2.ModelConfig

CONFIG_FILE = "config.pbtxt"


def model_config(
    deployment: str, signature: Signature, options: ConfigOptions | None = None, *, name: str = MODEL_NAME
) -> Any:
    """The ``ModelConfig`` of ``deployment`` (see the module docstring)."""
    check_deployment(deployment)
    options = options or ConfigOptions()
    config = ModelConfig(name=name, max_batch_size=options.max_batch_size)
    if deployment == "cpu":
        config.backend = "python"
    else:
        config.platform = "onnxruntime_onnx" if deployment == "onnx-gpu" else "tensorrt_plan"
    for input_name in signature.inputs:
        config.input.add(
            name=input_name,
            data_type=model_config_pb2.TYPE_INT64,
            dims=[-1],
            allow_ragged_batch=deployment == "cpu" and options.ragged,
        )
    config.output.add(name="logits", data_type=model_config_pb2.TYPE_FP32, dims=[-1, signature.num_labels])
    if options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = (
        model_config_pb2.ModelInstanceGroup.KIND_CPU
        if deployment == "cpu"
        else model_config_pb2.ModelInstanceGroup.KIND_GPU
    )
    config.instance_group.add(count=options.instances, kind=kind)
    if deployment == "cpu" and options.threads is not None:
        config.parameters["intra_op_threads"].string_value = str(options.threads)
    if deployment == "onnx-gpu" and options.tensorrt:
        _add_tensorrt_accelerator(config, signature, options)
    _add_identity(config, signature)
    return config


def text_model_config(
    deployment: str, signature: Signature, options: ConfigOptions | None = None, *, name: str = TEXT_MODEL_NAME
) -> Any:
    """The ``ModelConfig`` of the text model (see ``nertron.serving.text_model``): TEXT in, ENTITIES out, the
    model's labels and tag scheme, and the ``max_length`` and ``stride`` of its windows, published as
    parameters. On GPU deployments it runs its encoder through BLS on the ``nertron`` model
    (``encoder_model``); on CPU in its own process."""
    check_deployment(deployment)
    options = options or ConfigOptions()
    config = ModelConfig(name=name, backend="python", max_batch_size=options.max_batch_size)
    config.input.add(name="TEXT", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    config.output.add(name="ENTITIES", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    if options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instances, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["labels"].string_value = json.dumps(list(signature.labels))
    config.parameters["scheme"].string_value = signature.scheme
    config.parameters["max_length"].string_value = str(signature.max_length)
    config.parameters["stride"].string_value = str(signature.stride)
    if deployment != "cpu":
        config.parameters["encoder_model"].string_value = MODEL_NAME
    elif options.threads is not None:
        config.parameters["intra_op_threads"].string_value = str(options.threads)
    _add_identity(config, signature)
    return config


def _add_identity(config: Any, signature: Signature) -> None:
    """The bundle's fingerprint and path as parameters (see ``nertron.serving.identity``), where it has them."""
    if signature.fingerprint:
        config.parameters[identity.FINGERPRINT].string_value = signature.fingerprint
        config.parameters[identity.BUNDLE].string_value = signature.bundle or identity.UNKNOWN


def config_text(config: Any) -> str:
    """``config.pbtxt`` text of a ``ModelConfig``."""
    return text_format.MessageToString(config)


def parse_config(text: str) -> Any:
    """Parses ``config.pbtxt`` text into a ``ModelConfig``; raises ``text_format.ParseError``."""
    return text_format.Parse(text, ModelConfig())


def _add_tensorrt_accelerator(config: Any, signature: Signature, options: ConfigOptions) -> None:
    low, opt, high = shape_profiles(signature, options.max_batch_size)
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    accelerator.parameters.update(
        {
            "precision_mode": "FP16" if options.fp16 else "FP32",
            "max_workspace_size_bytes": str(1 << 30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": options.engine_cache,
            # Without profiles ORT-TRT rebuilds the engine whenever a shape exceeds those seen so far.
            "trt_profile_min_shapes": low,
            "trt_profile_opt_shapes": opt,
            "trt_profile_max_shapes": high,
        }
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


def describe_models(repository: str | Path) -> list[str]:
    """One line per model of ``repository``: its backend, instances and batching settings."""
    lines = []
    for config_path in sorted(Path(repository).glob(f"*/{CONFIG_FILE}")):
        config = parse_config(config_path.read_text(encoding="utf-8"))
        instances = sum(group.count or 1 for group in config.instance_group) or 1
        threads = config.parameters["intra_op_threads"].string_value if "intra_op_threads" in config.parameters else ""
        batching = (
            f"dynamic batching (max queue delay {config.dynamic_batching.max_queue_delay_microseconds} us)"
            if config.HasField("dynamic_batching")
            else "no dynamic batching"
        )
        ragged = ", ragged batches" if any(i.allow_ragged_batch for i in config.input) else ""
        lines.append(
            f"model {config.name!r}: {config.backend or config.platform}, {instances} instance(s)"
            f"{f' x {threads} threads' if threads else ''}, max batch {config.max_batch_size}, {batching}{ragged}"
        )
    return lines


def check_deployment(deployment: str) -> None:
    if deployment not in DEPLOYMENTS:
        raise InvalidValue(f"deployment must be one of {DEPLOYMENTS}, got {deployment!r}")
