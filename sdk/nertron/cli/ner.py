"""``nertron ner``: entities in texts, files (text, JSONL, CoNLL) or stdin, as JSONL, CoNLL or HTML."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from nertron.cli.options import DEFAULTS, add_engine_options, bounded, config_from_args
from nertron.entity import Entity
from nertron.errors import FileIsFolder, InvalidValue, MissingFile, ModelMismatch, TritonError, file_error
from nertron.io.atomic import PendingFile, replacing_file

if TYPE_CHECKING:
    from nertron.io.corpus import ErrorPolicy, Record


def add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", help="texts to tag (else --input, else stdin)")
    add_engine_options(parser)
    parser.add_argument(
        "--min-score",
        type=bounded(float, 0.0, 1.0),
        default=DEFAULTS.min_score,
        help="leave out entities scored below this (scores are calibrated: of those near 0.9, ~9 in 10 are right)",
    )
    parser.add_argument(
        "-i", "--input", type=Path, help="corpus file: .txt (a document per line), .jsonl or CoNLL; - for stdin"
    )
    parser.add_argument(
        "--input-format",
        choices=["auto", "txt", "jsonl", "conll"],
        default="auto",
        help="auto: from the suffix (.jsonl; .conll .iob .iob2 .bio .bioes; else txt); stdin is txt",
    )
    parser.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    parser.add_argument("--id-field", default="id", help="JSONL field carried over as `id` (default: id)")
    parser.add_argument("--keep-fields", action="store_true", help="JSONL: carry all other input fields over")
    parser.add_argument(
        "--context",
        choices=["document", "sentence"],
        default="document",
        help="CoNLL input: tag whole documents (between -DOCSTART- lines) or each sentence alone",
    )
    parser.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="a malformed input line stops the run (exit 2), or is reported on stderr, skipped and counted",
    )
    parser.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    parser.add_argument(
        "--format",
        choices=["jsonl", "conll"],
        default="jsonl",
        help="jsonl: id, text, entities; conll: `token tag` rows (IOB2), blank line between sentences",
    )
    parser.add_argument("--html", type=Path, help="also write the entities highlighted in an HTML page")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nertron.io.corpus import ErrorPolicy, conll_block, jsonl_line, tag_corpus
    from nertron.io.html import HtmlWriter

    if args.input is not None and args.text:
        raise InvalidValue("give texts or --input, not both (texts are tagged instead of the file)")
    if args.input == STDIN:
        args.input = None
    if args.input is not None:
        _check_readable(args.input, "--input")
    for option, path in (("-o", args.output), ("--html", args.html)):
        if path is not None:
            _check_writable(path, option)
    _check_distinct({"--input": args.input, "-o": args.output, "--html": args.html})
    if args.input is None and not args.text:
        _check_not_stdin({"-o": args.output, "--html": args.html})
        if sys.stdin is not None and sys.stdin.isatty():
            print("nertron ner: reading texts from stdin, one per line; Ctrl-D ends", file=sys.stderr, flush=True)
    hint = "; start the server (nertron serve) or leave out --no-fallback to compute locally"
    try:
        ner = config_from_args(args).build()
    except ModelMismatch:  # as it is: starting a server or computing locally is no remedy
        raise
    except TritonError as error:
        raise TritonError(f"{error}{hint}") from None
    progress = bool(args.input) and not args.text
    written = 0
    last_line: int | None = None
    scores = ScoreRange()
    with ExitStack() as stack:
        stack.enter_context(ner)
        bar = stack.enter_context(
            tqdm(desc="ner", unit=" words", unit_scale=True, disable=not progress, file=sys.stderr, mininterval=0.5)
        )
        errors = ErrorPolicy(args.on_error, report=lambda message: bar.write(message, file=sys.stderr))
        records = _ner_records(args, stack, errors)
        output = stack.enter_context(_open_output(args.output, "-o")) if args.output else Output(sys.stdout, "stdout")
        page_file = stack.enter_context(_open_output(args.html, "--html")) if args.html else None
        page = stack.enter_context(HtmlWriter(page_file)) if page_file else None
        try:
            for annotation in tag_corpus(
                ner, records, batch_size=args.batch_size, on_words=bar.update, on_found=scores.add
            ):
                if args.format == "conll":
                    row = conll_block(annotation, docstart=annotation.record.docstart)
                else:
                    row = jsonl_line(annotation)
                if page is not None:
                    doc_id = annotation.record.fields.get("id")
                    page.add(annotation.text, annotation.entities, None if doc_id is None else str(doc_id))
                output.write(row)
                output.flush()  # what is finished stays written, whatever happens next
                if not written:  # the files take their places with the first row: a run that fails before changes none
                    output.commit()
                    if page_file is not None:
                        page_file.commit()
                written += 1
                last_line = annotation.record.line
                if progress:
                    bar.set_postfix_str(f"{written} docs", refresh=False)
        except ModelMismatch:  # the rows written so far are the local bundle's and stay
            raise
        except TritonError as error:
            last = f", the last from input line {last_line}" if last_line is not None else ""
            where = f" to {args.output}" if args.output else ""
            raise TritonError(f"{error}; {written} document(s) were written{where} before it{last}{hint}") from None
    if errors.skipped:
        print(f"nertron ner: skipped {errors.skipped} malformed line(s)", file=sys.stderr)
    if scores.found and scores.highest < args.min_score:
        print(
            f"nertron ner: warning: --min-score {args.min_score:g} is above every score the model gave "
            f"(the highest of its {scores.found:,} entities: {scores.highest:.4f}), so every entity was left out",
            file=sys.stderr,
        )
    return 0


class ScoreRange:
    """How many entities the model found (before ``--min-score``) and the highest score among them."""

    def __init__(self) -> None:
        self.found = 0
        self.highest = 0.0

    def add(self, entities: list[Entity]) -> None:
        self.found += len(entities)
        self.highest = max([self.highest, *(entity.score for entity in entities)])


STDIN = Path("-")


class Output:
    """A text stream written to, whose failures (a full disk) name it: ``cannot write -o out.jsonl: ...``; with
    ``pending``, a file built beside its target until ``commit()``."""

    def __init__(self, stream: IO[str], where: str, pending: PendingFile | None = None) -> None:
        self.stream, self.where, self.pending = stream, where, pending

    def write(self, text: str) -> None:
        self._named(self.stream.write, text)

    def flush(self) -> None:
        self._named(self.stream.flush)

    def commit(self) -> None:
        """Moves the file into place (if it is one); later writes go to it there."""
        if self.pending is not None:
            self._named(self.pending.commit)

    def _named(self, operation: Callable[..., object], *args: object) -> None:
        try:
            operation(*args)
        except OSError as error:
            raise OSError(error.errno, f"cannot write {self.where}: {error.strerror}") from None


@contextmanager
def _open_output(path: Path, option: str) -> Iterator[Output]:
    """A file built beside ``path`` that takes its place at ``commit()`` or when the run ends (see
    ``nertron.io.atomic.replacing_file``); failures to create, write or place it name the option and the file."""
    where = f"{option} {path}"
    in_run = False  # an error of the run itself passes as it is; one of creating or placing the file is named
    try:
        with replacing_file(path) as pending:
            try:
                yield Output(pending.stream, where, pending)  # type: ignore[arg-type]
            except BaseException:
                in_run = True
                raise
    except OSError as error:
        if in_run:
            raise
        raise file_error(OSError(error.errno, f"cannot write {where}: {error.strerror}")) from None


def _check_distinct(files: dict[str, Path | None]) -> None:
    """Refuses, before anything is opened for writing, an output that is the input or another output (the same
    file also through a link or another path): opening it for writing would empty it."""
    given = [(option, path) for option, path in files.items() if path is not None]
    for position, (option, path) in enumerate(given):
        for other_option, other in given[position + 1 :]:
            if os.path.realpath(path) == os.path.realpath(other) or (
                path.exists() and other.exists() and os.path.samefile(path, other)
            ):
                raise InvalidValue(f"{other_option} {other} is the same file as {option} {path}; give another path")


def _check_not_stdin(outputs: dict[str, Path | None]) -> None:
    """Refuses an output that is the file stdin reads (``nertron ner -o f < f``), which would be emptied."""
    try:
        source = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):  # no file behind stdin (closed, or replaced by a Python stream)
        return
    for option, path in outputs.items():
        if path is not None and path.exists() and os.path.samestat(source, path.stat()):
            raise InvalidValue(f"{option} {path} is the file stdin reads; give another path")


def _check_readable(path: Path, option: str) -> None:
    if path.is_dir():
        raise FileIsFolder(f"{option} {path} is a directory, not a file")
    if not path.exists():
        raise MissingFile(f"{option} {path} does not exist")


def _check_writable(path: Path, option: str) -> None:
    if path.is_dir():
        raise FileIsFolder(f"{option} {path} is a directory, not a file")
    if not path.parent.is_dir():
        raise MissingFile(f"{option} {path}: its directory {path.parent} does not exist")


def _ner_records(args: argparse.Namespace, stack: ExitStack, errors: ErrorPolicy) -> Iterable[Record]:
    """Text arguments, else the --input file, else stdin (txt unless --input-format says otherwise)."""
    from nertron.io.corpus import detect_format, read_corpus

    if args.text:
        return _argument_records(args.text, errors)
    input_format = args.input_format
    if args.input:
        lines: IO[bytes] | IO[str] = stack.enter_context(args.input.open("rb"))
        source = str(args.input)
        input_format = detect_format(args.input) if input_format == "auto" else input_format
    else:
        lines = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        source = "<stdin>"
        input_format = "txt" if input_format == "auto" else input_format
    return read_corpus(
        lines,
        input_format,
        source=source,
        errors=errors,
        field=args.field,
        id_field=args.id_field,
        keep_fields=args.keep_fields,
        context=args.context,
    )


def _argument_records(texts: list[str], errors: ErrorPolicy) -> Iterator[Record]:
    """The text arguments as records; one that is not valid UTF-8 (Python holds its bytes as lone surrogates)
    is malformed, reported as ``<arguments>:N``."""
    from nertron.io.corpus import Record
    from nertron.text import lone_surrogate

    for number, text in enumerate(texts, start=1):
        index = lone_surrogate(text)
        if index is None:
            yield Record(text=text)
            continue
        character = text[index]
        what = (  # surrogateescape holds an undecodable byte as U+DC80..U+DCFF
            f"byte 0x{ord(character) - 0xDC00:02x}" if "\udc80" <= character <= "\udcff" else f"U+{ord(character):04X}"
        )
        errors.malformed("<arguments>", number, f"not valid UTF-8 ({what} at character {index})")
