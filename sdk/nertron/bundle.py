"""A model bundle: the directory ``nertron export`` writes (ONNX model, tokenizer, manifest)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tags import LabelSet, check_scheme

MANIFEST = "manifest.json"
FORMAT = "nertron-bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    """The parsed manifest of a bundle directory."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = False) -> Bundle:
        """Reads ``path/manifest.json``; ``verify=True`` also checks the model file's sha256."""
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{root} is not a nertron bundle: {MANIFEST} is missing")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
                f"got {manifest.get('format')!r} version {manifest.get('format_version')!r}"
            )
        bundle = cls(root, manifest)
        for file in (bundle.model_path, bundle.tokenizer_path):
            if not file.is_file():
                raise FileNotFoundError(f"bundle {root} lacks {file.name}")
        LabelSet.from_labels(bundle.labels)  # fail early on malformed labels
        check_scheme(bundle.scheme)
        if verify and sha256_of(bundle.model_path) != manifest["sha256"]:
            raise ValueError(f"{bundle.model_path} does not match the sha256 in {MANIFEST}")
        return bundle

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["tokenizer_file"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def scheme(self) -> str:
        return str(self.manifest["scheme"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def precision(self) -> str:
        """The stored model's precision: ``"fp32"``, ``"int8"`` or ``"fp16"``."""
        return str(self.manifest.get("precision", "fp32"))

    @property
    def special_tokens(self) -> dict[str, int]:
        """Ids of ``bos``, ``eos`` and ``pad``."""
        return {k: int(v) for k, v in self.manifest["special_tokens"].items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
