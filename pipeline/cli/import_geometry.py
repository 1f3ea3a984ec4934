"""``diffuse import-geometry``: geometry.nxs from a DIALS experiment list, without dxtbx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import OverwriteOpt, QuietOpt, app, setup_logging, user_errors


@app.command("import-geometry")
@user_errors
def import_geometry(
    expt: Annotated[Path, typer.Argument(help="DIALS experiment list, e.g. refined.expt (single panel).")],
    sample_spacing: Annotated[
        tuple[float, float, float],
        typer.Option("--sample-spacing", help="Grid spacing along phi (degrees), y and x (pixels)."),
    ] = (1, 10, 10),
    outfile: Annotated[Path, typer.Option(help="Output NeXus file (mdx2's geometry layout).")] = Path(
        "geometry.nxs"
    ),
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compute the Miller-index grid, correction factors and symmetry (as mdx2.import_geometry).

    Example: diffuse import-geometry refined.expt --outfile geometry.nxs
    """
    from pipeline.api.import_geometry import import_geometry as run

    setup_logging(quiet)
    written = run(expt, outfile=outfile, sample_spacing=sample_spacing, overwrite=overwrite)
    if not quiet:
        typer.echo(f"wrote {written}")
