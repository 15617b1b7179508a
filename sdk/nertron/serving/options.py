"""Serving settings, as plain data: what deployments exist, what a config needs of the model, the knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nertron.cpus import available_cpus
from nertron.errors import InvalidValue
from nertron.model.bundle import Bundle
from nertron.windows import default_stride

DEPLOYMENTS = ("cpu", "onnx-gpu", "tensorrt")
MODEL_NAME = "nertron"  # ids in, logits out: for nertron's own clients, which tokenise and decode
TEXT_MODEL_NAME = "nertron_text"  # text in, entities out: for any client


@dataclass(frozen=True)
class Signature:
    """What a config needs to know about the model; ``fingerprint`` and ``bundle`` (``Bundle.fingerprint``, its
    path) say which bundle it is (empty: the configs name none, as the checked-in ones of the default model)."""

    num_labels: int
    max_length: int
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    labels: tuple[str, ...] = ()
    scheme: str = "IOB2"
    fingerprint: str = ""
    bundle: str = ""

    @classmethod
    def of(cls, bundle: Bundle) -> Signature:
        labels, where = tuple(bundle.labels), str(bundle.path.absolute())
        return cls(
            len(labels), bundle.max_length, bundle.manifest.inputs, labels, bundle.scheme, bundle.fingerprint, where
        )

    @property
    def stride(self) -> int:
        """The overlap of the text model's windows: ``NER``'s default for ``max_length``."""
        return default_stride(self.max_length)


def threads_per_instance(config: Mapping[str, Any]) -> int:
    """onnxruntime threads for one instance of a model whose (JSON) Triton config is ``config``: its
    ``intra_op_threads`` parameter, else the CPUs the server may use (``available_cpus``) divided among the
    model's instances."""
    threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0"))
    if threads > 0:
        return threads
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return max(1, available_cpus() // instances)


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
            raise InvalidValue("max_batch_size and instances must be >= 1")
        if self.max_queue_delay_us < 0:
            raise InvalidValue(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.threads is not None and self.threads < 1:
            raise InvalidValue(f"threads must be >= 1, got {self.threads}")
