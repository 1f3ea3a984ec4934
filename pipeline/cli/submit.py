"""``diffuse submit``: run a command as a SLURM batch job."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pipeline.cli.app import (
    AccountOpt,
    MemoryLimitOpt,
    PartitionOpt,
    WalltimeOpt,
    app,
    check_paths,
    setup_logging,
    user_errors,
)
from pipeline.errors import ConfigError

OUTPUT_PARAMS = ("outfile", "parquet", "outdir")  # where a command writes (for the summary after submitting)


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exception a command's argument parser raises (typer >= 0.20 ships its own copy of click)."""
    if hasattr(typer, "TyperException"):
        return (typer.TyperException,)
    import click  # pragma: no cover - older typer

    return (click.ClickException,)  # pragma: no cover


def _parse_command(argv: list[str]) -> tuple[str, dict]:
    """Check ``argv`` as the diffuse command it names (before anything is queued); return its parameters."""
    group = typer.main.get_command(app)
    with typer.Context(group, info_name="diffuse") as ctx:
        name = argv[0] if argv else ""
        command = group.get_command(ctx, name)
        if command is None or name == "submit" or not any(p.name == "cluster" for p in command.params):
            choices = sorted(
                n
                for n in group.list_commands(ctx)
                if n != "submit" and any(p.name == "cluster" for p in group.get_command(ctx, n).params)
            )
            raise ConfigError(
                f"expected a diffuse command that computes ({', '.join(choices)}), got {name!r}"
            )
        try:
            sub = command.make_context(name, list(argv[1:]), parent=ctx)
        except _usage_errors() as exc:
            raise ConfigError(f"diffuse {name}: {exc.format_message()}") from None
        params = dict(sub.params)
    for option in ("cluster", "workers"):
        if params.get(option) is not None:
            raise ConfigError(
                f"leave --{option} out of the command: the batch job sets it to its own cluster"
            )
    return name, params


@app.command(context_settings={"allow_interspersed_args": False})
@user_errors
def submit(
    command: Annotated[
        list[str],
        typer.Argument(
            help="The diffuse command and its arguments, after --, e.g. -- integrate geometry.nxs data.nxs "
            "--mask mask.nxs --subdivide 4 4 4",
            show_default=False,
        ),
    ],
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Nodes; each runs `processes` workers.")] = 1,
    cluster: Annotated[
        str, typer.Option("--cluster", help="Cluster config giving the resources: slurm or a .yaml.")
    ] = "slurm",
    memory_limit: MemoryLimitOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    walltime: WalltimeOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the job script; submit nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job id.")] = False,
) -> None:
    """Run a diffuse command as one SLURM batch job: scheduler, workers and the command in one allocation.

    Example: diffuse submit --cluster slurm --nodes 2 -- integrate geometry.nxs data.nxs --outfile x.nxs
    """
    from pipeline.cluster import default_workdir
    from pipeline.cluster.batch import batch_job, submit_batch_job
    from pipeline.cluster.config import apply_cluster_config, read_cluster_config, resolve_slurm

    setup_logging(quiet)
    name, params = _parse_command(command)
    if not dry_run:  # the job would fail at once: say so now (paths as seen from here, the job's cwd)
        check_paths(typer.main.get_command(app).get_command(None, name).callback, params)
    file = read_cluster_config(cluster)
    if file.type != "slurm":
        raise ConfigError(f"--cluster {cluster}: submit needs a SLURM cluster config, not a {file.type} one")
    with apply_cluster_config(file):
        settings = resolve_slurm(
            file.path, memory_limit=memory_limit, partition=partition, account=account, walltime=walltime
        )
        outputs = [os.path.abspath(params[p]) for p in OUTPUT_PARAMS if params.get(p)]
        workdir = (
            default_workdir(outputs[0]) if "workdir" in params and not params["workdir"] and outputs else None
        )
    job = batch_job(
        command,
        settings,
        nodes=nodes,
        resume_args=["--resume"] if "resume" in params and not params["resume"] else [],
        workdir=workdir,
    )
    if dry_run:
        typer.echo(job.script, nl=False)
        return
    job_id = submit_batch_job(job)
    if quiet:
        typer.echo(job_id)  # for scripts: JOB=$(diffuse submit -q -- ...)
        return
    typer.echo(
        f"submitted batch job {job_id}: diffuse {name} on {nodes} node(s) x {settings.processes} worker(s), "
        f"each node {job.resources}"
    )
    typer.echo(f"  script  {job.script_path}")
    typer.echo(f"  log     {job.log_path(job_id)}")
    for output in outputs:
        typer.echo(f"  output  {output}")
    typer.echo(
        f"follow it with: squeue -j {job_id}; tail -f {job.log_path(job_id)}    stop it: scancel {job_id}"
    )
