"""A one-time zarr cache of an image stack for fast re-reads (``diffuse convert --to zarr``).

Users integrate the same data many times (several subdivisions). mdx2's files are gzip-compressed,
which costs about 10 ns per pixel to decode; blosc (zstd or LZ4 with bit-shuffle) decodes several
times faster and compresses better. The cache:

* keeps the source's storage chunk grid, because integrate's partial-observation split is per
  storage chunk: integrating the cache gives exactly the same table as integrating data.nxs;
* folds the masks in: masked pixels become -1, mdx2's own marker, so no mask is read again;
* stores a CRC-32C after every compressed chunk (zarr's ``crc32c`` codec), checked on every read: a
  damaged chunk is an error naming the chunk file, never silently wrong counts; caches without it
  (made before checksums were added) are refused;
* carries the axes, exposure times, the source's chunk shape and what it was made from as
  attributes (JSON), so it describes itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.chunks import CorruptChunkError
from pipeline.io.images import ImageStack
from pipeline.io.inputs import check_finite

__all__ = ["FORMAT", "open_zarr_stack", "read_zarr_chunk"]

log = logging.getLogger(__name__)
FORMAT = "diffuse-pipeline image cache 1"


def open_zarr_stack(path: str | os.PathLike, exposure_time: float | None = None) -> ImageStack:
    """Describe a cache written by :func:`convert_to_zarr` as an :class:`ImageStack`."""
    import zarr

    path = Path(path)
    try:
        arr = zarr.open_array(path, mode="r")
    except Exception as exc:  # zarr raises several types for damaged stores
        raise InputError(f"{str(path)!r} is not a readable zarr array: {exc}") from exc
    meta = arr.attrs.get("diffuse", {})
    if meta.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is a zarr array but not an image cache made by 'diffuse convert'")
    if not _has_checksum(arr):
        raise InputError(
            f"{str(path)!r}: the cache has no checksum per chunk (made by an older 'diffuse convert'), "
            "so damage would go unnoticed; convert the data again"
        )
    exposure = np.asarray(meta["exposure_times"], dtype=np.float64)
    for name in ("phi", "iy", "ix"):
        check_finite(np.asarray(meta[name], dtype=np.float64), path, f".zattrs diffuse/{name}")
    if exposure_time is not None:
        exposure = np.full(arr.shape[0], float(exposure_time))
    return ImageStack(
        path=str(path.resolve()),
        dataset="",
        shape=tuple(int(n) for n in arr.shape),
        storage_chunks=tuple(int(c) for c in arr.chunks),
        phi=np.asarray(meta["phi"], dtype=np.float64),
        iy=np.asarray(meta["iy"], dtype=np.float64),
        ix=np.asarray(meta["ix"], dtype=np.float64),
        exposure_times=exposure,
        format="zarr",
    )


def _has_checksum(arr) -> bool:
    codecs = getattr(arr.metadata, "codecs", ()) or ()
    return any(type(c).__name__ == "Crc32cCodec" for c in codecs)


def _checked(file: Path, raw: bytes) -> bytes:
    """The compressed chunk inside ``raw`` (the chunk file), after checking its CRC-32C."""
    import google_crc32c

    if len(raw) < 4 or np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
        raise CorruptChunkError(f"zarr cache chunk {str(file)!r}: checksum does not match (corrupt file)")
    return raw[:-4]


def read_zarr_chunk(arr, slices) -> np.ndarray:
    """``arr[slices]``; a read of exactly one chunk decodes the chunk object directly (fast path).
    A chunk whose checksum does not match, or that does not decode, raises :class:`CorruptChunkError`."""
    import numcodecs

    chunks = arr.chunks
    starts = [s.start for s in slices]
    one_chunk = all(
        a % c == 0 and s.stop - s.start <= c for a, s, c in zip(starts, slices, chunks, strict=True)
    )
    store_path = getattr(arr.store, "root", None)
    key = "/".join(["c", *(str(a // c) for a, c in zip(starts, chunks, strict=True))])
    file = Path(store_path or "") / arr.path / key
    if not one_chunk or store_path is None or arr.metadata.zarr_format != 3 or not file.exists():
        try:  # several chunks, or a chunk never written (the fill value)
            return arr[slices]
        except (ValueError, RuntimeError) as exc:  # zarr's checksum and codec errors
            rng = ", ".join(f"{s.start}:{s.stop}" for s in slices)
            raise CorruptChunkError(f"zarr cache {str(store_path)!r} [{rng}]: {exc} (corrupt file?)") from exc
    try:
        data = numcodecs.blosc.decompress(_checked(file, file.read_bytes()))
    except CorruptChunkError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise CorruptChunkError(f"zarr cache chunk {str(file)!r} does not decode: {exc}") from exc
    if len(data) != int(np.prod(chunks)) * arr.dtype.itemsize:
        raise CorruptChunkError(
            f"zarr cache chunk {str(file)!r} decodes to {len(data)} bytes (corrupt file?)"
        )
    chunk = np.frombuffer(data, dtype=arr.dtype).reshape(chunks)
    return chunk[tuple(slice(0, s.stop - s.start) for s in slices)]
