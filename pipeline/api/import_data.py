"""``import-data``: detector images (NXmx/Eiger, CBF) to mdx2's data.nxs, without dxtbx.

What ``mdx2.import_data`` writes, for users who want mdx2's own tools on the data: a virtual dataset
``/entry/image_series/data`` (int32, fill value -1) over one file per phi slab in the datastore
(gzip level 1 + shuffle, chunks = ``--chunks``), with phi at the frame centres, iy and ix the pixel
indices, and the exposure time of every frame. Pixels dxtbx masks (the dtype's maximum,
``pixel_mask``, negative counts, counts at or above the saturation) are -1. One task per slab: each
reads its frames from the detector files and writes its datastore file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, ImportDataParams
from pipeline.errors import InputError
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["ImportResult", "import_data"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ImportResult:
    outfile: str
    sources: tuple[str, ...]
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    pixels_masked: int
    seconds: dict  # {'total': seconds}


def _write_slab(index: int, stack, writer) -> int:
    """Read slab ``index``'s frames (counts, -1 where masked) and write its datastore file."""
    frames = writer.slabs[index]
    with stack.open() as images:
        counts = images.read((frames, slice(0, stack.shape[1]), slice(0, stack.shape[2])))
    writer.write_slab(index, counts)
    return int((counts == -1).sum())


def import_data(
    images: PathLike,
    *,
    chunks: Sequence[int] | None = None,
    datastore: PathLike = "datastore",
    outfile: PathLike = "data.nxs",
    exposure_time: float | None = None,
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    client=None,
    quiet: bool = True,
) -> ImportResult:
    """Write ``outfile`` (mdx2's data.nxs) and ``<outfile's directory>/<datastore>/<stem>_<i>.nxs``
    from ``images``: an NXmx/Eiger master file, CBF files (template, glob or list file), or the DIALS
    ``.expt`` naming them (phi and exposure times then come from the ``.expt``, as in mdx2).

    ``chunks`` (frames, y, x; -1 = default for that axis) default to what mdx2.import_data chooses:
    frames from the rotation per frame, y and x the stride of the detector modules.
    """
    from pipeline.cluster import connect
    from pipeline.graph.plan import binning_chunks
    from pipeline.graph.run_tasks import run_tasks
    from pipeline.io.image_writer import ImageSeriesWriter
    from pipeline.io.images import open_image_stack

    params = ImportDataParams(
        images=images,
        chunks=chunks,
        datastore=datastore,
        outfile=outfile,
        exposure_time=exposure_time,
        overwrite=overwrite,
    )
    check_outputs(params, log_file)
    t0 = time.perf_counter()
    stack = open_image_stack(params.images, exposure_time=params.exposure_time)
    if stack.raw is None and stack.format != "hdf5":
        raise InputError(f"{params.images!r}: expected detector images or an mdx2 data.nxs")
    grid = binning_chunks(params.chunks, stack)
    out = Path(params.outfile)
    writer = ImageSeriesWriter(
        out.parent, out.stem, stack.phi, stack.exposure_times, stack.shape, grid, datastore=params.datastore
    )
    targets = [out.parent / s for s in writer.sources]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not params.overwrite:
        raise InputError(
            f"datastore file {existing[0]!r} exists (and {len(existing) - 1} more); pass --overwrite to "
            "replace them"
        )
    with (
        output_locks([params.outfile], what="import-data"),
        connect(cluster, client=client, threads_ok=True) as c,
        progress_bar(quiet) as progress,
        run_step("import-data", params, c, log_file) as step,
    ):
        log.info(
            "%d frames x %d x %d pixels -> %d datastore files, chunks %s", *stack.shape, len(targets), grid
        )
        masked = 0
        bar = progress("import", len(writer.slabs))
        slabs = list(range(len(writer.slabs)))
        with run_tasks(c, _write_slab, slabs, name="import", bar=bar, stack=stack, writer=writer) as results:
            for n in results:
                masked += n
        path = writer.finish(out)
        step.result = ImportResult(
            str(path),
            tuple(str(t) for t in targets),
            stack.shape,
            grid,
            masked,
            {"total": round(time.perf_counter() - t0, 3)},
        )
        return step.result
