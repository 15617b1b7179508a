"""Corpus processing: streaming readers, annotation, JSONL/CoNLL/HTML writers and ``nertron ner -i``."""

from __future__ import annotations

import html
import io
import json
import re
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from nertron import NER, Entity
from nertron.cli import main
from nertron.io.conll import DOCSTART, read_conll
from nertron.io.corpus import ErrorPolicy, Record, conll_block, detect_format, jsonl_line, read_corpus, tag_corpus
from nertron.io.html import HtmlWriter, label_colour, render_document, render_html
from nertron.tags import iob1_to_iob2
from nertron.text import split_words

CONLL = f"""{DOCSTART} -X- -X- O

Acme NNP B-NP B-ORG
hires VBZ B-VP O
Dutch JJ B-NP B-MISC
engineers NN I-NP O
. . O O

Maria NNP B-NP B-PER
Jansen NNP I-NP I-PER

{DOCSTART} -X- -X- O

UTRECHT NNP B-NP B-LOC
2026-11-28 CD I-NP O
"""


@pytest.fixture(scope="module")
def ner(tiny_bundle: Path) -> NER:
    return NER(tiny_bundle)


def _read(data: bytes, input_format: str, **options: object) -> list[Record]:
    return list(read_corpus(io.BytesIO(data).readlines(), input_format, source="f", **options))  # type: ignore[arg-type]


def test_detect_format() -> None:
    assert [detect_format(Path(p)) for p in ("a.jsonl", "a.JSONL", "b.conll", "c.iob2", "d.txt", "e")] == [
        "jsonl",
        "jsonl",
        "conll",
        "conll",
        "txt",
        "txt",
    ]


def test_txt_reader_gives_a_document_per_line() -> None:
    documents = _read(b"first line\r\n\nthird \xc3\xa9\n", "txt")
    assert [d.text for d in documents] == ["first line", "", "third é"]
    assert [d.line for d in documents] == [1, 2, 3]
    assert all(d.sentences is None and d.fields == {} for d in documents)


def test_jsonl_reader_carries_the_id_and_optionally_other_fields() -> None:
    data = b'{"id": 7, "body": "Paris", "lang": "fr"}\n\n{"body": "Berlin", "entities": []}\n'
    plain = _read(data, "jsonl", field="body")
    assert [(d.text, d.fields, d.line) for d in plain] == [("Paris", {"id": 7}, 1), ("Berlin", {}, 3)]
    kept = _read(data.splitlines()[0], "jsonl", field="body", keep_fields=True)
    assert [d.fields for d in kept] == [{"id": 7, "lang": "fr"}]
    for name in ("entities", "line", "text"):  # the output's own fields are never silently replaced
        clash = json.dumps({"body": "Berlin", name: 1}).encode()
        with pytest.raises(ValueError, match=rf"^f:2: field '{name}' would be overwritten by the output's own"):
            _read(data.splitlines()[0] + b"\n" + clash, "jsonl", field="body", keep_fields=True)
    by_key = _read(b'\xef\xbb\xbf{"key": "a", "text": "x", "n": 1}\n', "jsonl", id_field="key", keep_fields=True)
    assert by_key[0].fields == {"id": "a", "n": 1}  # a UTF-8 BOM is ignored


def test_malformed_lines_fail_naming_file_and_line() -> None:
    with pytest.raises(ValueError, match=r"^f:2: not valid JSON"):
        _read(b'{"text": "ok"}\n{not json\n', "jsonl")
    with pytest.raises(ValueError, match=r"^f:1: expected an object with a string field 'text'"):
        _read(b'{"text": 3}\n', "jsonl")
    with pytest.raises(ValueError, match=r"^f:2: not valid UTF-8"):
        _read(b"ok\nbad \xff byte\n", "txt")


