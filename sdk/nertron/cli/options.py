"""Options shared by the commands that run a model, and the one place that turns them into an ``NERConfig``."""

from __future__ import annotations

import argparse

from nertron.backends import OnnxRuntime, OpenVINO, Triton
from nertron.ner import AGGREGATIONS, PRECISIONS, NERConfig

RUNTIMES = ("onnxruntime", "openvino")


def add_model_options(parser: argparse.ArgumentParser, *, precisions: tuple[str, ...] = PRECISIONS) -> None:
    """``-m/--model`` and ``--precision``: which bundle."""
    parser.add_argument("-m", "--model", help="bundle directory (default: $NERTRON_MODEL, else the embedded model)")
    parser.add_argument(
        "--precision",
        choices=precisions,
        help="variant of the embedded model (default int8; bf16: fp32 weights in bfloat16 on OpenVINO)",
    )


def add_engine_options(parser: argparse.ArgumentParser, *, remote: bool = True) -> None:
    """Model, decoding and backend options: everything ``config_from_args`` reads."""
    add_model_options(parser)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="first", help="subwords -> word (default first)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model batch (default 16)")
    parser.add_argument("--runtime", choices=RUNTIMES, help="in-process engine (default: onnxruntime; bf16: openvino)")
    parser.add_argument("--threads", type=int, help="inference threads (default: every CPU)")
    if remote:
        parser.add_argument("--url", help="Triton gRPC endpoint HOST:PORT (see `nertron serve`); default: in-process")
        parser.add_argument(
            "--no-fallback",
            dest="fallback",
            action="store_false",
            help="with --url: fail instead of computing unanswered batches in-process",
        )
        parser.add_argument("--timeout", type=float, default=30.0, help="with --url: seconds per request")


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
        backend = Triton(args.url, timeout=args.timeout, fallback=fallback)
    elif getattr(args, "fallback", True) is False:
        raise ValueError("--no-fallback goes with --url")
    return NERConfig(
        model=args.model,
        precision=args.precision,
        aggregation=args.aggregation,
        batch_size=args.batch_size,
        backend=backend,
        min_score=getattr(args, "min_score", 0.0),
    )
