"""Bitshuffle-LZ4 chunks (HDF5 filter 32008, as Eiger detectors write them) decoded outside the GIL.

h5py decodes these chunks through the filter plugin of ``hdf5plugin`` while holding the GIL (and
HDF5's global lock), so threads of one process decode one chunk at a time. We read the raw chunk
bytes ourselves (:class:`~pipeline.io.chunks.ChunkReader`) and call ``bshuf_decompress_lz4`` of the
bitshuffle library that ``hdf5plugin`` ships (``libh5bshuf.so``) through :mod:`ctypes`, which
releases the GIL for the duration of the foreign call: the same C code, so the same bytes, with every
thread decoding at once.

The chunk layout is the one of bitshuffle's HDF5 filter (``bshuf_h5filter.c``): a 12-byte header,
the uncompressed size (uint64, big-endian) and the block size in bytes (uint32, big-endian), then
the LZ4-compressed bitshuffled blocks.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import numpy as np

__all__ = ["BSHUF_FILTER", "BSHUF_LZ4", "available", "decode_bitshuffle_lz4"]

BSHUF_FILTER = 32008  # HDF5 filter id of bitshuffle
BSHUF_LZ4 = 2  # cd_values[4]: 0 = no compression, 2 = LZ4, 3 = zstd


@functools.cache
def _library():
    """The bitshuffle library shipped inside hdf5plugin, with the decoder's signature; None if absent."""
    try:
        import hdf5plugin
    except ImportError:  # pragma: no cover - a dependency
        return None
    where = getattr(hdf5plugin, "PLUGIN_PATH", None) or os.path.join(
        os.path.dirname(hdf5plugin.__file__), "plugins"
    )
    for path in sorted(glob.glob(os.path.join(where, "libh5bshuf*"))):
        try:
            lib = ctypes.CDLL(path)  # CDLL (not PyDLL): calls release the GIL
            fn = lib.bshuf_decompress_lz4
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
        return fn
    return None


def available() -> bool:
    """True when the bitshuffle decoder could be loaded (else reads go through h5py, same values)."""
    return _library() is not None


def decode_bitshuffle_lz4(data: bytes, nbytes: int, itemsize: int) -> np.ndarray:
    """One chunk as stored by the bitshuffle filter with LZ4, decoded to ``nbytes`` bytes (uint8 array).

    Raises ``ValueError`` on a header that does not announce ``nbytes`` or on corrupt LZ4 data.
    """
    fn = _library()
    if fn is None:  # pragma: no cover - checked by the caller
        raise ValueError("the bitshuffle library of hdf5plugin is not available")
    if len(data) < 12:
        raise ValueError(f"chunk of {len(data)} bytes is shorter than the 12-byte bitshuffle header")
    total = int.from_bytes(data[:8], "big")
    block_bytes = int.from_bytes(data[8:12], "big")
    if total != nbytes:
        raise ValueError(f"bitshuffle header announces {total} bytes, expected {nbytes}")
    if block_bytes % itemsize:
        raise ValueError(
            f"bitshuffle block of {block_bytes} bytes is not a whole number of {itemsize}-byte items"
        )
    out = np.empty(nbytes, dtype=np.uint8)
    src = np.frombuffer(data, dtype=np.uint8)  # no copy; ``data`` stays alive during the call
    used = fn(
        src.ctypes.data + 12,
        out.ctypes.data,
        nbytes // itemsize,
        itemsize,
        block_bytes // itemsize,
    )
    if used < 0:
        raise ValueError(f"bitshuffle-LZ4 decoder failed (error {used}): corrupt chunk")
    if used + 12 != len(data):
        raise ValueError(f"bitshuffle-LZ4 data of {len(data) - 12} bytes decoded from only {used} bytes")
    return out
