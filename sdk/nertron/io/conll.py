"""Reading CoNLL-format NER files: token in the first column, tag in the last, IOB1 or IOB2."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nertron.errors import InvalidValue, reraise_files
from nertron.tags import to_iob2

DOCSTART = "-DOCSTART-"


@dataclass
class Sentence:
    """Gold words and their tags (IOB2)."""

    words: list[str]
    tags: list[str]


@dataclass
class Document:
    """Sentences between two ``-DOCSTART-`` lines (a file without them is one document)."""

    sentences: list[Sentence] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return [w for s in self.sentences for w in s.words]


def read_conll(path: str | Path) -> list[Document]:
    """Reads a CoNLL file; tags are normalised to IOB2 (IOB1 input is converted).

    Raises ``ValueError`` naming the line of a malformed row, and the file if it holds no sentence.
    """
    documents: list[Document] = [Document()]
    words: list[str] = []
    tags: list[str] = []

    def close_sentence() -> None:
        if words:
            documents[-1].sentences.append(Sentence(list(words), to_iob2(tags)))
            words.clear()
            tags.clear()

    with reraise_files("CoNLL file"), Path(path).open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InvalidValue(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
            columns = line.split()
            if not columns:
                close_sentence()
                continue
            if columns[0] == DOCSTART:
                close_sentence()
                if documents[-1].sentences:
                    documents.append(Document())
                continue
            if len(columns) < 2:
                raise InvalidValue(f"{path}:{number}: expected a token and a tag, got {line.strip()!r}")
            tag = columns[-1]
            if tag != "O" and (len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIES"):
                raise InvalidValue(f"{path}:{number}: tag {tag!r} is not O, B-X or I-X")
            words.append(columns[0])
            tags.append(tag)
    close_sentence()
    if not documents[0].sentences:
        raise InvalidValue(f"{path}: no sentences (CoNLL: a token and its tag per line)")
    return [d for d in documents if d.sentences]
