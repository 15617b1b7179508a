"""Tags unlabeled text with a teacher model and writes it as CoNLL (``python -m nertron_export.pseudo_label``).

Input: one sentence per line, its words joined by single spaces, a blank line where a document begins (the
form of ``../shared/data/multilingual/*/unlabeled.txt``). Output: ``-DOCSTART- O`` per document, ``word TAG``
per word, each sentence tagged on its own (sentence context: the teacher's better one on the target dev
sets). Self-training then fine-tunes a student on these tags beside the English gold data.

``--raw``: each line is raw text, as a user has it (Chinese: no spaces); nertron's segmentation cuts it into
words, the teacher's entities (decoded as a user gets them, a name the segmenter cut kept whole) become the
tags of those words, and the words are what the student trains on.

Tags are written as IOB2. Several teachers (``--model``/``--package`` repeated, of one set of entity types): a
sentence is kept only where every teacher gives its words the same tags (an agreement filter against the noise
of one teacher's tags); a document left without sentences is dropped.

``--argmax``: each word's most likely label, as the SDK decoded before it constrained labels to the tag scheme
(2026-12-07); ``make default-model`` tags with it, as the shipped model's recipe was tagged.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nertron import NER
from nertron.errors import file_error
from nertron.model.default import default_bundle
from nertron.pipeline import Pipeline, segment
from nertron.tags import to_iob2


def read_unlabeled(path: Path) -> Iterator[list[list[str]]]:
    """Documents of ``path``: lists of sentences, each a list of words."""
    document: list[list[str]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            words = line.split()
            if words:
                document.append(words)
            elif document:
                yield document
                document = []
    if document:
        yield document


Tagged = tuple[list[str], list[str]]  # a sentence's words and their tags


@dataclass(frozen=True)
class PseudoLabelled:
    """What ``pseudo_label`` wrote: sentences kept, entities in them, sentences dropped for disagreement."""

    sentences: int
    entities: int
    disagreed: int = 0


def write_conll(
    out: Path, documents: list[list[list[str]]], tag: Callable[[list[list[str]]], list[Tagged | None]]
) -> PseudoLabelled:
    """Writes the tagged ``documents`` (``tag`` turns all their sentences into words and tags, or None for a
    sentence to leave out) to ``out``."""
    tagged = iter(tag([s for d in documents for s in d]))
    sentences = entities = disagreed = 0
    with out.open("w", encoding="utf-8") as conll:
        for document in documents:
            kept = [t for t in (next(tagged) for _ in document) if t is not None]
            disagreed += len(document) - len(kept)
            if not kept:
                continue
            conll.write("-DOCSTART- O\n\n")
            for words, tags in kept:
                sentences += 1
                entities += sum(t.startswith("B-") for t in tags)
                conll.writelines(f"{w} {t}\n" for w, t in zip(words, tags, strict=True))
                conll.write("\n")
    return PseudoLabelled(sentences, entities, disagreed)


def pseudo_label(teachers: Sequence[Pipeline], source: Path, out: Path, *, raw: bool = False) -> PseudoLabelled:
    """Writes ``out``: each sentence of ``source`` with the teachers' tags, where they all agree. ``raw``: lines
    are raw text, cut into words by nertron (``tag_raw``)."""
    if not teachers:
        raise ValueError("teachers: give at least one")
    if len({frozenset(label[2:] for label in t.labels if label != "O") for t in teachers}) > 1:
        raise ValueError("teachers: every teacher must tag the same entity types")

    def tag(sentences: list[list[str]]) -> list[Tagged | None]:
        each = [
            tag_raw(teacher, [" ".join(s) for s in sentences]) if raw else tag_words(teacher, sentences)
            for teacher in teachers
        ]
        # as IOB2, so that teachers of other tag schemes (IOB1, BIOES) agree where their entities do
        iob2 = [[(words, to_iob2(tags)) for words, tags in teacher] for teacher in each]
        return [first if all(t == first for t in rest) else None for first, *rest in zip(*iob2, strict=True)]

    return write_conll(out, list(read_unlabeled(source)), tag)


def tag_words(teacher: Pipeline, sentences: list[list[str]]) -> list[Tagged]:
    """The teacher's tags of each sentence's words (each sentence alone)."""
    return list(zip(sentences, teacher.tags(sentences), strict=True))


def tag_raw(teacher: Pipeline, texts: list[str]) -> list[Tagged]:
    """nertron's words of each text, tagged with the teacher's entities as a user gets them."""
    out: list[Tagged] = []
    for text, found in zip(texts, teacher.entities(texts), strict=True):
        words = segment(text)
        tags = ["O"] * len(words)
        for entity in found:
            inside = [i for i in range(len(words)) if entity.start <= words.starts[i] < entity.end]
            tags[inside[0]] = f"B-{entity.label}"
            tags[inside[0] + 1 : inside[-1] + 1] = [f"I-{entity.label}"] * (len(inside) - 1)
        out.append((list(words), tags))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nertron_export.pseudo_label", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="teacher bundle (repeatable; default: the embedded default model, int8)",
    )
    parser.add_argument(
        "--package",
        type=Path,
        action="append",
        default=[],
        help="teacher: an embedded-model package (nertron_export.ship), int8 (repeatable)",
    )
    parser.add_argument("--text", required=True, type=Path, help="unlabeled text, a sentence per line")
    parser.add_argument("--out", required=True, type=Path, help="CoNLL file to write")
    parser.add_argument("--raw", action="store_true", help="lines are raw text (e.g. Chinese), cut by nertron")
    parser.add_argument(
        "--argmax", action="store_true", help="each word's most likely label, not constrained to the tag scheme"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        models = ([default_bundle("int8", package_dir=p) for p in args.package] + args.model) or [None]
        with contextlib.ExitStack() as stack:
            ners = [stack.enter_context(NER(model)) for model in models]
            teachers = [ner.pipeline.with_constrained_labels(False) if args.argmax else ner.pipeline for ner in ners]
            written = pseudo_label(teachers, args.text, args.out, raw=args.raw)
    except (ValueError, OSError) as error:  # a teacher or file that cannot be used: one line, no traceback
        print(f"{parser.prog}: error: {file_error(error) if isinstance(error, OSError) else error}", file=sys.stderr)
        return 2
    dropped = f", {written.disagreed:,} sentences dropped: the teachers disagree" if len(teachers) > 1 else ""
    print(
        f"{args.out}: {written.sentences:,} sentences, {written.entities:,} entities{dropped} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
