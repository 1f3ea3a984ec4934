"""``diffuse run``: integrate, correct, export and QC in one command on one cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    IMAGES_HELP,
    AccountOpt,
    ChunksOpt,
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
    ScanImagesOpt,
    SubdivideOpt,
    WalltimeOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.cli.qc import print_checks
from pipeline.config import ClusterSpec


@app.command()
@user_errors
def run(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs from import_geometry.")],
    data: Annotated[
        Path,
        typer.Argument(help=IMAGES_HELP),
    ],
    outdir: Annotated[Path, typer.Option(help="Directory for the tables, QC reports and run.log.")],
    mask: MaskOpt = None,
    background: Annotated[Path | None, typer.Option(help="Binned background count rate for correct.")] = None,
    subdivide: SubdivideOpt = None,
    max_spread: MaxSpreadOpt = None,
    exposure_time: ExposureTimeOpt = None,
    chunks: ChunksOpt = None,
    lorentz: LorentzOpt = False,
    p1: P1Opt = False,
    scan_images: ScanImagesOpt = None,
    performance_report: PerformanceReportOpt = None,
    scale: Annotated[
        Path | None,
        typer.Option(help="A scales.nxs (mdx2.scale or diffuse scale) to merge and reintegrate with."),
    ] = None,
    fit_scales: Annotated[
        bool,
        typer.Option("--fit-scales", help="Fit scales.nxs with diffuse scale (mdx2.scale's default model)."),
    ] = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge", help="Merge the corrected table into merged.nxs (implied by the options below)."
        ),
    ] = False,
    reintegrate: Annotated[
        tuple[int, int, int] | None,
        typer.Option(
            metavar="H K L",
            help="Reintegrate at this (finer) subdivision with the scales into reintegrated.nxs (intensity).",
        ),
    ] = None,
    map_limits: Annotated[
        tuple[float, float, float, float, float, float] | None,
        typer.Option(
            metavar="HMIN HMAX KMIN KMAX LMIN LMAX",
            help="Map merged.nxs (or reintegrated.nxs) on this grid into map.nxs and map.png.",
        ),
    ] = None,
    map_signal: Annotated[str, typer.Option(help="Column of the table to map.")] = "intensity",
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    walltime: WalltimeOpt = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with an interrupted run in OUTDIR: skip the steps it finished with the same inputs "
            "and options; integrate, merge and reintegrate reuse their finished tasks.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Integrate, correct, export (NeXus + parquet) and QC in one command on one cluster (for batch jobs);
    then optionally scale, merge, reintegrate and map.

    Example: diffuse run geometry.nxs data.nxs --mask mask.nxs --subdivide 2 2 2 --outdir results

    Example (go on after the job was killed): add --resume to the same command.

    Example (the whole chain): diffuse run geometry.nxs data.nxs --mask mask.nxs --subdivide 2 2 2
    --background bkg_data_binned.nxs --fit-scales --reintegrate 4 4 4 --map-limits -10 10 -10 10 0 0
    --outdir results
    """
    from pipeline.api.run import run_pipeline

    setup_logging(quiet)
    result = run_pipeline(
        geometry,
        data,
        outdir,
        mask=mask or None,
        background=background,
        subdivide=subdivide,
        max_spread=max_spread,
        exposure_time=exposure_time,
        chunks=chunks,
        lorentz=lorentz,
        p1=p1,
        overwrite=overwrite,
        scan_images=scan_images,
        performance_report_file=performance_report,
        scale=scale,
        fit_scales=fit_scales,
        merge=merge,
        reintegrate=reintegrate,
        map_limits=map_limits,
        map_signal=map_signal,
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        resume=resume,
        quiet=quiet,
    )
    if not quiet:
        i, c = result.integrate, result.correct
        typer.echo(
            f"integrated {i.pixels_used:,} of {i.pixels_read:,} pixels into {i.rows:,} rows; corrected "
            f"{c.rows:,} rows in {result.seconds['total']:.1f} s -> {outdir}"
        )
        for kind, summary in result.qc.items():
            print_checks(summary, f"({kind}) ")
        typer.echo(
            f"reports: {outdir / 'qc' / 'integrated' / 'qc.html'}, {outdir / 'qc' / 'corrected' / 'qc.html'}"
        )
        if result.outputs:
            typer.echo(f"then: {', '.join(str(outdir / name) for name in result.outputs)}")
        if result.skipped:
            typer.echo(f"done before, skipped (--resume): {', '.join(result.skipped)}")
        typer.echo(f"run log: {outdir / 'run.log'}")
