"""Dev evaluation during training: each dev sentence's tags from the model (first-subword aggregation), and each
dev file's entity F1 with sentences alone and with documents as context."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from nertron.evaluation import score

from .train_data import IGNORE, DevSet, EncodedSentence, collate, make_chunks


@dataclass
class DevEvaluator:
    """Tags dev sentences with ``model`` as the trainer batches them (``budget`` subwords a chunk, between the
    ``special`` tokens <s>, </s> and padding) under ``autocast``."""

    model: torch.nn.Module
    labels: list[str]
    budget: int
    special: tuple[int, int, int]
    device: torch.device
    autocast: Callable[[], torch.autocast]

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

    def evaluate(self, dev_sets: Sequence[DevSet]) -> dict[str, float]:
        """``<key>_f1_sentence`` and ``<key>_f1_document`` of each dev set."""
        out = {}
        for dev in dev_sets:
            for context, chunks in (
                ("sentence", [[i] for i in range(len(dev.flat))]),
                ("document", make_chunks(dev.documents, self.budget, 0.0, None)),
            ):
                tags = self.predict(dev.flat, chunks)
                out[f"{dev.key}_f1_{context}"] = score(dev.gold, [tags[i] for i in range(len(dev.gold))]).entity.f1
        return out
