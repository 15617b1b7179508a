"""`nertron train` on the tiny model: a real (short) fine-tuning run, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nertron import NER
from nertron.cli import main
from nertron.evaluation import evaluate
from nertron.io.conll import read_conll
from nertron.tags import to_iob2
from nertron_export.onnx_export import export_bundle
from nertron_export.pseudo_label import main as pseudo_label_main

SENTENCES = [
    ("Angela Merkel met Emmanuel Macron in Paris .", "B-PER I-PER O B-PER I-PER O B-LOC O"),
    ("EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn reported from Brussels .", "B-PER I-PER O O B-LOC O"),
]


def write_conll(path: Path, copies: int) -> Path:
    lines = []
    for doc in range(copies):
        lines += ["-DOCSTART- -X- -X- O", ""]
        for words, tags in SENTENCES[doc % 2 :]:
            lines += [f"{w} X X {t}" for w, t in zip(words.split(), tags.split(), strict=True)] + [""]
    path.write_text("\n".join(lines))
    return path


def test_train_resume_and_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    train = write_conll(tmp_path / "train.txt", 12)
    dev = write_conll(tmp_path / "dev.txt", 2)
    out = tmp_path / "run"
    common = [
        "train",
        "--model",
        str(tiny_checkpoint),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--head-lr",
        "3e-3",
        "--fp32",
        "--threads",
        "1",
    ]
    assert main([*common, "--epochs", "1"]) == 0
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["epoch"] == 1 and (out / "best" / "config.json").is_file()

    assert main([*common, "--epochs", "3", "--resume"]) == 0  # continues with epochs 2 and 3
    log = json.loads((out / "train_log.json").read_text())
    assert [h["epoch"] for h in log["history"]] == [1, 2, 3]
    assert log["history"][-1]["train_loss"] < log["history"][0]["train_loss"]
    document_f1 = [h["dev_f1_document"] for h in log["history"]]
    assert log["best_f1"] == max(document_f1) and log["best_epoch"] == 1 + document_f1.index(max(document_f1))

    bundle = tmp_path / "bundle"
    export_bundle(out / "best", bundle)
    assert len(NER(bundle).tag([SENTENCES[0][0].split()])[0]) == 8
    # best/ is the selected epoch's model: scored again by nertron's own evaluation, it gets the F1 recorded for
    # that epoch (sentences alone: the tiny model's 64 positions window documents otherwise than training does)
    with NER(bundle) as ner:
        f1 = evaluate(ner, read_conll(dev), context="sentence").entity.f1
    assert f1 == pytest.approx(log["history"][log["best_epoch"] - 1]["dev_f1_sentence"], abs=1e-9)
    assert f1 > 0, "the tiny model should learn a few entities of its training data"


def test_self_training_on_pseudo_labels_selected_on_several_dev_sets(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A teacher tags unlabeled text (a sentence per line, a blank line between documents); the student trains
    on gold + those tags and is selected on the mean F1 of several dev files, each reported under its folder."""
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text(
        "Peter Blackburn reported from Brussels .\nEU rejects German call .\n\nAngela Merkel met Macron .\n"
    )
    pseudo = tmp_path / "pseudo" / "xx.conll"
    assert pseudo_label_main(["--model", str(tiny_bundle), "--text", str(unlabeled), "--out", str(pseudo)]) == 0
    documents = read_conll(pseudo)
    assert [[s.words for s in d.sentences] for d in documents] == [
        [["Peter", "Blackburn", "reported", "from", "Brussels", "."], ["EU", "rejects", "German", "call", "."]],
        [["Angela", "Merkel", "met", "Macron", "."]],
    ]
    with NER(tiny_bundle) as teacher:  # the teacher's own tags, each sentence alone (read back as IOB2)
        tags = teacher.tag([s.words for d in documents for s in d.sentences])
    assert [s.tags for d in documents for s in d.sentences] == [to_iob2(t) for t in tags]
    (tmp_path / "xx").mkdir()
    other_dev = write_conll(tmp_path / "xx" / "dev.txt", 1)
    out = tmp_path / "student"
    argv = [
        "train",
        "--model",
        str(tiny_checkpoint),
        "--train",
        str(write_conll(tmp_path / "train.txt", 4)),
        str(pseudo),
    ]
    argv += ["--dev", str(write_conll(tmp_path / "dev.txt", 2)), str(other_dev), "--select", "mean", "--out", str(out)]
    argv += ["--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--head-lr", "3e-3", "--fp32", "--threads", "1"]
    assert main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    record = log["history"][log["best_epoch"] - 1]
    scores = {k: v for k, v in record.items() if "_f1_" in k}
    assert set(scores) == {f"{d}_f1_{c}" for d in ("dev", "xx") for c in ("sentence", "document")}
    assert log["best_f1"] == sum(scores.values()) / 4 > 0