def test_malformed_lines_are_skipped_reported_and_counted() -> None:
    report = io.StringIO()
    errors = ErrorPolicy("skip", report)
    data = b'{"text": "a"}\n{not json\n[1, 2]\n{"text": null}\n\xff\n{"text": "b"}\n'
    documents = _read(data, "jsonl", errors=errors)
    assert [d.text for d in documents] == ["a", "b"]
    assert errors.skipped == 4
    assert [line.split(": ")[0] for line in report.getvalue().splitlines()] == [
        "skipped f:2",
        "skipped f:3",
        "skipped f:4",
        "skipped f:5",
    ]
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("ignore")


def test_conll_reader_by_document_and_by_sentence() -> None:
    documents = _read(CONLL.encode(), "conll")
    assert [d.sentences for d in documents] == [
        [["Acme", "hires", "Dutch", "engineers", "."], ["Maria", "Jansen"]],
        [["UTRECHT", "2026-11-28"]],
    ]
    assert [d.docstart for d in documents] == [True, True]
    assert [d.line for d in documents] == [3, 14]
    sentences = _read(CONLL.encode(), "conll", context="sentence")
    assert [d.sentences for d in sentences] == [
        [["Acme", "hires", "Dutch", "engineers", "."]],
        [["Maria", "Jansen"]],
        [["UTRECHT", "2026-11-28"]],
    ]
    assert [d.docstart for d in sentences] == [True, False, True]
    assert [d.line for d in sentences] == [3, 9, 14]
    # Without -DOCSTART- the file is one document; a token column alone is enough.
    plain = _read(b"a\nb\n\n\nc\n", "conll")
    assert [(d.sentences, d.docstart) for d in plain] == [([["a", "b"], ["c"]], False)]
    with pytest.raises(ValueError, match="context"):
        _read(b"a\n", "conll", context="paragraph")
    with pytest.raises(ValueError, match="input format"):
        _read(b"a\n", "csv")


def test_annotate_equals_ner_and_its_tags(ner: NER) -> None:
    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "", "Acme hires Dutch engineers.", "x " * 600]
    ner._pipeline = ner.pipeline.replace(lookahead=3)
    annotations = list(tag_corpus(ner, [Record(text=t) for t in texts]))
    assert [a.entities for a in annotations] == ner.batch(texts)
    for annotation, text in zip(annotations, texts, strict=True):
        assert annotation.text == text
        assert annotation.words == split_words(text).words
        # IOB2 tags from the entities equal the model's word tags, normalised as span decoding reads them.
        assert annotation.tags == iob1_to_iob2(ner.tag([annotation.words])[0])


def test_annotate_conll_keeps_offsets_and_sentences(ner: NER) -> None:
    (document, _) = _read(CONLL.encode(), "conll")
    (annotation,) = tag_corpus(ner, [document])
    assert annotation.text == "Acme hires Dutch engineers .\nMaria Jansen"
    assert annotation.segmented.sentence_lengths.tolist() == [5, 2]
    assert annotation.words == ["Acme", "hires", "Dutch", "engineers", ".", "Maria", "Jansen"]
    assert annotation.tags == iob1_to_iob2(ner.tag([annotation.words])[0][:5]) + iob1_to_iob2(
        ner.tag([annotation.words])[0][5:]
    )
    for entity in annotation.entities:
        assert annotation.text[entity.start : entity.end] == entity.text
        assert "\n" not in entity.text  # entities never cross sentences
    (gaps,) = tag_corpus(ner, [Record(sentences=[[], ["a", "bb"], [], ["c"]])])
    assert gaps.text == "\na bb\n\nc" and gaps.words == ["a", "bb", "c"]
    assert conll_block(gaps).split("\n\n")[:2] == [f"a {gaps.tags[0]}\nbb {gaps.tags[1]}", f"c {gaps.tags[2]}"]


def test_annotate_streams(ner: NER) -> None:
    consumed = 0

    def documents() -> Iterator[Record]:
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield Record(text=f"Document {i} about Paris.")

    ner._pipeline = ner.pipeline.replace(lookahead=64)
    first = next(tag_corpus(ner, documents()))
    assert first.text == "Document 0 about Paris."
    # one lookahead of windows in the model, the next one cut meanwhile (so that the model never waits for it)
    assert consumed <= 2 * 64 + 1


