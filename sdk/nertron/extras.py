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
    "matplotlib": "perf",
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
    distribution = DISTRIBUTIONS.get(name, name)
    install = f'pip install "nertron[{extra}]"'
    if error is None or (isinstance(error, ModuleNotFoundError) and error.name in (name, module)):
        return MissingExtra(f"{feature} needs {distribution}, which is not installed: {install}")
    # Installed, but importing it failed (a version that does not fit, a broken install): say what failed.
    why = " ".join(str(error).split())
    return MissingExtra(f"{feature} needs {distribution}, which is installed but cannot be imported ({why}): {install}")
