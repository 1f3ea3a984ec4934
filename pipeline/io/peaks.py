"""Peak files and peak masks in mdx2's layout (``mdx2.find_peaks`` / ``mdx2.mask_peaks``).

peaks.nxs, as ``saveobj(GP, "peak_model"); saveobj(P, "peaks"); saveobj(Outliers, "outliers")``::

    /entry/peak_model        attrs mdx2_module="mdx2.geometry", mdx2_class="GaussianPeak"
        r0 (3,) float64, sigma (3, 3) float64
    /entry/peaks             NXreflections, mdx2_module="mdx2.data", mdx2_class="Peaks"
        observed_phi, observed_px_x, observed_px_y   (n,) float64: phi, ix, iy of each pixel
    /entry/outliers          the same for the pixels rejected by the model fit
    /entry/find_peaks        (ours) the parameters, as attributes

mask.nxs: ``/entry/mask`` GridData (``signal`` bool (nphi, ny, nx), True = masked; ``axis0..2`` phi,
iy, ix), what ``mdx2.integrate --mask`` and ``diffuse integrate --mask`` read. The signal is written
chunk by chunk from already-compressed gzip chunks (``write_direct_chunk``), so the writer does no
compression work; every chunk is allocated.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_h5, check_output_path
from pipeline.io.inputs import check_finite
from pipeline.io.nexus import create_nxdata, open_nexus, read_array, require, write_mdx2_root_attrs
from pipeline.kernels.peaks import GaussianPeak

__all__ = [
    "MASK_GZIP_LEVEL",
    "PeakTable",
    "compress_mask_chunk",
    "read_peaks",
    "write_mask",
    "write_peaks",
]

MASK_GZIP_LEVEL = 4  # what nexusformat (mdx2) uses


@dataclass(frozen=True, eq=False)
class PeakTable:
    """The content of peaks.nxs: model, pixels above threshold, and the outliers of the fit."""

    model: GaussianPeak
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    outlier_phi: np.ndarray
    outlier_iy: np.ndarray
    outlier_ix: np.ndarray

    @property
    def size(self) -> int:
        return int(self.phi.size)


def _write_peaks_group(entry: h5py.Group, name: str, phi, iy, ix) -> None:
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXreflections"
    g.attrs["mdx2_module"] = "mdx2.data"
    g.attrs["mdx2_class"] = "Peaks"
    g.create_dataset("observed_phi", data=np.asarray(phi, dtype=np.float64))
    g.create_dataset("observed_px_x", data=np.asarray(ix, dtype=np.float64))
    g.create_dataset("observed_px_y", data=np.asarray(iy, dtype=np.float64))


def write_peaks(path: str | os.PathLike, table: PeakTable, *, overwrite: bool = False, params=None) -> Path:
    """Write ``table`` to ``path`` in mdx2's peaks.nxs layout (atomically)."""
    path = check_output_path(path, overwrite)
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        g = entry.create_group("peak_model")
        g.attrs["mdx2_module"] = "mdx2.geometry"
        g.attrs["mdx2_class"] = "GaussianPeak"
        g.create_dataset("r0", data=np.asarray(table.model.r0, dtype=np.float64))
        g.create_dataset("sigma", data=np.asarray(table.model.sigma, dtype=np.float64))
        _write_peaks_group(entry, "peaks", table.phi, table.iy, table.ix)
        _write_peaks_group(entry, "outliers", table.outlier_phi, table.outlier_iy, table.outlier_ix)
        if params is not None:
            p = entry.create_group("find_peaks")
            p.attrs["NX_class"] = "NXcollection"
            for key, value in params.items():
                p.attrs[key] = value
    return path


def _read_peaks_group(f, path, name: str):
    g = require(f, f"/entry/{name}", "peaks written by mdx2.find_peaks or diffuse find-peaks")
    cols = []
    for key in ("observed_phi", "observed_px_y", "observed_px_x"):
        a = np.asarray(read_array(g, key), dtype=np.float64)
        if a.ndim != 1:
            raise InputError(f"{str(path)!r}: /entry/{name}/{key} has shape {a.shape}, expected (n,)")
        check_finite(a, path, f"/entry/{name}/{key}", what=key)
        cols.append(a)
    if len({c.size for c in cols}) != 1:
        raise InputError(
            f"{str(path)!r}: /entry/{name} columns have different lengths {[c.size for c in cols]}"
        )
    return cols


def read_peaks(path: str | os.PathLike) -> PeakTable:
    """Read peaks.nxs (``/entry/peak_model`` and ``/entry/peaks``; ``/entry/outliers`` if present)."""
    with open_nexus(path, "peaks file") as f:
        g = require(f, "/entry/peak_model", "peak model written by mdx2.find_peaks or diffuse find-peaks")
        r0 = np.asarray(read_array(g, "r0"), dtype=np.float64)
        sigma = np.asarray(read_array(g, "sigma"), dtype=np.float64)
        if r0.shape != (3,) or sigma.shape != (3, 3):
            raise InputError(
                f"{str(path)!r}: /entry/peak_model has r0 of shape {r0.shape} and sigma of shape "
                f"{sigma.shape}, expected (3,) and (3, 3)"
            )
        check_finite(r0, path, "/entry/peak_model/r0", what="peak centre")
        check_finite(sigma, path, "/entry/peak_model/sigma", what="peak width")
        if abs(np.linalg.det(sigma)) == 0:
            raise InputError(f"{str(path)!r}: /entry/peak_model/sigma is singular (a flat peak model)")
        phi, iy, ix = _read_peaks_group(f, path, "peaks")
        if "outliers" in f["/entry"]:
            ophi, oiy, oix = _read_peaks_group(f, path, "outliers")
        else:
            ophi = oiy = oix = np.zeros(0)
    return PeakTable(GaussianPeak(r0, sigma), phi, iy, ix, ophi, oiy, oix)


def compress_mask_chunk(block: np.ndarray) -> bytes:
    """One chunk of the mask dataset as the bytes HDF5's gzip filter stores."""
    return zlib.compress(np.ascontiguousarray(block, dtype=bool).tobytes(), MASK_GZIP_LEVEL)


def write_mask(
    path: str | os.PathLike,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunks: tuple[int, int, int],
    parts,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the mask from ``parts``, an iterable of (chunk offset (f, y, x), gzip bytes) covering every
    chunk of a (nphi, ny, nx) grid with chunk shape ``chunks`` (edge chunks padded to full size)."""
    path = check_output_path(path, overwrite)
    shape = tuple(len(a) for a in axes)
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        g = create_nxdata(entry, "mask", axes=["axis0", "axis1", "axis2"])
        for i, axis in enumerate(axes):
            g.create_dataset(f"axis{i}", data=np.asarray(axis, dtype=np.float64))
        ds = g.create_dataset(
            "signal",
            shape=shape,
            dtype=bool,
            chunks=tuple(chunks),
            compression="gzip",
            compression_opts=MASK_GZIP_LEVEL,
            fillvalue=False,
        )
        for offset, data in parts:
            ds.id.write_direct_chunk(tuple(int(o) for o in offset), data)
    return path
