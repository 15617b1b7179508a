"""Triton model repositories for a bundle: one repository per deployment (see ``nertron.serving.config``),
each with two models: ``nertron`` (ids in, logits out) and ``nertron_text`` (text in, entities out)."""

from __future__ import annotations

import dataclasses
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from nertron.io.atomic import check_apart, place_folder, scratch_folder
from nertron.model.bundle import Bundle
from nertron.serving.config import (
    CONFIG_FILE,
    check_deployment,
    config_text,
    model_config,
    shape_profiles,
    text_model_config,
)
from nertron.serving.options import DEPLOYMENTS, MODEL_NAME, TEXT_MODEL_NAME, ConfigOptions, Signature

BUILD_SCRIPT = "build_engine.sh"
MODEL_TEMPLATE = Path(__file__).with_name("triton_model.py")
TEXT_MODEL_TEMPLATE = Path(__file__).with_name("text_model.py")
# The TensorRT container whose TensorRT (10.5) matches Triton 24.10 (2.51): a plan only loads
# into the TensorRT version (and GPU type) that built it.
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"


def trtexec_command(signature: Signature, options: ConfigOptions | None = None) -> list[str]:
    """The trtexec call that builds ``1/model.plan`` from ``1/model.onnx`` (run in the model directory)."""
    options = options or ConfigOptions()
    low, opt, high = shape_profiles(signature, options.max_batch_size)
    command = ["trtexec", "--onnx=1/model.onnx", "--saveEngine=1/model.plan"]
    if options.fp16:
        command.append("--fp16")
    return [*command, f"--minShapes={low}", f"--optShapes={opt}", f"--maxShapes={high}"]


def build_script(signature: Signature, options: ConfigOptions | None = None) -> str:
    """``build_engine.sh`` of the tensorrt deployment."""
    command = " \\\n  ".join(trtexec_command(signature, options))
    return (
        "#!/bin/sh\n"
        "# Builds 1/model.plan from 1/model.onnx. Run it on the GPU type that will serve the model,\n"
        "# with the TensorRT of the Triton release that loads it (10.5 for Triton 24.10 = 2.51), e.g.\n"
        f'#   docker run --rm --gpus all -v "$PWD":/model -w /model {TENSORRT_IMAGE} sh {BUILD_SCRIPT}\n'
        "# The max batch of the profile must be >= max_batch_size in config.pbtxt.\n"
        "# TensorRT >= 10 takes the int64 inputs as they are.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        f"{command}\n"
    )


def write_repository(
    bundle: str | Path | Bundle,
    repository: str | Path,
    *,
    deployment: str = "cpu",
    options: ConfigOptions | None = None,
    name: str = MODEL_NAME,
    text_model: bool = True,
    link: bool = False,
) -> Path:
    """Writes ``repository/<name>/`` (ids in, logits out) and, with ``text_model``, ``repository/nertron_text/``
    (text in, entities out): each a config.pbtxt and ``1/``; returns the first model's directory.

    The cpu deployment's ``1/`` directories are complete bundles (model.onnx, tokenizer files, manifest.json)
    plus model.py; onnx-gpu and tensorrt get model.onnx for the encoder (tensorrt also ``build_engine.sh``),
    and a text model that calls it through BLS. ``link=True`` symlinks the bundle's files instead of copying
    them: for a repository served on this machine only.
    """
    check_deployment(deployment)
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    check_apart(("repository", repository), {"bundle": bundle.path}, replaced=(name, TEXT_MODEL_NAME))
    options = options or ConfigOptions()
    repository = Path(repository)
    created = not repository.exists()
    repository.mkdir(parents=True, exist_ok=True)
    # Built in a hidden folder of the repository (so on its file system), then each model folder moved in
    # with one rename: a failure before leaves the repository as it was. Other models, and other versions of
    # these, stay.
    try:
        with scratch_folder(repository / name) as work:
            _write_models(bundle, work, deployment, options, name, text_model, link)
            for model in sorted(work.iterdir()):
                place_folder(model, repository / model.name, keep=_other_version)
    except BaseException:
        if created:
            shutil.rmtree(repository, ignore_errors=True)
        raise
    return repository / name


def _other_version(entry: Path) -> bool:
    """A version folder of a Triton model other than the ``1/`` that nertron writes."""
    return entry.is_dir() and entry.name.isdigit() and entry.name != "1"


def _write_models(
    bundle: Bundle, repository: Path, deployment: str, options: ConfigOptions, name: str, text_model: bool, link: bool
) -> None:
    signature = Signature.of(bundle)
    model_dir = _model_dir(
        Path(repository) / name, config_text(model_config(deployment, signature, options, name=name))
    )
    version_dir = model_dir / "1"
    _place(bundle.model_path, version_dir / "model.onnx", link)
    external = bundle.model_path.with_name(bundle.model_path.name + ".data")
    if external.is_file():  # external data keeps the file name that the graph refers to
        _place(external, version_dir / external.name, link)
    if deployment == "cpu":
        shutil.copyfile(MODEL_TEMPLATE, version_dir / "model.py")
        _place_bundle(bundle, version_dir, link)
    if deployment == "tensorrt":
        script = model_dir / BUILD_SCRIPT
        script.write_text(build_script(signature, options), encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if text_model:
        config = config_text(text_model_config(deployment, signature, options))
        text_version = _model_dir(Path(repository) / TEXT_MODEL_NAME, config) / "1"
        shutil.copyfile(TEXT_MODEL_TEMPLATE, text_version / "model.py")
        if deployment == "cpu":
            _place(bundle.model_path, text_version / "model.onnx", link)
        else:  # the encoder runs in the other model; a link keeps the bundle complete without a copy
            (text_version / "model.onnx").symlink_to(Path("..", "..", name, "1", "model.onnx"))
        _place_bundle(bundle, text_version, link)


def _model_dir(model_dir: Path, config: str) -> Path:
    """``model_dir`` with ``config`` as its config.pbtxt and an empty ``1/``."""
    (model_dir / "1").mkdir(parents=True)
    (model_dir / CONFIG_FILE).write_text(config, encoding="utf-8")
    return model_dir


def _place_bundle(bundle: Bundle, version_dir: Path, link: bool) -> None:
    """The bundle's tokenizer files and its manifest (naming ``model.onnx``) into ``version_dir``."""
    if bundle.tokenizer_path is not None:
        _place(bundle.tokenizer_path, version_dir / bundle.tokenizer_path.name, link)
    if bundle.manifest.sentencepiece is not None:
        _place(bundle.path / bundle.manifest.sentencepiece.file, version_dir / bundle.manifest.sentencepiece.file, link)
    dataclasses.replace(bundle.manifest, model_file="model.onnx").write(version_dir)


def write_repositories(
    bundle: str | Path | Bundle,
    root: str | Path,
    deployments: Sequence[str] = DEPLOYMENTS,
    *,
    options: ConfigOptions | None = None,
    name: str = MODEL_NAME,
) -> list[Path]:
    """One repository per deployment, ``root/<deployment>/<name>/``; returns the model directories."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    return [write_repository(bundle, Path(root) / d, deployment=d, options=options, name=name) for d in deployments]


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        target.symlink_to(source.resolve())
    else:
        shutil.copyfile(source, target)
