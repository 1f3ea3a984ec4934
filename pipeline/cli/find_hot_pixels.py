"""``diffuse find-hot-pixels``: pixels hot in most frames, as a mask file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    IMAGES_HELP,
    ClusterOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    QuietOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


@app.command("find-hot-pixels")
@user_errors
def find_hot_pixels(
    data: Annotated[
        Path,
        typer.Argument(help=IMAGES_HELP),
    ],
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
    """Find pixels that are hot in most frames and write them as a mask (use with integrate --mask).

    Example: diffuse find-hot-pixels data.nxs --mask mask.nxs --outfile hot.nxs
    """
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
        cluster=ClusterSpec(cluster, workers, memory_limit),
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
