"""CoNLL reading and scoring, cross-checked against seqeval (entities) and scikit-learn (tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nertron.cli import main
from nertron.entity import Entity
from nertron.evaluation import evaluate, score
from nertron.io.conll import DOCSTART, read_conll
from nertron.raw_evaluation import evaluate_raw, raw_text
from nertron.text import SegmentedText
from seqeval.metrics import f1_score, precision_score, recall_score
from sklearn.metrics import classification_report

from tests.properties import examples

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
sentences = st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=12), min_size=1, max_size=8)


@settings(max_examples=examples(200))
@given(sentences, st.data())
def test_entity_scores_equal_seqeval(gold: list[list[str]], data: st.DataObject) -> None:
    predicted = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(s), max_size=len(s))) for s in gold]
    report = score(gold, predicted)
    # seqeval's default mode reads I-X after O as a start, like conlleval and like our IOB2 conversion.
    assert report.entity.precision == pytest.approx(precision_score(gold, predicted, zero_division=0))
    assert report.entity.recall == pytest.approx(recall_score(gold, predicted, zero_division=0))
    assert report.entity.f1 == pytest.approx(f1_score(gold, predicted, zero_division=0))


@settings(max_examples=examples(100))
@given(sentences, st.data())
def test_token_scores_equal_scikit_learn(gold: list[list[str]], data: st.DataObject) -> None:
    gold = [
        ["B" + t[1:] if t.startswith("I") and (i == 0 or s[i - 1][2:] != t[2:]) else t for i, t in enumerate(s)]
        for s in gold
    ]  # well-formed IOB2, so conversion changes nothing
    predicted = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(s), max_size=len(s))) for s in gold]
    predicted = [
        ["B" + t[1:] if t.startswith("I") and (i == 0 or s[i - 1][2:] != t[2:]) else t for i, t in enumerate(s)]
        for s in predicted
    ]
    report = score(gold, predicted)
    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in predicted for t in s]
    expected = classification_report(flat_gold, flat_pred, output_dict=True, zero_division=0)
    for tag, s in report.per_tag.items():
        assert (s.precision, s.recall, s.f1, s.support) == pytest.approx(
            (
                expected[tag]["precision"],
                expected[tag]["recall"],
                expected[tag]["f1-score"],
                expected[tag]["support"],
            )
        )
    assert report.token_accuracy == pytest.approx(expected["accuracy"])
    assert report.macro.f1 == pytest.approx(expected["macro avg"]["f1-score"])
    assert report.weighted.f1 == pytest.approx(expected["weighted avg"]["f1-score"])


CONLL = f"""{DOCSTART} -X- -X- O

Acme NNP B-NP I-ORG
hires VBZ B-VP O
Dutch JJ B-NP I-MISC
engineers NN I-NP O
. . O O

Maria NNP B-NP I-PER
Jansen NNP I-NP I-PER

{DOCSTART} -X- -X- O

