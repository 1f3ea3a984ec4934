"""``diffuse qc``: checks, figures and a report of an integrated or corrected table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    ClusterOpt,
    MaskOpt,
    QuietOpt,
    ScanImagesOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec

_COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "bright_black"}


def print_checks(summary: dict, label: str = "") -> None:
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
        Path | None,
        typer.Option(
            help="The images the table was integrated from (data.nxs or detector files; default: from "
            "the run log)."
        ),
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

    Example: diffuse qc corrected.nxs --outdir corrected_qc
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
        cluster=ClusterSpec(cluster, workers),
        quiet=quiet,
    )
    if not quiet:
        print_checks(summary)
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
