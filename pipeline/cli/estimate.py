"""``diffuse estimate``: predict rows, memory, scratch and output size before a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import IMAGES_HELP, MaskOpt, MaxSpreadOpt, SubdivideOpt, app, setup_logging, user_errors


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@app.command()
@user_errors
def estimate(
    geometry: Annotated[Path, typer.Argument(help="geometry.nxs (Miller-index grid).")],
    data: Annotated[
        Path,
        typer.Argument(help=IMAGES_HELP),
    ],
    mask: MaskOpt = None,
    subdivide: SubdivideOpt = None,
    max_spread: MaxSpreadOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes planned.")] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option("--memory-limit", help="Memory per worker planned, e.g. 4GB (default RAM/workers)."),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Storage chunks to bin for the estimate.")] = 12,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Predict partial rows, output rows, peak memory, scratch disk and output size of an integration.

    Bins a sample of storage chunks with the real kernel (a few seconds) and extrapolates.

    Example: diffuse estimate geometry.nxs data.nxs --mask mask.nxs --subdivide 4 4 4 --workers 8
    """
    import psutil
    from dask.utils import parse_bytes

    from pipeline.cluster import default_workers
    from pipeline.config import IntegrateParams, get_default
    from pipeline.graph.estimate import estimate_integration
    from pipeline.io.images import reads_release_the_gil

    setup_logging(quiet=True)
    params = IntegrateParams(
        geometry, data, mask=mask or None, subdivide=subdivide, max_spread=max_spread, outfile="estimate.nxs"
    )
    n = workers or default_workers()
    memory = parse_bytes(memory_limit) if memory_limit else psutil.virtual_memory().total // n
    mode = get_default("cluster.processes")
    threads = (mode is False) or (mode in (None, "auto") and reads_release_the_gil(data, list(mask or [])))
    e = estimate_integration(params, n, memory, n_samples=samples, threads=threads)
    if as_json:
        typer.echo(json.dumps(e.as_dict()))
        return
    kind = "threads in one process" if threads else "worker processes"
    typer.echo(
        f"subdivide {' '.join(map(str, params.subdivide))}, {n} {kind} with {_size(memory)} each "
        f"(sampled {e.sampled_chunks} chunks in {e.seconds:.1f} s):\n"
        f"  partial rows        {e.partial_rows:>14,}\n"
        f"  output rows         {e.output_rows:>14,}\n"
        f"  peak memory/worker  {_size(e.peak_memory_per_worker):>14}\n"
        f"  peak memory, all    {_size(e.peak_memory_total):>14}  (every process of the run)\n"
        f"  scratch disk        {_size(e.scratch_bytes):>14}  (work directory)\n"
        f"  output NeXus        {_size(e.output_nexus_bytes):>14}\n"
        f"  output parquet      {_size(e.output_parquet_bytes):>14}\n"
        f"  map tasks           {e.map_tasks:>14}\n"
        f"  reduce partitions   {e.partitions:>14}"
    )
