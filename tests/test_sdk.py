"""The SDK on the tiny exported model, checked against PyTorch + the pure-Python reference."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nertron import NER, Entity
from nertron.model.bundle import Bundle
from nertron.text import SegmentedText
from tokenizers import Tokenizer
from transformers import AutoModelForTokenClassification, AutoTokenizer

from tests import reference
from tests.properties import examples

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "EU rejects German call to boycott British lamb.",
    "Der Bundestag in Berlin stimmte am Dienstag zu, sagte Olaf Scholz.",
    "El presidente de México visitó Madrid y Barcelona.",
    "東京で会議が開かれた。 Москва и Санкт-Петербург.",
    "부산을 떠난 손흥민은 런던에서 뛰었다. 华为在联合国",
    "温州市的企业家访问了北京大学和中国队。",  # name endings
    "x",
]


class TorchReference:
    """Entities computed without the SDK: transformers' tokenizer, PyTorch, tests/reference.py."""

    def __init__(self, checkpoint: Path) -> None:
        self.model = AutoModelForTokenClassification.from_pretrained(checkpoint).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        # Words of scripts without spaces are tokenised as running text: no word-start marker.
        config = json.loads(self.tokenizer.backend_tokenizer.to_str())
        steps = config["pre_tokenizer"].get("pretokenizers", [config["pre_tokenizer"]])
        for step in steps:
            if step["type"] == "Metaspace":
                step["prepend_scheme"] = "never"
        assert "Metaspace" in [step["type"] for step in steps]
        self.running_text = Tokenizer.from_str(json.dumps(config))

    def word_predictions(
        self, words: list[str], aggregation: str, unmarked: np.ndarray | None = None
    ) -> list[reference.Prediction]:
        if unmarked is None:
            encoded = self.tokenizer(words, is_split_into_words=True, return_tensors="pt")
            word_ids = [-1 if w is None else w for w in encoded.word_ids()]
            input_ids = encoded["input_ids"]
        else:
            ids, word_ids = [self.tokenizer.bos_token_id], [-1]
            for index, (word, running) in enumerate(zip(words, unmarked, strict=True)):
                pieces = (
                    self.running_text.encode(word, add_special_tokens=False).ids
                    if running
                    else self.tokenizer(word, add_special_tokens=False)["input_ids"]
                )
                ids += pieces
                word_ids += [index] * len(pieces)
            ids.append(self.tokenizer.eos_token_id)
            word_ids.append(-1)
            input_ids = torch.tensor([ids])
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0].tolist()
        return reference.constrained_row(logits, word_ids, self.labels, len(words), aggregation)

    def entities(self, text: str, aggregation: str) -> list[tuple[str, str, int, int, float]]:
        segmented = SegmentedText.split(text)
        words, starts, ends = list(segmented), segmented.starts.tolist(), segmented.ends.tolist()
        if not words:
            return []
        predictions = self.word_predictions(words, aggregation, segmented.unmarked)
        labels, scores = [p[0] for p in predictions], [p[1] for p in predictions]
        links = segmented.links.tolist() if segmented.links is not None else None
        spans = reference.decode_row(labels, scores, self.labels, links)
        return [(text[starts[f] : ends[e - 1]], t, starts[f], ends[e - 1], score) for t, f, e, score in spans]


@pytest.fixture(scope="module")
def torch_reference(tiny_checkpoint: Path) -> TorchReference:
    return TorchReference(tiny_checkpoint)


def as_tuples(entities: list[Entity]) -> list[tuple[str, str, int, int]]:
    return [(e.text, e.label, e.start, e.end) for e in entities]


@pytest.mark.parametrize("aggregation", ["first", "average", "max"])
def test_entities_equal_pytorch_reference(tiny_bundle: Path, torch_reference: TorchReference, aggregation: str) -> None:
    ner = NER(tiny_bundle, aggregation=aggregation, batch_size=4)
    results = ner.batch(TEXTS)
    assert sum(len(r) for r in results) > 5, "the tiny model should find entities"
    for text, entities in zip(TEXTS, results, strict=True):
        expected = torch_reference.entities(text, aggregation)
        assert as_tuples(entities) == [e[:4] for e in expected]
        np.testing.assert_allclose([e.score for e in entities], [e[4] for e in expected], atol=1e-4)