def test_dev_files_in_folders_of_one_name_are_each_scored_under_a_key_of_their_own(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """By folder name, ``--dev en/dev.txt x/dev/es.txt y/dev/es.txt`` named all three ``dev``: the later files'
    F1 overwrote the first's, which picks the epoch. Each now has a key of its own."""
    from nertron_export.train import dev_keys

    devs = [tmp_path / "en" / "dev.txt", tmp_path / "x" / "dev" / "es.txt", tmp_path / "y" / "dev" / "es.txt"]
    for copies, dev in enumerate(devs, start=1):
        dev.parent.mkdir(parents=True)
        write_conll(dev, copies)
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_checkpoint), "--train", str(write_conll(tmp_path / "train.txt", 4))]
    argv += ["--dev", *map(str, devs), "--out", str(out), "--epochs", "1", "--fp32", "--threads", "1"]
    assert main(argv) == 0
    (record,) = json.loads((out / "train_log.json").read_text())["history"]
    keys = {k for k in record if "_f1_" in k}
    assert keys == {f"{d}_f1_{c}" for d in ("dev", "x/dev/es", "y/dev/es") for c in ("sentence", "document")}

    assert dev_keys(["en/dev.txt", "x/dev/es.txt", "y/dev/es.txt"]) == ["dev", "x/dev/es", "y/dev/es"]
    paths = ["en/dev.txt", "a/es/dev.txt", "b/es/dev.txt", "nl/dev.txt"]
    assert dev_keys(paths) == ["dev", "a/es/dev", "b/es/dev", "nl"]
    assert dev_keys(["en/dev.txt", "dev/es.txt"]) == ["dev", "es"]  # "dev" is the first file's
    assert dev_keys(["en/dev.txt", "es/dev.txt", "nl/dev.txt"]) == ["dev", "es", "nl"]  # the folder, when it is unique
    keys = dev_keys(["dev.txt", "es/a.txt", "es/a.conll"])  # one name, two files: their absolute paths
    assert keys == ["dev", str(Path("es/a.txt").absolute()), str(Path("es/a.conll").absolute())]


def test_one_dev_file_given_twice_is_refused_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = write_conll(tmp_path / "dev.txt", 1)
    again = f"{tmp_path}/other/../dev.txt"
    argv = ["train", "--model", str(tmp_path / "no-model"), "--train", str(dev), "--dev", str(dev), again]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2  # not the missing model: nothing was loaded
    assert capsys.readouterr().err.splitlines() == [
        f"nertron train: error: --dev names the same file twice: {dev} and {again}"
    ]
    assert not (tmp_path / "out").exists()


def test_an_out_folder_over_an_input_is_refused_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs" / "last").mkdir(parents=True)
    dev = write_conll(tmp_path / "runs" / "last" / "dev.txt", 1)
    train = write_conll(tmp_path / "train.txt", 1)
    model = tmp_path / "runs" / "best"
    model.mkdir()
    for out, replaced, option, path, why in (  # what a run replaces: best/, last/, train_log.json
        (model, "best", "--model", model, "lies inside"),
        (tmp_path / "runs", "best", "--model", model, "is the same path as"),
        (tmp_path / "runs", "last", "--dev", dev, "contains"),
    ):
        inputs = ["--model", str(model), "--train", str(train), "--dev", str(dev)]
        if option == "--dev":
            inputs[1] = str(tmp_path / "no-model")  # not the model's turn
        assert main(["train", *inputs, "--out", str(out)]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"nertron train: error: --out {out} (its {replaced}) {why} {option} {path}; write to a folder of its own"
        ]
    assert sorted(p.name for p in model.iterdir()) == [] and dev.is_file()


