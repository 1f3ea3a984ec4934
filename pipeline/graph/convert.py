"""Write the zarr re-read cache of an image stack: one task per storage chunk (``diffuse convert``).

The cache layout is :mod:`pipeline.io.zarr_cache`'s (which also reads it).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.graph.run_tasks import run_tasks
from pipeline.io.atomic import atomic_path, check_output_path
from pipeline.io.images import ImageStack, MaskStack, storage_chunk_slices
from pipeline.io.zarr_cache import FORMAT

__all__ = ["ConvertResult", "convert_to_zarr"]

log = logging.getLogger(__name__)


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


def _checksum():
    """A CRC-32C of every stored chunk, after compression: a flipped byte in the cache is an error on
    read (:mod:`pipeline.io.zarr_cache`), never silently wrong counts (blosc checks no content)."""
    from zarr.codecs import Crc32cCodec

    return Crc32cCodec()


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

    t0 = time.perf_counter()
    outfile = check_output_path(outfile, overwrite, is_dir=True)
    compressor = _codec(codec, level)
    along = [storage_chunk_slices(stack.shape, stack.storage_chunks, axis) for axis in range(3)]
    all_chunks = [(a, b, c) for a in along[0] for b in along[1] for c in along[2]]
    with atomic_path(outfile, is_dir=True) as tmp:
        arr = zarr.create_array(
            tmp, shape=stack.shape, chunks=stack.storage_chunks, dtype="int32",
            compressors=[compressor, _checksum()],
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
            "codec": {"blosc": codec, "level": level, "shuffle": "bitshuffle", "checksum": "crc32c"},
        }
        bar = progress("convert", len(all_chunks)) if progress else None
        with run_tasks(
            client,
            _convert_chunk,
            all_chunks,
            stack=stack,
            masks=masks,
            out=str(tmp),
            name="convert",
            bar=bar,
        ) as results:
            bytes_in = sum(results)
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
