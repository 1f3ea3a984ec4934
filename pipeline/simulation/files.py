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

import h5py
import numpy as np

from pipeline.io.atomic import atomic_path
from pipeline.io.image_writer import ImageSeriesWriter, _nxdata
from pipeline.io.nexus import write_mdx2_root_attrs

__all__ = ["ImageSeriesWriter", "mask_writer"]


@contextlib.contextmanager
def mask_writer(path: str | os.PathLike, phi, shape, chunks) -> Iterator[h5py.Dataset]:
    """Yield the bool dataset ``/entry/mask/signal`` (True = exclude) of a new mask file to fill."""
    shape = tuple(int(n) for n in shape)
    chunks = tuple(min(int(c), n) for c, n in zip(chunks, shape, strict=True))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
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
