"""Which bundle a served model is, as its Triton config says and its requests check.

The configs ``nertron repository`` writes carry the bundle's fingerprint (``Bundle.fingerprint``) and name as
the parameters ``nertron_fingerprint`` and ``nertron_bundle``. A nertron client reads them on every (re)connect,
and sends its own bundle's fingerprint with every request (request parameter ``nertron_fingerprint``): the
cpu deployment's python models refuse a request that expects another model (``mismatch``), so that a server
swapped under a stream is caught on its first request. (Triton 2.51's python backend cannot attach parameters
to a response.) No Triton import: the client, the configs and the served models share it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nertron.errors import InvalidValue
from nertron.model.bundle import Bundle

FINGERPRINT = "nertron_fingerprint"
BUNDLE = "nertron_bundle"
UNKNOWN = "unknown"
# How a served model words its refusal; the client reads the served model's fingerprint and bundle back from it.
REFUSAL = re.compile(r"nertron_fingerprint mismatch: this model is (?P<fingerprint>\S+) \(bundle (?P<bundle>.*)\), ")


def config_parameter(config: Mapping[str, Any], name: str) -> str | None:
    """The string parameter ``name`` of a Triton model config (as JSON, ``get_model_config(as_json=True)``)."""
    value = config.get("parameters", {}).get(name, {}).get("string_value")
    return value if isinstance(value, str) and value else None


def served(config: Mapping[str, Any]) -> tuple[str | None, str]:
    """The fingerprint (None: not given) and the bundle (``unknown``) that a model's JSON config names."""
    return config_parameter(config, FINGERPRINT), config_parameter(config, BUNDLE) or UNKNOWN


def checked(config: Mapping[str, Any], version_dir: Path) -> tuple[str | None, str]:
    """For a served model: the fingerprint and bundle its config names (``served``), checked against the bundle
    in its ``version_dir``; a config that names another bundle fails the model's load."""
    fingerprint, bundle = served(config)
    if fingerprint is not None:
        actual = Bundle.load(version_dir).fingerprint
        if actual != fingerprint:
            raise InvalidValue(
                f"config parameter {FINGERPRINT} is {fingerprint}, but the bundle in {version_dir} is {actual}; "
                "write the repository again (nertron repository)"
            )
    return fingerprint, bundle


def mismatch(parameters: Mapping[str, Any], fingerprint: str | None, bundle: str) -> str | None:
    """Why a served model (``fingerprint``, ``bundle``) refuses a request with ``parameters``, or None: the
    request expects another fingerprint. A request that expects none (not a nertron client) is served."""
    expected = parameters.get(FINGERPRINT)
    if fingerprint is None or not isinstance(expected, str) or expected == fingerprint:
        return None
    return f"{FINGERPRINT} mismatch: this model is {fingerprint} (bundle {bundle}), the request expects {expected}"


def refused(message: str) -> tuple[str, str] | None:
    """The served fingerprint and bundle in a served model's refusal (``mismatch``), or None if it is not one."""
    found = REFUSAL.search(message)
    return None if found is None else (found["fingerprint"], found["bundle"])
