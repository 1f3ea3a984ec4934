"""``diffuse bin-background``: background images binned as ``mdx2.bin_image_series`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    IMAGES_HELP,
    OverwriteOpt,
    QuietOpt,
    app,
    setup_logging,
    user_errors,
)


@app.command("bin-background")
@user_errors
def bin_background(
    data: Annotated[
        Path,
        typer.Argument(help="Background images: " + IMAGES_HELP),
    ],
    bins: Annotated[tuple[int, int, int], typer.Argument(help="Frames, y pixels and x pixels per bin.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="Mask file (True = exclude).")] = None,
    valid_range: Annotated[
        tuple[int, int] | None,
        typer.Option("--valid-range", help="Count only pixels with LOW <= counts <= HIGH (e.g. 0 200)."),
    ] = None,
    outfile: Annotated[Path, typer.Option(help="Output NeXus file (binned_image_series).")] = Path(
        "binned.nxs"
    ),
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Bin background images into a count-rate grid for 'correct --background' (mdx2.bin_image_series).

    Example: diffuse bin-background bkg_data.nxs 10 20 20 --outfile bkg_data_binned.nxs
    """
    from pipeline.api.bin_background import bin_image_series

    setup_logging(quiet)
    binned = bin_image_series(
        data, bins, outfile=outfile, mask=mask, valid_range=valid_range, overwrite=overwrite
    )
    if not quiet:
        typer.echo(
            f"binned {data} into {' x '.join(str(n) for n in binned.rate.shape)} bins "
            f"({int(binned.rate.size - (binned.rate == binned.rate).sum())} empty) -> {outfile}"
        )
