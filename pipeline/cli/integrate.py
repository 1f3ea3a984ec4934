"""``diffuse integrate``: mdx2.integrate on the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    ChunksOpt,
    ClusterOpt,
    ExposureTimeOpt,
    LogFileOpt,
    MaskOpt,
    MaxSpreadOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    PartitionOpt,
    PerformanceReportOpt,
    QuietOpt,
    SubdivideOpt,
    WalltimeOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


@app.command()
@user_errors
def integrate(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (Miller-index grid) from import_geometry.")],
    data: Annotated[
        Path,
        typer.Argument(
            help="data.nxs image stack, or the detector's files: "
            "an NXmx/Eiger master file, CBF files ('img_#####.cbf', a glob, a list file), or the DIALS "
            ".expt naming them (phi and exposure times then come from the .expt)."
        ),
    ],
    mask: MaskOpt = None,
    subdivide: SubdivideOpt = None,
    max_spread: MaxSpreadOpt = None,
    exposure_time: ExposureTimeOpt = None,
    chunks: ChunksOpt = None,
    outfile: Annotated[Path, typer.Option(help="NeXus output (mdx2's hkl_table layout).")] = Path(
        "integrated.nxs"
    ),
    parquet: Annotated[
        Path | None, typer.Option(help="Also write the table as a parquet dataset here.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Scratch directory for spilled rows (default: next to the output).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse finished map tasks of an interrupted run.")
    ] = False,
    keep_workdir: Annotated[
        bool, typer.Option("--keep-workdir", help="Do not delete the work directory.")
    ] = False,
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
    """Integrate counts on a fractional Miller-index grid (same table as mdx2.integrate).

    Example: diffuse integrate geometry.nxs data.nxs --mask mask.nxs --subdivide 2 2 2 --outfile out.nxs

    Example (Eiger): diffuse integrate geometry.nxs x_master.h5 --mask mask.nxs --chunks 10 550 1040
    """
    from pipeline.api.integrate import integrate as run

    setup_logging(quiet)
    result = run(
        geometry,
        data,
        mask=mask or None,
        subdivide=subdivide,
        max_spread=max_spread,
        exposure_time=exposure_time,
        chunks=chunks,
        outfile=outfile,
        parquet=parquet,
        overwrite=overwrite,
        workdir=workdir,
        resume=resume,
        keep_workdir=keep_workdir,
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        log_file=log_file or Path(f"{outfile}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        where = ", ".join(str(p) for p in (result.outfile, result.parquet) if p)
        skipped = (
            f" of which {result.map_tasks_skipped} were done before (--resume)"
            if result.map_tasks_skipped
            else ""
        )
        typer.echo(
            f"integrated {result.pixels_used:,} of {result.pixels_read:,} pixels into {result.rows:,} rows "
            f"({result.partial_rows:,} partial rows, {result.map_tasks} map tasks{skipped}, "
            f"{result.partitions} partitions) "
            f"in {result.seconds['total']:.1f} s -> {where}"
        )
