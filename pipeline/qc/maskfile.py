"""Write a mask file in mdx2's layout (what ``mdx2.io.saveobj(GridData(...), name="mask")`` writes).

::

    /                      attrs mdx2_version, creator
    /entry                 NXentry
    /entry/mask            NXdata, attrs signal="signal", axes=[axis0, axis1, axis2],
                           mdx2_module="mdx2.geometry", mdx2_class="GridData"
    /entry/mask/signal     bool (nphi, ny, nx), True = exclude; chunked like the data, gzip
    /entry/mask/axis0..2   phi, iy, ix of the image stack
    /entry/hot_pixels      (ours) iy, ix, counts of each hot pixel and its neighbours; the parameters

The hot-pixel mask is the same on every frame. Chunks that hold no True value are written as one
pre-compressed all-False chunk (``write_direct_chunk``: no compression work per chunk), so a
full-size mask of a few hot pixels stays small and is written in seconds; every chunk is allocated,
so readers that decode raw chunks themselves work too. The file appears under its final name only
when complete.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path

import h5py
import numpy as np

from pipeline.io.atomic import atomic_h5, check_output_path
from pipeline.io.images import ImageStack, MaskStack, storage_chunk_slices
from pipeline.io.nexus import create_nxdata, write_mdx2_root_attrs

__all__ = ["write_mask_file"]

_MAX_CHUNK_BYTES = 8 * 2**20
_GZIP_LEVEL = 4


def _chunks(stack: ImageStack) -> tuple[int, int, int]:
    """The data's storage chunks, thinned along phi to at most 8 MB (uncompressed) per chunk."""
    f, y, x = stack.storage_chunks
    return (max(1, min(f, _MAX_CHUNK_BYTES // max(y * x, 1))), y, x)


def write_mask_file(
    path: str | os.PathLike,
    stack: ImageStack,
    hot: np.ndarray,
    *,
    overwrite: bool = False,
    include: MaskStack | None = None,
    hot_pixels: list[dict] | None = None,
    params=None,
) -> Path:
    """Write ``hot`` (bool (ny, nx), True = exclude on every frame) as an mdx2 mask for ``stack``.

    With ``include``, the file holds the union of those masks and the hot pixels, so it can be given
    alone to ``mdx2.integrate --mask`` (which takes one mask file).
    """
    path = check_output_path(path, overwrite)
    hot = np.asarray(hot, dtype=bool)
    if hot.shape != tuple(stack.shape[1:]):
        raise ValueError(f"hot-pixel image has shape {hot.shape}, expected {tuple(stack.shape[1:])}")
    chunks = _chunks(stack)
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        g = create_nxdata(entry, "mask", axes=["axis0", "axis1", "axis2"])
        for i, axis in enumerate((stack.phi, stack.iy, stack.ix)):
            g.create_dataset(f"axis{i}", data=np.asarray(axis, dtype=np.float64))
        ds = g.create_dataset(
            "signal",
            shape=stack.shape,
            dtype=bool,
            chunks=chunks,
            compression="gzip",
            compression_opts=_GZIP_LEVEL,
            fillvalue=False,
        )
        _fill(ds, stack.shape, chunks, hot, include)
        _write_hot_table(entry, hot_pixels or [], params)
    return path


def _fill(ds: h5py.Dataset, shape, chunks, hot: np.ndarray, include: MaskStack | None) -> None:
    """Write every chunk: the ones that hold a True value through h5py, the others as raw bytes."""
    empty = zlib.compress(np.zeros(chunks, dtype=bool).tobytes(), _GZIP_LEVEL)
    fs = storage_chunk_slices(shape, chunks, 0)
    ys = storage_chunk_slices(shape, chunks, 1)
    xs = storage_chunk_slices(shape, chunks, 2)
    for y in ys:
        for x in xs:
            tile = hot[y, x]
            for p in fs:
                block = np.broadcast_to(tile, (p.stop - p.start, *tile.shape))
                if include is not None:
                    block = block | include.read((p, y, x))
                if block.any():
                    ds[p, y, x] = block
                else:
                    ds.id.write_direct_chunk((p.start, y.start, x.start), empty)


def _write_hot_table(entry: h5py.Group, pixels: list[dict], params) -> None:
    g = entry.create_group("hot_pixels")
    g.attrs["NX_class"] = "NXcollection"
    g.attrs["description"] = "hot pixels found by diffuse find-hot-pixels (iy, ix: detector row, column)"
    for key, dtype in (
        ("iy", np.int32),
        ("ix", np.int32),
        ("windows_hot", np.int32),
        ("windows_tested", np.int32),
        ("level_counts", np.float64),
        ("background_counts", np.float64),
        ("score", np.float64),
    ):
        g.create_dataset(key, data=np.array([p[key] for p in pixels], dtype=dtype))
    if params is not None:
        for key, value in dataclasses.asdict(params).items():
            g.attrs[key] = value