def test_a_model_or_option_no_run_can_use_is_refused_in_one_line_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    dev = write_conll(tmp_path / "dev.txt", 1)
    (tmp_path / "empty").mkdir()
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    for model, options, message in (
        (tmp_path / "missing", [], f"--model {tmp_path / 'missing'}: no such folder in {tmp_path}"),
        (tmp_path / "empty", [], f"--model {tmp_path / 'empty'}: the folder has no config.json"),
        (dev, [], f"--model {dev}: a file, not a checkpoint folder or a hub id"),
        ("no-such/hub-model", [], "--model no-such/hub-model: no such folder, and no hub model of that id in the"),
        ("runs/typo", [], "--model runs/typo: no such folder in runs"),  # a relative path, not a hub id
        ("~/checkpoint", [], "--model ~/checkpoint: no such folder (and not a hub id)"),  # transformers reads "~"
        (checkpoint, ["--epochs", "0"], "--epochs 0: must be >= 1"),
        (checkpoint, ["--lr", "nan"], "--lr nan: must be in (0, 1)"),
        (checkpoint, ["--single-fraction", "1.5"], "--single-fraction 1.5: must be in [0, 1]"),
    ):
        argv = ["train", "--model", str(model), "--train", str(dev), "--dev", str(dev), *options]
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"nertron train: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_a_hub_id_is_left_to_the_download_when_the_hub_is_online(monkeypatch: pytest.MonkeyPatch) -> None:
    from nertron_export.model_source import check_model_source

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    check_model_source("FacebookAI/xlm-roberta-base")  # no network needed: only the id's form is checked
    check_model_source("xlm-roberta-base")


def test_several_teachers_keep_only_the_sentences_they_tag_alike(tmp_path: Path) -> None:
    from nertron_export.pseudo_label import PseudoLabelled, pseudo_label

    class Teacher:  # stands in for a Pipeline: each sentence's tags from a table
        def __init__(self, table: dict[str, list[str]]) -> None:
            self.table = table
            self.labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

        def tags(self, sentences: list[list[str]]) -> list[list[str]]:
            return [self.table[" ".join(s)] for s in sentences]

    merkel, eu, paris = "Angela Merkel met Macron .", "EU rejects German call .", "Paris is far ."
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text(f"{merkel}\n{eu}\n\n{paris}\n")
    one = {merkel: ["B-PER", "I-PER", "O", "B-PER", "O"], eu: ["B-ORG", "O", "B-MISC", "O", "O"], paris: list("OOOO")}
    other = {**one, eu: ["B-LOC", "O", "B-MISC", "O", "O"], paris: ["B-LOC", "O", "O", "O"]}
    out = tmp_path / "pseudo.conll"
    assert pseudo_label([Teacher(one)], unlabeled, out) == PseudoLabelled(3, 4)
    assert [[s.words for s in d.sentences] for d in read_conll(out)] == [
        [merkel.split(), eu.split()],
        [paris.split()],
    ]
    both = [Teacher(one), Teacher(other)]
    assert pseudo_label(both, unlabeled, out) == PseudoLabelled(1, 2, disagreed=2)
    (document,) = read_conll(out)  # the second document lost its only sentence, so it is left out
    assert [(s.words, s.tags) for s in document.sentences] == [(merkel.split(), one[merkel])]
    iob1 = Teacher({**one, merkel: ["I-PER", "I-PER", "O", "I-PER", "O"]})  # the same entities in IOB1
    assert pseudo_label([Teacher(one), iob1], unlabeled, out) == PseudoLabelled(3, 4)
    assert "I-PER I-PER" not in out.read_text() and "Angela B-PER\nMerkel I-PER\n" in out.read_text()  # IOB2
    other_types = Teacher(one)
    other_types.labels = ["O", "B-PERSON", "I-PERSON"]
    with pytest.raises(ValueError, match="teachers: every teacher must tag the same entity types"):
        pseudo_label([Teacher(one), other_types], unlabeled, out)


def test_pseudo_label_argmax_tags_each_word_with_its_most_likely_label(tiny_bundle: Path, tmp_path: Path) -> None:
    """--argmax (what make default-model tags with) writes each word's most likely label, as the SDK decoded before
    it constrained labels to the tag scheme; without it, the tags a user gets."""
    unlabeled = tmp_path / "unlabeled.txt"
    lines = ["Peter Blackburn reported from Brussels .", "EU rejects German call .", "Angela Merkel met Macron ."]
    unlabeled.write_text("\n".join(lines * 4) + "\n")
    written = {}
    for name, options in (("argmax", ["--argmax"]), ("constrained", [])):
        out = tmp_path / f"{name}.conll"
        assert (
            pseudo_label_main(["--model", str(tiny_bundle), "--text", str(unlabeled), "--out", str(out), *options]) == 0
        )
        written[name] = [s.tags for d in read_conll(out) for s in d.sentences]
    sentences = [line.split() for line in lines * 4]
    with NER(tiny_bundle) as teacher:
        argmax = teacher.pipeline.with_constrained_labels(False)
        assert written["argmax"] == [to_iob2(tags) for tags in argmax.tags(sentences)]
        assert written["constrained"] == [to_iob2(tags) for tags in teacher.tag(sentences)]
    assert written["argmax"] != written["constrained"]  # the random tiny model breaks IOB2 somewhere


