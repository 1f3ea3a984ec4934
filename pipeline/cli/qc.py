"""``diffuse qc``, ``diffuse find-hot-pixels`` and ``diffuse run`` (integrate + correct + QC in one go)."""

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

ScanImagesOpt = Annotated[
    bool | None,
    typer.Option(
        "--scan-images/--no-scan-images",
        help="Scan the images for hot and masked pixels (default: when the stack has <= 1e8 pixels).",
    ),
]
_COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "bright_black"}


def _print_checks(summary: dict, label: str = "") -> None:
    verdict = summary["verdict"]
    typer.secho(f"QC {label}{verdict}: {summary['table']}", fg=_COLOURS[verdict], bold=True)
    for c in summary["checks"]:
        typer.echo(
            typer.style(f"  {c['verdict']:<4}", fg=_COLOURS[c["verdict"]]) + f" {c['name']}: {c['message']}"
        )


@app.command()
@user_errors
def qc(
    table: Annotated[
        Path, typer.Argument(help="Integrated or corrected table (NeXus file or parquet dataset).")
    ],
    outdir: Annotated[
        Path | None, typer.Option(help="Where to write qc.html, qc.json and the PNGs (default: TABLE_qc/).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="data.nxs the table was integrated from (default: from the run log).")
    ] = None,
    mask: MaskOpt = None,
    background: Annotated[
        Path | None,
        typer.Option(help="Binned background, to find where it is NaN (default: from the run log)."),
    ] = None,
    scan_images: ScanImagesOpt = None,
    hot_score: Annotated[
        float,
        typer.Option("--hot-score", min=1, help="Robust z-score above which a row is a hot-pixel candidate."),
    ] = 30.0,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with status 2 when a check FAILs.")] = False,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Check an integrated or corrected table: histograms, hot pixels, exposure, inf/NaN, masked pixels.

    Writes a self-contained qc.html, qc.json and PNG figures. Data, masks and background are taken
    from the table's run log (or mdx2's log) when not given.
    """
    from pipeline.qc import qc_table
    from pipeline.qc.tablescan import QCParams

    setup_logging(quiet)
    summary = qc_table(
        table,
        outdir,
        data=data,
        mask=mask or None,
        background=background,
        scan_images_mode=scan_images,
        params=QCParams(hot_score=hot_score),
        cluster=cluster,
        workers=workers,
        quiet=quiet,
    )
    if not quiet:
        _print_checks(summary)
        hot = summary["hot_pixels"]
        if hot["n_candidates"]:
            typer.echo(
                f"  suggested threshold: keep {summary['value_name']} < {hot['suggested_threshold']:.6g} "
                f"(largest other {hot['max_non_hot']:.6g}, smallest candidate {hot['min_hot']:.6g})"
            )
        typer.echo(f"report: {(outdir or _default(table)) / 'qc.html'}")
    if strict and summary["verdict"] == "FAIL":
        raise typer.Exit(2)


def _default(table: Path) -> Path:
    from pipeline.qc.api import default_outdir

    return default_outdir(table)


@app.command("find-hot-pixels")
@user_errors
def find_hot_pixels(
    data: Annotated[Path, typer.Argument(help="data.nxs image stack.")],
    mask: Annotated[
        list[Path] | None,
        typer.Option(
            "--mask",
            help="Pixels to ignore (e.g. the Bragg-peak mask.nxs; without it strong Bragg peaks that stay "
            "on a "
            "pixel for most frames look hot too). Repeatable.",
        ),
    ] = None,
    outfile: Annotated[Path, typer.Option(help="Mask file to write (mdx2 layout, True = hot).")] = Path(
        "hot.nxs"
    ),
    include_mask: Annotated[
        bool, typer.Option("--include-mask", help="Write the union of --mask and the hot pixels (for mdx2).")
    ] = False,
    z: Annotated[
        float, typer.Option(help="Robust z-score above the neighbourhood that makes a pixel hot.")
    ] = 10.0,
    ratio: Annotated[
        float, typer.Option(help="...and at least this many times the neighbours' counts.")
    ] = 3.0,
    quantile: Annotated[
        float, typer.Option(help="Per-pixel quantile over a window's frames (0.25: hot in >= 75% of them).")
    ] = 0.25,
    min_frames: Annotated[
        int, typer.Option("--min-frames", min=1, help="Frames per window (at least).")
    ] = 10,
    fraction: Annotated[
        float, typer.Option(help="Hot in at least this fraction of the windows that tested the pixel.")
    ] = 0.5,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find pixels that are hot in most frames and write them as a mask (use with integrate --mask)."""
    from pipeline.qc import find_hot_pixels as run
    from pipeline.qc.hotpixels import HotPixelParams

    setup_logging(quiet)
    try:
        params = HotPixelParams(z=z, ratio=ratio, quantile=quantile, min_frames=min_frames, fraction=fraction)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    scan = run(
        data,
        mask or None,
        outfile,
        overwrite=overwrite,
        include_mask=include_mask,
        params=params,
        cluster=cluster,
        workers=workers,
        memory_limit=memory_limit,
        quiet=quiet,
    )
    if not quiet:
        typer.echo(
            f"{len(scan.pixels)} hot pixels in {scan.shape[0]} frames ({scan.windows} windows, "
            f"{scan.seconds.get('scan', 0):.1f} s) -> {outfile}"
        )
        for p in scan.pixels[:50]:
            typer.echo(
                f"  iy={p['iy']:<5d} ix={p['ix']:<5d} {p['level_counts']:>10.1f} counts/frame "
                f"(neighbours {p['background_counts']:.1f}), "
                f"hot in {p['windows_hot']}/{p['windows_tested']} windows"
            )
        if len(scan.pixels) > 50:
            typer.echo(f"  ... and {len(scan.pixels) - 50} more (see /entry/hot_pixels in {outfile})")


@app.command()
@user_errors
def run(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs from import_geometry.")],
    data: Annotated[Path, typer.Argument(help="data.nxs image stack.")],
    outdir: Annotated[Path, typer.Option(help="Directory for the tables, QC reports and run.log.")],
    mask: MaskOpt = None,
    background: Annotated[Path | None, typer.Option(help="Binned background count rate for correct.")] = None,
    subdivide: SubdivideOpt = (1, 1, 1),
    max_spread: MaxSpreadOpt = 1.0,
    exposure_time: ExposureTimeOpt = None,
    lorentz: LorentzOpt = False,
    p1: P1Opt = False,
    scan_images: ScanImagesOpt = None,
    performance_report: PerformanceReportOpt = None,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    walltime: WalltimeOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Integrate, correct, export (NeXus + parquet) and QC in one command on one cluster (for batch jobs)."""
    from pipeline.workflow import run_pipeline

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
        lorentz=lorentz,
        p1=p1,
        overwrite=overwrite,
        scan_images=scan_images,
        performance_report_file=performance_report,
        cluster=cluster,
        quiet=quiet,
        workers=workers,
        memory_limit=memory_limit,
        partition=partition,
        account=account,
        walltime=walltime,
    )
    if not quiet:
        i, c = result.integrate, result.correct
        typer.echo(
            f"integrated {i.pixels_used:,} of {i.pixels_read:,} pixels into {i.rows:,} rows; corrected "
            f"{c.rows:,} rows in {result.seconds['total']:.1f} s -> {outdir}"
        )
        for kind, summary in result.qc.items():
            _print_checks(summary, f"({kind}) ")
        typer.echo(
            f"reports: {outdir / 'qc' / 'integrated' / 'qc.html'}, {outdir / 'qc' / 'corrected' / 'qc.html'}"
        )
        typer.echo(f"run log: {outdir / 'run.log'}")