def test_long_documents_are_windowed_and_merged(tiny_bundle: Path, torch_reference: TorchReference) -> None:
    ner = NER(tiny_bundle, max_length=16, stride=5)
    docs = [list(SegmentedText.split(text)) for text in (" ".join(TEXTS * 3), "Paris", TEXTS[0])]
    segmented = [SegmentedText.join([doc]) for doc in docs]  # pre-split words, as ner.tag takes them
    windows = [w for doc, s in enumerate(segmented) for w in ner.pipeline.encoder.windows(doc, docs[doc], s.unmarked)]
    assert max(w.input_ids.size for w in windows) <= 16
    assert sum(w.doc == 0 for w in windows) > 5, "the long document must be cut into windows"
    # The reference merges PyTorch's predictions of the same windows with the most-context rule.
    per_window = [
        (
            w.doc,
            w.word_start,
            torch_reference.word_predictions(
                docs[w.doc][w.word_start : w.word_start + w.num_words],
                "first",
                None if (u := segmented[w.doc].unmarked) is None else u[w.word_start : w.word_start + w.num_words],
            ),
        )
        for w in windows
    ]
    expected = reference.merge_windows(per_window, [len(d) for d in docs])
    names = torch_reference.labels
    assert ner.tag(docs) == [[names[p[0]] for p in doc] for doc in expected]


@settings(max_examples=examples(200))
@given(
    st.lists(st.text(alphabet="ab Ü東\u0301-.", min_size=0, max_size=12), max_size=40),
    st.integers(3, 20),
    st.data(),
)
def test_windows_cut_as_the_document_is_read_equal_cutting_it_whole(
    tiny_bundle: Path, words: list[str], max_length: int, data: st.DataObject
) -> None:
    stride = data.draw(st.integers(0, max_length - 3))
    block_words = data.draw(st.integers(1, 8))
    encoder = NER(tiny_bundle, max_length=max_length, stride=stride).pipeline.encoder
    ids, word_ids = encoder.tokenizer.encode_words(words)  # the whole document at once
    expected = reference.cut_windows(ids.tolist(), word_ids.tolist(), len(words), max_length - 2, stride)
    encoder.block_words = block_words
    got = [
        (w.word_start, w.num_words, w.input_ids[1:-1].tolist(), (w.word_ids[1:-1] + w.word_start).tolist())
        for w in encoder.windows(0, words)
    ]
    assert got == expected
    assert sum(w.new_words for w in encoder.windows(0, words)) == len(words)


def test_word_longer_than_a_window_keeps_its_label(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle, max_length=8, stride=2)
    tags = ner.tag([["a", "Ü" * 200 + "xyz" * 50, "b"]])
    assert len(tags[0]) == 3 and all(t in ner.labels for t in tags[0])


def test_batch_preserves_order_and_equals_single_calls(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle, batch_size=2)
    texts = [*TEXTS, "", "  ", *reversed(TEXTS)]
    assert ner.batch(texts) == [ner(t) for t in texts]
    ner._pipeline = ner.pipeline.replace(
        lookahead=3
    )  # documents come back in several groups, some of them mid-document
    assert list(ner.pipe(iter(texts))) == ner.batch(texts)
    assert list(ner.pipe(iter([" ".join(TEXTS * 20), *texts]))) == ner.batch([" ".join(TEXTS * 20), *texts])


def test_empty_and_whitespace_give_no_entities(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle)
    assert ner("") == []
    assert ner(" \n\t\u3000") == []
    assert ner.batch([]) == []
    assert ner.tag([[]]) == [[]]


