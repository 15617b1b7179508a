"""Averages the weights of checkpoints fine-tuned from one base model (a uniform "model soup").

    nertron average --out artifacts/average artifacts/run-a/best artifacts/run-b/best ...

Runs fine-tuned from the same pretrained weights stay in one basin of the loss, so the mean of their
weights is a model of its own, usually better than each of them and as fast as one (Wortsman et al.,
"Model soups", 2022). The checkpoints must agree on the architecture, labels and tokenizer; a tensor that
every checkpoint holds bit for bit (e.g. frozen word embeddings) is copied, not averaged, so it stays
exactly the base model's. The output is an HF checkpoint like the inputs, with ``average.json`` naming
them (path, sha256 of the weights, and each run's ``train_log.json`` where there is one).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nertron.errors import InvalidValue
from nertron.io.atomic import check_apart, replacing_folder
from nertron.model.bundle import sha256_of
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

WEIGHTS = "model.safetensors"
RECORD = "average.json"
# Written by transformers itself, so checkpoints saved by different versions may differ in them.
IGNORED_CONFIG_KEYS = ("_name_or_path", "transformers_version")
# Written into tokenizer_config.json by transformers when a checkpoint was loaded from a local folder (a run's
# checkpoints have them, an unpacked package does not): how it was loaded, not what it tokenises.
IGNORED_TOKENIZER_KEYS = ("is_local", "local_files_only")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model")
# Files one checkpoint may hold and another not (a run's checkpoint has no sentencepiece.bpe.model, an unpacked
# package has): the average takes them from a checkpoint that has them. The others, if any checkpoint has them,
# every checkpoint must have.
OPTIONAL_TOKENIZER_FILES = frozenset({"special_tokens_map.json", "sentencepiece.bpe.model"})
AVERAGE_FILES = frozenset({WEIGHTS, "config.json", RECORD, *TOKENIZER_FILES})  # what an average writes


def average_checkpoints(checkpoints: Sequence[str | Path], out: str | Path) -> Path:
    """Writes the uniform average of ``checkpoints`` (HF token-classification directories) into ``out``."""
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise InvalidValue(f"checkpoints: give at least two to average, got {len(paths)}")
    for path in paths:
        if not (path / WEIGHTS).is_file() or not (path / "config.json").is_file():
            raise InvalidValue(f"checkpoints: {path} is not an HF checkpoint ({WEIGHTS} and config.json)")
    first = paths[0]
    config = _config(first)
    for path in paths[1:]:
        if _config(path) != config:
            raise InvalidValue(f"checkpoints: {path}/config.json differs from {first}/config.json")
    # A tokenizer file that two checkpoints both hold must say the same.
    tokenizer_files = {name: [p for p in paths if (p / name).is_file()] for name in TOKENIZER_FILES}
    for name, holders in tokenizer_files.items():
        lacking = [p for p in paths if p not in holders]
        if holders and lacking and name not in OPTIONAL_TOKENIZER_FILES:
            raise InvalidValue(f"checkpoints: {lacking[0]} has no {name}, which {holders[0]} has")
        for path in holders[1:]:
            if _tokenizer_file(path, name) != _tokenizer_file(holders[0], name):
                raise InvalidValue(f"checkpoints: {path}/{name} differs from {holders[0]}/{name}")
    out = Path(out)
    for path in paths:
        check_apart(("out", out), {"checkpoint": path})
    others = sorted(e.name for e in out.iterdir() if e.name not in AVERAGE_FILES) if out.is_dir() else []
    if others:  # the folder is replaced whole
        raise InvalidValue(
            f"out {out} holds files an averaged checkpoint does not ({', '.join(others[:3])}), which would be "
            "removed; give a new or empty folder"
        )
    averaged = _mean_weights(paths)
    with replacing_folder(out) as work:  # a failure leaves out as it was
        save_file(averaged, str(work / WEIGHTS), metadata={"format": "pt"})
        shutil.copyfile(first / "config.json", work / "config.json")
        for name, holders in tokenizer_files.items():
            if holders:
                shutil.copyfile(holders[0] / name, work / name)
        record = {"method": "uniform mean of the weights", "checkpoints": [_describe(p) for p in paths]}
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def _mean_weights(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    first = _load(paths[0])
    total = {name: values.astype(np.float64) for name, values in first.items()}
    shared = {name: True for name in first}  # tensors equal so far in every checkpoint
    for path in paths[1:]:
        weights = _load(path)
        if weights.keys() != first.keys():
            names = sorted(weights.keys() ^ first.keys())
            raise InvalidValue(f"checkpoints: {path} has other tensors than {paths[0]} (e.g. {names[0]})")
        for name, values in weights.items():
            if values.shape != first[name].shape or values.dtype != first[name].dtype:
                raise InvalidValue(
                    f"checkpoints: {path}: tensor {name} is {values.dtype}{list(values.shape)}, "
                    f"{first[name].dtype}{list(first[name].shape)} in {paths[0]}"
                )
            shared[name] = shared[name] and np.array_equal(values, first[name])
            total[name] += values
    return {
        name: first[name] if shared[name] else (total[name] / len(paths)).astype(first[name].dtype) for name in first
    }


def _load(checkpoint: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(checkpoint / WEIGHTS))
    except SafetensorError as error:
        raise InvalidValue(
            f"checkpoints: {checkpoint / WEIGHTS} is not a readable safetensors file ({error})"
        ) from None


def _config(path: Path) -> dict[str, Any]:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if k not in IGNORED_CONFIG_KEYS}


def _tokenizer_file(path: Path, name: str) -> Any:
    """What ``path``'s tokenizer file ``name`` says, for comparison: its bytes, or for tokenizer_config.json its
    settings without the keys of IGNORED_TOKENIZER_KEYS."""
    if name != "tokenizer_config.json":
        return (path / name).read_bytes()
    settings = json.loads((path / name).read_text(encoding="utf-8"))
    return {k: v for k, v in settings.items() if k not in IGNORED_TOKENIZER_KEYS}


def _describe(path: Path) -> dict[str, Any]:
    """The checkpoint's path, the sha256 of its weights and its run's training log (beside it or above it)."""
    entry: dict[str, Any] = {"checkpoint": str(path), "sha256": sha256_of(path / WEIGHTS)}
    log = next((p for p in (path / "train_log.json", path.parent / "train_log.json") if p.is_file()), None)
    if log is not None:
        run = json.loads(log.read_text(encoding="utf-8"))
        entry.update({k: run[k] for k in ("config", "best_epoch", "best_f1", "history") if k in run})
        entry["saved"] = path.name  # "best" (the dev-selected epoch) or "last"
    return entry
