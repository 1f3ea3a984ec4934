"""``diffuse correct``: mdx2.correct on threads or the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    ClusterOpt,
    LogFileOpt,
    LorentzOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    P1Opt,
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
    """Apply background, solid-angle, efficiency, attenuation and polarization corrections (mdx2.correct).

    Example: diffuse correct geometry.nxs integrated.nxs --background bkg_binned.nxs --outfile corrected.nxs
    """
    from pipeline.api.correct import correct as run

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
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        log_file=log_file or Path(f"{outfile}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        where = ", ".join(str(p) for p in (result.outfile, result.parquet) if p)
        typer.echo(f"corrected {result.rows:,} rows in {result.seconds['total']:.1f} s -> {where}")
