"""``diffuse find-peaks``: pixels above a count threshold and the Gaussian peak model (mdx2.find_peaks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    IMAGES_HELP,
    ChunksOpt,
    ClusterOpt,
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


@app.command("find-peaks")
@user_errors
def find_peaks(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (Miller index grid).")],
    data: Annotated[
        Path,
        typer.Argument(help=IMAGES_HELP),
    ],
    count_threshold: Annotated[
        float,
        typer.Option("--count-threshold", help="Pixels with counts above this are peak pixels (required)."),
    ],
    sigma_cutoff: Annotated[
        float, typer.Option("--sigma-cutoff", help="Outlier rejection in the Gaussian peak fit (sigmas).")
    ] = 3.0,
    outfile: Annotated[Path, typer.Option(help="Peaks file to write (mdx2 layout).")] = Path("peaks.nxs"),
    chunks: ChunksOpt = None,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    overwrite: OverwriteOpt = False,
    log_file: LogFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Find pixels above a count threshold and fit the Gaussian peak model, as mdx2.find_peaks.

    Example: diffuse find-peaks geometry.nxs data.nxs --count-threshold 20 --outfile peaks.nxs

    Example (Eiger): diffuse find-peaks geometry.nxs x_master.h5 --count-threshold 20
    """
    from pipeline.api.find_peaks import find_peaks as run
    from pipeline.config import FindPeaksParams
    from pipeline.errors import ConfigError

    setup_logging(quiet)
    try:
        FindPeaksParams(count_threshold=count_threshold, sigma_cutoff=sigma_cutoff, chunks=chunks)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    table = run(
        geometry,
        data,
        count_threshold,
        sigma_cutoff=sigma_cutoff,
        outfile=outfile,
        chunks=chunks,
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers, memory_limit),
        log_file=log_file or Path(f"{outfile}.log"),
        quiet=quiet,
    )
    if not quiet:
        typer.echo(
            f"{table.size} peak pixels above {count_threshold:g}, {table.outlier_phi.size} outliers "
            f"(sigma cutoff {sigma_cutoff:g}); peak model r0 = {table.model.r0} -> {outfile}"
        )
