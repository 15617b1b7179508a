"""A bundle's fingerprint: a content hash of everything that decides its output, so that a client can tell
whether a server serves the model it means (``Bundle.fingerprint``, the ``nertron_fingerprint`` parameter of
the Triton configs ``nertron repository`` writes).

It covers the model file (the manifest's ``sha256``, else the file's own) and its external data file if it has
one, the tokenizer files (``tokenizer.json`` and the SentencePiece model with its id mapping), the labels, the tag
scheme, the temperature of the scores, ``max_length``, the special tokens and the model's inputs. Names of
files, the precision's label and the provenance do not count: two copies of a bundle have one fingerprint, a
re-calibrated bundle another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nertron.model.bundle import Manifest

VERSION = "nertron-fingerprint-1"  # bumped if what the fingerprint covers changes
DIGITS = 16


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content(root: Path, manifest: Manifest) -> dict[str, Any]:
    """What the fingerprint of the bundle in ``root`` hashes; ``OSError`` if one of its files is missing."""
    model = root / manifest.model_file
    external = model.resolve().with_name(f"{model.name}.data")  # beside the file a link points to
    sentencepiece = manifest.sentencepiece
    return {
        "version": VERSION,
        "model": manifest.sha256 or sha256_of(model),
        "model_data": sha256_of(external) if external.is_file() else None,
        "tokenizer": None if manifest.tokenizer_file is None else sha256_of(root / manifest.tokenizer_file),
        "sentencepiece": None
        if sentencepiece is None
        else [sha256_of(root / sentencepiece.file), sentencepiece.id_offset, sentencepiece.unk_id],
        "labels": list(manifest.labels),
        "scheme": manifest.scheme,
        "temperature": manifest.calibration.temperature if manifest.calibration else 1.0,
        "max_length": manifest.max_length,
        "special_tokens": [manifest.special_tokens.bos, manifest.special_tokens.eos, manifest.special_tokens.pad],
        "inputs": list(manifest.inputs),
    }


def fingerprint(root: Path, manifest: Manifest) -> str:
    """The fingerprint of the bundle in ``root`` described by ``manifest``: 16 hex digits."""
    text = json.dumps(content(root, manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGITS]
