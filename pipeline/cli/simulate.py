"""``diffuse simulate``: a synthetic dataset in mdx2's file formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    OverwriteOpt,
    Preset,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    app,
    setup_logging,
    user_errors,
)


@app.command()
@user_errors
def simulate(
    outdir: Annotated[Path, typer.Argument(help="Directory to write the dataset into (created if needed).")],
    preset: PresetOpt = Preset.demo,
    seed: SeedOpt = 0,
    frames: Annotated[
        int | None, typer.Option("--frames", min=1, help="Number of frames (overrides the preset).")
    ] = None,
    hot_pixels: Annotated[
        int | None, typer.Option("--hot-pixels", min=0, help="Unmasked hot pixels (overrides the preset).")
    ] = None,
    background: Annotated[
        bool | None,
        typer.Option(
            "--background/--no-background",
            help="Also write bkg_data.nxs and bkg_data_binned.nxs (default: the preset's; all but eiger16m).",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic rotation dataset in mdx2's formats (expt, geometry, data, mask, background).

    Example: diffuse simulate sim --preset tiny
    """
    from pipeline.simulation import simulate as run

    setup_logging(quiet)
    result = run(
        outdir,
        preset=preset.value,
        seed=seed,
        frames=frames,
        hot_pixels=hot_pixels,
        background=background,
        overwrite=overwrite,
    )
    if not quiet:
        nphi, ny, nx = result.shape
        typer.echo(
            f"simulated {nphi} frames x {ny} x {nx} pixels ({nphi * ny * nx / 1e6:.1f} M) "
            f"in {result.seconds['total']:.1f} s -> {outdir}/: {', '.join(result.files)}"
        )
