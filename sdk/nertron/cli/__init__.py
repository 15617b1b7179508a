"""The ``nertron`` command line: ``ner``, ``eval``, ``calibrate``, ``export``, ``train``, ``average``, ``serve``
and ``repository``.

Every expected failure (bad input, an unusable model or file, a missing extra, an unreachable server) ends
in one line on stderr, ``nertron COMMAND: error: ...``, and exit status 2; output written before it is kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence

from nertron.arguments import Parser
from nertron.cli import calibrate, evaluate, export, ner, serve
from nertron.errors import NertronError, TritonServerError

# What a user can cause and fix: reported in one line with exit status 2 (see nertron.errors).
USER_ERRORS = (NertronError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    from nertron import __version__

    parser = Parser(prog="nertron", description="Named-entity recognition with XLM-R.")
    parser.add_argument("--version", action="version", version=f"nertron {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ner.add(commands.add_parser("ner", help="find entities in text, files or stdin"))
    evaluate.add(commands.add_parser("eval", help="score a model on a CoNLL file (token and entity level)"))
    calibrate.add(commands.add_parser("calibrate", help="fit a bundle's score temperature on held-out CoNLL data"))
    export.add_export(commands.add_parser("export", help="export an HF checkpoint to a nertron bundle"))
    serve.add_serve(commands.add_parser("serve", help="serve a model with a real Triton server"))
    serve.add_repository(commands.add_parser("repository", help="write Triton model repositories for a model"))
    export.add_train(
        commands.add_parser("train", help="fine-tune an HF checkpoint on CoNLL files (needs torch)", add_help=False)
    )
    export.add_average(
        commands.add_parser("average", help="average the weights of checkpoints fine-tuned from one base model")
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # train parses its own options (and imports torch) only when asked for
        argv = ["train", "--", *argv[1:]]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # a usage error (status 2, one line already printed) or --help (0)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        with _terminate_as_interrupt():
            return int(args.run(args))
    except Terminated:
        print(f"nertron {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"nertron {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nertron ner ... | head`: the reader is gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as error:
        _traceback_if_asked()
        if isinstance(error, TritonServerError):  # its first line says what happened, the rest quotes the log
            first, *log = str(error).splitlines() or [""]
            print(f"nertron {args.command}: error: {first}", *(f"  {line}" for line in log), sep="\n", file=sys.stderr)
        else:
            print(f"nertron {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: still one line, unless asked for the traceback
        _traceback_if_asked()
        print(
            f"nertron {args.command}: internal error: {type(error).__name__}: {_one_line(error)} "
            "(NERTRON_DEBUG=1 prints the traceback; please report it)",
            file=sys.stderr,
        )
        return 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it ends as Ctrl-C ends it (exit status 143)."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``) ends a command as Ctrl-C does: what it finished is kept (``-o``)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def interrupt(number: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _traceback_if_asked() -> None:
    if os.environ.get("NERTRON_DEBUG"):
        traceback.print_exc()


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (an OSError names its file)."""
    if isinstance(error, OSError) and error.strerror:  # not str(error): that starts with "[Errno N]"
        return error.strerror if error.filename is None else f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__
