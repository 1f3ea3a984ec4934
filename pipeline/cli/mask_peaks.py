"""``diffuse mask-peaks``: the Bragg-peak mask from a peak model (mdx2.mask_peaks)."""

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


@app.command("mask-peaks")
@user_errors
def mask_peaks(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (Miller index grid, symmetry).")],
    data: Annotated[
        Path,
        typer.Argument(help=IMAGES_HELP),
    ],
    peaks: Annotated[Path, typer.Argument(help="peaks.nxs from find-peaks (or mdx2.find_peaks).")],
    sigma_cutoff: Annotated[
        float, typer.Option("--sigma-cutoff", help="Contour level of the peak model that is masked (sigmas).")
    ] = 3.0,
    bragg: Annotated[
        bool, typer.Option("--bragg", help="Keep the Bragg peaks and mask everything else instead.")
    ] = False,
    outfile: Annotated[Path, typer.Option(help="Mask file to write (mdx2 layout, True = masked).")] = Path(
        "mask.nxs"
    ),
    chunks: ChunksOpt = None,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    overwrite: OverwriteOpt = False,
    log_file: LogFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Mask the Bragg peaks (peak model contour + threshold pixels), as mdx2.mask_peaks.

    Example: diffuse mask-peaks geometry.nxs data.nxs peaks.nxs --sigma-cutoff 3 --outfile mask.nxs
    """
    from pipeline.api.mask_peaks import mask_peaks as run
    from pipeline.config import MaskPeaksParams
    from pipeline.errors import ConfigError

    setup_logging(quiet)
    try:
        MaskPeaksParams(sigma_cutoff=sigma_cutoff, bragg=bragg, chunks=chunks)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    result = run(
        geometry,
        data,
        peaks,
        sigma_cutoff=sigma_cutoff,
        bragg=bragg,
        outfile=outfile,
        chunks=chunks,
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers, memory_limit),
        log_file=log_file or Path(f"{outfile}.log"),
        quiet=quiet,
    )
    if not quiet:
        typer.echo(
            f"masked {result.masked} of {result.shape[0] * result.shape[1] * result.shape[2]} pixels "
            f"({100 * result.fraction:.2f}%) in {result.seconds:.1f} s -> {outfile}"
        )
