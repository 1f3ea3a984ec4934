"""Write image stacks in mdx2 1.0.5's data.nxs layout, as ``mdx2.import_data`` writes them.

``data.nxs``: ``/entry/image_series`` (NXdata ImageSeries) whose ``data`` is a virtual dataset (int32,
fill value -1) over ``DATASTORE/<name>_<i>.nxs`` (paths relative to data.nxs), one file per phi slab
of the chunk depth, each an ImageSeries with a real ``data`` dataset (int32, gzip level 1 + shuffle,
chunks of the whole slab by the chunk's y and x) and its own phi and exposure times.
Used by ``diffuse import-data`` and the simulator.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.io.atomic import atomic_h5
from pipeline.io.nexus import create_nxdata, write_mdx2_root_attrs

__all__ = ["IMAGE_GROUP", "ImageSeriesWriter"]

IMAGE_GROUP = "image_series"
MASKED_VALUE = -1


def _nxdata(parent: h5py.Group, name: str, module: str, cls: str, signal: str, axes) -> h5py.Group:
    return create_nxdata(parent, name, axes=axes, signal=signal, mdx2_module=module, mdx2_class=cls)


def _write_axes(group: h5py.Group, phi, iy, ix, exposure_times) -> None:
    group.create_dataset("phi", data=np.asarray(phi, dtype=np.float64))
    group.create_dataset("iy", data=np.asarray(iy, dtype=np.float64))
    group.create_dataset("ix", data=np.asarray(ix, dtype=np.float64))
    group.create_dataset("exposure_times", data=np.asarray(exposure_times, dtype=np.float64))


class ImageSeriesWriter:
    """Write ``<name>.nxs`` and ``datastore/<name>_<i>.nxs`` one phi slab at a time.

    Call :meth:`write_slab` for every slice of :attr:`slabs`, then :meth:`finish`, which writes the
    virtual ``<name>.nxs`` once every source exists.
    """

    def __init__(self, outdir: Path, name: str, phi, exposure_times, shape, chunks, datastore="datastore"):
        self.outdir = Path(outdir)
        self.name = name
        self.filename = f"{name}.nxs"
        self.phi = np.asarray(phi, dtype=np.float64)
        self.exposure_times = np.asarray(exposure_times, dtype=np.float64)
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(min(int(c), n) for c, n in zip(chunks, self.shape, strict=True))
        self.iy = np.arange(self.shape[1], dtype=np.float64)
        self.ix = np.arange(self.shape[2], dtype=np.float64)
        nphi, depth = self.shape[0], self.chunks[0]
        self.slabs = [slice(start, min(start + depth, nphi)) for start in range(0, nphi, depth)]
        self.sources = [f"{datastore}/{name}_{i}.nxs" for i in range(len(self.slabs))]
        (self.outdir / datastore).mkdir(parents=True, exist_ok=True)

    def write_slab(self, index: int, counts: np.ndarray) -> None:
        """Write slab ``index`` (int32 counts of its frames) to its own file in the datastore."""
        frames = self.slabs[index]
        expected = (frames.stop - frames.start, *self.shape[1:])
        if counts.shape != expected or counts.dtype != np.int32:
            raise ValueError(f"slab {index}: expected int32 {expected}, got {counts.dtype} {counts.shape}")
        with atomic_h5(self.outdir / self.sources[index]) as f:
            entry = write_mdx2_root_attrs(f)
            group = _nxdata(entry, IMAGE_GROUP, "mdx2.data", "ImageSeries", "data", ["phi", "iy", "ix"])
            group.create_dataset(
                "data",
                data=counts,
                chunks=(expected[0], *self.chunks[1:]),
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
            _write_axes(group, self.phi[frames], self.iy, self.ix, self.exposure_times[frames])

    def finish(self, path: str | Path | None = None) -> Path:
        """Write the virtual dataset over all slabs (relative source paths) to ``path`` (default
        ``<outdir>/<name>.nxs``, which must be in ``outdir``); returns its path."""
        layout = h5py.VirtualLayout(shape=self.shape, dtype=np.int32)
        for frames, relative in zip(self.slabs, self.sources, strict=True):
            source_shape = (frames.stop - frames.start, *self.shape[1:])
            layout[frames, :, :] = h5py.VirtualSource(
                relative, f"/entry/{IMAGE_GROUP}/data", shape=source_shape
            )
        path = self.outdir / f"{self.name}.nxs" if path is None else Path(path)
        with atomic_h5(path) as f:
            entry = write_mdx2_root_attrs(f)
            group = _nxdata(entry, IMAGE_GROUP, "mdx2.data", "ImageSeries", "data", ["phi", "iy", "ix"])
            group.create_virtual_dataset("data", layout, fillvalue=MASKED_VALUE)
            _write_axes(group, self.phi, self.iy, self.ix, self.exposure_times)
        return path
