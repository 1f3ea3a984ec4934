"""Write image stacks and masks in the layouts mdx2 1.0.5 writes them (h5py only, no numerics).

* ``data.nxs``: ``/entry/image_series`` (NXdata ImageSeries) whose ``data`` is a virtual dataset over
  ``datastore/data_<i>.nxs`` (relative paths), one file per phi slab, each an ImageSeries with a real
  ``data`` dataset (int32, gzip level 1 + shuffle, one detector module per chunk), as
  ``mdx2.import_data`` writes it;
* ``mask.nxs``: ``/entry/mask`` (NXdata GridData, bool ``signal`` with axes axis0..axis2), as
  ``mdx2.mask_peaks`` writes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from pipeline.io.atomic import atomic_h5
from pipeline.io.image_writer import ImageSeriesWriter, _nxdata
from pipeline.io.nexus import write_mdx2_root_attrs

__all__ = ["EigerWriter", "ImageSeriesWriter", "mask_writer"]


class EigerWriter:
    """Write ``<name>_master.h5`` and ``<name>_data_<i>.h5`` as an Eiger detector does (NXmx).

    uint16 counts in chunks of one frame, bitshuffle-LZ4; -1 (gaps) stored as 65535 and flagged in
    ``pixel_mask``; counts above 65534 saturate; the master reaches the data files by external links
    (relative names) and records the omega scan, count_time and saturation_value. Same interface as
    :class:`ImageSeriesWriter`: :meth:`write_slab` per slab of :attr:`slabs`, then :meth:`finish`.
    """

    FRAMES_PER_FILE = 10

    def __init__(self, outdir: Path, name: str, phi0: float, dphi: float, exposure_time: float, shape, gaps):
        import hdf5plugin

        self._compression = hdf5plugin.Bitshuffle(cname="lz4")
        self.outdir = Path(outdir)
        self.name = name
        self.filename = f"{name}_master.h5"
        self.shape = tuple(int(n) for n in shape)
        self.phi0, self.dphi, self.exposure_time = float(phi0), float(dphi), float(exposure_time)
        self.gaps = gaps
        n = self.shape[0]
        self.slabs = [slice(s, min(s + self.FRAMES_PER_FILE, n)) for s in range(0, n, self.FRAMES_PER_FILE)]
        self.sources = [f"{name}_data_{i + 1:06d}.h5" for i in range(len(self.slabs))]
        self.outdir.mkdir(parents=True, exist_ok=True)

    def write_slab(self, index: int, counts: np.ndarray) -> None:
        frames = self.slabs[index]
        raw = np.where(counts < 0, 65535, np.minimum(counts, 65534)).astype(np.uint16)
        with atomic_h5(self.outdir / self.sources[index]) as f:
            ds = f.create_dataset(
                "/entry/data/data", data=raw, chunks=(1, *self.shape[1:]), **self._compression
            )
            ds.attrs["image_nr_low"] = np.int32(frames.start + 1)
            ds.attrs["image_nr_high"] = np.int32(frames.stop)

    def finish(self) -> Path:
        path = self.outdir / self.filename
        with atomic_h5(path) as f:
            data = f.create_group("/entry/data")
            data.attrs["NX_class"] = "NXdata"
            f["/entry"].attrs["NX_class"] = "NXentry"
            for i, source in enumerate(self.sources):
                data[f"data_{i + 1:06d}"] = h5py.ExternalLink(source, "/entry/data/data")
            det = f.create_group("/entry/instrument/detector")
            det["count_time"] = self.exposure_time
            det["frame_time"] = self.exposure_time
            det["saturation_value"] = np.int64(65534)
            det["bit_depth_image"] = np.int32(16)
            det.create_dataset(
                "detectorSpecific/pixel_mask", data=self.gaps.astype(np.uint32), compression="gzip"
            )
            gon = f.create_group("/entry/sample/goniometer")
            gon["omega"] = self.phi0 + self.dphi * np.arange(self.shape[0])
            gon["omega_increment_set"] = self.dphi
        return path


@contextlib.contextmanager
def mask_writer(path: str | os.PathLike, phi, shape, chunks) -> Iterator[h5py.Dataset]:
    """Yield the bool dataset ``/entry/mask/signal`` (True = exclude) of a new mask file to fill."""
    shape = tuple(int(n) for n in shape)
    chunks = tuple(min(int(c), n) for c, n in zip(chunks, shape, strict=True))
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        group = _nxdata(entry, "mask", "mdx2.geometry", "GridData", "signal", ["axis0", "axis1", "axis2"])
        group.create_dataset("axis0", data=np.asarray(phi, dtype=np.float64))
        group.create_dataset("axis1", data=np.arange(shape[1], dtype=np.float64))
        group.create_dataset("axis2", data=np.arange(shape[2], dtype=np.float64))
        yield group.create_dataset(
            "signal",
            shape=shape,
            dtype=bool,
            chunks=chunks,
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
