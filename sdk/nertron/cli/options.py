"""Options shared by the commands that run a model, and the one place that turns them into an ``NERConfig``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from nertron.backends import OnnxRuntime, OpenVINO, Triton
from nertron.backends.specs import MAX_THREADS, check_url
from nertron.errors import InvalidValue
from nertron.ner import AGGREGATIONS, PRECISIONS, NERConfig

RUNTIMES = ("onnxruntime", "openvino")
DEFAULTS = NERConfig()  # every default below is NERConfig's (and Triton's): declared once, there
TRITON = Triton()


def bounded(kind: Callable[[str], int | float], low: float, high: float | None = None) -> Callable[[str], int | float]:
    """An argparse ``type``: ``kind(text)`` within ``[low, high]``, else argparse's one-line usage error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not (low <= value and (value <= high if high is not None else math.isfinite(value))):  # refuses nan
            bound = (
                f"from {low} to {high}"
                if high is not None
                else f"at least {low}{'' if kind is int else ', and finite'}"
            )
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def add_model_options(parser: argparse.ArgumentParser, *, precisions: tuple[str, ...] = PRECISIONS) -> None:
    """``-m/--model`` and ``--precision``: which bundle."""
    parser.add_argument("-m", "--model", help="bundle directory (default: $NERTRON_MODEL, else the embedded model)")
    described = {
        "int8": "int8 (static, the default)",
        "fp32": "fp32",
        "bf16": "bf16 (the fp32 weights in bfloat16 on OpenVINO)",
    }
    parser.add_argument(
        "--precision",
        choices=precisions,
        help=f"variant of the embedded model: {', '.join(described[p] for p in precisions)}",
    )


def add_batch_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=bounded(int, 1),
        default=DEFAULTS.batch_size,
        help="windows per model batch (default %(default)s)",
    )


def add_threads_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--threads", type=bounded(int, 1, MAX_THREADS), help=f"{help}, 1 to {MAX_THREADS}")


def add_engine_options(parser: argparse.ArgumentParser, *, remote: bool = True) -> None:
    """Model, decoding and backend options: everything ``config_from_args`` reads."""
    add_model_options(parser)
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        default=DEFAULTS.aggregation,
        help="subwords -> word (default %(default)s)",
    )
    add_batch_size_option(parser)
    parser.add_argument("--runtime", choices=RUNTIMES, help="in-process engine (default: onnxruntime; bf16: openvino)")
    add_threads_option(parser, "inference threads (default: every CPU)")
    if remote:
        parser.add_argument("--url", help="Triton gRPC endpoint HOST:PORT (see `nertron serve`); default: in-process")
        parser.add_argument(
            "--no-fallback",
            dest="fallback",
            action="store_false",
            help="with --url: fail instead of computing unanswered batches in-process",
        )
        parser.add_argument(
            "--timeout",
            type=bounded(float, 0.001),
            default=TRITON.timeout,
            help="with --url: seconds per request (default %(default)s)",
        )


def config_from_args(args: argparse.Namespace) -> NERConfig:
    """The ``NERConfig`` the options describe; contradictory options raise ``ValueError``."""
    local: OnnxRuntime | OpenVINO | None = None
    if args.runtime == "openvino" or (args.runtime is None and args.precision == "bf16"):
        local = OpenVINO(precision="bf16" if args.precision == "bf16" else "fp32", threads=args.threads)
    elif args.runtime == "onnxruntime" or args.threads is not None:
        local = OnnxRuntime(threads=args.threads)
    backend: OnnxRuntime | OpenVINO | Triton | None = local
    if getattr(args, "url", None):
        fallback = (local or OnnxRuntime()) if args.fallback else None
        try:
            check_url(args.url)
        except ValueError as error:
            raise InvalidValue(f"--url: {error}") from None
        backend = Triton(args.url, timeout=args.timeout, fallback=fallback)
    elif getattr(args, "fallback", True) is False:
        raise InvalidValue("--no-fallback goes with --url")
    return NERConfig(
        model=args.model,
        precision=args.precision,
        aggregation=args.aggregation,
        batch_size=args.batch_size,
        backend=backend,
        min_score=getattr(args, "min_score", DEFAULTS.min_score),
    )
