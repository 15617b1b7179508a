"""A model bundle: the directory ``nertron export`` writes (ONNX model, tokenizer, ``manifest.json``).

``Manifest`` is the one reader and writer of ``manifest.json``: a bad file is an error that names it and the
field at fault.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from nertron._native import PostProcessor
from nertron.errors import FolderIsFile, InvalidType, InvalidValue, MissingFile, reraise_files
from nertron.io.atomic import InputPaths, check_apart, write_file
from nertron.model.fingerprint import fingerprint, sha256_of
from nertron.tags import check_scheme

MANIFEST = "manifest.json"
FORMAT = "nertron-bundle"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the SDK adds around each window and pads with."""

    bos: int
    eos: int
    pad: int


@dataclass(frozen=True)
class SentencePiece:
    """The bundle's tokenizer as a SentencePiece model too (leaner to load): its file, and how its ids become
    the model's (``+ id_offset``; its unknown piece is ``unk_id``)."""

    file: str
    id_offset: int
    unk_id: int


@dataclass(frozen=True)
class Calibration:
    """How the bundle's scores are calibrated: ``softmax(logits / temperature)``, the temperature fitted on
    ``data`` (see ``nertron.calibration``); ``ece`` and ``ece_uncalibrated``: entity-level ECE there."""

    temperature: float
    data: str = ""
    ece: float | None = None
    ece_uncalibrated: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise InvalidType(f"calibration.temperature must be a number, got {type(self.temperature).__name__}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise InvalidValue(f"calibration.temperature must be a finite number > 0, got {self.temperature}")
        object.__setattr__(self, "temperature", float(self.temperature))


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says of a bundle.

    ``sha256`` and ``model_bytes`` describe the model file (``with_model`` fills them); ``calibration``, if
    any, sets the temperature of the scores; ``hidden_size`` (the encoder's width; None in older bundles)
    sizes the batches; ``fingerprint``: the bundle's (``nertron.model.fingerprint``) when the manifest was
    written, ``write`` sets it; ``provenance`` holds what is only informative (source
    checkpoint, creation time, recorded scores, ...).
    """

    labels: tuple[str, ...]
    scheme: str
    max_length: int
    special_tokens: SpecialTokens
    precision: str = "fp32"
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    outputs: tuple[str, ...] = ("logits",)
    opset: int | None = None
    model_file: str = "model.onnx"
    tokenizer_file: str | None = "tokenizer.json"
    sha256: str = ""
    model_bytes: int | None = None
    sentencepiece: SentencePiece | None = None
    calibration: Calibration | None = None
    hidden_size: int | None = None
    fingerprint: str = field(default="", compare=False)  # derived from the files: not what a manifest says
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        PostProcessor(self.labels)  # malformed labels fail here
        object.__setattr__(self, "scheme", check_scheme(self.scheme))
        if self.max_length < 3:
            raise InvalidValue(f"max_length must be at least 3, got {self.max_length}")
        if self.precision not in PRECISIONS:
            raise InvalidValue(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if "input_ids" not in self.inputs or not set(self.inputs) <= {"input_ids", "attention_mask"}:
            raise InvalidValue(f"inputs must be input_ids and optionally attention_mask, got {list(self.inputs)}")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise InvalidValue(f"hidden_size must be at least 1, got {self.hidden_size}")
        if self.tokenizer_file is None and self.sentencepiece is None:
            raise InvalidValue("a bundle needs a tokenizer: tokenizer_file, sentencepiece or both")

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Parses ``path``; ``ValueError`` naming the file (and the field) if it is not a valid manifest."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidValue(f"{path}: not UTF-8 text ({error.reason})") from None
        except json.JSONDecodeError as error:
            raise InvalidValue(
                f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
            ) from None
        if not isinstance(data, dict):
            raise InvalidValue(f"{path}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise InvalidValue(
                f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
                f"got {data.get('format')!r} version {data.get('format_version')!r}"
            )
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            why = f"field {error.args[0]!r} is missing" if isinstance(error, KeyError) else str(error)
            raise InvalidValue(f"{path}: {why}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)} - {"provenance"}
        special = _typed(data["special_tokens"], dict, "special_tokens")
        return cls(
            labels=_strings(data["labels"], "labels"),
            scheme=_typed(data["scheme"], str, "scheme"),
            max_length=_typed(data["max_length"], int, "max_length"),
            special_tokens=SpecialTokens(
                **{k: _typed(special[k], int, f"special_tokens.{k}") for k in ("bos", "eos", "pad")}
            ),
            precision=_typed(data.get("precision", "fp32"), str, "precision"),
            inputs=_strings(data.get("inputs", ["input_ids", "attention_mask"]), "inputs"),
            outputs=_strings(data.get("outputs", ["logits"]), "outputs"),
            opset=data.get("opset"),
            model_file=_typed(data.get("model_file", "model.onnx"), str, "model_file"),
            tokenizer_file=_optional(data.get("tokenizer_file", "tokenizer.json"), str, "tokenizer_file"),
            sha256=_typed(data.get("sha256", ""), str, "sha256"),
            model_bytes=data.get("model_bytes"),
            sentencepiece=_sentencepiece(data.get("sentencepiece")),
            calibration=_calibration(data.get("calibration")),
            hidden_size=_optional(data.get("hidden_size"), int, "hidden_size"),
            fingerprint=_typed(data.get("fingerprint", ""), str, "fingerprint"),
            provenance={k: v for k, v in data.items() if k not in known | {"format", "format_version"}},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        data: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "provenance":
                data.update(value)
            elif f.name in ("special_tokens", "sentencepiece", "calibration") and value is not None:
                data[f.name] = dataclasses.asdict(value)
            elif f.name == "fingerprint":
                if value:
                    data[f.name] = value
            elif value is not None or f.name == "tokenizer_file":  # null: SentencePiece alone
                data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    def write(self, directory: str | Path) -> Path:
        """Writes ``directory/manifest.json`` (in one step: a reader sees the old manifest or the new one), with
        the fingerprint of the bundle ``directory`` now holds (none while a file it names is missing)."""
        path = Path(directory) / MANIFEST
        try:
            stamped = dataclasses.replace(self, fingerprint=fingerprint(Path(directory), self))
        except OSError:  # written before its files: Bundle.fingerprint is computed from them once they are there
            stamped = dataclasses.replace(self, fingerprint="")
        write_file(path, json.dumps(stamped.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def with_model(self, model_path: Path, **changes: Any) -> Manifest:
        """This manifest for the model file ``model_path`` (its name, sha256 and size), with ``changes``."""
        return dataclasses.replace(
            self,
            model_file=model_path.name,
            sha256=sha256_of(model_path),
            model_bytes=model_path.stat().st_size,
            **changes,
        )


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its manifest."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = False) -> Bundle:
        """Reads ``path/manifest.json`` and checks that the files it names are there (``verify=True``: also
        the model file's sha256). Errors name the path and say what is wrong."""
        with reraise_files("model"):
            bundle = cls._load(Path(path), verify)
        return bundle

    @classmethod
    def _load(cls, root: Path, verify: bool) -> Bundle:
        if not root.exists():
            raise MissingFile(f"model {root} does not exist (a bundle directory written by `nertron export`)")
        if not root.is_dir():
            raise FolderIsFile(f"model {root} is a file; a bundle is a directory written by `nertron export`")
        if not (root / MANIFEST).is_file():
            raise MissingFile(f"{root} is not a nertron bundle: {MANIFEST} is missing")
        bundle = cls(root, Manifest.read(root / MANIFEST))
        sentencepiece = bundle.manifest.sentencepiece
        files = [bundle.model_path, bundle.tokenizer_path, root / sentencepiece.file if sentencepiece else None]
        for file in filter(None, files):
            if not file.is_file():
                raise MissingFile(f"bundle {root} lacks {file.name}")
        size = bundle.model_path.stat().st_size
        expected = bundle.manifest.model_bytes
        if size == 0 or (expected is not None and size != expected):
            raise InvalidValue(
                f"{bundle.model_path} is damaged: {size} bytes, expected {expected or 'more than 0'}; "
                "re-export the bundle (nertron export) or restore the file"
            )
        if verify and sha256_of(bundle.model_path) != bundle.manifest.sha256:
            raise InvalidValue(f"{bundle.model_path} does not match the sha256 in {MANIFEST}")
        if verify and bundle.manifest.fingerprint and bundle.fingerprint != bundle.manifest.fingerprint:
            raise InvalidValue(
                f"{root / MANIFEST}: fingerprint {bundle.manifest.fingerprint} does not match the bundle's files "
                f"({bundle.fingerprint}); re-export the bundle (nertron export) or restore its files"
            )
        return bundle

    @cached_property
    def fingerprint(self) -> str:
        """A content hash (16 hex digits) of what decides the bundle's output: model, tokenizer, labels, scheme,
        temperature, max_length (see ``nertron.model.fingerprint``). Computed once, from the files."""
        with reraise_files("model"):
            return fingerprint(self.path, self.manifest)

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def tokenizer_path(self) -> Path | None:
        """The ``tokenizers`` file; None when the bundle tokenises with its SentencePiece model alone."""
        return None if self.manifest.tokenizer_file is None else self.path / self.manifest.tokenizer_file

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def scheme(self) -> str:
        return self.manifest.scheme

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def precision(self) -> str:
        """The stored model's precision: ``"fp32"``, ``"int8"`` or ``"fp16"``."""
        return self.manifest.precision

    @property
    def special_tokens(self) -> SpecialTokens:
        return self.manifest.special_tokens

    @property
    def temperature(self) -> float:
        """The temperature of the scores: the manifest's calibration, else 1 (uncalibrated)."""
        return self.manifest.calibration.temperature if self.manifest.calibration else 1.0


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidType(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(value: Any, kind: type, name: str) -> Any:
    return None if value is None else _typed(value, kind, name)


def _sentencepiece(value: Any) -> SentencePiece | None:
    if value is None:
        return None
    entry = _typed(value, dict, "sentencepiece")
    return SentencePiece(
        file=_typed(entry["file"], str, "sentencepiece.file"),
        id_offset=_typed(entry["id_offset"], int, "sentencepiece.id_offset"),
        unk_id=_typed(entry["unk_id"], int, "sentencepiece.unk_id"),
    )


def _calibration(value: Any) -> Calibration | None:
    if value is None:
        return None
    entry = _typed(value, dict, "calibration")
    unknown = set(entry) - {f.name for f in dataclasses.fields(Calibration)}
    if unknown:
        raise InvalidValue(f"field 'calibration' has unknown keys {sorted(unknown)}")
    if "temperature" not in entry:
        raise InvalidValue("field 'calibration.temperature' is missing")
    return Calibration(**entry)


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidType(f"field {name!r} must be a list of str")
    return tuple(value)


def check_bundle_target(out: Path, inputs: Mapping[str, InputPaths], *, force: bool, option: str = "out") -> None:
    """Refuses an ``out`` that overlaps one of ``inputs`` (see ``check_apart``), or, unless ``force``, a folder
    that holds anything but a nertron bundle's own files (all of it would be replaced)."""
    check_apart((option, out), inputs)
    if out.exists() and not out.is_dir():
        raise FolderIsFile(f"{option} {out} is a file; a bundle is a folder")
    if force or not out.is_dir():
        return
    others = sorted(entry.name for entry in out.iterdir() if entry.name not in _bundle_files(out))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        what = (
            "a nertron bundle with other files"
            if (out / MANIFEST).is_file()
            else "a folder that is not a nertron bundle"
        )
        raise InvalidValue(
            f"{option} {out} is {what} (it holds {shown}), which would be removed; give a new or empty folder, "
            "or --force to replace it and all it holds"
        )


def _bundle_files(folder: Path) -> set[str]:
    """The names of the files a bundle in ``folder`` consists of (none if it holds no readable manifest)."""
    try:
        manifest = Manifest.read(folder / MANIFEST)
    except (OSError, ValueError):
        return set()
    names = {MANIFEST, manifest.model_file, f"{manifest.model_file}.data"}
    if manifest.tokenizer_file is not None:
        names.add(manifest.tokenizer_file)
    if manifest.sentencepiece is not None:
        names.add(manifest.sentencepiece.file)
    return names
