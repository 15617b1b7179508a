"""A training run's checkpoints in its ``--out`` folder, each replaced whole (a run killed while saving leaves the
one before): ``best/``, the model and tokenizer of the best epoch; ``last/``, those of the last finished epoch with
what ``--resume`` needs (optimiser, scheduler, RNG, the weights' moving average, the run's state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import torch
from nertron.io.atomic import replacing_folder
from transformers import AutoModelForTokenClassification, PreTrainedModel, PreTrainedTokenizerBase

REPLACED = ("best", "last", "train_log.json")  # what a run writes into --out, each replaced whole


class TrainState(TypedDict):
    """Where a run is: the last finished epoch, the best selection F1 and its epoch, a record per epoch."""

    epoch: int
    best_f1: float
    best_epoch: int
    history: list[dict[str, float]]


def new_state() -> TrainState:
    return {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "history": []}


def save_checkpoint(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """The checkpoint at ``path``, replaced whole: a run killed while saving leaves the one before."""
    with replacing_folder(path) as work:
        _save_into(work, model, tokenizer)


def _save_into(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def save_last(
    out: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: list[torch.Tensor] | None,
    state: TrainState,
) -> None:
    """``out/last/``: the checkpoint with what ``--resume`` needs (optimiser, scheduler, RNG, state), replaced
    whole."""
    with replacing_folder(out / "last") as last:
        _save_into(last, model, tokenizer)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "ema": ema,
            },
            last / "trainer_state.pt",
        )
        (last / "state.json").write_text(json.dumps(state, indent=2))


def load_last(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: list[torch.Tensor] | None,
) -> tuple[list[torch.Tensor] | None, TrainState]:
    """Loads ``out/last/`` into ``model``, ``optimizer``, ``scheduler`` and torch's RNG; the moving average to go
    on with (the saved one where ``ema`` is not None and one was saved, else ``ema``) and the run's state."""
    last = out / "last"
    if not (last / "state.json").is_file():
        raise FileNotFoundError(f"nothing to resume: {last}/state.json is missing")
    model.load_state_dict(AutoModelForTokenClassification.from_pretrained(last).state_dict())
    saved = torch.load(last / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if ema is not None and saved.get("ema") is not None:
        ema = saved["ema"]
    state: TrainState = json.loads((last / "state.json").read_text())
    print(f"resuming after epoch {state['epoch']}", flush=True)
    return ema, state