UTRECHT NNP B-NP I-LOC
2026-11-28 CD I-NP O
"""


def test_read_conll_converts_iob1_and_splits_documents(tmp_path: Path) -> None:
    path = tmp_path / "iob1.txt"
    path.write_text(CONLL)
    documents = read_conll(path)
    assert [len(d.sentences) for d in documents] == [2, 1]
    assert documents[0].sentences[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert documents[0].sentences[1].tags == ["B-PER", "I-PER"]
    assert documents[1].words == ["UTRECHT", "2026-11-28"]


def test_read_conll_names_a_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("Acme NNP B-NP B-ORG\nhires\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a token and a tag"):
        read_conll(path)
    path.write_text("Acme NNP B-NP ORG\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: tag 'ORG'"):
        read_conll(path)


def test_report_format_has_conlleval_lines() -> None:
    report = score([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    text = report.format()
    assert "processed 4 tokens with 2 phrases; found: 2 phrases; correct: 1." in text
    assert "accuracy:  75.00%; precision:  50.00%; recall:  50.00%; FB1:  50.00" in text
    assert "              PER: precision: 100.00%; recall: 100.00%; FB1: 100.00  1" in text


def test_eval_command_reports_both_contexts(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.txt"
    path.write_text(CONLL)
    assert main(["eval", "--data", str(path), "-m", str(tiny_bundle), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)["reports"]
    assert [r["context"] for r in reports] == ["sentence", "document"]
    assert all(r["tokens"] == 9 and r["entity"]["support"] == 4 for r in reports)
    assert main(["eval", "--data", str(path), "-m", str(tiny_bundle), "--context", "sentence"]) == 0
    assert "processed 9 tokens with 4 phrases" in capsys.readouterr().out


def test_eval_on_raw_text_scores_character_spans(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.txt"
    path.write_text(CONLL)
    assert main(["eval", "--data", str(path), "-m", str(tiny_bundle), "--input", "both", "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)["reports"]
    words = {r["context"]: r for r in reports if r.get("input") != "raw"}
    raw = {r["context"]: r for r in reports if r.get("input") == "raw"}
    assert set(words) == set(raw) == {"sentence", "document"}
    for context in raw:  # the gold words re-cut identically here, so both inputs find the same entities
        assert raw[context]["entity"]["support"] == words[context]["entity"]["support"] == 4
        assert raw[context]["entity"]["found"] == words[context]["entity"]["found"]
        assert raw[context]["entity"]["correct"] == words[context]["entity"]["correct"]
    assert main(["eval", "--data", str(path), "-m", str(tiny_bundle), "--input", "raw", "--reliability", "x.png"]) == 2
    assert "--reliability needs --input words" in capsys.readouterr().err


def test_evaluate_document_context_splits_back_into_sentences(tiny_bundle: Path, tmp_path: Path) -> None:
    from nertron import NER

    path = tmp_path / "data.txt"
    path.write_text(CONLL)
    documents = read_conll(path)
    ner = NER(tiny_bundle)
    report = evaluate(ner, documents, context="document")
    flat = ner.tag([d.words for d in documents])
    assert report.tokens == sum(len(d) for d in flat)


CHARACTERS = "华 B-ORG\n为 I-ORG\n在 O\n北 B-LOC\n京 I-LOC\n\n马 B-PER\n云 I-PER\n说 O\n"


class Found:
    """Stands in for an NER: answers each text with fixed entities, and keeps the texts it was given."""

    def __init__(self, entities: dict[str, list[Entity]]) -> None:
        self.entities, self.texts = entities, []

    def batch(self, texts: list[str], batch_size: int = 16) -> list[list[Entity]]:
        self.texts += texts
        return [self.entities.get(t, []) for t in texts]


def test_raw_text_joins_gold_words_as_a_user_writes_them() -> None:
    sentences = [["Angela", "Merkel", "."], [], ["华", "为"]]
    text, starts = raw_text(sentences)
    joined = SegmentedText.join(sentences)
    assert (
        text == joined.text and [s for sentence in starts for s in sentence] == joined.starts.tolist()
    )  # as the words input cuts it
    assert raw_text(sentences, "") == ("AngelaMerkel.\n\n华为", [[0, 6, 12], [], [15, 16]])


def test_characters_are_scored_as_raw_text_on_their_types(tmp_path: Path) -> None:
    path = tmp_path / "zh.txt"
    path.write_text(CHARACTERS)
    found = Found(
        {
            "华为在北京": [
                Entity("华为", "ORG", 0, 2, 0.9),
                Entity("在", "MISC", 2, 3, 0.9),
                Entity("北", "LOC", 3, 4, 0.9),
            ],
            "马云说": [Entity("马云", "PER", 0, 2, 0.9)],
        }
    )
    report = evaluate_raw(found, read_conll(path), joiner="", types={"PER", "ORG", "LOC"})
    assert found.texts == ["华为在北京", "马云说"]  # the characters joined by nothing, a sentence each
    assert (report.entity.support, report.entity.found, report.correct_entities) == (3, 3, 2)  # 北 is not 北京
    assert report.per_type["ORG"].f1 == report.per_type["PER"].f1 == 1.0 and report.per_type["LOC"].f1 == 0.0
    everything = evaluate_raw(found, read_conll(path), joiner="")
    assert (everything.entity.found, everything.correct_entities) == (4, 2)  # MISC counts against precision


def test_eval_command_scores_a_file_of_characters(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "zh.txt"
    path.write_text(CHARACTERS)
    args = ["eval", "--data", str(path), "-m", str(tiny_bundle), "--context", "sentence"]
    assert main([*args, "--input", "raw", "--join", "nothing", "--types", "PER,ORG,LOC", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert report["input"] == "raw" and report["entity"]["support"] == 3
    assert set(report["per_type"]) <= {"PER", "ORG", "LOC"}
    assert main([*args, "--join", "nothing"]) == 2
    assert "--join nothing needs --input raw" in capsys.readouterr().err
    assert main([*args, "--input", "raw", "--types", "PER,GPE"]) == 2
    assert "--types GPE: the model has no such type" in capsys.readouterr().err
