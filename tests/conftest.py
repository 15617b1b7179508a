"""Shared fixtures: a tiny random XLM-R token classifier, exported through the real export code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.properties import FUZZ_EXAMPLES, FUZZ_PROFILE

# CI draws the same examples on every run (derandomize: the seed comes from each test's name), so that the suite
# is deterministic; `make fuzz` draws new ones each run, and many more. An example that once failed is kept
# in its test as an @example.
# No health check that times anything: CI machines are shared and their speed varies.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(FUZZ_PROFILE, max_examples=FUZZ_EXAMPLES, deadline=None, print_blob=True)
settings.load_profile("ci")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nertron_export.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nertron_export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle")
    export_bundle(tiny_checkpoint, out)
    return out


@pytest.fixture(scope="session")
def default_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model at its default precision (static int8), assembled into a private cache."""
    from nertron.model.default import default_bundle

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERTRON_CACHE", str(tmp_path_factory.mktemp("cache")))
        return default_bundle("int8", quiet=True)
