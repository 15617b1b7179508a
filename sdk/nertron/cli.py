"""The ``nertron`` command line: ``ner``, ``eval``, ``export``, ``train``, ``serve`` and ``repository``.

Every expected failure (bad input, an unusable model or file, a missing extra, an unreachable server) ends
in one line on stderr, ``nertron COMMAND: error: ...``, and exit status 2; output written before it is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tqdm import tqdm

from .errors import TritonError, TritonServerError
from .pipeline import AGGREGATIONS, NER, RUNTIMES

if TYPE_CHECKING:
    from .corpus import ErrorPolicy, Record

# What a user can cause and fix: reported in one line with exit status 2.
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError, TritonError, TritonServerError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nertron", description="Named-entity recognition with XLM-R.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_ner(commands.add_parser("ner", help="find entities in text, files or stdin"))
    _add_eval(commands.add_parser("eval", help="score a model on a CoNLL file (token and entity level)"))
    _add_export(commands.add_parser("export", help="export an HF checkpoint to a nertron bundle"))
    _add_serve(commands.add_parser("serve", help="serve a model with a real Triton server"))
    _add_repository(commands.add_parser("repository", help="write Triton model repositories for a model"))
    _add_train(
        commands.add_parser("train", help="fine-tune an HF checkpoint on CoNLL files (needs torch)", add_help=False)
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # train parses its own options (and imports torch) only when asked for
        argv = ["train", "--", *argv[1:]]
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"nertron {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nertron ner ... | head`: the reader is gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except TritonServerError as error:  # its first line says what happened, the rest quotes the server's log
        first, *log = str(error).splitlines()
        print(f"nertron {args.command}: error: {first}", *(f"  {line}" for line in log), sep="\n", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as error:
        print(f"nertron {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("NERTRON_DEBUG"):
            traceback.print_exc()
        print(
            f"nertron {args.command}: internal error: {type(error).__name__}: {_one_line(error)} "
            "(NERTRON_DEBUG=1 prints the traceback; please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (an OSError names its file)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def _add_ner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", help="texts to tag (else --input, else stdin)")
    _add_model_arguments(parser)
    parser.add_argument("-i", "--input", type=Path, help="corpus file: .txt (a document per line), .jsonl or CoNLL")
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
    parser.add_argument("--url", help="Triton gRPC endpoint HOST:PORT (see `nertron serve`); default: in-process")
    parser.add_argument(
        "--no-fallback",
        dest="fallback",
        action="store_false",
        help="with --url: fail instead of computing unanswered batches locally",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="with --url: seconds per request")
    parser.set_defaults(run=_run_ner)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", help="bundle directory (default: $NERTRON_MODEL, else the embedded model)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8", "bf16"],
        help="variant of the embedded model (bf16: fp32 weights on OpenVINO; default: bf16 where the CPU has AMX "
        "and OpenVINO is installed, else int8)",
    )
    parser.add_argument("--runtime", choices=RUNTIMES, help="local inference engine (default: by precision)")
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="inference threads")


def _ner_from_args(args: argparse.Namespace, **options: Any) -> NER:
    return NER(
        args.model,
        precision=args.precision,
        aggregation=args.aggregation,
        batch_size=args.batch_size,
        threads=args.threads,
        runtime=args.runtime,
        **options,
    )


def _run_ner(args: argparse.Namespace) -> int:
    from .corpus import ErrorPolicy, conll_block, jsonl_line, tag_corpus
    from .visualize import HtmlWriter

    if args.input is not None:
        _check_readable(args.input, "--input")
    for option, path in (("-o", args.output), ("--html", args.html)):
        if path is not None:
            _check_writable(path, option)
    hint = "; start the server (nertron serve) or leave out --no-fallback to compute locally"
    try:
        ner = _ner_from_args(
            args, url=args.url, fallback=args.fallback, triton_options={"timeout": args.timeout} if args.url else None
        )
    except TritonError as error:
        raise TritonError(f"{error}{hint}") from None
    progress = bool(args.input) and not args.text
    written = 0
    last_line: int | None = None
    with ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(desc="ner", unit=" words", unit_scale=True, disable=not progress, file=sys.stderr, mininterval=0.5)
        )
        errors = ErrorPolicy(args.on_error, report=lambda message: bar.write(message, file=sys.stderr))
        records = _ner_records(args, stack, errors)
        output = stack.enter_context(args.output.open("w", encoding="utf-8")) if args.output else sys.stdout
        page = (
            stack.enter_context(HtmlWriter(stack.enter_context(args.html.open("w", encoding="utf-8"))))
            if args.html
            else None
        )
        try:
            for annotation in tag_corpus(ner, records, batch_size=args.batch_size, on_words=bar.update):
                if args.format == "conll":
                    output.write(conll_block(annotation, docstart=annotation.record.docstart))
                else:
                    output.write(jsonl_line(annotation))
                if page is not None:
                    doc_id = annotation.record.fields.get("id")
                    page.add(annotation.text, annotation.entities, None if doc_id is None else str(doc_id))
                output.flush()  # what is finished stays written, whatever happens next
                written += 1
                last_line = annotation.record.line
                if progress:
                    bar.set_postfix_str(f"{written} docs", refresh=False)
        except TritonError as error:
            last = f", the last from input line {last_line}" if last_line is not None else ""
            where = f" to {args.output}" if args.output else ""
            raise TritonError(f"{error}; {written} document(s) were written{where} before it{last}{hint}") from None
    if errors.skipped:
        print(f"nertron ner: skipped {errors.skipped} malformed line(s)", file=sys.stderr)
    return 0


def _check_readable(path: Path, option: str) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{option} {path} does not exist")


def _check_writable(path: Path, option: str) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory, not a file")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: its directory {path.parent} does not exist")


def _ner_records(args: argparse.Namespace, stack: ExitStack, errors: ErrorPolicy) -> Iterable[Record]:
    """Text arguments, else the --input file, else stdin (txt unless --input-format says otherwise)."""
    from .corpus import Record, detect_format, read_corpus

    if args.text:
        return [Record(text=text) for text in args.text]
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


def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="CoNLL file (token first, tag last)")
    _add_model_arguments(parser)
    parser.add_argument(
        "--context",
        choices=["sentence", "document", "both"],
        default="both",
        help="tag sentences alone, whole documents (cross-sentence context), or report both",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .conll import read_conll
    from .evaluation import evaluate

    ner = _ner_from_args(args)
    documents = read_conll(args.data)
    contexts = ["sentence", "document"] if args.context == "both" else [args.context]
    reports = [evaluate(ner, documents, context=c, batch_size=args.batch_size) for c in contexts]
    if args.json:
        print(
            json.dumps(
                {
                    "data": str(args.data),
                    "model": str(ner.bundle.path),
                    "precision": ner.precision,
                    "reports": [r.to_dict() for r in reports],
                },
                indent=2,
            )
        )
        return 0
    for report in reports:
        title = {"sentence": "each sentence alone", "document": "whole documents (cross-sentence context)"}
        print(f"== {args.data} — {title[report.context]} — model {ner.bundle.path} ({ner.precision})\n")
        print(report.format() + "\n")
    return 0


def _bundle_path(model: str | None, precision: str | None) -> Path:
    from .pipeline import resolve_model

    return resolve_model(model, precision)


def _add_serve(parser: argparse.ArgumentParser) -> None:
    from .repository import ConfigOptions

    parser.add_argument("-m", "--model", help="bundle directory (default: the embedded model)")
    parser.add_argument("--precision", choices=["fp32", "int8"], help="variant of the embedded model")
    parser.add_argument("--repository", type=Path, help="serve this model repository as it is (see `repository`)")
    parser.add_argument("--tritonserver", help="tritonserver binary (default: the one in nvidia-pytriton)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per model instance")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=ConfigOptions.max_queue_delay_us)
    parser.add_argument("--instances", type=int, default=ConfigOptions.instances, help="model instances")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import tempfile

    from .repository import ConfigOptions, describe_models, write_repository
    from .server import TritonServer

    options = ConfigOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        threads=args.threads,
        instances=args.instances,
    )
    with tempfile.TemporaryDirectory(prefix="nertron-repository-") as generated:
        if args.repository:
            repository, what = args.repository, f"repository {args.repository}"
        else:
            bundle = _bundle_path(args.model, args.precision)
            write_repository(bundle, generated, options=options, link=True)
            repository, what = Path(generated), f"model 'nertron' ({bundle})"
        server = TritonServer(
            repository,
            tritonserver=args.tritonserver,
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
        )

        def ready(s: TritonServer) -> None:
            models = "".join(f"  {line}\n" for line in describe_models(repository))
            print(
                f"nertron serve: {what} ready in {s.startup_seconds:.1f} s\n{models}"
                f"  gRPC    {s.grpc_url}   (nertron ner --url {s.grpc_url} ...)\n"
                f"  HTTP    {s.http_url}\n  metrics {s.metrics_url}\nCtrl-C stops it.",
                file=sys.stderr,
                flush=True,
            )

        return server.serve(ready=ready)


def _add_repository(parser: argparse.ArgumentParser) -> None:
    from .repository import DEPLOYMENTS, ConfigOptions

    parser.add_argument("-m", "--model", help="bundle directory (default: the embedded model)")
    parser.add_argument("--out", required=True, type=Path, help="root folder: one repository per deployment")
    parser.add_argument(
        "--deployment",
        action="append",
        choices=DEPLOYMENTS,
        help="cpu (python backend + onnxruntime), onnx-gpu, tensorrt (default: all)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=ConfigOptions.max_queue_delay_us)
    parser.add_argument("--instances", type=int, default=ConfigOptions.instances)
    parser.set_defaults(run=_run_repository)


def _run_repository(args: argparse.Namespace) -> int:
    from .repository import DEPLOYMENTS, ConfigOptions, write_repositories

    options = ConfigOptions(
        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us, instances=args.instances
    )
    deployments = args.deployment or list(DEPLOYMENTS)
    written = []
    for deployment in deployments:
        # The embedded model serves int8 on CPU; GPUs get fp32 (dynamic int8 is a CPU format).
        precision = None if args.model else ("int8" if deployment == "cpu" else "fp32")
        written += write_repositories(_bundle_path(args.model, precision), args.out, [deployment], options=options)
    for path in written:
        print(f"wrote {path}")
    return 0


def _add_train(parser: argparse.ArgumentParser) -> None:
    # Parsed by nertron_export.train itself, so that torch is imported only when training.
    parser.add_argument("args", nargs=argparse.REMAINDER, help="see `nertron train --help`")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    try:
        from nertron_export.train import main as train_main
    except ImportError as error:
        raise ValueError(f"train needs the extra: pip install 'nertron[export]' ({error})") from None
    return train_main([a for i, a in enumerate(args.args) if i or a != "--"])


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF checkpoint directory or hub id")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--optimize", action="store_true", help="onnxruntime transformer optimizer")
    parser.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (for GPUs)")
    parser.add_argument("--scheme", help="tag scheme: IOB1, IOB2 or BIOES (default: from the labels)")
    parser.add_argument("--max-length", type=int, help="subwords per window (default: the model's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |ONNX - PyTorch| logits (fp32)")
    parser.add_argument("--gate-data", type=Path, help="CoNLL file: refuse an int8 model that loses F1 on it")
    parser.add_argument("--max-f1-loss", type=float, default=0.3, help="F1 points int8 may lose (default 0.3)")
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    try:
        from nertron_export.onnx_export import ExportError, export_bundle
    except ImportError as error:
        raise ValueError(f"export needs the extra: pip install 'nertron[export]' ({error})") from None
    try:
        report = export_bundle(
            args.model,
            args.out,
            opset=args.opset,
            optimize=args.optimize,
            quantize=args.quantize,
            fp16=args.fp16,
            scheme=args.scheme,
            max_length=args.max_length,
            atol=args.atol,
            gate_data=args.gate_data,
            max_f1_loss=args.max_f1_loss,
        )
    except ExportError as error:
        raise ValueError(str(error)) from None
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
