"""``diffuse demo``: the whole pipeline on a simulated dataset, in one command and without data.

Stages (each timed):

1. ``simulate``: a synthetic rotation dataset in mdx2's formats in ``<outdir>/dataset``;
2. ``cluster``: start (or connect to) the Dask cluster;
3. ``integrate``: ``pipeline.integrate`` with the Bragg mask -> integrated.nxs + integrated.parquet;
4. ``correct``: ``pipeline.correct`` with the binned background -> corrected.nxs + corrected.parquet;
5. ``plots``: histograms of the corrected intensities and of the rotation angle of the observations.

The "pipeline" time is integrate + correct (both including their NeXus and parquet export) + plots.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import ClusterSpec
from pipeline.errors import InputError
from pipeline.io.atomic import save_figure_atomic, write_text_atomic

__all__ = ["DEMO_FILES", "DemoResult", "plot_intensity_histogram", "plot_phi_histogram", "run_demo"]

log = logging.getLogger(__name__)

#: What the demo writes into its output directory, besides the simulated ``dataset/``.
DEMO_FILES = (
    "integrated.nxs",
    "integrated.parquet",
    "corrected.nxs",
    "corrected.parquet",
    "intensity_histogram.png",
    "phi_histogram.png",
    "summary.json",
)


@dataclass(frozen=True)
class DemoResult:
    """Where everything went, table sizes, and seconds per stage (``pipeline`` = integrate+correct+plots)."""

    outdir: Path
    dataset: Path
    files: dict[str, Path]
    shape: tuple[int, int, int]
    rows: dict[str, int]
    workers: int
    seconds: dict[str, float] = field(default_factory=dict)


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    existing = [name for name in (*DEMO_FILES, "dataset") if (outdir / name).exists()]
    if existing and not overwrite:
        raise InputError(
            f"{str(outdir)!r} already holds {', '.join(existing)}; pass --overwrite to replace them"
        )
    outdir.mkdir(parents=True, exist_ok=True)


def run_demo(
    outdir: str | os.PathLike = "demo-output",
    *,
    preset: str = "demo",
    seed: int = 0,
    subdivide: Sequence[int] = (2, 2, 2),
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    client=None,
) -> DemoResult:
    """Simulate, integrate, correct, export and plot (see the module docstring); returns a summary.

    ``cluster`` and ``client`` as for :func:`pipeline.integrate` (default: a local cluster).
    """
    from pipeline.api.correct import correct
    from pipeline.api.integrate import integrate
    from pipeline.cluster import connect
    from pipeline.simulation import simulate

    outdir = Path(outdir)
    _check_outdir(outdir, overwrite)
    seconds: dict[str, float] = {}
    out = {name: outdir / name for name in DEMO_FILES}

    # 1. the dataset
    t = time.perf_counter()
    sim = simulate(outdir / "dataset", preset=preset, seed=seed, overwrite=overwrite)
    seconds["simulate"] = time.perf_counter() - t
    ds = sim.files

    # 2. the cluster
    t = time.perf_counter()
    from pipeline.io.images import reads_release_the_gil

    threads_ok = client is None and reads_release_the_gil(ds["data.nxs"], [ds["mask.nxs"]])
    with connect(cluster, client=client, threads_ok=threads_ok) as c:
        n_workers = sum(c.nthreads().values())
        seconds["cluster"] = time.perf_counter() - t

        # 3. integrate, 4. correct (each writes NeXus and parquet)
        t = time.perf_counter()
        integrated = integrate(
            ds["geometry.nxs"],
            ds["data.nxs"],
            mask=ds["mask.nxs"],
            subdivide=subdivide,
            outfile=out["integrated.nxs"],
            parquet=out["integrated.parquet"],
            overwrite=True,
            client=c,
        )
        seconds["integrate"] = time.perf_counter() - t
        t = time.perf_counter()
        corrected = correct(
            ds["geometry.nxs"],
            out["integrated.parquet"],
            background=ds.get("bkg_data_binned.nxs"),
            outfile=out["corrected.nxs"],
            parquet=out["corrected.parquet"],
            overwrite=True,
            client=c,
        )
        seconds["correct"] = time.perf_counter() - t

    # 5. plots
    t = time.perf_counter()
    _plot(out, sim, f"simulated '{preset}' dataset, subdivide {' '.join(str(n) for n in subdivide)}")
    seconds["plots"] = time.perf_counter() - t
    seconds["pipeline"] = seconds["integrate"] + seconds["correct"] + seconds["plots"]

    result = DemoResult(
        outdir=outdir,
        dataset=sim.outdir,
        files=out,
        shape=sim.shape,
        rows={"integrated": integrated.rows, "corrected": corrected.rows},
        workers=n_workers,
        seconds=seconds,
    )
    _write_summary(result, {"integrate": integrated.seconds, "correct": corrected.seconds})
    log.info("demo finished: pipeline %.1f s -> %s", seconds["pipeline"], outdir)
    return result


def _plot(out: dict[str, Path], sim, subtitle: str) -> None:
    from pipeline.io.tables import read_table

    table = read_table(out["corrected.parquet"], columns=["intensity", "phi"])
    plot_intensity_histogram(table["intensity"].to_numpy(), out["intensity_histogram.png"], subtitle)
    phi_edges = sim.info["phi0"] + sim.info["dphi"] * np.arange(sim.shape[0] + 1)
    plot_phi_histogram(table["phi"].to_numpy(), phi_edges, out["phi_histogram.png"], subtitle)


def _write_summary(result: DemoResult, stage_seconds: dict) -> None:
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary["files"] = {k: str(v) for k, v in result.files.items()}
    summary["stage_seconds"] = stage_seconds  # integrate's and correct's own breakdown (map, reduce, export)
    write_text_atomic(result.files["summary.json"], json.dumps(summary, indent=1) + "\n")


def _figure():
    """A figure drawn by the Agg backend directly (no pyplot: the caller's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_intensity_histogram(intensity: np.ndarray, path: str | os.PathLike, subtitle: str = "") -> Path:
    """Histogram of the positive corrected intensities on log-spaced bins, both axes logarithmic.

    Intensities span decades (diffuse voxels, Bragg residue, unmasked hot pixels), so both axes are
    logarithmic; values <= 0 (background subtraction of weak voxels) are counted in the legend.
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    finite = intensity[np.isfinite(intensity)]
    positive = finite[finite > 0]
    fig = _figure()
    ax = fig.add_subplot()
    if positive.size:
        lo, hi = positive.min(), positive.max()
        bins = (
            np.logspace(np.log10(lo), np.log10(hi) + 1e-9, 60) if hi > lo else np.array([lo * 0.9, lo * 1.1])
        )
        ax.hist(positive, bins=bins, color="tab:blue", label=f"{positive.size:,} rows > 0")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot(
        [],
        [],
        " ",
        label=f"{finite.size - positive.size:,} rows <= 0, {intensity.size - finite.size:,} not finite",
    )
    ax.legend(loc="upper left", frameon=False)
    ax.set_xlabel("corrected intensity (background-subtracted count rate / corrections), log scale")
    ax.set_ylabel("number of table rows per bin (log scale)")
    ax.set_title(f"Corrected intensities of {intensity.size:,} observations\n{subtitle}")
    save_figure_atomic(fig, path, dpi=100)
    return Path(path)


def plot_phi_histogram(
    phi: np.ndarray, edges: np.ndarray, path: str | os.PathLike, subtitle: str = ""
) -> Path:
    """Histogram of the rotation angle (mean phi) of the table rows, one bin per frame."""
    phi = np.asarray(phi, dtype=np.float64)
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(phi[np.isfinite(phi)], bins=edges, color="tab:green")
    ax.set_xlabel("rotation angle phi of the observation (degrees; one bin per frame)")
    ax.set_ylabel("number of table rows per bin")
    ax.set_title(f"Observations per rotation angle ({phi.size:,} rows)\n{subtitle}")
    save_figure_atomic(fig, path, dpi=100)
    return Path(path)
