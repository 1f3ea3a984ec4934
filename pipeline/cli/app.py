"""The typer application ``diffuse`` and what every command shares (errors, logging, options)."""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import logging
import os
import signal
import sys
import threading
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import PipelineError
from pipeline.simulation.presets import PRESETS

__all__ = [
    "AccountOpt",
    "ClusterOpt",
    "MemoryLimitOpt",
    "OverwriteOpt",
    "PartitionOpt",
    "QuietOpt",
    "WalltimeOpt",
    "WorkersOpt",
    "app",
    "check_paths",
    "checked_paths",
    "main",
    "path_parameters",
    "user_errors",
]

# click's exceptions as typer raises them (recent typer vendors click as typer._click)
_click_exceptions = sys.modules[typer.BadParameter.__module__]


class OneLineErrors(typer.core.TyperGroup):
    """Usage errors (missing argument, bad option value, unknown command) as one ``error:`` line on
    stderr with exit status 2, like the user errors of the commands (one line, exit status 1)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError as exc:  # typer has printed the help already
            sys.exit(exc.exit_code)
        except _click_exceptions.UsageError as exc:
            ctx = exc.ctx
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except _click_exceptions.ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:  # (the click that typer vendors has no exceptions.Abort)
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="diffuse",
    help="Integrate and correct diffuse X-ray scattering on a fractional Miller-index grid, on Dask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        help="Where to compute: local (default), slurm (worker processes in SLURM jobs), a cluster config "
        ".yaml (see cluster/configs/), tcp://host:port of a running scheduler, or its scheduler file .json.",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes (local), SLURM jobs to start (slurm), or workers to wait for (a scheduler).",
    ),
]
MemoryLimitOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-limit", help="Memory per worker process, e.g. 4GB (default: RAM / workers, or the config)."
    ),
]
PartitionOpt = Annotated[
    str | None, typer.Option("--partition", help="SLURM partition (overrides the config).")
]
AccountOpt = Annotated[str | None, typer.Option("--account", help="SLURM account (overrides the config).")]
WalltimeOpt = Annotated[
    str | None,
    typer.Option("--walltime", help="SLURM time limit per job, e.g. 02:00:00 (overrides the config)."),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
PerformanceReportOpt = Annotated[
    Path | None,
    typer.Option("--performance-report", help="Write dask's HTML performance report of the run here."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")]

# options that integrate, correct and run share
MaskOpt = Annotated[
    list[Path] | None,
    typer.Option("--mask", help="Mask file(s), True = exclude; repeat to apply the union of several."),
]
SubdivideOpt = Annotated[
    tuple[int, int, int] | None,
    typer.Option(
        help="Voxels per Miller-index unit along h, k, l (default 1 1 1, or diffuse.integrate.subdivide).",
        show_default=False,
    ),
]
MaxSpreadOpt = Annotated[
    float | None,
    typer.Option(
        "--max-spread",
        help="Degrees of rotation one observation of a voxel may span "
        "(default 1, or diffuse.integrate.max-spread).",
        show_default=False,
    ),
]
ExposureTimeOpt = Annotated[
    float | None,
    typer.Option("--exposure-time", help="Exposure time per frame in seconds, for files that recorded 0."),
]
IMAGES_HELP = (
    "data.nxs image stack, or detector images (NXmx/Eiger master file, CBF template, or the "
    "DIALS .expt naming them)."
)
ChunksOpt = Annotated[
    tuple[int, int, int] | None,
    typer.Option(
        metavar="F Y X",
        help="Binning grid (frames, y, x), which decides mdx2's split into partial observations; "
        "-1 = the default for that axis (the data's chunks, or what mdx2.import_data would choose).",
        show_default=False,
    ),
]
LorentzOpt = Annotated[bool, typer.Option("--lorentz", help="Multiply intensities by rs_volume (Lorentz).")]
P1Opt = Annotated[bool, typer.Option("--p1", help="Map to the P1 asymmetric unit (Friedel pairs only).")]


Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)

PresetOpt = Annotated[
    Preset, typer.Option("--preset", help="Size of the dataset (see pipeline.simulation.presets).")
]

SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Random seed: the same seed gives the same counts.")
]

LogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        help="Run log: parameters that differ from defaults, versions, timings, peak memory "
        "(default: OUTFILE.log next to the output).",
    ),
]

ScanImagesOpt = Annotated[
    bool | None,
    typer.Option(
        "--scan-images/--no-scan-images",
        help="Scan the images for hot and masked pixels (default: when the stack has <= 1e8 pixels).",
    ),
]


def user_errors(func):
    """Show a :class:`PipelineError` as one line on stderr, exit 1; other exceptions keep their traceback.

    Before the command runs, every path argument is checked against its kind (:mod:`pipeline.cli.paths`,
    :mod:`pipeline.io.inputs`): inputs exist and are the right kind of file, outputs follow the one
    output rule, ``--outdir`` directories are created, and every output is locked for the run.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logger = logging.getLogger("pipeline")
        saved = logger.handlers[:], logger.level, logger.propagate
        try:
            with checked_paths(func, kwargs):
                return func(*args, **kwargs)
        except PipelineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Terminated:  # SIGTERM, after every context's cleanup (temporaries, locks, cluster)
            typer.echo("terminated", err=True)
            raise typer.Exit(143) from None
        finally:  # setup_logging's handler lives as long as the command (commands also run in-process)
            logger.handlers[:], logger.level, logger.propagate = saved

    return wrapper


def _mentions_path(hint) -> bool:
    return hint is Path or any(_mentions_path(h) for h in typing.get_args(hint))


