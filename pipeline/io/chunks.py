"""Fast reads of whole HDF5 chunks compressed the way mdx2 writes them (shuffle + deflate).

h5py decodes deflate with zlib and unshuffles in C, about 10 ns per 4-byte pixel here. For chunks
whose filter pipeline is exactly ``[shuffle, deflate]`` (or ``[deflate]``, or none), we read the raw
chunk bytes (``read_direct_chunk``), inflate them with libdeflate (the ``deflate`` package: the same
bytes out, 2.8x faster than ISA-L and about 3x faster than zlib on mdx2's chunks here, with the GIL
released) and unshuffle with a small numba loop. Any other layout (other filters, a read that is not
one whole chunk) goes through h5py unchanged, so results are identical either way.

Bitshuffle-LZ4 chunks (Eiger files, filter 32008) take the same direct path, decoded by
:mod:`pipeline.io.bitshuffle` (bitshuffle's own C decoder, called with the GIL released).

A chunk is inflated into a scratch buffer of the thread (then unshuffled), or straight into the
caller's buffer when a caller that reads chunk after chunk passes one (``out``): new memory is slow
to touch (its pages are faulted in and zeroed one by one; on a VM whose host took freed memory back,
~2 ms per MB), and glibc seldom hands back the same block of tens of MB once smaller allocations have
come between. Other reads decode into fresh buffers, which processes running many reads should have
glibc reuse (see :mod:`pipeline.cluster.buffers`, applied by the command line and the shipped cluster
configs).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import threading
import zlib

import h5py
import numpy as np

from pipeline.io import bitshuffle
from pipeline.kernels.aot import kernel

try:  # libdeflate; optional (falls back to zlib, same output)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - deflate is a dependency, but keep working without it
    _libdeflate = None

__all__ = ["ChunkReader", "CorruptChunkError", "inflate", "inflate_into", "thread_buffer"]


class CorruptChunkError(OSError):
    """A stored chunk that cannot be decoded (a deflate stream error, a checksum that does not match,
    a decoded size that is wrong, a file that ends early); the message names the file, the dataset
    and the chunk."""


def inflate(data: bytes, size: int) -> bytes:
    """The zlib stream ``data`` inflated; it must decode to exactly ``size`` bytes (else ``ValueError``)."""
    if _libdeflate is not None:
        try:
            out = _libdeflate.zlib_decompress(data, size)  # size is the most it may write
        except _libdeflate.DeflateError as exc:
            raise ValueError(f"does not inflate to {size} bytes: {exc}") from exc
    else:
        try:
            out = zlib.decompressobj().decompress(data)
        except zlib.error as exc:
            raise ValueError(str(exc)) from exc
    if len(out) != size:
        raise ValueError(f"inflates to {len(out)} bytes, expected {size}")
    return out


@functools.cache
def _libdeflate_c():
    """libdeflate's C functions inside the ``deflate`` package's extension (it exports them), for
    inflating into a buffer of ours; None where that is not possible."""
    if _libdeflate is None:
        return None
    try:
        from deflate import _deflate

        lib = ctypes.CDLL(_deflate.__file__)  # the library already loaded; ctypes calls release the GIL
        lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
        lib.libdeflate_alloc_decompressor.argtypes = []
        lib.libdeflate_zlib_decompress.restype = ctypes.c_int
        lib.libdeflate_zlib_decompress.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        ]  # fmt: skip
    except (ImportError, OSError, AttributeError):
        return None
    return lib


_THREAD = threading.local()  # each thread's libdeflate decompressor and buffers


def thread_buffer(name: str, nbytes: int) -> np.ndarray:
    """This thread's buffer ``name`` (uint8), ``nbytes`` long, reused from call to call: for what is
    filled and dropped again and again (new memory is slow to touch, see the module docstring). The
    caller is done with the last contents when it asks again."""
    buf = getattr(_THREAD, name, None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        setattr(_THREAD, name, buf)
    return buf[:nbytes]


def inflate_into(data: bytes, out: np.ndarray) -> None:
    """Inflate the zlib stream ``data`` into ``out`` (contiguous uint8), which it must fill exactly
    (else ``ValueError``)."""
    lib = _libdeflate_c()
    if lib is None:
        out[:] = np.frombuffer(inflate(data, out.size), dtype=np.uint8)
        return
    decompressor = getattr(_THREAD, "decompressor", None)
    if decompressor is None:
        decompressor = _THREAD.decompressor = lib.libdeflate_alloc_decompressor()
        if not decompressor:
            raise MemoryError("libdeflate could not allocate a decompressor")
    got = ctypes.c_size_t(0)
    status = lib.libdeflate_zlib_decompress(
        decompressor, data, len(data), out.ctypes.data, out.size, ctypes.byref(got)
    )
    if status != 0:  # 1: bad data, 2: short output (with got=None), 3: more than out holds
        what = {1: "bad data", 3: f"more than {out.size} bytes"}.get(status, f"libdeflate status {status}")
        raise ValueError(f"does not inflate to {out.size} bytes: {what}")
    if got.value != out.size:
        raise ValueError(f"inflates to {got.value} bytes, expected {out.size}")


_SHUFFLE = h5py.h5z.FILTER_SHUFFLE
_DEFLATE = h5py.h5z.FILTER_DEFLATE


@kernel(nogil=True, cache=True, signatures=[("uint8[::1]", "int64", "uint8[::1]")])
def _unshuffle(raw, itemsize, out):
    """Inverse of HDF5's shuffle filter: byte b of element i sits at ``raw[b * n + i]``."""
    n = out.size // itemsize
    if itemsize == 4:  # compose whole little-endian words: sequential reads and writes
        words = out.view(np.uint32)
        for i in range(n):
            words[i] = (
                np.uint32(raw[i])
                | (np.uint32(raw[n + i]) << 8)
                | (np.uint32(raw[2 * n + i]) << 16)
                | (np.uint32(raw[3 * n + i]) << 24)
            )
        return
    for b in range(itemsize):
        base = b * n
        for i in range(n):
            out[i * itemsize + b] = raw[base + i]


