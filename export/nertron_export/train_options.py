"""The options of ``nertron train``: ``TrainConfig``, and its command-line options (``add_arguments``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nertron.errors import InvalidValue


@dataclass
class TrainConfig:
    model: str
    train: list[str]  # CoNLL files, e.g. English gold and pseudo-labelled target-language text
    dev: list[str]  # the first one's F1 is reported as dev_f1_*, each other's as <its key>_f1_* (dev_keys)
    out: str
    epochs: int = 5
    lr: float = 1e-4
    head_lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.05
    batch_size: int = 16
    max_length: int | None = None  # subwords per chunk; default min(256, the model's limit)
    single_fraction: float = 0.3
    freeze_embeddings: bool = True
    bf16: bool | None = None  # bf16 autocast; None: where the device computes bf16 natively (native_bf16)
    seed: int = 42
    patience: int = 2
    ema: float = 0.0  # decay of the weights' moving average per step; 0 = none
    threads: int | None = None
    limit_train_docs: int | None = None  # for smoke runs
    select: str = "document"  # "document": the first dev file's document-context F1; "mean": every dev F1's mean

    def __post_init__(self) -> None:
        """Refuses a value no run can use, in the option's name, before the model is loaded."""
        for name, allowed, why in _RANGES:
            value = getattr(self, name)
            if value is not None and not allowed(value):
                raise InvalidValue(f"--{name.replace('_', '-')} {value}: must be {why}")
        if self.select not in ("document", "mean"):
            raise InvalidValue(f"--select {self.select}: must be 'document' or 'mean'")


# Each numeric option's valid values (None, where allowed, means "the default").
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("epochs", lambda v: v >= 1, ">= 1"),
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("batch_size", lambda v: v >= 1, ">= 1"),
    ("max_length", lambda v: v >= 8, ">= 8"),
    ("patience", lambda v: v >= 1, ">= 1"),
    ("threads", lambda v: v >= 1, ">= 1"),
    ("limit_train_docs", lambda v: v >= 1, ">= 1"),
    ("lr", lambda v: 0 < v < 1, "in (0, 1)"),
    ("head_lr", lambda v: 0 < v < 1, "in (0, 1)"),
    ("weight_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("warmup", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("single_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("ema", lambda v: 0 <= v < 1, "in [0, 1)"),
)


# Help for each tunable option of TrainConfig; each default is TrainConfig's own.
OPTION_HELP = {
    "epochs": "passes over the training data",
    "batch_size": "chunks per optimiser step",
    "max_length": "subwords per training chunk (default: min(256, the model's limit))",
    "seed": "seed of shuffling, chunking and the head's initialisation",
    "patience": "epochs without a better dev F1 before stopping",
    "threads": "torch CPU threads (default: torch's)",
    "limit_train_docs": "train on the first N documents of each training file only (smoke runs)",
    "lr": "peak learning rate of the encoder",
    "head_lr": "peak learning rate of the classification head",
    "weight_decay": "AdamW weight decay",
    "warmup": "fraction of the steps with a linear warm-up",
    "single_fraction": "fraction of chunks that are a single sentence (the rest span several, for context)",
    "ema": "decay per step of a moving average of the weights, evaluated and saved instead (0: none)",
    "select": "what picks the best epoch: 'document' (the first dev file, document context) or 'mean' (of all)",
}


def native_bf16(device: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ``device`` ("cpu" or "cuda") computes bfloat16 natively rather than emulating it."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig("", [], [], "")
    parser.add_argument("--model", required=True, help="HF checkpoint (AutoModelForTokenClassification)")
    parser.add_argument("--train", required=True, nargs="+", help="CoNLL training files")
    parser.add_argument(
        "--dev", required=True, nargs="+", help="CoNLL dev files (model selection; the first is the main one)"
    )
    parser.add_argument("--out", required=True, help="output directory (best/, last/, train_log.json)")
    for name, help in OPTION_HELP.items():
        annotation = str(TrainConfig.__dataclass_fields__[name].type)  # annotations are str
        kind = float if "float" in annotation else str if "str" in annotation else int
        default = getattr(defaults, name)
        shown = "" if default is None else " (default %(default)s)"
        choices = ("document", "mean") if name == "select" else None
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, choices=choices, help=help + shown
        )
    parser.add_argument(
        "--train-embeddings", dest="freeze_embeddings", action="store_false", help="also train the word embeddings"
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--bf16",
        dest="bf16",
        action="store_true",
        default=None,
        help="bf16 autocast (default: only where the device computes bf16 natively: a CUDA GPU that supports it, "
        "a CPU with AVX512-BF16 or AMX; emulated, it is ~20x slower: 34 vs 725 tokens/s on an AVX2 CPU)",
    )
    precision.add_argument("--fp32", dest="bf16", action="store_false", help="no bf16 autocast")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last (optimiser state included)")
