"""What runs the model, as typed, frozen, hashable specs: ``NER(backend=OnnxRuntime(threads=2))``.

A spec only describes a backend; ``nertron.backends.create_backend`` builds it for a bundle. Being hashable
and picklable, specs can key caches and travel to Spark executors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from nertron.errors import InvalidType, InvalidValue

ProviderOptions = tuple[tuple[str, str], ...]
Provider = tuple[str, ProviderOptions]

# More inference threads than this only slow a run down (each is a spinning OS thread; 1,000 took 21 s for one
# sentence on 2 cores), and an absurd count would exhaust the machine.
MAX_THREADS = 256


@dataclass(frozen=True, kw_only=True)
class OnnxRuntime:
    """In-process inference with onnxruntime.

    ``threads``: CPU threads in all, 1 to ``MAX_THREADS`` (256; default: every CPU). ``providers``: execution
    providers in priority order, names or ``(name, options)`` pairs as onnxruntime takes them (default: CUDA
    where this build has it, then CPU). ``concurrent_batches``: batches computed at once on CPU, each on its
    share of the threads (default 2 where there are 2 threads or more: on a small encoder two single-threaded
    runs keep the cores busier than one run on both; 1 gives a lone call every thread, for latency).
    """

    threads: int | None = None
    providers: Sequence[str | tuple[str, Mapping[str, Any] | ProviderOptions]] | None = None
    concurrent_batches: int | None = None
    runtime: ClassVar[str] = "onnxruntime"

    def __post_init__(self) -> None:
        _check_threads(self.threads)
        _check_count("concurrent_batches", self.concurrent_batches, maximum=MAX_THREADS)
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(_provider(p, i) for i, p in enumerate(_listed(self.providers))))

    def provider_list(self) -> list[str | tuple[str, dict[str, str]]] | None:
        """``providers`` in onnxruntime's own form."""
        if self.providers is None:
            return None
        providers = cast(tuple[Provider, ...], self.providers)  # as __post_init__ made them
        return [name if not options else (name, dict(options)) for name, options in providers]


def _listed(providers: object) -> Sequence[Any]:
    if isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence):
        raise InvalidType(
            f"providers must be a sequence of provider names, got {type(providers).__name__} {providers!r}"
        )
    return providers


def _provider(provider: object, index: int) -> Provider:
    """One provider as ``(name, ((option, value), ...))``, options sorted and as str: hashable and canonical."""
    if isinstance(provider, str):
        return provider, ()
    if isinstance(provider, tuple) and len(provider) == 2 and isinstance(provider[0], str):
        name, options = provider
        items = options.items() if isinstance(options, Mapping) else options
        try:
            return name, tuple(sorted((str(key), str(value)) for key, value in items))
        except (TypeError, ValueError):
            pass
    raise InvalidType(f"providers[{index}] must be a name or a (name, options) pair, got {provider!r}")


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
            raise InvalidValue(f"OpenVINO precision must be 'bf16' or 'fp32', got {self.precision!r}")
        _check_threads(self.threads)
        if not isinstance(self.device, str) or not self.device:
            raise InvalidValue(f"device must be an OpenVINO device name such as 'CPU', got {self.device!r}")


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
        check_url(self.url)
        for name in ("model", "model_version"):
            if not isinstance(getattr(self, name), str):
                raise InvalidType(f"{name} must be str, got {type(getattr(self, name)).__name__}")
        if not self.model:
            raise InvalidValue("model must be a model name, got ''")
        if self.text_model is not None and (not isinstance(self.text_model, str) or not self.text_model):
            raise InvalidValue(f"text_model must be a model name or None, got {self.text_model!r}")
        object.__setattr__(self, "headers", _headers(self.headers))
        for name in ("timeout", "retry_backoff", "probe_interval", "probe_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidType(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
            if not (value >= 0 if name == "retry_backoff" else value > 0) or value == float("inf"):
                raise InvalidValue(
                    f"{name} must be {'>= 0' if name == 'retry_backoff' else '> 0'} and finite, got {value}"
                )
            object.__setattr__(self, name, float(value))
        _check_count("retries", self.retries, minimum=0, maximum=100)
        _check_count("max_in_flight", self.max_in_flight, maximum=1024)
        _check_count("length_multiple", self.length_multiple, maximum=4096)
        if self.tls is not None and not isinstance(self.tls, TLS):
            raise InvalidType(f"tls must be TLS(...) or None, got {self.tls!r}")
        if self.fallback is not None and not isinstance(self.fallback, (OnnxRuntime, OpenVINO)):
            raise InvalidType(f"fallback must be OnnxRuntime(...), OpenVINO(...) or None, got {self.fallback!r}")


BackendSpec = OnnxRuntime | OpenVINO | Triton


def _check_count(name: str, value: object, *, minimum: int = 1, maximum: int) -> None:
    """``value`` is None or an int in ``[minimum, maximum]``; else ``TypeError``/``ValueError`` naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidValue(f"{name} must be between {minimum} and {maximum}, got {value}")


def _check_threads(threads: object) -> None:
    _check_count("threads", threads, maximum=MAX_THREADS)


def check_url(url: object) -> None:
    """``url`` is ``host:port`` (``[v6 address]:port`` for IPv6) with a port in 1..65535."""
    if not isinstance(url, str):
        raise InvalidType(f"url must be 'host:port', got {type(url).__name__} {url!r}")
    host, colon, port = url.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if not colon or not name or (":" in name and not bracketed) or any(c.isspace() or c in "/[]@" for c in name):
        raise InvalidValue(f"url must be 'host:port' (e.g. 127.0.0.1:8001), got {url!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidValue(f"url {url!r}: the port must be a number from 1 to 65535, got {port!r}")


def _headers(headers: object) -> tuple[tuple[str, str], ...]:
    """gRPC metadata as sorted ``(key, value)`` pairs of str, from a mapping or pairs; keys in lowercase."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise InvalidType(f"headers must be a mapping or (key, value) pairs, got {type(headers).__name__}")
    pairs = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise InvalidType(f"headers must hold (key, value) pairs of str, got {item!r}")
        key, value = item
        if not key or key != key.lower():
            raise InvalidValue(f"header keys must be lowercase and non-empty (gRPC metadata), got {key!r}")
        pairs.append((key, value))
    return tuple(sorted(pairs))