def test_non_strings_raise_type_error_naming_the_index(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle)
    with pytest.raises(TypeError, match="text must be str, got NoneType"):
        ner(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[2\] must be str, got int"):
        ner.batch(["a", "b", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"docs\[0\]\[1\] must be str"):
        ner.tag([["a", 1]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"docs\[0\] must be a list of str"):
        ner.tag(["a b"])


def test_unicode_offsets_are_exact(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle)
    texts = [
        "Emoji 👩‍👩‍👧 in Zürich 🇩🇪 and Paris 😀.",
        "東京で会議が開かれた。北京も。",
        "Cafe\u0301 Ame\u0301lie near Sa\u0303o Paulo",
        "שלום עולם, مرحبا بالعالم Tel Aviv",
        "control\x00chars\x07and\u200bzero\u200dwidth\r\nlines",
    ]
    found = 0
    for text, entities in zip(texts, ner.batch(texts), strict=True):
        for e in entities:
            found += 1
            assert text[e.start : e.end] == e.text and e.text == e.text.strip() and e.start < e.end
            assert isinstance(e.score, float) and 0.0 <= e.score <= 1.0
    assert found > 0


def test_one_megabyte_text_uses_windows_with_bounded_memory(tiny_bundle: Path) -> None:
    ner = NER(tiny_bundle)
    sentence = "Angela Merkel met Emmanuel Macron in Paris. "
    text = sentence * (1_000_000 // len(sentence))
    tracemalloc.start()
    entities = ner(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 400 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB"
    assert entities and entities[-1].end > len(text) - len(sentence)  # the end was reached
    assert all(text[e.start : e.end] == e.text for e in entities[:: max(1, len(entities) // 1000)])


def test_entities_are_json_serialisable(tiny_bundle: Path) -> None:
    entities = NER(tiny_bundle)(TEXTS[0])
    payload = json.loads(json.dumps([e.to_dict() for e in entities]))
    assert payload and set(payload[0]) == {"text", "label", "start", "end", "score"}


def test_bundle_validation(tiny_bundle: Path, tmp_path: Path) -> None:
    assert Bundle.load(tiny_bundle, verify=True).labels[0] == "O"
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected format 'nertron-bundle'"):
        Bundle.load(tmp_path)


def test_constructor_arguments_are_checked(tiny_bundle: Path) -> None:
    with pytest.raises(ValueError, match="aggregation must be one of"):
        NER(tiny_bundle, aggregation="simple")
    with pytest.raises(ValueError, match="exceeds the model's"):
        NER(tiny_bundle, max_length=10_000)
    with pytest.raises(ValueError, match="stride must be in"):
        NER(tiny_bundle, max_length=16, stride=14)


def test_model_resolution(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERTRON_MODEL", str(tiny_bundle))
    assert NER().bundle.path == tiny_bundle
    assert NER(precision="fp32").bundle.path == tiny_bundle  # the bundle's own precision
    with pytest.raises(ValueError, match="is an fp32 bundle; precision='int8' picks a variant of the embedded model"):
        NER(precision="int8")
    with pytest.raises(ValueError, match="precision='int8' picks a variant"):
        NER(tiny_bundle, precision="int8")


def test_concurrent_batches_equal_sequential(tiny_bundle: Path) -> None:
    from nertron.backends.onnxruntime import OnnxRuntimeBackend

    model = Bundle.load(tiny_bundle).model_path
    rng = np.random.default_rng(5)
    shapes = [(int(rng.integers(1, 6)), int(rng.integers(3, 60))) for _ in range(25)]
    batches = [(rng.integers(4, 190, size=shape), np.ones(shape, dtype=np.int64)) for shape in shapes]
    sequential = OnnxRuntimeBackend(model, threads=2, concurrent_batches=1)
    concurrent = OnnxRuntimeBackend(model, threads=2, concurrent_batches=2)
    assert sequential.concurrency == 1 and concurrent.concurrency == 2
    expected = list(sequential.map(batches))
    got = list(concurrent.map(iter(batches)))  # in order, from a one-pass iterator
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    bad = [*batches[:3], (batches[3][0].astype(np.float64), batches[3][1]), *batches[4:]]
    with pytest.raises(Exception, match="data type"):  # the worker thread's error reaches the caller
        list(concurrent.map(bad))
    with pytest.raises(ValueError, match="concurrent_batches must be >= 1"):
        OnnxRuntimeBackend(model, concurrent_batches=0)


def test_settings_are_one_read_only_config(tiny_bundle: Path) -> None:
    from nertron import NERConfig

    options = {"aggregation": "max", "batch_size": 3, "min_score": 0.25, "max_length": 16, "stride": 2}
    with NER(tiny_bundle, **options) as ner:  # type: ignore[arg-type]
        assert ner.config == NERConfig(str(tiny_bundle), **options)  # type: ignore[arg-type]
        assert NERConfig(**ner.config.options()) == ner.config
        assert (ner.aggregation, ner.batch_size, ner.min_score) == ("max", 3, 0.25)
        for name in ("aggregation", "batch_size", "min_score", "precision", "config"):
            with pytest.raises(AttributeError):
                setattr(ner, name, getattr(ner, name))
        with NERConfig(str(tiny_bundle), **options).build() as built:  # type: ignore[arg-type]
            texts = ["Angela Merkel in Paris .", "EU rejects German call"]
            assert built.batch(texts) == ner.batch(texts)
