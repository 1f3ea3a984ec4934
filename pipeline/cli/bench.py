"""``diffuse bench sweep``: integrate at several subdivisions, recording time and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import MaskOpt, WorkersOpt, app, setup_logging, user_errors
from pipeline.errors import ConfigError

bench = typer.Typer(
    help="Benchmarks on your own data.\n\nExample: diffuse bench sweep geometry.nxs data.nxs",
    no_args_is_help=True,
)
app.add_typer(bench, name="bench", rich_help_panel="Check")


def parse_subdivisions(text: str) -> list[tuple[int, int, int]]:
    """'1,2,4' -> [(1,1,1), (2,2,2), (4,4,4)]; '3x2x5,4' -> [(3,2,5), (4,4,4)]."""
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"subdivisions must look like '1,2,4' or '3x2x5', got {text!r}") from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or min(values) < 1:
            raise ConfigError(f"each subdivision needs 1 or 3 positive integers, got {item!r}")
        out.append(tuple(values))
    return out


@bench.command()
@user_errors
def sweep(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs")],
    data: Annotated[Path, typer.Argument(help="data.nxs")],
    mask: MaskOpt = None,
    subdivisions: Annotated[
        str, typer.Option("--subdivisions", help="Comma-separated, e.g. 1,2,4,6,8,10 or 3x2x5.")
    ] = "1,2,4",
    outdir: Annotated[Path, typer.Option(help="Where the CSV, the PNG and scratch outputs go.")] = Path(
        "sweep"
    ),
    workers: WorkersOpt = 2,
    memory_limit: Annotated[str | None, typer.Option("--memory-limit", help="Memory per worker.")] = None,
    mdx2: Annotated[
        str | None, typer.Option("--mdx2", help="Path of mdx2.integrate, to run the same sweep with mdx2.")
    ] = None,
) -> None:
    """Integrate at each subdivision in its own process; write wall time, peak memory of the whole
    process tree, rows and output size to OUTDIR/sweep.csv and a plot to OUTDIR/sweep.png.

    Example: diffuse bench sweep geometry.nxs data.nxs --subdivisions 1,2,4 --outdir sweep
    """
    from pipeline.api.bench import plot_sweep, sweep_subdivide, write_csv

    setup_logging(False)
    subs = parse_subdivisions(subdivisions)
    rows = sweep_subdivide(
        str(geometry), str(data), [str(m) for m in mask or []], subs, outdir, workers or 2, memory_limit, mdx2
    )
    csv_path = write_csv(rows, outdir / "sweep.csv")
    png_path = plot_sweep(rows, outdir / "sweep.png", title=f"{data}")
    line = "{:8} {:>10} {:>8} {:>8} {:>12} {:>12} {:>8}"
    typer.echo(line.format("tool", "subdivide", "wall s", "peak GB", "rows", "partial", "MB out"))
    for r in rows:
        typer.echo(
            line.format(
                r.tool,
                r.subdivide,
                f"{r.wall_s:.1f}",
                f"{r.peak_tree_rss_mb / 1024:.2f}",
                "-" if r.rows is None else r.rows,
                "-" if r.partial_rows is None else r.partial_rows,
                f"{r.output_bytes / 1e6:.1f}",
            )
        )
    typer.echo(f"-> {csv_path}, {png_path}")
