"""Subword tokenisers of pre-split words: a bundle's HF ``tokenizers`` file, or the same tokeniser as a
SentencePiece model where the bundle has one.

Both give, for a list of words, the subword ids and the index of the word each came from. The
SentencePiece form serves XLM-R's 250,002-piece unigram vocabulary in ~55 MiB and ~0.5 s, where
``tokenizers`` needs ~290 MiB and ~0.7 s (measured on the default model); it agrees with ``tokenizers`` on
every word of CoNLL-2003 dev and on every single code point that nertron's segmentation can make a word.
One divergence is known: after a character with a compatibility decomposition (⒥, ½, ⑴), ``tokenizers``
drops a combining mark of the same grapheme, SentencePiece keeps it (tested).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nertron.errors import InvalidValue

# ModelProto.normalizer_spec (field 3, length 2) { add_dummy_prefix (field 3, varint): false }
_NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"

if TYPE_CHECKING:
    from nertron.model.bundle import Bundle


class WordTokenizer(Protocol):
    """Subwords of pre-split words: ``(ids, word_ids)``, int64, ``word_ids[k]`` the index of the word that
    subword ``k`` belongs to (words without subwords have none). A word marked in ``unmarked`` (bool per word;
    see ``SegmentedText.unmarked``) is tokenised without the word-start marker ``▁``, as XLM-R saw Chinese or
    Thai text in pre-training."""

    def encode_words(
        self, words: Sequence[str], unmarked: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _unmarked_indices(unmarked: np.ndarray | None) -> list[int]:
    return [] if unmarked is None else np.flatnonzero(unmarked).tolist()


class HFTokenizer:
    """A ``tokenizers`` file (``tokenizer.json``), each word tokenised on its own (``is_pretokenized``)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception
            raise InvalidValue(
                f"{path}: not a valid tokenizer file ({error}); re-export the bundle or restore it"
            ) from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._unmarked: Any = None  # the same tokenizer without the word-start marker, made on first need

    @classmethod
    def of(cls, tokenizer: Any) -> HFTokenizer:
        """A ``tokenizers.Tokenizer`` already loaded (e.g. a transformers tokenizer's backend), as it is."""
        wrapped = cls.__new__(cls)
        wrapped.tokenizer, wrapped._unmarked = tokenizer, None  # noqa: SLF001 (its own class)
        return wrapped

    def encode_words(self, words: Sequence[str], unmarked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        indices = _unmarked_indices(unmarked)
        if not indices:
            (encoding,) = self.tokenizer.encode_batch([list(words)], is_pretokenized=True, add_special_tokens=False)
            return np.asarray(encoding.ids, dtype=np.int64), np.asarray(encoding.word_ids, dtype=np.int64)
        encodings = self.tokenizer.encode_batch([[w] for w in words], is_pretokenized=True, add_special_tokens=False)
        pieces = [e.ids for e in encodings]
        unmarked_words = [[words[i]] for i in indices]
        for i, encoding in zip(
            indices,
            self._unmarked_tokenizer().encode_batch(unmarked_words, is_pretokenized=True, add_special_tokens=False),
            strict=True,
        ):
            pieces[i] = encoding.ids
        return _flatten(pieces)

    def _unmarked_tokenizer(self) -> Any:
        if self._unmarked is None:
            from tokenizers import Tokenizer

            config = json.loads(self.tokenizer.to_str())
            pre_tokenizer = config.get("pre_tokenizer") or {}
            for step in pre_tokenizer.get("pretokenizers", [pre_tokenizer]):
                if step.get("type") == "Metaspace":
                    step["prepend_scheme"] = "never"
            self._unmarked = Tokenizer.from_str(json.dumps(config))
        return self._unmarked


class SentencePieceTokenizer:
    """A SentencePiece model; its ids become the model's by ``+ id_offset``, its unknown piece ``unk_id``
    (XLM-R: fairseq's offset of 1, ``<unk>`` = 3)."""

    def __init__(self, path: str | Path, *, id_offset: int, unk_id: int) -> None:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (OSError, RuntimeError) as error:
            raise InvalidValue(f"{path}: not a valid SentencePiece model ({error}); re-export the bundle") from None
        self.processor = processor
        self.id_offset, self.unk_id = id_offset, unk_id
        self._sp_unk = processor.unk_id()
        self._marked = WordPieces(processor)
        self._unmarked: WordPieces | None = None  # the same model without the word-start marker, on first need

    def encode_words(self, words: Sequence[str], unmarked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pieces = self._marked(words)
        indices = _unmarked_indices(unmarked)
        if indices:
            for i, word_pieces in zip(indices, self._unmarked_pieces()([words[i] for i in indices]), strict=True):
                pieces[i] = word_pieces
        ids, word_ids = _flatten(pieces)
        return np.where(ids == self._sp_unk, self.unk_id, ids + self.id_offset), word_ids

    def _unmarked_pieces(self) -> WordPieces:
        if self._unmarked is None:
            import sentencepiece

            # Protobuf merges a repeated sub-message field into the first, so this appended NormalizerSpec
            # (ModelProto field 3) sets only its add_dummy_prefix (field 3) to false.
            proto = self.processor.serialized_model_proto() + _NO_DUMMY_PREFIX
            self._unmarked = WordPieces(sentencepiece.SentencePieceProcessor(model_proto=proto))
        return self._unmarked


class WordPieces:
    """A SentencePiece processor's piece ids of single words, remembered for the ``size`` words seen last.

    Words go to SentencePiece one by one, never as a list: a list costs ~90 us a call whatever its length
    (1,000 CoNLL sentences: 0.10 s as lists, 0.03 s word by word, 0.002 s once their words are remembered;
    ``perf/bench.py --sections pipeline`` shows what that gives end to end). Text repeats its words, so most
    are remembered. Safe across threads: a word's ids never change, so a race only encodes it twice."""

    def __init__(self, processor: Any, size: int = 1 << 16) -> None:
        self.encode = processor.EncodeAsIds
        self.size = size
        self.remembered: dict[str, list[int]] = {}

    def __call__(self, words: Sequence[str]) -> list[list[int]]:
        remembered = self.remembered
        pieces = []
        for word in words:
            ids = remembered.get(word)
            if ids is None:
                if len(remembered) >= self.size:
                    remembered.clear()
                ids = remembered[word] = self.encode(word)
            pieces.append(ids)
        return pieces


def _flatten(pieces: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ids of each word's pieces, concatenated, and the word index of each."""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    ids = np.fromiter(chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
    return ids, np.repeat(np.arange(len(pieces), dtype=np.int64), lengths)


def load_tokenizer(bundle: Bundle) -> WordTokenizer:
    """The bundle's SentencePiece model if it has one, else its ``tokenizers`` file."""
    sentencepiece = bundle.manifest.sentencepiece
    if sentencepiece is not None:
        return SentencePieceTokenizer(
            bundle.path / sentencepiece.file, id_offset=sentencepiece.id_offset, unk_id=sentencepiece.unk_id
        )
    tokenizer = bundle.tokenizer_path
    assert tokenizer is not None, "Manifest refuses a bundle with neither tokenizer"
    return HFTokenizer(tokenizer)
