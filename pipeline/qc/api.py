"""The QC entry points: :func:`qc_table` (``diffuse qc``) and :func:`find_hot_pixels`
(``diffuse find-hot-pixels``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.cluster import connect
from pipeline.config import ClusterSpec
from pipeline.errors import InputError, PipelineError
from pipeline.io.atomic import check_output_path
from pipeline.io.images import open_image_stack, open_masks
from pipeline.io.tables import open_table
from pipeline.progress import progress_bar
from pipeline.qc import checks as qc_checks
from pipeline.qc import figures
from pipeline.qc.hotpixels import HotPixelParams
from pipeline.qc.hotscan import LOCAL_MAX_PIXELS, HotPixelScan, scan_images
from pipeline.qc.inputs import discover_inputs
from pipeline.qc.maskfile import write_mask_file
from pipeline.qc.report import write_html, write_json
from pipeline.qc.tablescan import QCParams, TableStats, scan_table, table_kind

__all__ = ["default_outdir", "find_hot_pixels", "mask_paths", "qc_table"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def mask_paths(mask) -> list[str]:
    if mask is None:
        return []
    if isinstance(mask, str | os.PathLike):
        return [os.fspath(mask)]
    return [os.fspath(m) for m in mask]


@contextlib.contextmanager
def _maybe_cluster(n_pixels: int, force: bool, client, cluster: ClusterSpec | str | None):
    """A client when one is given, a cluster is named or the stack is large; else None (in-process)."""
    spec = ClusterSpec.of(cluster)
    if client is None and spec.cluster is None and not force and n_pixels <= LOCAL_MAX_PIXELS:
        yield None
        return
    with connect(spec, client=client) as c:
        yield c


def find_hot_pixels(
    data: PathLike,
    mask: PathLike | Sequence[PathLike] | None = None,
    outfile: PathLike | None = "hot.nxs",
    *,
    overwrite: bool = False,
    include_mask: bool = False,
    params: HotPixelParams | None = None,
    cluster: ClusterSpec | str | None = None,
    client=None,
    quiet: bool = True,
) -> HotPixelScan:
    """Find pixels that are hot in most frames of ``data`` and write them as an mdx2 mask ``outfile``.

    Pixels True in ``mask`` (e.g. the Bragg-peak mask.nxs; without it, strong Bragg peaks that stay
    on a pixel through most of a window's frames look hot too) are ignored. ``include_mask`` writes
    the union of ``mask`` and the hot pixels (one file for ``mdx2.integrate --mask``). Stacks of up to
    :data:`~pipeline.qc.hotscan.LOCAL_MAX_PIXELS` pixels are scanned in this process unless a
    ``client`` or ``cluster`` is given. See :mod:`pipeline.qc.hotpixels` for the test.
    """
    params = params or HotPixelParams()
    stack = open_image_stack(data)
    masks = open_masks(mask_paths(mask), stack.shape)
    if outfile is not None:
        check_output_path(outfile, overwrite)
    with (
        _maybe_cluster(stack.n_pixels, False, client, cluster) as c,
        progress_bar(quiet) as bar,
    ):
        scan = scan_images(stack, masks, params, client=c, progress=bar)
    if outfile is not None:
        t = time.perf_counter()
        include = masks if include_mask else None
        write_mask_file(
            outfile,
            stack,
            scan.hot,
            overwrite=overwrite,
            include=include,
            hot_pixels=scan.pixels,
            params=params,
        )
        scan.seconds["write"] = time.perf_counter() - t
        log.info("wrote %s (%d hot pixels)", outfile, len(scan.pixels))
    return scan


def default_outdir(table: PathLike) -> Path:
    """``<table without suffix>_qc`` next to the table (``integrated.nxs`` -> ``integrated_qc/``)."""
    path = Path(table)
    return path.with_name(f"{path.stem if path.suffix in ('.nxs', '.h5', '.parquet') else path.name}_qc")


def qc_table(
    table: PathLike,
    outdir: PathLike | None = None,
    *,
    data: PathLike | None = None,
    mask: PathLike | Sequence[PathLike] | None = None,
    background: PathLike | None = None,
    exposure_time: float | None = None,
    scan_images_mode: bool | None = None,
    pixels: tuple[int, int] | None = None,
    image_scan: HotPixelScan | None = None,
    params: QCParams | None = None,
    hot_params: HotPixelParams | None = None,
    cluster: ClusterSpec | str | None = None,
    client=None,
    quiet: bool = True,
) -> dict:
    """Check an integrated or corrected table and write ``qc.json``, ``qc.html`` and PNGs to ``outdir``.

    ``data``/``mask``/``background`` default to what the table's run log (or mdx2's log) names;
    ``exposure_time``: the exposure time integration used instead of data.nxs's (--exposure-time).
    ``scan_images_mode``: scan the images for hot pixels and masked pixels (True), never (False), or
    when the stack is small (None); ``image_scan``: a scan already made (by :func:`scan_images`).
    ``pixels`` = (read, used) from an integration just run. Returns the summary written to ``qc.json``.
    """
    t0 = time.perf_counter()
    params = params or QCParams()
    source = open_table(table)
    kind = table_kind(source.columns)
    outdir = Path(outdir) if outdir is not None else default_outdir(table)
    outdir.mkdir(parents=True, exist_ok=True)
    found = discover_inputs(
        table, kind, data and os.fspath(data), mask_paths(mask), background and os.fspath(background)
    )
    bkg = _read_background(found.background)
    with progress_bar(quiet) as bar:
        stats = scan_table(source, params, progress=bar, background=bkg)
        exposure, exposure_error, stack = _data_exposure(found.data)
        scan, why = image_scan, ""
        if stack is not None and scan is None:
            wanted = scan_images_mode if scan_images_mode is not None else stack.n_pixels <= LOCAL_MAX_PIXELS
            if wanted:
                masks = open_masks(found.masks, stack.shape)
                with _maybe_cluster(stack.n_pixels, False, client, cluster) as c:
                    scan = scan_images(stack, masks, hot_params, client=c, progress=bar)
            else:
                why = (
                    f"not scanned: {stack.n_pixels:,} pixels (pass --scan-images to scan them on the cluster)"
                )
    if pixels is None and scan is None and found.pixels_read:
        pixels = (found.pixels_read, found.pixels_used)
    checks = _run_checks(stats, params, found, exposure, exposure_error, scan, why, pixels, exposure_time)
    summary = _summary(stats, params, found, checks, scan)
    t = time.perf_counter()
    pngs = _draw(stats, scan, outdir)
    summary["figures"] = {name: png.name for name, (_, png) in pngs.items()}
    summary["seconds"] = {**{k: round(v, 3) for k, v in stats.seconds.items()}, "figures": 0.0, "total": 0.0}
    if scan is not None:
        summary["seconds"]["image_scan"] = round(scan.seconds.get("scan", 0.0), 3)
    summary["seconds"]["figures"] = round(time.perf_counter() - t, 3)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    write_json(outdir / "qc.json", summary)
    write_html(outdir / "qc.html", summary, list(pngs.values()))
    log.info("QC %s: %s -> %s", summary["verdict"], table, outdir / "qc.html")
    return summary


def _read_background(path: str | None):
    if not path:
        return None
    from pipeline.io.geometry import read_background

    try:
        return read_background(path)
    except PipelineError as exc:
        log.warning("background %s not used: %s", path, exc)
        return None


def _data_exposure(data: str | None):
    """(exposure times or None, error message or None, ImageStack or None)."""
    if not data:
        return None, None, None
    try:
        stack = open_image_stack(data)
    except (InputError, OSError) as exc:
        return None, str(exc), None
    return stack.exposure_times, None, stack


def _run_checks(
    stats: TableStats, params, found, exposure, exposure_error, scan, why, pixels, override
) -> list:
    c = qc_checks
    data_zero = exposure is not None and bool(np.any(~(np.asarray(exposure) > 0))) and override is None
    out = [
        c.check_table_exposure(stats),
        c.check_data_exposure(exposure, found.data, exposure_error, override),
        c.check_nonfinite(stats, data_zero_exposure=data_zero),
        c.check_empty_rows(stats),
    ]
    if scan is not None:
        out.append(
            c.check_masked_fraction(scan.pixels_total, scan.pixels_used, scan.pixels_minus1, "image scan")
        )
    elif pixels is not None:
        out.append(c.check_masked_fraction(pixels[0], pixels[1], source="integration"))
    else:
        out.append(c.check_masked_fraction(None, None))
    out.append(c.check_hot_table(stats, params.hot_score))
    reason = why or ("no image data given (--data) or found in a run log" if not found.data else "")
    out.append(c.check_hot_images(scan, found.data, reason))
    return out


def _candidate_rows(stats: TableStats, scan: HotPixelScan | None) -> list[dict]:
    cand = stats.candidates
    if not cand:
        return []
    rows = []
    hot = np.array([[p["iy"], p["ix"]] for p in scan.pixels], dtype=float) if scan and scan.pixels else None
    for i in range(len(cand["score"])):
        row = {k: round(float(cand[k][i]), 4) for k in ("h", "k", "l", "phi", "iy", "ix")}
        row.update(
            value=float(cand["value"][i]),
            neighbourhood=float(cand["neighbourhood"][i]),
            score=round(float(cand["score"][i]), 1),
        )
        if hot is not None:
            d = np.hypot(hot[:, 0] - row["iy"], hot[:, 1] - row["ix"])
            j = int(np.argmin(d))
            row["nearest_hot_pixel"] = {
                "iy": int(hot[j, 0]),
                "ix": int(hot[j, 1]),
                "distance": round(float(d[j]), 1),
            }
        rows.append(row)
    return rows


def _summary(stats: TableStats, params: QCParams, found, checks, scan) -> dict:
    from pipeline._version import __version__

    red = np.asarray(stats.redundancy, dtype=np.int64)
    voxels = int(red[1:].sum()) if red.size > 1 else 0
    mean = float((np.arange(red.size) * red).sum() / voxels) if voxels else 0.0
    image = None
    if scan is not None:
        image = {k: v for k, v in scan.to_dict().items() if k != "hot_pixels"}
    return {
        "version": __version__,
        "table": stats.path,
        "kind": stats.kind,
        "rows": stats.n_rows,
        "ndiv": list(stats.ndiv),
        "value_name": stats.value_name,
        "verdict": qc_checks.overall(checks),
        "checks": [ch.to_dict() for ch in checks],
        "counts": stats.counts,
        "ranges": stats.ranges,
        "voxels": voxels,
        "mean_redundancy": round(mean, 3),
        "redundancy": stats.redundancy,
        "hot_pixels": {
            "hot_score": params.hot_score,
            "n_candidates": stats.n_candidates,
            "max_non_hot": stats.max_non_hot,
            "min_hot": stats.min_hot,
            "suggested_threshold": stats.suggested_threshold if stats.n_candidates else None,
            "threshold_separates": stats.threshold_separates,
            "candidates_below_max_non_hot": stats.candidates_below_max_non_hot,
            "table_candidates": _candidate_rows(stats, scan),
            "image_pixels": scan.pixels if scan is not None else None,
            "image_scan": image,
        },
        "inputs": found.to_dict(),
        "neighbourhoods": {k: stats.cells[k] for k in ("ny", "nx", "iy", "ix") if k in stats.cells},
        "histograms": stats.histograms,
    }


def _draw(stats: TableStats, scan, outdir: Path) -> dict[str, tuple[str, Path]]:
    out = {}
    plots = (
        ("value_histogram", figures.plot_value_histogram),
        ("detector_scatter", lambda s, p: figures.plot_detector_scatter(s, p, scan.pixels if scan else None)),
        ("phi_histogram", figures.plot_phi_histogram),
        (
            "rs_volume_histogram" if stats.kind == "corrected" else "pixels_histogram",
            figures.plot_size_histogram,
        ),
        ("redundancy", figures.plot_redundancy),
    )
    for name, plot in plots:
        path = outdir / f"{name}.png"
        out[name] = (plot(stats, path), path)
    return out
