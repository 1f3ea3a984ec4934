"""``diffuse merge``: mdx2.merge, partitioned by voxel, on threads or the cluster."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    ClusterOpt,
    LogFileOpt,
    MemoryLimitOpt,
    OverwriteOpt,
    PartitionOpt,
    PerformanceReportOpt,
    QuietOpt,
    WalltimeOpt,
    WorkersOpt,
    app,
    setup_logging,
    user_errors,
)
from pipeline.config import ClusterSpec


class Split(StrEnum):
    randomHalf = "randomHalf"
    weightedRandomHalf = "weightedRandomHalf"
    Friedel = "Friedel"


@app.command()
@user_errors
def merge(
    tables: Annotated[
        list[Path],
        typer.Argument(help="Corrected table(s) (NeXus or parquet), one batch each, as mdx2.merge."),
    ],
    scale: Annotated[
        list[Path] | None,
        typer.Option(
            help="scales.nxs (mdx2.scale) of each table, in the same order. Without it: no scaling."
        ),
    ] = None,
    outlier: Annotated[
        float | None, typer.Option(help="Reject rows more than this many sigma above the merged value.")
    ] = None,
    split: Annotated[
        Split | None, typer.Option(help="Also merge two halves (group_0_*, group_1_* columns).")
    ] = None,
    geometry: Annotated[
        Path | None, typer.Option(help="geometry.nxs (Laue group operators), required for --split Friedel.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the random half-splits: the same halves as mdx2.merge after np.random.seed(SEED). "
            "Default: a random seed, logged."
        ),
    ] = None,
    scaling: Annotated[bool, typer.Option(help="Apply the scaling model if present.")] = True,
    offset: Annotated[bool, typer.Option(help="Apply the offset model if present.")] = True,
    absorption: Annotated[bool, typer.Option(help="Apply the absorption model if present.")] = True,
    detector: Annotated[bool, typer.Option(help="Apply the detector model if present.")] = True,
    outfile: Annotated[Path, typer.Option(help="NeXus output (mdx2's merged hkl_table).")] = Path(
        "merged.nxs"
    ),
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Scratch directory for spilled rows and merged parts (default: next to the output)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run from its work directory: redo only the unfinished tasks.",
        ),
    ] = False,
    keep_workdir: Annotated[
        bool, typer.Option("--keep-workdir", help="Do not delete the work directory.")
    ] = False,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryLimitOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    walltime: WalltimeOpt = None,
    overwrite: OverwriteOpt = False,
    log_file: LogFileOpt = None,
    performance_report: PerformanceReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Merge corrected intensities per voxel, applying scaling models (mdx2.merge).

    Example: diffuse merge corrected.nxs --scale scales.nxs --outlier 3 --split weightedRandomHalf --seed 1

    An interrupted run (Ctrl-C, kill, a lost worker) keeps its work directory; run the same command
    with --resume to finish it without redoing the finished tasks.
    """
    from pipeline.api.merge import merge as run

    setup_logging(quiet)
    result = run(
        tables,
        scale or None,
        outlier=outlier,
        split=None if split is None else split.value,
        geometry=geometry,
        seed=seed,
        scaling=scaling,
        offset=offset,
        absorption=absorption,
        detector=detector,
        outfile=outfile,
        overwrite=overwrite,
        workdir=workdir,
        resume=resume,
        keep_workdir=keep_workdir,
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        log_file=log_file or Path(f"{outfile}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        extra = f", {result.outliers:,} outliers" if outlier is not None else ""
        extra += f", seed {result.seed}" if result.seed is not None else ""
        if result.map_tasks_skipped or result.partitions_skipped:
            extra += (
                f"; {result.map_tasks_skipped} map tasks and {result.partitions_skipped} partitions "
                "done before (--resume)"
            )
        typer.echo(
            f"merged {result.observations:,} rows into {result.rows:,} voxels{extra} in "
            f"{result.seconds['total']:.1f} s -> {result.outfile}"
        )
