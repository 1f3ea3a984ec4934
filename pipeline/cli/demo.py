"""``diffuse demo``: simulate a small dataset, integrate, correct, export and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    ClusterOpt,
    OverwriteOpt,
    Preset,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SubdivideOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


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
    """Simulate a small dataset, integrate, correct, export (NeXus + parquet) and plot it, in one go.

    Example: diffuse demo --outdir demo-output --preset tiny
    """
    from pipeline.simulation.demo import run_demo

    setup_logging(quiet)
    r = run_demo(
        outdir,
        preset=preset.value,
        seed=seed,
        subdivide=subdivide,
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers),
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
