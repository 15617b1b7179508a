"""What a Triton client reads of the served model (``pip install "nertron[triton]"``): whether the server and
the model are ready, the model's config (``ModelInfo``), and whether it is the bundle the client means.

Every config that ``nertron repository`` writes names its bundle's fingerprint (``nertron.serving.identity``).
A client made for a bundle (``Expected``) compares it on every (re)connect: another fingerprint raises
``ModelMismatch``, no fingerprint a ``TritonError``; neither is a transport failure, so no fallback hides
them. The served python models also refuse each request that expects another fingerprint (``rejected``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nertron.backends.grpc_channel import InferenceServerException, channel_args, grpcclient, is_transport_error
from nertron.errors import ModelMismatch, TritonError, TritonUnavailable
from nertron.serving import identity

if TYPE_CHECKING:
    from nertron.backends.specs import Triton

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"


@dataclass(frozen=True)
class ModelInfo:
    """What the client reads from the served model's config."""

    inputs: tuple[str, ...]
    num_labels: int  # -1 when the config leaves it variable
    max_batch_size: int  # 0: the model does not batch; requests go as they are


@dataclass(frozen=True)
class Expected:
    """The model a client is made for: its bundle's fingerprint and where the bundle is (for messages)."""

    fingerprint: str
    bundle: str | None = None

    @classmethod
    def of(cls, fingerprint: str | None, bundle: str | os.PathLike[str] | None) -> Expected | None:
        return None if fingerprint is None else cls(fingerprint, None if bundle is None else os.fspath(bundle))

    def mismatch(self, url: str, fingerprint: str, bundle: str) -> ModelMismatch:
        """The error for a server at ``url`` that serves ``fingerprint`` (of ``bundle``) instead."""
        ours = f"{self.fingerprint}" if self.bundle is None else f"{self.fingerprint} (bundle {self.bundle})"
        return ModelMismatch(f"the server at {url} serves model {fingerprint} (bundle {bundle}), not {ours}")

    def check(self, url: str, model: str, config: Mapping[str, Any]) -> None:
        """Raises unless the served model's (JSON) ``config`` names this fingerprint."""
        fingerprint, bundle = identity.served(config)
        if fingerprint is None:
            raise TritonError(
                f"the server at {url} serves model {model!r} without a {identity.FINGERPRINT} config parameter, so "
                f"it cannot be told to be {self.fingerprint} (bundle {self.bundle or identity.UNKNOWN}): a model not "
                "written by nertron (or by an older one); serve the bundle with `nertron serve`, or write its "
                "repository with `nertron repository`"
            )
        if fingerprint != self.fingerprint:
            raise self.mismatch(url, fingerprint, bundle)


def open_client(spec: Triton, describe: Callable[[str], str]) -> Any:
    """A tritonclient gRPC client for ``spec`` (``TritonError`` if it cannot be made, e.g. bad certificates)."""
    tls = spec.tls
    try:
        return grpcclient.InferenceServerClient(
            spec.url,
            channel_args=channel_args(),
            ssl=tls is not None,
            root_certificates=None if tls is None else tls.root_certificates,
            private_key=None if tls is None else tls.private_key,
            certificate_chain=None if tls is None else tls.certificate_chain,
        )
    except Exception as error:  # e.g. unreadable certificate files
        raise TritonError(describe(f"cannot create a gRPC client: {error}")) from None


def read_config(client: Any, spec: Triton, model: str, describe: Callable[[str], str]) -> dict[str, Any]:
    """The (JSON) config of ``model`` once the server is live and the model ready: ``TritonUnavailable`` if they
    are not (yet), ``TritonError`` if the server refuses the client."""
    headers = dict(spec.headers) or None
    options = {"headers": headers, "client_timeout": spec.probe_timeout}
    try:
        if not client.is_server_live(**options):
            raise TritonUnavailable(describe("the server is not live"))
        if not client.is_model_ready(model, spec.model_version, **options):
            raise TritonUnavailable(describe(f"the model is not ready; {repository_states(client, spec)}"))
        config = client.get_model_config(model, spec.model_version, as_json=True, **options)
    except InferenceServerException as error:
        if is_transport_error(error):
            raise TritonUnavailable(describe(f"cannot reach it: {error}")) from None
        raise TritonError(describe(f"it refused the client: {error}")) from None
    return dict(config["config"])


def repository_states(client: Any, spec: Triton) -> str:
    try:
        index = client.get_model_repository_index(
            headers=dict(spec.headers) or None, as_json=True, client_timeout=spec.probe_timeout
        )
    except InferenceServerException:
        return "the repository index is not available"
    models = index.get("models", [])
    states = ", ".join(f"{m.get('name')} {m.get('state', 'UNAVAILABLE')}" for m in models) or "none"
    return f"models in the repository: {states}"


def model_info(config: Mapping[str, Any]) -> ModelInfo:
    """What a token-id client needs of the served model's (JSON) config; ``TritonError`` if it does not fit."""
    names = tuple(str(i["name"]) for i in config.get("input", []))
    unknown = [n for n in names if n not in INPUTS]
    if unknown or "input_ids" not in names:
        raise TritonError(f"the served model takes {list(names)}; nertron sends {list(INPUTS)}")
    outputs = {str(o["name"]): [int(d) for d in o.get("dims", [])] for o in config.get("output", [])}
    if OUTPUT not in outputs:
        raise TritonError(f"the served model has no {OUTPUT!r} output (it has {sorted(outputs)})")
    dims = outputs[OUTPUT]
    return ModelInfo(names, dims[-1] if dims else -1, int(config.get("max_batch_size", 0)))


def rejected(error: BaseException, url: str, expected: Expected | None, describe: Callable[[str], str]) -> TritonError:
    """The error for a request the server answered with ``error`` (not a transport failure): ``ModelMismatch``
    where the served model refused a request that expects another model, else ``TritonError``."""
    refusal = None if expected is None else identity.refused(str(error))
    if refusal is not None and expected is not None:
        return expected.mismatch(url, *refusal)
    return TritonError(describe(f"request failed: {error}"))