@pytest.mark.parametrize("input_format", ["txt", "jsonl", "conll"])
def test_readers_stream_a_large_file_in_bounded_memory(tmp_path: Path, input_format: str) -> None:
    line = {
        "txt": "Angela Merkel met Emmanuel Macron in Paris on Tuesday, the officials said. " * 2,
        "jsonl": json.dumps({"id": 1, "text": "Angela Merkel met Emmanuel Macron in Paris. " * 3}),
        "conll": "Chancellor NNP B-NP O\nMerkel NNP I-NP B-PER\nvisited VBD B-VP O\nParis NNP B-NP B-LOC\n\n",
    }[input_format]
    path = tmp_path / "big"
    block = (line + "\n") * 10_000 if input_format != "conll" else "-DOCSTART- O\n\n" + line * 1_000
    with path.open("w") as stream:
        while stream.tell() < 50_000_000:
            stream.write(block)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            count = sum(1 for _ in read_corpus(stream, input_format, source=str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count >= 500
    assert peak < size / 50, f"peak {peak} bytes for a {size}-byte file"


def test_jsonl_line_and_conll_block(ner: NER) -> None:
    document = Record(text="Acme hires Dutch engineers.", fields={"id": "d1", "lang": "en"}, line=4)
    (annotation,) = tag_corpus(ner, [document])
    record = json.loads(jsonl_line(annotation))
    assert list(record) == ["id", "line", "lang", "text", "entities"] and record["line"] == 4
    assert record["entities"] == [e.to_dict() for e in ner(document.text or "")]
    block = conll_block(annotation, docstart=True)
    rows = block.splitlines()
    assert rows[:2] == ["-DOCSTART- O", ""]
    assert [r.split(" ")[0] for r in rows[2:-1]] == ["Acme", "hires", "Dutch", "engineers", "."]
    assert rows[-1] == "" and block.endswith("\n\n")
    (empty,) = tag_corpus(ner, [Record(text="   ")])
    assert conll_block(empty) == ""


def _ner(tiny_bundle: Path, *args: str) -> int:
    return main(["ner", "-m", str(tiny_bundle), *args])


def test_cli_conll_round_trip(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.conll"
    source.write_text(CONLL)
    gold = read_conll(source)
    for context in ("document", "sentence"):
        out = tmp_path / f"out-{context}.conll"
        assert _ner(tiny_bundle, "-i", str(source), "--format", "conll", "--context", context, "-o", str(out)) == 0
        text = out.read_text()
        assert text.count("-DOCSTART- O\n\n") == 2
        again = read_conll(out)  # a valid CoNLL file: `token tag` rows, IOB2
        assert [[s.words for s in d.sentences] for d in again] == [[s.words for s in d.sentences] for d in gold]
        assert all(re.fullmatch(r"O|[BI]-(PER|ORG|LOC|MISC)", t) for d in again for s in d.sentences for t in s.tags)


def test_cli_text_to_conll_uses_nertron_words(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "docs.txt"
    source.write_text("Mr. Smith paid $10,000 to the U.S. Army.\n\nAngela Merkel visited Paris.\n")
    out = tmp_path / "out.conll"
    assert _ner(tiny_bundle, "-i", str(source), "--format", "conll", "-o", str(out)) == 0
    blocks = out.read_text().split("\n\n")
    assert [[row.split(" ")[0] for row in block.splitlines()] for block in blocks if block] == [
        split_words("Mr. Smith paid $10,000 to the U.S. Army.").words,
        split_words("Angela Merkel visited Paris.").words,
    ]
    assert "-DOCSTART-" not in out.read_text()


def test_cli_input_format_override_and_stdin(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "train.txt"  # CoNLL files are often called .txt
    source.write_text(CONLL)
    assert _ner(tiny_bundle, "-i", str(source), "--input-format", "conll") == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == [
        "Acme hires Dutch engineers .\nMaria Jansen",
        "UTRECHT 2026-11-28",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"id": "a", "body": "Paris", "x": 1}\n'))
    assert _ner(tiny_bundle, "--input-format", "jsonl", "--field", "body", "--keep-fields") == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {k: record[k] for k in ("id", "x", "text")} == {"id": "a", "x": 1, "text": "Paris"}


def test_cli_on_error_skip_reports_lines_and_summary(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"id": 1, "text": "ok"}\n{not json\n{"id": 3}\n\xfe\n{"id": 5, "text": "fine"}\n')
    out = tmp_path / "out.jsonl"
    assert _ner(tiny_bundle, "-i", str(source), "--on-error", "skip", "-o", str(out)) == 0
    assert [(r["id"], r["line"]) for r in map(json.loads, out.read_text().splitlines())] == [(1, 1), (5, 5)]
    err = capsys.readouterr().err
    for number in (2, 3, 4):
        assert f"skipped {source}:{number}: " in err
    assert "nertron ner: skipped 3 malformed line(s)" in err
    assert " words/s" in err and "2 docs" in err  # the progress bar
    assert _ner(tiny_bundle, "-i", str(source), "-o", str(out)) == 2  # --on-error fail is the default
    assert f"{source}:2: not valid JSON" in capsys.readouterr().err


TRICKY = 'Tom & "Jerry" <script>alert(1)</script> met \u05e9\u05dc\u05d5\u05dd in Tel Aviv \U0001f600 O\'Neil'


def test_html_escapes_text_and_labels() -> None:
    start = TRICKY.index("<script>")
    entities = [
        Entity("Tom", "PER", 0, 3, 0.9),
        Entity(TRICKY[start : start + 8], "<b>&\"'", start, start + 8, 0.5),
        Entity("\u05e9\u05dc\u05d5\u05dd", "PER", TRICKY.index("\u05e9"), TRICKY.index("\u05e9") + 4, 0.8),
        Entity("Tel Aviv \U0001f600", "LOC", TRICKY.index("Tel"), TRICKY.index("\U0001f600") + 1, 0.7),
    ]
    section = render_document(TRICKY, entities, title="<id & 'x'>")
    assert "<script" not in section and "<b>" not in section
    assert "&lt;id &amp; &#x27;x&#x27;&gt;" in section
    assert 'title="&lt;b&gt;&amp;&quot;&#x27; 0.50"' in section
    assert "Tom</mark>" not in section and '<span class="label">PER</span></mark>' in section
    assert 'dir="auto"' in section and "\U0001f600" in section
    # Stripping the marks' labels and tags, then unescaping, gives the text back.
    plain = re.sub(r'<span class="label">.*?</span>', "", section.split('dir="auto">')[1].split("</div>")[0])
    assert html.unescape(re.sub(r"<[^>]+>", "", plain)) == TRICKY
    assert section.count("<mark") == 4
    assert label_colour("PER") != label_colour("LOC") and label_colour("DATE") == label_colour("DATE")


def test_html_page_is_self_contained(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"id": f"doc-{i}", "text": TRICKY}) for i in range(3)) + "\n")
    page_path = tmp_path / "out.html"
    assert _ner(tiny_bundle, "-i", str(source), "--html", str(page_path), "-o", str(tmp_path / "o.jsonl")) == 0
    page = page_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert page.count("<section>") == 3 and "<h2>doc-2</h2>" in page
    assert not re.search(r"<script|<link|src=|href=|url\(|@import", page, re.IGNORECASE)
    assert render_html([("a", []), ("b & c", [])]).count("<h2>Document ") == 2
    with HtmlWriter(io.StringIO(), title="<t>") as writer:
        writer.add("x", [], title="")
    assert "<title>&lt;t&gt;</title>" in writer.stream.getvalue()  # type: ignore[attr-defined]
