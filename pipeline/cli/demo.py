"""``diffuse simulate``, ``diffuse demo`` and ``diffuse bin-background``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    ClusterOpt,
    OverwriteOpt,
    QuietOpt,
    SubdivideOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.simulation.presets import PRESETS

Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)

PresetOpt = Annotated[
    Preset, typer.Option("--preset", help="Size of the dataset (see pipeline.simulation.presets).")
]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Random seed: the same seed gives the same counts.")
]


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
        bool,
        typer.Option("--background/--no-background", help="Also write bkg_data.nxs and bkg_data_binned.nxs."),
    ] = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic rotation dataset in mdx2's formats (expt, geometry, data, mask, background)."""
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


@app.command()
@user_errors
def demo(
    outdir: Annotated[
        Path, typer.Option("--outdir", help="Where to write the dataset, tables and plots.")
    ] = Path("demo-output"),
    preset: PresetOpt = Preset.demo,
    seed: SeedOpt = 0,
    subdivide: SubdivideOpt = (2, 2, 2),
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Simulate a small dataset, integrate, correct, export (NeXus + parquet) and plot it, in one go."""
    from pipeline.demo import run_demo

    setup_logging(quiet)
    r = run_demo(
        outdir,
        preset=preset.value,
        seed=seed,
        subdivide=subdivide,
        overwrite=overwrite,
        cluster=cluster,
        workers=workers,
    )
    if quiet:
        return
    s, f = r.seconds, r.files
    nphi, ny, nx = r.shape
    lines = [
        f"diffuse demo: '{preset.value}' dataset, {nphi} frames x {ny} x {nx} pixels "
        f"({nphi * ny * nx / 1e6:.1f} M)",
        f"  simulate   {s['simulate']:6.1f} s  -> {r.dataset}/",
        f"  cluster    {s['cluster']:6.1f} s  ({r.workers} tasks at a time)",
        f"  integrate  {s['integrate']:6.1f} s  {r.rows['integrated']:,} rows -> "
        f"{f['integrated.nxs']}, {f['integrated.parquet']}",
        f"  correct    {s['correct']:6.1f} s  {r.rows['corrected']:,} rows -> "
        f"{f['corrected.nxs']}, {f['corrected.parquet']}",
        f"  plots      {s['plots']:6.1f} s  -> {f['intensity_histogram.png']}, {f['phi_histogram.png']}",
        f"  pipeline   {s['pipeline']:6.1f} s  (integrate + correct + export + plots)",
        f"summary: {f['summary.json']}",
        "Load the result in Python:  pipeline.read_table('" + str(f["corrected.parquet"]) + "')",
    ]
    typer.echo("\n".join(lines))


@app.command("bin-background")
@user_errors
def bin_background(
    data: Annotated[
        Path, typer.Argument(help="Background image series (data.nxs layout, e.g. bkg_data.nxs).")
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
    """Bin background images into a count-rate grid for 'correct --background' (mdx2.bin_image_series)."""
    from pipeline.background import bin_image_series

    setup_logging(quiet)
    binned = bin_image_series(
        data, bins, outfile=outfile, mask=mask, valid_range=valid_range, overwrite=overwrite
    )
    if not quiet:
        typer.echo(
            f"binned {data} into {' x '.join(str(n) for n in binned.rate.shape)} bins "
            f"({int(binned.rate.size - (binned.rate == binned.rate).sum())} empty) -> {outfile}"
        )
