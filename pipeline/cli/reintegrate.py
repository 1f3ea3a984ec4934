"""``diffuse reintegrate``: mdx2.reintegrate on the cluster."""

from __future__ import annotations

from enum import StrEnum
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


class Output(StrEnum):
    counts = "counts"
    intensity = "intensity"


@app.command()
@user_errors
def reintegrate(
    geometry: Annotated[
        Path, typer.Argument(help="geometry.nxs (Miller-index grid, corrections, crystal, symmetry).")
    ],
    data: Annotated[
        Path,
        typer.Argument(
            help="data.nxs image stack, or detector images "
            "(NXmx/Eiger master, CBF template, or the DIALS .expt naming them)."
        ),
    ],
    mask: MaskOpt = None,
    subdivide: SubdivideOpt = None,
    scale: Annotated[
        Path | None, typer.Option(help="scales.nxs from mdx2.scale: its models are applied.")
    ] = None,
    background: Annotated[
        Path | None, typer.Option(help="Binned background count rate (mdx2.bin_image_series output).")
    ] = None,
    output: Annotated[
        Output, typer.Option(help="counts: sums per voxel; intensity: (counts - background) / scale.")
    ] = Output.counts,
    exposure_time: ExposureTimeOpt = None,
    chunks: ChunksOpt = None,
    outfile: Annotated[Path, typer.Option(help="NeXus output (mdx2's hkl_table layout).")] = Path(
        "reintegrated.nxs"
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
    """Integrate again on a finer grid, applying corrections, scales and background, summed per voxel of
    the asymmetric unit (same table as mdx2.reintegrate).

    Example: diffuse reintegrate geometry.nxs data.nxs --mask mask.nxs --subdivide 4 4 4 --scale scales.nxs
    --background bkg_data_binned.nxs --output intensity --outfile reintegrated.nxs
    """
    from pipeline.api.reintegrate import reintegrate as run

    setup_logging(quiet)
    result = run(
        geometry,
        data,
        mask=mask or None,
        subdivide=subdivide,
        scale=scale,
        background=background,
        output=output.value,
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
            f"reintegrated {result.pixels_used:,} of {result.pixels_read:,} pixels into {result.rows:,} "
            f"ASU voxels ({result.partial_rows:,} rows, {result.map_tasks} map tasks{skipped}, "
            f"{result.partitions} partitions) in {result.seconds['total']:.1f} s -> {where}"
        )
