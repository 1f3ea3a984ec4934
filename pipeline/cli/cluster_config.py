"""``diffuse cluster-config``: list or print the shipped cluster configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    app,
    user_errors,
)
from pipeline.errors import ConfigError


@app.command("cluster-config")
@user_errors
def cluster_config(
    name: Annotated[
        str | None, typer.Argument(help="local, slurm or slurm-shared-scratch (none: list them).")
    ] = None,
) -> None:
    """Print a shipped cluster config, to copy and edit.

    Example: diffuse cluster-config slurm > my-slurm.yaml
    """
    from pipeline.cluster.config import CONFIG_DIR, SHIPPED_CONFIGS

    if name is None:
        for shipped in SHIPPED_CONFIGS:
            first = (CONFIG_DIR / f"{shipped}.yaml").read_text().splitlines()[0].lstrip("# ")
            typer.echo(f"{shipped:22s}{first}")
        return
    if name not in SHIPPED_CONFIGS:
        raise ConfigError(f"no shipped cluster config {name!r}; expected one of {', '.join(SHIPPED_CONFIGS)}")
    typer.echo(Path(CONFIG_DIR / f"{name}.yaml").read_text(), nl=False)
