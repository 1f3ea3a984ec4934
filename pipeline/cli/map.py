"""``diffuse map``: mdx2.map (a grid of one column of a merged table, symmetry expanded) on threads
or the cluster, plus a PNG of a slice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    ClusterOpt,
    LogFileOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    PartitionOpt,
    PerformanceReportOpt,
    QuietOpt,
    WalltimeOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


@app.command("map")
@user_errors
def map_command(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (its symmetry: Laue operators and ASU).")],
    merged: Annotated[Path, typer.Argument(help="Merged hkl table (mdx2.merge output, one row per voxel).")],
    limits: Annotated[
        tuple[float, float, float, float, float, float],
        typer.Option(
            help="hmin hmax kmin kmax lmin lmax of the grid, in reciprocal lattice units (steps of 1/ndiv); "
            "lmin = lmax gives a 2-D slice."
        ),
    ] = (0, 10, 0, 10, 0, 10),
    signal: Annotated[str, typer.Option(help="Column of the table to map.")] = "intensity",
    symmetry: Annotated[
        bool, typer.Option(help="Fill the grid by symmetry (--no-symmetry: only the table's own indices).")
    ] = True,
    outfile: Annotated[Path, typer.Option(help="NeXus output (mdx2's GridData layout).")] = Path("map.nxs"),
    png: Annotated[
        Path | None, typer.Option(help="PNG of a 2-D slice (default: beside --outfile, NAME.png).")
    ] = None,
    no_png: Annotated[bool, typer.Option("--no-png", help="Write no PNG.")] = False,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    walltime: WalltimeOpt = None,
    overwrite: OverwriteOpt = False,
    log_file: LogFileOpt = None,
    performance_report: PerformanceReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Map one column of a merged table onto an (h, k, l) grid, expanded by symmetry (mdx2.map).

    Points without data are NaN. A 3-D map's PNG shows the l plane nearest l = 0.

    Example: diffuse map geometry.nxs merged.nxs --limits -10 10 -10 10 0 0 --outfile slice_l0.nxs
    """
    from pipeline.api.map import make_map

    setup_logging(quiet)
    result = make_map(
        geometry,
        merged,
        limits=limits,
        signal=signal,
        symmetry=symmetry,
        outfile=outfile,
        png=False if no_png else (png if png is not None else True),
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        log_file=log_file or Path(f"{outfile}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        where = ", ".join(str(p) for p in (result.outfile, result.png) if p)
        shape = " x ".join(map(str, result.shape))
        typer.echo(
            f"mapped {result.filled:,} of {shape} points from {result.table_rows:,} rows "
            f"in {result.seconds['total']:.1f} s -> {where}"
        )
