"""Whether a checkpoint's SentencePiece model can replace its ``tokenizer.json`` in a bundle: it must map to the
tokenizer's ids by one offset and tokenise sample texts exactly as ``tokenizer.json`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nertron.model.bundle import SentencePiece
from transformers import PreTrainedTokenizerFast

# Where HF checkpoints keep their SentencePiece model (XLM-R: sentencepiece.bpe.model); bundles call it this:
SENTENCEPIECE_SOURCES = ("sentencepiece.bpe.model", "sentencepiece.model", "spiece.model")
SENTENCEPIECE_FILE = "sentencepiece.model"


def detect_sentencepiece(
    checkpoint: Path, tokenizer: PreTrainedTokenizerFast, words: list[list[str]], tmp: Path
) -> tuple[tuple[Path, SentencePiece] | None, str]:
    """The checkpoint's SentencePiece model, if it has one that tokenises ``words`` exactly as its
    ``tokenizer.json`` does (the SDK then loads it: for XLM-R's vocabulary ~55 MiB instead of ~290 MiB); and
    what was decided, in words."""
    from nertron.subwords import HFTokenizer, SentencePieceTokenizer

    source = next((checkpoint / name for name in SENTENCEPIECE_SOURCES if (checkpoint / name).is_file()), None)
    if source is None:
        return None, "tokenizer.json (no SentencePiece model in the checkpoint's directory)"
    if any(not token.special for token in tokenizer.added_tokens_decoder.values()):
        return None, "tokenizer.json (the tokenizer has added tokens that its SentencePiece model lacks)"
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(source))
    vocabulary = tokenizer.get_vocab()
    normal = (i for i in range(processor.get_piece_size()) if not (processor.is_control(i) or processor.is_unknown(i)))
    offsets = {vocabulary.get(processor.id_to_piece(i), -1) - i for i in normal}
    if len(offsets) != 1 or tokenizer.unk_token_id is None:
        return None, f"tokenizer.json ({source.name}'s ids do not map to the tokenizer's by one offset)"
    entry = SentencePiece(SENTENCEPIECE_FILE, id_offset=offsets.pop(), unk_id=int(tokenizer.unk_token_id))
    tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    reference = HFTokenizer(tmp / "tokenizer.json")
    candidate = SentencePieceTokenizer(source, id_offset=entry.id_offset, unk_id=entry.unk_id)
    for text in words:
        expected, got = reference.encode_words(text), candidate.encode_words(text)
        if not all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True)):
            return None, f"tokenizer.json ({source.name} tokenises {' '.join(text)[:60]!r} differently)"
    return (source, entry), f"{SENTENCEPIECE_FILE} (from {source.name}; equal to tokenizer.json on {len(words)} texts)"