def _filters(ds: h5py.Dataset) -> list[int]:
    dcpl = ds.id.get_create_plist()
    return [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]


def _bitshuffle_lz4(ds: h5py.Dataset) -> bool:
    """True for exactly one filter, bitshuffle with LZ4 compression (as Eiger detectors write)."""
    dcpl = ds.id.get_create_plist()
    if dcpl.get_nfilters() != 1:
        return False
    fid, _, values, _ = dcpl.get_filter(0)
    return fid == bitshuffle.BSHUF_FILTER and len(values) > 4 and values[4] == bitshuffle.BSHUF_LZ4


class ChunkReader:
    """Reads ``slices`` of one chunked dataset, decoding its chunks itself when the filters allow.

    Reads may span many chunks (the mask, whose chunks rarely match the data's); recently decoded
    chunks are kept (up to ``cache_bytes``) because neighbouring reads share the chunks on their edges.
    """

    def __init__(self, ds: h5py.Dataset, cache_bytes: int = 0):
        self.ds = ds
        self.chunks = ds.chunks
        self.filters = _filters(ds) if ds.chunks else []
        self.lz4 = (
            ds.chunks is not None and ds.dtype.kind in "iu" and _bitshuffle_lz4(ds) and bitshuffle.available()
        )
        self.fast = ds.chunks is not None and (
            (ds.dtype.kind in "iub" and self.filters in ([], [_DEFLATE], [_SHUFFLE, _DEFLATE])) or self.lz4
        )
        self.itemsize = ds.dtype.itemsize
        self.chunk_bytes = int(np.prod(self.chunks or (0,))) * self.itemsize
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._cache_limit = cache_bytes // max(self.chunk_bytes, 1)
        self._index: dict[tuple[int, ...], tuple[int, int, int]] | None = None

    def _list_chunks(self) -> dict[tuple[int, ...], tuple[int, int, int]]:
        """File address, size and filter mask of every written chunk, by origin; empty where they
        cannot be read directly (another file driver, a user block, an HDF5 without chunk_iter)."""
        fid = self.ds.file.id
        if self.ds.file.driver != "sec2" or fid.get_create_plist().get_userblock() != 0:
            return {}
        index = {}

        def note(c):
            index[c.chunk_offset] = (c.byte_offset, c.size, c.filter_mask)

        try:
            self.ds.id.chunk_iter(note)
            self._fd = fid.get_vfd_handle()
        except (AttributeError, TypeError, RuntimeError):
            return {}
        return index

    def _raw(self, origin: tuple[int, ...]) -> tuple[int, bytes] | None:
        """(filter mask, stored bytes) of the chunk at ``origin``; None for a chunk never written.

        The first call lists every chunk's file address in one pass (``chunk_iter``); chunks are then
        read with ``os.pread`` on HDF5's own file descriptor, which takes neither the GIL nor h5py's
        lock for long (masks have thousands of small chunks, where two h5py calls per chunk add up).
        """
        if self._index is None:
            self._index = self._list_chunks()
            self._indexed = bool(self._index)
        if self._indexed:
            entry = self._index.get(origin)
            if entry is None:
                return None
            address, size, filter_mask = entry
            data = os.pread(self._fd, size, address)
            if len(data) != size:
                raise self._corrupt(origin, f"the file ends {size - len(data)} bytes early (truncated file?)")
            return filter_mask, data
        if self.ds.id.get_chunk_info_by_coord(origin).byte_offset is None:
            return None
        return self.ds.id.read_direct_chunk(origin)

    def _result(self, out: np.ndarray | None) -> np.ndarray:
        """Where a chunk's final bytes go: ``out`` (its first chunk_bytes) or a new buffer."""
        return np.empty(self.chunk_bytes, dtype=np.uint8) if out is None else out[: self.chunk_bytes]

    def _corrupt(self, origin, detail: str) -> CorruptChunkError:
        where = "" if origin is None else f", chunk at {tuple(int(o) for o in origin)}"
        return CorruptChunkError(f"{self.ds.file.filename!r}, dataset {self.ds.name}{where}: {detail}")

    def _h5py(self, slices: tuple[slice, ...]) -> np.ndarray:
        """``ds[slices]`` through h5py; a chunk HDF5 cannot decode is named (found by reading the
        chunks of ``slices`` one by one, only after a failure)."""
        try:
            return self.ds[slices]
        except OSError as exc:
            failed = exc
        origin = None
        if self.chunks:
            bounds = [(s.start or 0, s.stop) for s in slices]
            grid = [range(a // c * c, b, c) for (a, b), c in zip(bounds, self.chunks, strict=True)]
            for o in itertools.product(*grid):
                one = tuple(
                    slice(max(a, x), min(b, x + c))
                    for (a, b), x, c in zip(bounds, o, self.chunks, strict=True)
                )
                try:
                    self.ds[one]
                except OSError:
                    origin = o
                    break
        raise self._corrupt(
            origin, f"HDF5 cannot decode it (corrupt or truncated file?): {failed}"
        ) from failed

    def read(self, slices: tuple[slice, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The array ``ds[slices]`` (slices with unit steps). ``out``: a buffer (uint8, at least
        ``chunk_bytes``) that a read within one chunk may decode into, so the result may be a view of
        it: a caller reading chunk after chunk passes the same one each time, once done with the last."""
        if not self.fast:
            return self._h5py(slices)
        bounds = [(s.start, s.stop) for s in slices]
        grid = [range(a // c * c, b, c) for (a, b), c in zip(bounds, self.chunks, strict=True)]
        if all(len(g) == 1 for g in grid):  # one chunk: return (a view of) it without copying
            chunk = self._chunk(tuple(g[0] for g in grid), out)
            if chunk is None:
                return self._h5py(slices)
            return chunk[tuple(slice(a - g[0], b - g[0]) for (a, b), g in zip(bounds, grid, strict=True))]
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.ds.dtype)
        for origin in itertools.product(*grid):
            # the part of this chunk inside the read, in file coordinates
            lo = [max(a, o) for (a, _), o in zip(bounds, origin, strict=True)]
            hi = [min(b, o + c) for (_, b), o, c in zip(bounds, origin, self.chunks, strict=True)]
            dst = tuple(slice(x0 - a, x1 - a) for x0, x1, (a, _) in zip(lo, hi, bounds, strict=True))
            chunk = self._chunk(origin)
            if chunk is None:
                out[dst] = self._h5py(tuple(slice(x0, x1) for x0, x1 in zip(lo, hi, strict=True)))
            else:
                src = tuple(slice(x0 - o, x1 - o) for x0, x1, o in zip(lo, hi, origin, strict=True))
                out[dst] = chunk[src]
        return out

    def _chunk(self, origin: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray | None:
        """The decoded chunk starting at ``origin`` (full chunk shape), or None if HDF5 must do it;
        decoded into ``out`` (see :meth:`read`; not for a reader that keeps chunks) if given."""
        if origin in self._cache:
            return self._cache[origin]
        raw = self._raw(origin)
        if raw is None:
            return None  # a chunk never written: HDF5 supplies the fill value
        filter_mask, data = raw
        if out is not None and (self._cache_limit or out.size < self.chunk_bytes):
            out = None
        # undo the filters in reverse order; bit i of filter_mask set = filter i was skipped
        steps = [
            f
            for i, f in reversed(list(enumerate(self.filters)))
            if not filter_mask & (1 << i) and not (f == _SHUFFLE and self.itemsize == 1)
        ]  # (shuffle is a no-op for one-byte elements such as masks)
        in_out = False  # the bytes are in out already
        for k, f in enumerate(steps):
            last = k == len(steps) - 1
            if f == bitshuffle.BSHUF_FILTER:
                try:
                    data = bitshuffle.decode_bitshuffle_lz4(data, self.chunk_bytes, self.itemsize)
                except ValueError as exc:
                    raise self._corrupt(origin, f"corrupt LZ4 data, {exc}") from exc
            elif f == _DEFLATE:
                # HDF5 stores edge chunks whole, so every chunk inflates to chunk_bytes; into this
                # thread's scratch when a filter follows, else into the result
                into = self._result(out) if last else thread_buffer("scratch", self.chunk_bytes)
                try:
                    inflate_into(data, into)
                except ValueError as exc:  # an OSError, as h5py's would be
                    raise self._corrupt(origin, f"corrupt compressed data, {exc}") from exc
                data, in_out = into, last and out is not None
            else:  # shuffle
                if len(data) != self.chunk_bytes:
                    break  # reported below
                into = self._result(out)
                _unshuffle(np.frombuffer(data, dtype=np.uint8), self.itemsize, into)
                data, in_out = into, last and out is not None
        if len(data) != self.chunk_bytes:
            raise self._corrupt(
                origin, f"decodes to {len(data)} bytes, expected {self.chunk_bytes} (corrupt file?)"
            )
        if out is not None and not in_out:  # no filter, or one that allocates its output
            self._result(out)[:] = np.frombuffer(data, dtype=np.uint8)
            data = self._result(out)
        chunk = np.frombuffer(data, dtype=self.ds.dtype).reshape(self.chunks)
        if self._cache_limit:
            if len(self._cache) >= self._cache_limit:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            self._cache[origin] = chunk
        return chunk
