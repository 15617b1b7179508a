"""Optional dependencies: each feature beyond local inference comes with an extra of the package, and a
missing one is an error that names the ``pip install`` to run."""

from __future__ import annotations

import importlib
from types import ModuleType

from nertron.errors import MissingExtra

# The extra that brings each optional top-level module (see pyproject.toml).
EXTRAS = {
    "tritonclient": "triton",
    "google.protobuf": "triton",
    "pytriton": "server",
    "torch": "export",
    "transformers": "export",
    "safetensors": "export",  # comes with transformers
    "pyspark": "spark",
    "pyarrow": "spark",
    "openvino": "openvino",
}


def require(module: str, feature: str) -> ModuleType:
    """Imports ``module`` for ``feature`` (e.g. ``"nertron serve"``), or raises ``MissingExtra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing(module, feature, error) from None


# Distribution names where they differ from the module's.
DISTRIBUTIONS = {"pytriton": "nvidia-pytriton", "google": "protobuf"}


def missing(module: str, feature: str, error: ImportError | None = None) -> MissingExtra:
    """The ``MissingExtra`` for ``module`` not importable for ``feature``."""
    extra = next(EXTRAS[key] for key in sorted(EXTRAS, key=len, reverse=True) if f"{module}.".startswith(f"{key}."))
    name = (error.name if error is not None and error.name else module).split(".")[0]
    name = DISTRIBUTIONS.get(name, name)
    return MissingExtra(f'{feature} needs {name}, which is not installed: pip install "nertron[{extra}]"')
