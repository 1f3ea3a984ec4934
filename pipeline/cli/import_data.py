"""``diffuse import-data``: detector images to mdx2's data.nxs (as mdx2.import_data), without dxtbx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    ChunksOpt,
    ClusterOpt,
    ExposureTimeOpt,
    LogFileOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    QuietOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


@app.command("import-data")
@user_errors
def import_data(
    images: Annotated[
        Path,
        typer.Argument(
            help="DIALS .expt naming the images (phi and exposure times from it), or the images: an "
            "NXmx/Eiger master file, or CBF files ('img_#####.cbf', a glob, or a list file)."
        ),
    ],
    chunks: ChunksOpt = None,
    datastore: Annotated[
        str, typer.Option(help="Directory for the per-slab source files, relative to the output's directory.")
    ] = "datastore",
    outfile: Annotated[Path, typer.Option(help="Output NeXus file (mdx2's data.nxs layout).")] = Path(
        "data.nxs"
    ),
    exposure_time: ExposureTimeOpt = None,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    overwrite: OverwriteOpt = False,
    log_file: LogFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Copy detector images into mdx2's data.nxs layout (as mdx2.import_data), for mdx2's own tools.

    Example: diffuse import-data refined.expt --chunks 10 550 1040 --outfile data.nxs
    """
    from pipeline.api.import_data import import_data as run

    setup_logging(quiet)
    result = run(
        str(images),
        chunks=chunks,
        datastore=datastore,
        outfile=outfile,
        exposure_time=exposure_time,
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers, memory_limit),
        log_file=log_file or Path(f"{outfile}.log"),
        quiet=quiet,
    )
    if not quiet:
        n, ny, nx = result.shape
        typer.echo(
            f"wrote {result.outfile}: {n} frames of {ny} x {nx} pixels in {len(result.sources)} datastore "
            f"files, chunks {result.chunks}, {result.pixels_masked:,} masked pixel values, "
            f"in {result.seconds['total']:.1f} s"
        )