@functools.cache
def path_parameters(func) -> tuple[tuple[str, str], ...]:
    """(parameter name, how the user spells it: ``--outfile`` or ``GEOMETRY``) of every path parameter."""
    hints = typing.get_type_hints(func, include_extras=True)
    out = []
    for name in inspect.signature(func).parameters:
        hint = hints.get(name)
        if not _mentions_path(hint):
            continue
        meta = getattr(hint, "__metadata__", ())
        info = next((m for m in meta if isinstance(m, typer.models.ParameterInfo)), None)
        if isinstance(info, typer.models.ArgumentInfo):
            label = name.upper()
        else:
            decls = [d for d in getattr(info, "param_decls", None) or () if d.startswith("--")]
            label = decls[0].split("/")[0] if decls else "--" + name.replace("_", "-")
        out.append((name, label))
    return tuple(out)


def command_name(func) -> str:
    """The command a callback implements: its name with ``_`` as ``-``; a ``_command`` suffix (kept
    so that ``map_command`` does not shadow the builtin ``map``) is not part of it."""
    return func.__name__.removesuffix("_command").replace("_", "-")


def check_paths(func, kwargs: dict) -> list:
    """Check every path argument of command ``func`` called with ``kwargs`` (inputs first, then
    outputs; see :mod:`pipeline.cli.paths`); return the outputs as (path, kind, label)."""
    from pipeline.cli.paths import kind_of
    from pipeline.io.inputs import KINDS, check_path

    func = getattr(func, "__wrapped__", func)
    command = command_name(func)
    overwrite = bool(kwargs.get("overwrite", "overwrite" not in inspect.signature(func).parameters))
    inputs, outputs = [], []
    for name, label in path_parameters(func):
        value = kwargs.get(name)
        for path in value if isinstance(value, list | tuple) else [value]:
            if path is None or not isinstance(path, str | os.PathLike):
                continue
            kind_name = kind_of(command, name)
            if kind_name is None:
                continue
            kind = KINDS[kind_name]
            (outputs if kind.is_output else inputs).append((Path(path), kind, label))
    for path, kind, label in inputs + outputs:
        check_path(path, kind, overwrite=overwrite, option=label)
    seen = {os.path.abspath(p): label for p, _, label in inputs}
    for path, _, label in outputs:
        other = seen.setdefault(os.path.abspath(path), label)
        if other != label:
            raise PipelineError(f"{label} {str(path)!r} is also given as {other}; use another path")
    return outputs


@contextlib.contextmanager
def checked_paths(func, kwargs: dict):
    """Check every path argument of ``func`` (called with ``kwargs``) before it runs (:func:`check_paths`);
    create ``--outdir`` directories; lock every output until the block ends. A failure removes the
    directories it created."""
    from pipeline.io.atomic import prepare_outdir
    from pipeline.io.lock import output_locks

    outputs = check_paths(func, kwargs)
    command = command_name(getattr(func, "__wrapped__", func))
    created = []
    try:
        for path, kind, _ in outputs:
            if kind.role == "outdir" and not path.exists():
                missing = [p for p in (path, *path.parents) if not p.exists()]
                prepare_outdir(path)
                created += missing  # deepest first
        with output_locks([p for p, _, _ in outputs], what=command):
            yield
    except BaseException:
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: what the command wrote stays
        raise


def setup_logging(quiet: bool = False) -> None:
    """Messages from the library (``pipeline.*`` loggers) on stderr; warnings only with --quiet."""
    level = logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Terminated(BaseException):
    """SIGTERM arrived (``kill``, a batch system's time limit): raised in the main thread so that
    every ``with`` block cleans up on the way out (temporary files removed, locks released, the
    local cluster stopped); the command then exits with status 143 (128 + 15), as if killed."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not cut the cleanup short
    raise Terminated()


def main() -> None:
    """Entry point of the ``diffuse`` console script: this process may run a local run's threads, so it
    gets the allocator tuning that worker processes get from their environment. SIGTERM ends a
    command cleanly with status 143 (:class:`Terminated`)."""
    from pipeline.cluster.buffers import keep_large_buffers

    keep_large_buffers()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    everything = app.registered_commands
    try:
        try:
            app.registered_commands = _asked_for(sys.argv[1:]) or everything
            app()
        finally:
            app.registered_commands = everything
            # the exit skips the garbage collector's passes over what the command leaves (numba's
            # compiler state once a kernel is loaded: ~0.13 s); the objects are reclaimed with the process
            gc.freeze()
    except SystemExit as exc:
        _leave(exc.code)
        raise


_NEEDS_ALL = ("submit",)  # commands that parse another command's arguments: every command stays registered


def _asked_for(argv: list[str]) -> list:
    """The registered command that ``argv`` runs, if its first word names one: typer builds the click
    command of every registered command on each call (~40 ms of every command's start-up), so only
    that one is left registered for the call (with the command groups: ``diffuse`` stays a group)."""
    if not argv or argv[0].startswith("-") or not app.registered_groups or argv[0] in _NEEDS_ALL:
        return []
    return [
        c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == argv[0]
    ]


def _leave(code) -> None:
    """End the process with the exit status ``code`` (as ``SystemExit`` does) now that the command is
    done: run the exit handlers (logging's, h5py's, ...) and flush the standard streams, then skip
    the interpreter's teardown, which frees every module and object one by one (0.2-0.3 s after a run
    that loaded numba, h5py and dask). Returns (a normal exit follows) while another thread still
    works (it must finish, as at a normal exit) or an HDF5 file is still open (the HDF5 library closes
    it at a normal exit)."""
    me = threading.current_thread()
    if any(t is not me and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    h5py = sys.modules.get("h5py")
    if h5py is not None and h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status & 0xFF)
