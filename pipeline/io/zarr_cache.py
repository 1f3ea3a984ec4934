"""A one-time zarr cache of an image stack for fast re-reads (``diffuse convert --to zarr``).

Users integrate the same data many times (several subdivisions). mdx2's files are gzip-compressed,
which costs about 10 ns per pixel to decode; blosc (zstd or LZ4 with bit-shuffle) decodes several
times faster and compresses better. The cache:

* keeps the source's storage chunk grid, because integrate's partial-observation split is per
  storage chunk: integrating the cache gives exactly the same table as integrating data.nxs;
* folds the masks in: masked pixels become -1, mdx2's own marker, so no mask is read again;
* carries the axes, exposure times, the source's chunk shape and what it was made from as
  attributes (JSON), so it describes itself.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.io.images import ImageStack, MaskStack, storage_chunk_slices

__all__ = ["ConvertResult", "convert_to_zarr", "open_zarr_stack", "read_zarr_chunk"]

log = logging.getLogger(__name__)
FORMAT = "diffuse-pipeline image cache 1"


@dataclass
class ConvertResult:
    path: str
    chunks: int
    bytes_in: int
    bytes_out: int
    seconds: float


def _codec(cname: str, level: int):
    from zarr.codecs import BloscCodec, BloscShuffle

    if cname not in ("zstd", "lz4", "lz4hc", "blosclz", "zlib"):
        raise ConfigError(f"codec must be one of zstd, lz4, lz4hc, blosclz, zlib; got {cname!r}")
    if not 0 <= level <= 9:
        raise ConfigError(f"compression level must be from 0 to 9, got {level!r}")
    return BloscCodec(cname=cname, clevel=level, shuffle=BloscShuffle.bitshuffle)


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
    exposure = np.asarray(meta["exposure_times"], dtype=np.float64)
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


def read_zarr_chunk(arr, slices) -> np.ndarray:
    """``arr[slices]``; a read of exactly one chunk decodes the chunk object directly (fast path)."""
    import numcodecs

    chunks = arr.chunks
    starts = [s.start for s in slices]
    one_chunk = all(
        a % c == 0 and s.stop - s.start <= c for a, s, c in zip(starts, slices, chunks, strict=True)
    )
    store_path = getattr(arr.store, "root", None)
    if not one_chunk or store_path is None or arr.metadata.zarr_format != 3:
        return arr[slices]
    key = "/".join(["c", *(str(a // c) for a, c in zip(starts, chunks, strict=True))])
    file = Path(store_path) / arr.path / key
    if not file.exists():  # never written: the fill value
        return arr[slices]
    data = numcodecs.blosc.decompress(file.read_bytes())
    chunk = np.frombuffer(data, dtype=arr.dtype).reshape(chunks)
    return chunk[tuple(slice(0, s.stop - s.start) for s in slices)]


def _convert_chunk(slices, stack: ImageStack, masks: MaskStack | None, out: str) -> int:
    import zarr

    with stack.open() as images:
        data = np.array(images.read(slices), dtype=np.int32)
    if masks is not None:
        data[masks.read(slices)] = -1
    zarr.open_array(out, mode="r+")[slices] = data
    return int(data.nbytes)


def convert_to_zarr(
    stack: ImageStack,
    masks: MaskStack | None,
    outfile: str | os.PathLike,
    client,
    codec: str = "zstd",
    level: int = 5,
    overwrite: bool = False,
    progress=None,
) -> ConvertResult:
    """Write the cache (see the module docstring) with one task per storage chunk on ``client``."""
    import zarr
    from distributed import as_completed

    from pipeline.io.nexus import atomic_path, check_output_path

    t0 = time.perf_counter()
    outfile = check_output_path(outfile, overwrite)
    compressor = _codec(codec, level)
    along = [storage_chunk_slices(stack.shape, stack.storage_chunks, axis) for axis in range(3)]
    all_chunks = [(a, b, c) for a in along[0] for b in along[1] for c in along[2]]
    with atomic_path(outfile, is_dir=True) as tmp:
        arr = zarr.create_array(
            tmp, shape=stack.shape, chunks=stack.storage_chunks, dtype="int32", compressors=compressor,
            fill_value=-1, overwrite=True,
        )  # fmt: skip
        arr.attrs["diffuse"] = {
            "format": FORMAT,
            "source": stack.path,
            "masks_folded_in": list(masks.paths) if masks else [],
            "phi": stack.phi.tolist(),
            "iy": stack.iy.tolist(),
            "ix": stack.ix.tolist(),
            "exposure_times": stack.exposure_times.tolist(),
            "codec": {"blosc": codec, "level": level, "shuffle": "bitshuffle"},
        }
        bar = progress("convert", len(all_chunks)) if progress else None
        futures = client.map(_convert_chunk, all_chunks, stack=stack, masks=masks, out=str(tmp), pure=False)
        bytes_in = 0
        for future in as_completed(futures):
            bytes_in += future.result()
            if bar:
                bar.advance()
    bytes_out = sum(f.stat().st_size for f in Path(outfile).rglob("*") if f.is_file())
    ratio = bytes_in / max(bytes_out, 1)
    log.info(
        "wrote %s: %d chunks, %.1f MB (%.1fx smaller than int32)",
        outfile,
        len(all_chunks),
        bytes_out / 1e6,
        ratio,
    )
    return ConvertResult(
        str(outfile), len(all_chunks), bytes_in, bytes_out, round(time.perf_counter() - t0, 3)
    )