def test_pseudo_label_reports_a_file_it_cannot_read_in_one_line(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(tiny_bundle), "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.conll")]
    assert pseudo_label_main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("python -m nertron_export.pseudo_label: error: ")
    assert "missing.txt" in err[0] and not (tmp_path / "x.conll").exists()


def test_raw_text_is_pseudo_labelled_as_a_user_gets_its_entities(tiny_bundle: Path, tmp_path: Path) -> None:
    from nertron.pipeline import segment

    texts = ["普京在莫斯科会见了默克尔。", "부산을 떠난 손흥민은 런던에서 뛰었다.", "Angela Merkel met Macron ."]
    unlabeled = tmp_path / "zh.txt"
    unlabeled.write_text("\n".join(texts) + "\n")
    pseudo = tmp_path / "zh.conll"
    assert (
        pseudo_label_main(["--raw", "--model", str(tiny_bundle), "--text", str(unlabeled), "--out", str(pseudo)]) == 0
    )
    (document,) = read_conll(pseudo)
    assert [s.words for s in document.sentences] == [list(segment(t)) for t in texts]  # nertron's words
    with NER(tiny_bundle) as teacher:
        found = teacher.batch(texts)
    for sentence, text, entities in zip(document.sentences, texts, found, strict=True):
        # the teacher's entities, read back from the word tags, as character spans
        starts, ends = segment(text).starts.tolist(), segment(text).ends.tolist()
        spans = [(starts[s], ends[e - 1], label) for s, e, label in entity_spans(sentence.tags)]
        assert spans == [(e.start, e.end, e.label) for e in entities]


def entity_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """(first word, end word, type) of the IOB2 ``tags``' entities."""
    spans: list[tuple[int, int, str]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append((i, i + 1, tag[2:]))
        elif tag.startswith("I-"):
            spans[-1] = (spans[-1][0], i + 1, spans[-1][2])
    return spans


def test_bf16_autocast_only_where_the_cpu_computes_it(tmp_path: Path) -> None:
    from nertron_export.train_options import native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not native_bf16("cpu", cpuinfo)  # emulated: ~20x slower than fp32 here
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_int8\n")
    assert native_bf16("cpu", cpuinfo)
    assert not native_bf16("cpu", tmp_path / "missing")


def test_precision_options() -> None:
    import argparse

    from nertron_export.train_options import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model", "m", "--train", "t", "--dev", "d", "--out", "o"]
    assert [parser.parse_args(base + extra).bf16 for extra in ([], ["--bf16"], ["--fp32"])] == [None, True, False]


def test_words_without_spaces_are_trained_as_the_sdk_tokenises_them(tiny_checkpoint: Path) -> None:
    import numpy as np
    from nertron.io.conll import Document, Sentence
    from nertron.text import SegmentedText
    from nertron_export.train_data import encode_documents
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint).backend_tokenizer
    words = ["华", "为", "在", "联合", "国", "Paris", "부산", "을"]
    tags = ["B-ORG", "I-ORG", "O", "B-ORG", "I-ORG", "B-LOC", "B-LOC", "O"]
    (encoded,) = encode_documents(
        [Document([Sentence(words, tags)])], tokenizer, {"O": 0, "B-ORG": 1, "I-ORG": 2, "B-LOC": 3}
    )
    unmarked = SegmentedText.join([words]).unmarked
    assert unmarked is not None and unmarked.tolist() == [True] * 5 + [False] * 3
    marker = tokenizer.token_to_id("▁")
    first = np.r_[True, encoded[0].word_ids[1:] != encoded[0].word_ids[:-1]]
    pieces = encoded[0].ids[first]
    assert marker not in pieces[:5].tolist()  # no Chinese word's label sits on a lone "▁"
    assert encoded[0].labels[first].tolist() == [1, 2, 0, 1, 2, 3, 3, 0]
