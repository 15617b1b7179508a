"""``nertron export`` (an HF checkpoint to a bundle), ``nertron train`` (fine-tuning) and ``nertron average``
(the mean of fine-tuned checkpoints); they need ``pip install "nertron[export]"``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nertron.errors import InvalidValue, MissingFile
from nertron.extras import missing
from nertron.io.atomic import check_apart
from nertron.model.bundle import MANIFEST, check_bundle_target


def add_train(parser: argparse.ArgumentParser) -> None:
    # Parsed by nertron_export.train itself, so that torch is imported only when training.
    parser.add_argument("args", nargs=argparse.REMAINDER, help="see `nertron train --help`")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    try:
        from nertron_export.train import main as train_main
    except ImportError as error:
        raise missing("torch", "nertron train", error) from None
    return train_main([a for i, a in enumerate(args.args) if i or a != "--"])


def add_average(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", type=Path, help="HF checkpoints fine-tuned from one base model")
    parser.add_argument("--out", required=True, type=Path, help="directory of the averaged checkpoint")
    parser.set_defaults(run=run_average)


def run_average(args: argparse.Namespace) -> int:
    for path in args.checkpoints:
        check_apart(("--out", args.out), {"checkpoint": path})
    try:
        from nertron_export.average import average_checkpoints
    except ImportError as error:
        raise missing("safetensors", "nertron average", error) from None
    out = average_checkpoints(args.checkpoints, args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {out}")
    return 0


def add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF checkpoint directory or hub id")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="bundle directory to write (new, empty or a bundle, which is replaced; built beside it and moved in "
        "when every check has passed)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace --out even when it holds files that are not a bundle"
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--optimize", action="store_true", help="onnxruntime transformer optimizer")
    parser.add_argument(
        "--quantize",
        choices=["int8", "int8-dynamic"],
        help="int8: static (fixed activation ranges from --calibration-data, gated on --gate-data; a text's result "
        "does not depend on its batch-mates); int8-dynamic: activations scaled per batch (batch-dependent)",
    )
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (for GPUs)")
    parser.add_argument(
        "--scheme",
        help="tag scheme: IOB1, IOB2 or BIOES (default: from the labels, IOB2 or BIOES; an IOB1 model needs IOB1)",
    )
    parser.add_argument("--max-length", type=int, help="subwords per window (default: the model's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |ONNX - PyTorch| logits (fp32)")
    parser.add_argument(
        "--calibration-data",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="--quantize int8: text like what the model will see (plain text, JSONL with a 'text' field, or "
        "CoNLL; e.g. the training set) to fix the activation ranges on; several files (e.g. one per language) are "
        "each sampled alike",
    )
    parser.add_argument(
        "--gate-data", type=Path, help="CoNLL file (e.g. dev): refuse an int8 model that loses F1 on it"
    )
    parser.add_argument("--max-f1-loss", type=float, default=0.3, help="F1 points int8 may lose (default 0.3)")
    parser.add_argument(
        "--temperature-data",
        type=Path,
        help="held-out CoNLL file (dev): fit the scores' temperature on it (as `nertron calibrate` does)",
    )
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    _check_export_options(args)
    check_bundle_target(
        args.out,
        {
            "--model": args.model,
            "--calibration-data": args.calibration_data,
            "--gate-data": args.gate_data,
            "--temperature-data": args.temperature_data,
        },
        force=args.force,
        option="--out",
    )
    replaced = (args.out / MANIFEST).is_file()
    try:
        from nertron_export.model_source import check_model_source
        from nertron_export.onnx_export import ExportError, export_bundle
    except ImportError as error:
        raise missing("torch", "nertron export", error) from None
    check_model_source(args.model, "--model")
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
            calibration_data=args.calibration_data,
            gate_data=args.gate_data,
            max_f1_loss=args.max_f1_loss,
            temperature_data=args.temperature_data,
            force=args.force,
        )
    except ExportError as error:
        raise InvalidValue(f"{error} ({args.out} is left as it was)") from None
    print(report.summary())
    if replaced:
        print(f"replaced the bundle that was in {args.out}")
    return 0


def _check_export_options(args: argparse.Namespace) -> None:
    """The option errors, in the options' names, before minutes of export."""
    if args.quantize == "int8":
        missing_options = [
            option
            for option, value in (
                ("--calibration-data FILE", args.calibration_data),
                ("--gate-data FILE", args.gate_data),
            )
            if value is None
        ]
        if missing_options:
            raise InvalidValue(
                f"--quantize int8 needs {' and '.join(missing_options)}: --calibration-data, text like what the model "
                "will see (plain text, JSONL or CoNLL; e.g. the training set), fixes the activation ranges; "
                "--gate-data, a labelled CoNLL file (e.g. dev), checks the int8 model's F1 against fp32's "
                "(--quantize int8-dynamic needs neither, but its results depend on the batch)"
            )
    elif args.calibration_data is not None:
        raise InvalidValue(
            "--calibration-data sets the activation ranges of --quantize int8 and needs it "
            "(to fit the scores' temperature, use --temperature-data)"
        )
    if args.gate_data is not None and args.quantize is None:
        raise InvalidValue("--gate-data checks an int8 model against fp32: it needs --quantize")
    for option, path in (
        *(("--calibration-data", path) for path in args.calibration_data or []),
        ("--gate-data", args.gate_data),
        ("--temperature-data", args.temperature_data),
    ):
        if path is not None and not path.is_file():
            raise MissingFile(f"{option} {path} is not a file")
