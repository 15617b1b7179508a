"""What an HF checkpoint's config and tokenizer say about its inputs: how many tokens one input may hold, and
its special tokens."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from .errors import ExportError


def model_max_length(config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens one input may hold, <s> and </s> included."""
    # XLM-R style position ids start after the padding index, so 514 positions hold 512 tokens.
    positions = int(config.max_position_embeddings)
    padding_idx = getattr(config, "pad_token_id", None)
    if getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert") and padding_idx is not None:
        positions -= padding_idx + 1
    limit = tokenizer.model_max_length
    return min(positions, limit) if isinstance(limit, int) and limit < 1_000_000 else positions


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The ids of the tokenizer's <s> (cls or bos), </s> (sep or eos) and padding tokens."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if bos is None or eos is None or pad is None:
        raise ExportError("the tokenizer must define cls/bos, sep/eos and pad tokens")
    return {"bos": int(bos), "eos": int(eos), "pad": int(pad)}
