"""The embedded default model: assembled offline at first use, then real NER in several languages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nertron import NER
from nertron.backends.openvino import has_native_bf16
from nertron.model.bundle import Bundle
from nertron.model.default import PACKAGE_DIR, WEIGHTS_FILE, assemble, cache_damage, embedded_spec
from nertron.ner import resolve_model


@pytest.fixture(scope="module")
def default_ner(tmp_path_factory: pytest.TempPathFactory) -> NER:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERTRON_CACHE", str(cache))
        patch.delenv("NERTRON_MODEL", raising=False)
        from nertron.model import default

        assemblies: list[tuple[Any, ...]] = []

        def counted(*args: Any, **kwargs: Any) -> None:
            assemblies.append(args)
            assemble(*args, **kwargs)

        patch.setattr(default, "assemble", counted)
        ner = NER()
        assert ner.bundle.path.parent == cache
        assert len(assemblies) == 1, "first use assembles the entry, once"
        files = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in ner.bundle.path.iterdir()}
        assert resolve_model(None, ner.precision) == ner.bundle.path  # second time: the cache, no assembly
        assert len(assemblies) == 1, "a second load assembled the entry again"
        assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in ner.bundle.path.iterdir()} == files
    return ner


def entities_of(ner: NER, text: str) -> set[tuple[str, str]]:
    return {(e.text, e.label) for e in ner(text)}


def test_english(default_ner: NER) -> None:
    found = entities_of(default_ner, "Angela Merkel met Emmanuel Macron in Paris on Tuesday.")
    assert {("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")} <= found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Gestern traf Olaf Scholz in Berlin den Bürgermeister von Hamburg.",
            {("Olaf Scholz", "PER"), ("Berlin", "LOC"), ("Hamburg", "LOC")},
        ),
        (
            "El presidente Pedro Sánchez viajó a Madrid y después a Barcelona.",
            {("Pedro Sánchez", "PER"), ("Madrid", "LOC"), ("Barcelona", "LOC")},
        ),
        (
            "Mark Rutte sprak dinsdag in Amsterdam met journalisten uit Rotterdam.",
            {("Mark Rutte", "PER"), ("Amsterdam", "LOC"), ("Rotterdam", "LOC")},
        ),
        (
            "Emmanuel Macron a rencontré Angela Merkel à Lyon avant de rentrer à Paris.",
            {("Emmanuel Macron", "PER"), ("Angela Merkel", "PER"), ("Lyon", "LOC"), ("Paris", "LOC")},
        ),
    ],
)
def test_cross_lingual_persons_and_places(default_ner: NER, text: str, expected: set[tuple[str, str]]) -> None:
    found = entities_of(default_ner, text)
    # Loose: most of the obvious persons and places, with the right type.
    assert len(expected & found) >= len(expected) - 1, found


def test_the_manifest_records_what_the_model_scores(default_ner: NER) -> None:
    """The F1 the manifest records (copied from embedded.json) is what the assembled model scores on dev, scored
    again here; int8's logits do not depend on the CPU, the tolerance (about three entities) is for fp32 ops."""
    from nertron.evaluation import evaluate
    from nertron.io.conll import read_conll

    manifest = Bundle.load(default_ner.bundle.path).manifest
    assert manifest.precision == embedded_spec()["default_precision"] == default_ner.precision == "int8"
    report = evaluate(default_ner, read_conll(DEV), context="sentence")
    assert 100 * report.entity.f1 == pytest.approx(manifest.provenance["scores"]["dev_f1_sentence"], abs=0.05)
    # the temperature calibrated on dev reaches the post-processor
    assert manifest.calibration is not None
    assert default_ner.temperature == pytest.approx(manifest.calibration.temperature)


def test_list_numbers_are_not_entities(default_ner: NER) -> None:
    """Raw text cut as CoNLL cuts it: "5." at the start of a line is one word, as the model was trained."""
    text = "Women's 100 metres hurdles:\n1. Dionne Rose ( Jamaica ) 12.61\n2. Gillian Russell ( Jamaica ) 12.72"
    found = default_ner(text)
    assert {("Dionne Rose", "PER"), ("Gillian Russell", "PER")} <= {(e.text, e.label) for e in found}
    assert not [e for e in found if "." in e.text or "\n" in e.text]


@pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_finds_what_fp32_finds(default_ner: NER, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERTRON_CACHE", str(default_ner.bundle.path.parent))
    texts = [
        "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
        "Gestern traf Olaf Scholz in Berlin den Bürgermeister von Hamburg.",
        "El presidente Pedro Sánchez viajó a Madrid y después a Barcelona.",
        "Shares of Siemens AG rose 3 percent in Frankfurt after the European Commission approved the deal.",
    ]
    bf16, fp32 = NER(precision="bf16"), NER(precision="fp32")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    for got, expected in zip(bf16.batch(texts), fp32.batch(texts), strict=True):
        assert [(e.text, e.label) for e in got] == [(e.text, e.label) for e in expected]
        assert [e.score for e in got] == pytest.approx([e.score for e in expected], abs=0.02)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(PACKAGE_DIR, package)
    with (package / WEIGHTS_FILE).open("r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(ValueError, match="does not match the sha256"):
        assemble(package, tmp_path / "out", "fp32", log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("file", "damage"),
    [("model.onnx", "truncated"), ("sentencepiece.model", "overwritten"), ("tokenizer.json", "overwritten")],
)
def test_a_damaged_cache_entry_is_assembled_again(
    default_ner: NER,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    file: str,
    damage: str,
) -> None:
    entry = tmp_path / default_ner.bundle.path.name
    shutil.copytree(default_ner.bundle.path, entry)  # a cache of our own: default_ner keeps its files
    with (entry / file).open("r+b") as f:
        if damage == "truncated":
            f.truncate((entry / file).stat().st_size // 3)
        else:  # same size: only its contents tell
            f.seek(1000)
            f.write(b"\x07" * 1000)
    assert file in str(cache_damage(entry))
    monkeypatch.setenv("NERTRON_CACHE", str(tmp_path))
    monkeypatch.delenv("NERTRON_MODEL", raising=False)
    capsys.readouterr()
    assert resolve_model(None, default_ner.precision) == entry
    err = capsys.readouterr().err
    assert f"the cached default model in {entry} is damaged" in err and "assembling it again" in err
    assert cache_damage(entry) is None
    assert entities_of(NER(), "Angela Merkel met Emmanuel Macron in Paris.") == entities_of(
        default_ner, "Angela Merkel met Emmanuel Macron in Paris."
    )


def test_a_damaged_entry_found_by_two_workers_at_once_is_repaired_once(
    default_ner: NER, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers on one machine (Spark's Python workers) find the same entry damaged: the second checks it again
    under the assembly lock and takes the first one's repair, instead of deleting it and assembling again."""
    import threading

    from nertron.model import default

    entry = tmp_path / default_ner.bundle.path.name
    shutil.copytree(default_ner.bundle.path, entry)
    (entry / "tokenizer.json").write_text("{}")
    monkeypatch.setenv("NERTRON_CACHE", str(tmp_path))
    assemblies: list[Path] = []

    def copy_intact(package_dir: Path, target: Path, precision: str, *, log: Any) -> None:
        """An assembly in a second: a fresh copy of the intact entry, renamed into place as assemble() does."""
        assemblies.append(target)
        work = tmp_path / f".assemble-{len(assemblies)}"
        shutil.copytree(default_ner.bundle.path, work)
        work.rename(target)

    second_found_it_damaged, first_returned = threading.Event(), threading.Event()

    def damage_seen_by(path: Path) -> str | None:
        """cache_damage; the second worker, once it has found the entry damaged, waits for the first to be done."""
        damage = cache_damage(path)
        if threading.current_thread().name == "second" and not second_found_it_damaged.is_set():
            assert damage is not None
            second_found_it_damaged.set()
            assert first_returned.wait(timeout=300)
        return damage

    monkeypatch.setattr(default, "assemble", copy_intact)
    monkeypatch.setattr(default, "cache_damage", damage_seen_by)
    got: dict[str, Path] = {}

    def second_worker() -> None:
        got["second"] = default.default_bundle(default_ner.precision, quiet=True)

    second = threading.Thread(target=second_worker, name="second")
    second.start()
    try:
        assert second_found_it_damaged.wait(timeout=300)
        got["first"] = default.default_bundle(default_ner.precision, quiet=True)
        repaired = {p.name: p.stat().st_ino for p in entry.iterdir()}
    finally:
        first_returned.set()
        second.join()
    assert got == {"first": entry, "second": entry}
    assert assemblies == [entry], "the second worker deleted the first one's repair and assembled it again"
    assert {p.name: p.stat().st_ino for p in entry.iterdir()} == repaired and cache_damage(entry) is None


@pytest.mark.parametrize("step", ["create the cache", "create the lock file", "create the temporary folder"])
def test_a_cache_that_cannot_be_written_names_nertron_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], step: str
) -> None:
    """Read-only or not ours (tests run as root, which may write anywhere: the refusals are simulated)."""
    import errno
    import os
    import tempfile

    from nertron.cli import main
    from nertron.model.default import default_bundle

    cache = tmp_path / "cache"
    monkeypatch.setenv("NERTRON_CACHE", str(cache))
    monkeypatch.delenv("NERTRON_MODEL", raising=False)
    if step == "create the cache":
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"
        monkeypatch.setenv("NERTRON_CACHE", str(cache))
        reason = "Not a directory"
    else:
        cache.mkdir()
        refuse = ".lock" if step == "create the lock file" else ".assemble-"
        path_open, mkdtemp = Path.open, tempfile.mkdtemp

        def refusing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self.name.endswith(refuse):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return path_open(self, *args, **kwargs)

        def refusing_mkdtemp(*args: Any, **kwargs: Any) -> str:
            if kwargs.get("prefix") == refuse:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir")))
            return mkdtemp(*args, **kwargs)

        monkeypatch.setattr(Path, "open", refusing_open)
        monkeypatch.setattr(tempfile, "mkdtemp", refusing_mkdtemp)
        reason = os.strerror(errno.EACCES if refuse == ".lock" else errno.EROFS)
    verb = "create" if step == "create the cache" else "write"
    expected = f"cannot {verb} NERTRON_CACHE={cache} ({reason}); set NERTRON_CACHE to a writable folder"
    with pytest.raises(OSError) as caught:
        default_bundle("int8", quiet=True)
    assert caught.value.strerror == expected and caught.value.errno is not None
    capsys.readouterr()
    assert main(["ner", "Paris"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"nertron ner: error: {expected}"]


def test_a_damaged_entry_that_cannot_be_removed_names_nertron_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from nertron.model import default

    spec = embedded_spec()
    entry = tmp_path / f"{spec['name']}-{default.cache_key()}-int8"
    entry.mkdir()
    (entry / "model.onnx").write_text("")
    monkeypatch.setenv("NERTRON_CACHE", str(tmp_path))

    def refuse(path: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))

    monkeypatch.setattr(default.shutil, "rmtree", refuse)
    with pytest.raises(PermissionError) as caught:
        default.default_bundle("int8", quiet=True)
    assert caught.value.strerror == (
        f"cannot write NERTRON_CACHE={tmp_path} (Operation not permitted); set NERTRON_CACHE to a writable folder"
    )


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "dev.txt"


def test_a_text_gets_the_same_entities_however_it_is_batched(default_ner: NER) -> None:
    import random

    from nertron.io.conll import read_conll

    assert default_ner.precision == "int8"
    sentences = [" ".join(s.words) for d in read_conll(DEV) for s in d.sentences][:2000]
    alone = default_ner.batch(sentences, batch_size=1)  # each window its own batch
    rng = random.Random(0)
    for _ in range(2):
        order = list(range(len(sentences)))
        rng.shuffle(order)
        start = 0
        while start < len(order):  # random groups of random sizes, each with a random batch size
            group = order[start : start + rng.randint(1, 200)]
            start += len(group)
            batched = default_ner.batch([sentences[i] for i in group], batch_size=rng.choice([2, 5, 16, 64]))
            for i, entities in zip(group, batched, strict=True):
                assert [(e.text, e.label, e.start, e.end) for e in entities] == [
                    (e.text, e.label, e.start, e.end) for e in alone[i]
                ], sentences[i]
                assert [e.score for e in entities] == pytest.approx([e.score for e in alone[i]], abs=1e-5, rel=0)


def test_the_sentencepiece_form_of_the_tokenizer_agrees_with_tokenizers(default_ner: NER) -> None:
    import itertools
    import random
    import unicodedata

    from nertron.io.conll import read_conll
    from nertron.subwords import HFTokenizer, SentencePieceTokenizer
    from nertron.text import split_words

    assert isinstance(default_ner.pipeline.encoder.tokenizer, SentencePieceTokenizer)
    lean, reference = default_ner.pipeline.encoder.tokenizer, HFTokenizer(default_ner.bundle.tokenizer_path)

    def same(words: list[str]) -> bool:
        return all(
            np.array_equal(a, b) for a, b in zip(lean.encode_words(words), reference.encode_words(words), strict=True)
        )

    def compatibility_then_mark(word: str) -> bool:
        """A known divergence: for a character with a compatibility decomposition (⒥, ½, ⑴) followed by a
        combining mark, tokenizers' normaliser drops the mark; SentencePiece keeps it."""
        return any(
            unicodedata.decomposition(a).startswith("<") and unicodedata.category(b) in ("Mn", "Me")
            for a, b in itertools.pairwise(word)
        )

    assert same([w for d in read_conll(DEV) for w in d.words])
    rng = random.Random(0)
    alphabet = [chr(c) for c in rng.sample(range(0x20, 0x30000), 3000) if not 0xD800 <= c <= 0xDFFF]
    texts = ["".join(rng.choice([*alphabet, *"abc Üé ß"]) for _ in range(rng.randint(1, 30))) for _ in range(500)]
    words = [w for t in texts for w in split_words(t).words]
    assert same([w for w in words if not compatibility_then_mark(w)])
    diverging = [w for w in words if compatibility_then_mark(w)] + ["\u24a5\u034f", "\u00bd\u0301"]
    for word in diverging:
        kept, dropped = lean.encode_words([word])[0], reference.encode_words([word])[0]
        assert len(kept) > len(dropped) and list(kept[: len(dropped)]) == list(dropped)
    single = [chr(c) for c in range(0x20, 0x30000) if not 0xD800 <= c <= 0xDFFF]
    assert same([w for w in single if split_words(w).words == [w]])  # every code point that can be a word
