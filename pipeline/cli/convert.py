"""``diffuse convert``: a one-time fast-codec cache of an image stack."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ClusterOpt, OverwriteOpt, QuietOpt, WorkersOpt, app, setup_logging, user_errors


class CacheFormat(StrEnum):
    zarr = "zarr"


class Codec(StrEnum):
    zstd = "zstd"
    lz4 = "lz4"


@app.command()
@user_errors
def convert(
    data: Annotated[Path, typer.Argument(help="data.nxs image stack (plain or virtual dataset).")],
    outfile: Annotated[Path, typer.Argument(help="The cache to write, e.g. data.zarr.")],
    to: Annotated[CacheFormat, typer.Option("--to", help="Cache format.")] = CacheFormat.zarr,
    mask: Annotated[
        list[Path] | None,
        typer.Option("--mask", help="Mask file(s) to fold in: their pixels become -1 (repeat for several)."),
    ] = None,
    codec: Annotated[Codec, typer.Option(help="Blosc compressor (with bit-shuffle).")] = Codec.zstd,
    level: Annotated[int, typer.Option(min=0, max=9, help="Compression level.")] = 5,
    exposure_time: Annotated[
        float | None, typer.Option("--exposure-time", help="Exposure time per frame in seconds, to store.")
    ] = None,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Cache an image stack as zarr (blosc, bit-shuffle, masks folded in) for fast re-integration.

    'diffuse integrate GEOM OUT.zarr' reads the cache directly and gives the same table as data.nxs
    with the same masks.

    Example: diffuse convert data.nxs data.zarr --mask mask.nxs
    """
    from pipeline.cluster import connect
    from pipeline.graph.convert import convert_to_zarr
    from pipeline.io.images import open_image_stack, open_masks, reads_release_the_gil
    from pipeline.progress import progress_bar

    setup_logging(quiet)
    stack = open_image_stack(data, exposure_time=exposure_time)
    masks = open_masks(list(mask or []), stack.shape)
    threads_ok = reads_release_the_gil(data, list(mask or []))  # blosc compresses with the GIL released
    with connect(cluster, workers=workers, threads_ok=threads_ok) as client, progress_bar(quiet) as bar:
        result = convert_to_zarr(stack, masks, outfile, client, codec.value, level, overwrite, progress=bar)
    if not quiet:
        ratio = result.bytes_in / max(result.bytes_out, 1)
        typer.echo(
            f"wrote {result.path}: {result.chunks} chunks, {result.bytes_out / 1e6:.1f} MB "
            f"({ratio:.1f}x smaller than int32) in {result.seconds:.1f} s"
        )
