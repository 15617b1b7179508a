"""``nertron serve`` (a real Triton server for a bundle or a repository) and ``nertron repository``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nertron.cli.options import add_model_options, add_threads_option, bounded
from nertron.errors import InvalidValue
from nertron.ner import resolve_model
from nertron.serving.options import DEPLOYMENTS, MODEL_NAME, TEXT_MODEL_NAME, ConfigOptions


def add_serve(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, precisions=("int8", "fp32"))
    parser.add_argument(
        "--repository", type=Path, help="serve this model repository as it is (see `repository`; default: none)"
    )
    parser.add_argument("--tritonserver", help="tritonserver binary (default: the one in nvidia-pytriton)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    port = bounded(int, 0, 65535)
    parser.add_argument("--grpc-port", type=port, default=8001, help="default %(default)s; 0 picks a free port")
    parser.add_argument("--http-port", type=port, default=8000, help="default %(default)s; 0 picks a free port")
    parser.add_argument("--metrics-port", type=port, default=8002, help="default %(default)s; 0 picks a free port")
    add_threads_option(
        parser,
        "onnxruntime threads per model instance (default: the CPUs this process may use, divided among the instances)",
    )
    add_config_options(parser)
    parser.set_defaults(run=run_serve)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """The Triton model config's knobs, shared by ``serve`` and ``repository``; defaults are ``ConfigOptions``'s."""
    parser.add_argument(
        "--max-batch-size",
        type=bounded(int, 1),
        default=ConfigOptions.max_batch_size,
        help="largest batch Triton forms (default %(default)s)",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=bounded(int, 0),
        default=ConfigOptions.max_queue_delay_us,
        help="microseconds a request may wait for others to batch with (default %(default)s)",
    )
    parser.add_argument(
        "--instances",
        type=bounded(int, 1),
        default=ConfigOptions.instances,
        help="model instances (default %(default)s)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from nertron.serving.binary import bundled_tritonserver
    from nertron.serving.processes import private_tempdir

    if args.tritonserver is None:
        bundled_tritonserver()  # without nvidia-pytriton, the error names nertron[server] before anything else
    from nertron.serving.config import describe_models
    from nertron.serving.repository import write_repository
    from nertron.serving.server import TritonServer, serve

    options = ConfigOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        threads=args.threads,
        instances=args.instances,
    )
    with private_tempdir("repository") as generated:  # removed by the next start if serve is killed
        if args.repository:
            repository, what = args.repository, f"repository {args.repository}"
        else:
            bundle = resolve_model(args.model, args.precision)
            write_repository(bundle, generated, options=options, link=True)
            repository, what = Path(generated), f"{bundle}"
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
                f"  HTTP    {s.http_url}   (text in, entities out: POST /v2/models/{TEXT_MODEL_NAME}/infer)\n"
                f"  metrics {s.metrics_url}   (Prometheus)\nCtrl-C stops it.",
                file=sys.stderr,
                flush=True,
            )

        return serve(server, ready=ready)


def add_repository(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, precisions=("int8", "fp32"))
    parser.add_argument("--out", required=True, type=Path, help="root folder: one repository per deployment")
    parser.add_argument(
        "--deployment",
        action="append",
        choices=DEPLOYMENTS,
        help="cpu (python backend + onnxruntime), onnx-gpu, tensorrt (default: all)",
    )
    add_config_options(parser)
    parser.set_defaults(run=run_repository)


def run_repository(args: argparse.Namespace) -> int:
    from nertron.io.atomic import check_apart
    from nertron.serving.repository import write_repositories

    options = ConfigOptions(
        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us, instances=args.instances
    )
    written = []
    if args.model and args.precision:
        raise InvalidValue("--precision picks a variant of the embedded model; a bundle (-m) has its own")
    deployments = args.deployment or list(DEPLOYMENTS)
    replaced = [f"{d}/{model}" for d in deployments for model in (MODEL_NAME, TEXT_MODEL_NAME)]
    check_apart(("--out", args.out), {"-m": args.model}, replaced=replaced)
    for deployment in deployments:
        # The embedded model serves int8 on CPU by default; GPUs get fp32 (int8 runs onnxruntime's CPU kernels).
        precision = None if args.model else (args.precision or ("int8" if deployment == "cpu" else "fp32"))
        if precision == "int8" and deployment != "cpu":
            raise InvalidValue(
                f"--precision int8 is for the cpu deployment (--deployment cpu); {deployment} serves fp32"
            )
        written += write_repositories(resolve_model(args.model, precision), args.out, [deployment], options=options)
    for path in written:
        print(f"wrote {path} (token ids in, logits out) and {path.with_name(TEXT_MODEL_NAME)} (text in, entities out)")
    return 0
