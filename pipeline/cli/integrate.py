"""``diffuse integrate`` and ``diffuse correct``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    ClusterOpt,
    ExposureTimeOpt,
    LorentzOpt,
    MaskOpt,
    MaxSpreadOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    P1Opt,
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

ExistingFile = Annotated[Path, typer.Argument(show_default=False)]
LogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        help="Run log: parameters that differ from defaults, versions, timings, peak memory "
        "(default: OUTFILE.log next to the output).",
    ),
]


@app.command()
@user_errors
def integrate(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (Miller-index grid) from import_geometry.")],
    data: Annotated[
        Path, typer.Argument(help="data.nxs image stack (or a zarr cache from 'diffuse convert').")
    ],
    mask: MaskOpt = None,
    subdivide: SubdivideOpt = (1, 1, 1),
    max_spread: MaxSpreadOpt = 1.0,
    exposure_time: ExposureTimeOpt = None,
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
    """Integrate counts on a fractional Miller-index grid (same table as mdx2.integrate)."""
    from pipeline.api import integrate as run

    setup_logging(quiet)
    result = run(
        geometry,
        data,
        mask=mask or None,
        subdivide=subdivide,
        max_spread=max_spread,
        exposure_time=exposure_time,
        outfile=outfile,
        parquet=parquet,
        overwrite=overwrite,
        workdir=workdir,
        resume=resume,
        keep_workdir=keep_workdir,
        cluster=cluster,
        workers=workers,
        memory_limit=memory_limit,
        partition=partition,
        account=account,
        walltime=walltime,
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


@app.command()
@user_errors
def correct(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (corrections, crystal, symmetry).")],
    integrated: Annotated[Path, typer.Argument(help="Integrated table: NeXus file or parquet dataset.")],
    background: Annotated[
        Path | None, typer.Option(help="Binned background count rate (mdx2.bin_image_series output).")
    ] = None,
    attenuation: Annotated[bool, typer.Option(help="Divide by the air-attenuation factor.")] = True,
    efficiency: Annotated[bool, typer.Option(help="Divide by the detector-efficiency factor.")] = True,
    polarization: Annotated[bool, typer.Option(help="Divide by the polarization factor.")] = True,
    lorentz: LorentzOpt = False,
    p1: P1Opt = False,
    outfile: Annotated[Path, typer.Option(help="NeXus output (mdx2's hkl_table layout).")] = Path(
        "corrected.nxs"
    ),
    parquet: Annotated[
        Path | None, typer.Option(help="Also write the table as a parquet dataset here.")
    ] = None,
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
    """Apply background, solid-angle, efficiency, attenuation and polarization corrections (mdx2.correct)."""
    from pipeline.api import correct as run

    setup_logging(quiet)
    result = run(
        geometry,
        integrated,
        background=background,
        attenuation=attenuation,
        efficiency=efficiency,
        polarization=polarization,
        lorentz=lorentz,
        p1=p1,
        outfile=outfile,
        parquet=parquet,
        overwrite=overwrite,
        cluster=cluster,
        workers=workers,
        memory_limit=memory_limit,
        partition=partition,
        account=account,
        walltime=walltime,
        log_file=log_file or Path(f"{outfile}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        where = ", ".join(str(p) for p in (result.outfile, result.parquet) if p)
        typer.echo(f"corrected {result.rows:,} rows in {result.seconds['total']:.1f} s -> {where}")
