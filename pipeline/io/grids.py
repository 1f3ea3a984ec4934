"""Maps on a (h, k, l) grid in mdx2's layout, written one block of H planes at a time.

mdx2.map saves a ``GridData`` with nexusformat: ``/entry/<signal>`` is an NXdata group
(``mdx2_module = mdx2.geometry``, ``mdx2_class = GridData``, ``axes = [h, k, l]``, ``signal =
"signal"``) holding the float64 axes ``h``, ``k``, ``l`` and the 3-D array ``signal``; nexusformat
compresses arrays of more than 10,000 values with gzip. ``mdx2.io.loadobj(path, signal)`` loads what
:class:`MapWriter` writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.io.atomic import (
    as_disk_full,
    close_h5_discarding,
    close_h5_keeping,
    discard,
    publish,
    temp_sibling,
)
from pipeline.io.nexus import create_nxdata, decode_str, open_nexus, require, write_mdx2_root_attrs

__all__ = ["MapData", "MapWriter", "read_map"]

_COMPRESS_ABOVE = 10_000  # nexusformat's NX_CONFIG["maxsize"]
AXES = ("h", "k", "l")


def _chunks(shape: tuple[int, int, int], planes: int) -> tuple[int, int, int]:
    """Chunks of at most ``planes`` H planes and about 256 K values (1 MB of float32)."""
    nh, nk, nl = shape
    cl = min(nl, 256)
    ck = max(1, min(nk, 262_144 // (cl * max(1, min(planes, nh)))))
    ch = max(1, min(nh, planes, 262_144 // (cl * ck)))
    return ch, ck, cl


class MapWriter:
    """A new map file, written through a temporary sibling renamed into place by :meth:`commit`."""

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        axes: tuple[np.ndarray, np.ndarray, np.ndarray],
        dtype,
        planes_per_block: int = 1,
        compression_level: int = 1,
    ):
        self.path = Path(path)
        self.tmp = temp_sibling(self.path)
        self.shape = tuple(int(a.size) for a in axes)
        self._committed = False
        self._file = h5py.File(self.tmp, "w")
        try:
            entry = write_mdx2_root_attrs(self._file)
            group = create_nxdata(entry, name, axes=AXES)
            for axis_name, values in zip(AXES, axes, strict=True):
                group.create_dataset(axis_name, data=np.asarray(values, dtype=np.float64))
            size = int(np.prod(self.shape))
            options = {}
            if size > _COMPRESS_ABOVE:
                options = {
                    "chunks": _chunks(self.shape, planes_per_block),
                    "compression": "gzip",
                    "compression_opts": compression_level,
                }
            self.dataset = group.create_dataset(
                "signal", shape=self.shape, dtype=np.dtype(dtype), fillvalue=np.nan, **options
            )
        except BaseException as exc:
            self.close()
            discard(self.tmp)
            raise (as_disk_full(exc, self.path) or exc) from exc

    def write(self, h0: int, block: np.ndarray) -> None:
        """Values of H planes ``h0 : h0 + len(block)``; a full disk raises DiskFullError naming the map."""
        try:
            self.dataset[h0 : h0 + block.shape[0]] = block
        except Exception as exc:
            raise (as_disk_full(exc, self.path) or exc) from exc

    def close(self) -> None:
        """Close without keeping the file (safe on a full disk: see close_h5_discarding)."""
        close_h5_discarding(self._file)
        self._file = None

    def finish(self) -> Path:
        """Close the complete file, still under its temporary name (returned), e.g. to draw from it."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                close_h5_keeping(file, self.path)
            except BaseException:
                discard(self.tmp)
                raise
        return self.tmp

    def commit(self) -> Path:
        self.finish()
        self._committed = True
        return publish(self.tmp, self.path)

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.close()
            discard(self.tmp)


@dataclass
class MapData:
    """A map as read back: its name (the signal column), axes and values."""

    name: str
    axes: dict[str, np.ndarray]
    values: np.ndarray


def read_map(path: str | os.PathLike, name: str | None = None) -> MapData:
    """Read a map written by mdx2.map or :class:`MapWriter` (``name``: the NXdata group; default: the
    only GridData group under /entry)."""
    with open_nexus(path, "map file") as f:
        entry = require(f, "/entry", "map written by mdx2.map")
        if name is None:
            grids = [k for k, g in entry.items() if decode_str(g.attrs.get("mdx2_class", "")) == "GridData"]
            if len(grids) != 1:
                raise InputError(f"{str(path)!r}: expected one GridData group in /entry, found {grids}")
            name = grids[0]
        group = require(entry, name, "map written by mdx2.map")
        signal = decode_str(group.attrs.get("signal", "signal"))
        names = [decode_str(a) for a in group.attrs.get("axes", AXES)]
        axes = {a: group[a][()] for a in names}
        return MapData(name, axes, group[signal][()])
