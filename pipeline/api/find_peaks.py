"""``find_peaks()`` (``diffuse find-peaks``): pixels above a count threshold and mdx2's Gaussian peak
model, as ``mdx2.find_peaks`` (see docs/PEAKS.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import numpy as np

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, FindPeaksParams
from pipeline.errors import InputError
from pipeline.graph.plan import open_binned_stack
from pipeline.io.geometry import read_miller_grid
from pipeline.io.peaks import PeakTable, write_peaks
from pipeline.kernels.peaks import fit_gaussian, interp_points
from pipeline.progress import progress_bar

__all__ = ["find_peaks", "local_threads", "maybe_cluster"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def local_threads(cluster: ClusterSpec | str | None) -> int:
    """Threads for a run in this process: ``workers`` if given, else the cores (at most 4)."""
    spec = ClusterSpec.of(cluster)
    return int(spec.workers or min(4, os.cpu_count() or 1))


@contextlib.contextmanager
def maybe_cluster(client, cluster: ClusterSpec | str | None):
    """A client when one is given or a cluster is named (``--cluster``); else None: the tasks run on
    threads of this process (reads inflate outside the GIL, the kernels are numpy), which on one
    machine is faster than worker processes and ships no results between processes."""
    spec = ClusterSpec.of(cluster)
    if client is None and spec.cluster is None:
        yield None
        return
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with connect(spec, client=client) as c:
        yield c


def find_peaks(
    geometry: PathLike,
    data: PathLike,
    count_threshold: float,
    *,
    sigma_cutoff: float = 3.0,
    chunks: tuple[int, int, int] | None = None,
    outfile: PathLike | None = "peaks.nxs",
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    client=None,
    quiet: bool = True,
) -> PeakTable:
    """Find the pixels of ``data`` above ``count_threshold`` and fit mdx2's Gaussian peak model to
    their fractional Miller indices (one round of outlier rejection at ``sigma_cutoff``).

    Same result as ``mdx2.find_peaks GEOM DATA --count_threshold T --sigma_cutoff S``: the same peak
    pixels in the same order, the same outliers and model. Writes ``outfile`` (mdx2's peaks.nxs
    layout) unless it is None.

    ``data`` is a data.nxs or the detector's own files (NXmx/Eiger master, CBF, or the
    DIALS ``.expt`` naming them); mdx2 lists peak pixels chunk by chunk, so the order follows
    ``chunks`` (frames, y, x; default: the data's storage chunks, or for detector files the chunks
    mdx2.import_data would write). ``log_file``: write a run log there (:mod:`pipeline.api.runlog`).
    """
    params = FindPeaksParams(
        count_threshold=count_threshold,
        sigma_cutoff=sigma_cutoff,
        chunks=chunks,
        geometry=geometry,
        data=data,
        outfile=outfile,
        overwrite=overwrite,
    )
    check_outputs(params, log_file)
    with run_step("find_peaks", params, client, log_file) as step:
        table = _find_peaks(params, client, cluster, quiet)
        step.result = {  # for the run log (the table holds every peak pixel)
            "peak_pixels": int(table.size),
            "outliers": int(table.outlier_phi.size),
            "r0": [float(x) for x in table.model.r0],
        }
        return table


def _find_peaks(params: FindPeaksParams, client, cluster, quiet: bool) -> PeakTable:
    geometry, data, outfile, overwrite = params.geometry, params.data, params.outfile, params.overwrite
    grid = read_miller_grid(geometry)
    stack = open_binned_stack(data, params.chunks)
    t0 = time.perf_counter()
    from pipeline.graph.peaks import search_peaks

    with maybe_cluster(client, cluster) as c, progress_bar(quiet) as bar:
        idx = search_peaks(
            stack, params.count_threshold, client=c, threads=local_threads(cluster), progress=bar
        )
    log.info("%d peak pixels above %g in %.1f s", len(idx), params.count_threshold, time.perf_counter() - t0)
    if len(idx) == 0:
        raise InputError(
            f"no pixels above the count threshold {params.count_threshold:g} in {os.fspath(data)!r}; "
            "try a lower --count-threshold"
        )
    phi, iy, ix = stack.phi[idx[:, 0]], stack.iy[idx[:, 1]], stack.ix[idx[:, 2]]
    hkl = interp_points((grid.phi, grid.iy, grid.ix), grid.hkl, phi, iy, ix)
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]
    dh, dk, dl = h - np.round(h), k - np.round(k), l - np.round(l)
    model, is_outlier = _fit(dh, dk, dl, params, data)
    table = PeakTable(model, phi, iy, ix, phi[is_outlier], iy[is_outlier], ix[is_outlier])
    log.info("rejected %d outliers; peak model r0 %s", int(is_outlier.sum()), model.r0)
    if outfile is not None:
        write_peaks(
            outfile,
            table,
            overwrite=overwrite,
            params={"count_threshold": params.count_threshold, "sigma_cutoff": params.sigma_cutoff},
        )
    return table


def _fit(dh, dk, dl, params: FindPeaksParams, data):
    n = dh.size
    with np.errstate(all="ignore"):
        try:
            model, is_outlier = fit_gaussian(dh, dk, dl, params.sigma_cutoff)
        except np.linalg.LinAlgError:
            model = None
    if model is None or not np.all(np.isfinite(model.sigma)) or np.linalg.matrix_rank(model.sigma) < 3:
        raise InputError(
            f"{n} peak pixels above {params.count_threshold:g} in {os.fspath(data)!r} do not span three "
            "dimensions of fractional Miller index, so no Gaussian peak model can be fitted; "
            "try a lower --count-threshold"
        )
    return model, is_outlier
