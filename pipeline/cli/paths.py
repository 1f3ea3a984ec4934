"""The registry of every command's path arguments: what kind of path each one is.

:func:`pipeline.cli.app.user_errors` checks every path argument of a command against its kind
(:data:`pipeline.io.inputs.KINDS`) before the command starts any work, creates ``--outdir``
directories, and locks every output for the run (:mod:`pipeline.io.lock`); ``tests/test_cli_matrix.py``
generates its cases from the same registry.

A parameter named like an output (``outfile``, ``parquet``, ``outdir``, ``workdir``, ``log_file``,
``performance_report``) needs no entry; input paths do. Adding a command = one line in :data:`PATHS`
(``"merge": {"tables": "table"}``), see ARCHITECTURE.md, "Adding a command".
"""

from __future__ import annotations

__all__ = ["BY_NAME", "PATHS", "kind_of"]

# command (as in `diffuse --help`; sub-commands "group name") -> {parameter name: kind}
PATHS: dict[str, dict[str, str]] = {
    "run": {
        "geometry": "geometry-all",
        "data": "images",
        "mask": "mask",
        "background": "background",
        "scale": "scales",
    },
    "integrate": {"geometry": "geometry", "data": "images", "mask": "mask"},
    "correct": {"geometry": "geometry-corrections", "integrated": "table", "background": "background"},
    "merge": {"tables": "table", "scale": "scales", "geometry": "geometry-symmetry"},
    "map": {"geometry": "geometry-symmetry", "merged": "table", "png": "outfile"},
    "reintegrate": {
        "geometry": "geometry-all",
        "data": "images",
        "mask": "mask",
        "scale": "scales",
        "background": "background",
    },
    "estimate": {"geometry": "geometry", "data": "images", "mask": "mask"},
    "qc": {"table": "table", "data": "images", "mask": "mask", "background": "background"},
    "find-hot-pixels": {"data": "images", "mask": "mask"},
    "find-peaks": {"geometry": "geometry", "data": "images"},
    "mask-peaks": {"geometry": "geometry-all", "data": "images", "peaks": "peaks"},
    "import-geometry": {"expt": "expt"},
    "import-data": {"images": "raw-images"},
    "bin-background": {"data": "images", "mask": "mask"},
    "simulate": {},
    "demo": {},
    "submit": {},
    "cluster-config": {},
    "scale": {"corrected": "table", "report": "outfile"},
    "bench sweep": {"geometry": "geometry", "data": "data", "mask": "mask"},
}

# kinds of parameters by name, when the command's entry does not say
BY_NAME: dict[str, str] = {
    "outfile": "outfile",
    "log_file": "outfile",
    "performance_report": "outfile",
    "parquet": "outdir-whole",
    "outdir": "outdir",
    "workdir": "workdir",
}


def kind_of(command: str, parameter: str) -> str | None:
    """The kind of path ``parameter`` of ``command`` is: as registered, else by its name, else
    ``file`` (an input that must exist and be readable); ``None`` (not checked) for a parameter not
    named like an output of a command not yet in :data:`PATHS`, so that an unregistered output is
    never refused as a missing input (tests/test_cli_matrix.py asks for the registration)."""
    entry = PATHS.get(command)
    if entry is None:  # a sub-command registered under its own name only
        entry = next((v for k, v in PATHS.items() if k.split()[-1] == command), None)
    if entry is not None and parameter in entry:
        return entry[parameter]
    if parameter in BY_NAME:
        return BY_NAME[parameter]
    return "file" if entry is not None else None
