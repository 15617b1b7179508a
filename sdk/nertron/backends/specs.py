"""What runs the model, as typed, frozen, hashable specs: ``NER(backend=OnnxRuntime(threads=2))``.

A spec only describes a backend; ``nertron.backends.create_backend`` builds it for a bundle. Being hashable
and picklable, specs can key caches and travel to Spark executors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

ProviderOptions = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OnnxRuntime:
    """In-process inference with onnxruntime.

    ``threads``: CPU threads in all (default: every CPU). ``providers``: execution providers in priority
    order, names or ``(name, options)`` pairs as onnxruntime takes them (default: CUDA where this build has
    it, then CPU). ``concurrent_batches``: batches computed at once on CPU, each on its share of the
    threads (default 2 where there are 2 threads or more: on a small encoder two single-threaded runs keep
    the cores busier than one run on both; 1 gives a lone call every thread, for latency).
    """

    threads: int | None = None
    providers: tuple[tuple[str, ProviderOptions], ...] | None = None
    concurrent_batches: int | None = None
    runtime: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        *,
        threads: int | None = None,
        providers: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
        concurrent_batches: int | None = None,
    ) -> None:
        _check_positive("threads", threads)
        _check_positive("concurrent_batches", concurrent_batches)
        if isinstance(providers, str):
            raise TypeError(f"providers must be a sequence of provider names, got the str {providers!r}")
        normal = None
        if providers is not None:
            normal = tuple(
                (p, ()) if isinstance(p, str) else (p[0], tuple(sorted((k, str(v)) for k, v in p[1].items())))
                for p in providers
            )
        object.__setattr__(self, "threads", threads)
        object.__setattr__(self, "providers", normal)
        object.__setattr__(self, "concurrent_batches", concurrent_batches)

    def provider_list(self) -> list[str | tuple[str, dict[str, str]]] | None:
        """``providers`` in onnxruntime's own form."""
        if self.providers is None:
            return None
        return [name if not options else (name, dict(options)) for name, options in self.providers]


@dataclass(frozen=True)
class OpenVINO:
    """In-process inference with OpenVINO (``pip install "nertron[openvino]"``) on an fp32 bundle.

    ``precision``: ``"bf16"`` (matrix multiplies in bfloat16 with fp32 accumulation, on CPUs with
    AVX512-BF16 or AMX: fp32's accuracy at about int8's speed) or ``"fp32"``.
    """

    precision: str = "bf16"
    threads: int | None = None
    device: str = "CPU"
    runtime: ClassVar[str] = "openvino"

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"OpenVINO precision must be 'bf16' or 'fp32', got {self.precision!r}")
        _check_positive("threads", self.threads)


@dataclass(frozen=True)
class TLS:
    """TLS for a Triton gRPC endpoint: PEM file paths (``None``: the system's roots, no client certificate)."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None


@dataclass(frozen=True)
class Triton:
    """The model on a Triton server (``host:port`` of its gRPC endpoint).

    ``text_model``: the served text-level model (text in, entities out) that texts go to whole; the server
    does everything. ``None``: the client tokenises, sends token ids to ``model`` and decodes its logits.
    Pre-split words (``NER.tag``, corpora) always take that path.

    ``timeout``: seconds per request. ``retries``: resends of a request that failed with a transient
    error (server unavailable or overloaded), ``retry_backoff`` s apart, doubling. ``max_in_flight``:
    requests sent ahead of the one awaited. ``length_multiple`` > 1 pads requests to a multiple of it, so
    that a server without ragged batching (the GPU deployments) can batch nearby lengths. ``headers``:
    gRPC metadata (lowercase keys). ``fallback``: where batches go while the server cannot answer them
    (unreachable, overloaded, late; probed every ``probe_interval`` s to return to it); ``None`` raises
    ``TritonUnavailable`` instead. Other errors (a malformed reply, a bug) raise whatever the fallback.
    """

    url: str = "127.0.0.1:8001"
    model: str = "nertron"
    text_model: str | None = None
    model_version: str = ""
    timeout: float = 30.0
    retries: int = 2
    retry_backoff: float = 0.1
    max_in_flight: int = 4
    length_multiple: int = 1
    tls: TLS | None = None
    headers: tuple[tuple[str, str], ...] = ()
    fallback: OnnxRuntime | OpenVINO | None = field(default_factory=OnnxRuntime)
    probe_interval: float = 1.0
    probe_timeout: float = 2.0
    runtime: ClassVar[str] = "triton"

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ValueError(f"url must be 'host:port', got {self.url!r}")
        if self.text_model is not None and (not isinstance(self.text_model, str) or not self.text_model):
            raise ValueError(f"text_model must be a model name or None, got {self.text_model!r}")
        if isinstance(self.headers, Mapping):
            object.__setattr__(self, "headers", tuple(sorted(self.headers.items())))
        for name in ("timeout", "probe_interval", "probe_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.retry_backoff < 0:
            raise ValueError(f"retries and retry_backoff must be >= 0, got {self.retries}, {self.retry_backoff}")
        _check_positive("max_in_flight", self.max_in_flight)
        _check_positive("length_multiple", self.length_multiple)
        if self.fallback is not None and not isinstance(self.fallback, (OnnxRuntime, OpenVINO)):
            raise TypeError(f"fallback must be OnnxRuntime(...), OpenVINO(...) or None, got {self.fallback!r}")


BackendSpec = OnnxRuntime | OpenVINO | Triton


def _check_positive(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
