"""``diffuse scale``: mdx2.scale's scaling models, fitted on threads or the cluster."""

from __future__ import annotations

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
from pipeline.errors import ConfigError


def _opt(name: str, help: str):
    return typer.Option(name, help=help, rich_help_panel="Models (as mdx2.scale)")


def _flag(name: str, help: str):
    """A True/False option spelled as mdx2.scale's (``--offset.enable True``), not a bare flag."""
    return typer.Option(name, help=help, metavar="BOOL", rich_help_panel="Models (as mdx2.scale)")


def _bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{name.replace('_', '.', 1)} takes True or False, got {value!r}")


@app.command()
@user_errors
def scale(
    corrected: Annotated[
        list[Path], typer.Argument(help="Corrected table(s): NeXus or parquet (one batch each).")
    ],
    mca2020: Annotated[
        bool, typer.Option("--mca2020", help="Enable all four models (mdx2.scale --mca2020).")
    ] = False,
    scaling_enable: Annotated[str, _flag("--scaling.enable", "Scale vs. phi (b).")] = "True",
    scaling_alpha: Annotated[float, _opt("--scaling.alpha", "Smoothness multiplier.")] = 1.0,
    scaling_dphi: Annotated[float, _opt("--scaling.dphi", "Phi control-point spacing (degrees).")] = 1.0,
    scaling_niter: Annotated[int, _opt("--scaling.niter", "Maximum iterations.")] = 10,
    scaling_x2tol: Annotated[float, _opt("--scaling.x2tol", "Stop when chi2 falls by less.")] = 1e-4,
    scaling_outlier: Annotated[float, _opt("--scaling.outlier", "Outlier cutoff (sigma).")] = 10.0,
    offset_enable: Annotated[str, _flag("--offset.enable", "Offset vs. s and phi (c).")] = "False",
    offset_alpha_x: Annotated[float, _opt("--offset.alpha_x", "Smoothness vs. s.")] = 1.0,
    offset_alpha_y: Annotated[float, _opt("--offset.alpha_y", "Smoothness vs. phi.")] = 1.0,
    offset_alpha_min: Annotated[float, _opt("--offset.alpha_min", "Pull towards offset.min.")] = 0.001,
    offset_min: Annotated[float, _opt("--offset.min", "Minimum offset.")] = 0.0,
    offset_dphi: Annotated[float, _opt("--offset.dphi", "Phi control-point spacing (degrees).")] = 2.5,
    offset_ns: Annotated[int, _opt("--offset.ns", "Control points in s.")] = 31,
    offset_niter: Annotated[int, _opt("--offset.niter", "Maximum iterations.")] = 5,
    offset_x2tol: Annotated[float, _opt("--offset.x2tol", "Stop when chi2 falls by less.")] = 1e-3,
    offset_outlier: Annotated[float, _opt("--offset.outlier", "Outlier cutoff (sigma).")] = 5.0,
    detector_enable: Annotated[str, _flag("--detector.enable", "Scale vs. detector position (d).")] = "False",
    detector_alpha: Annotated[float, _opt("--detector.alpha", "Smoothness multiplier.")] = 1.0,
    detector_nx: Annotated[int, _opt("--detector.nx", "Control points in x.")] = 200,
    detector_ny: Annotated[int, _opt("--detector.ny", "Control points in y.")] = 200,
    detector_niter: Annotated[int, _opt("--detector.niter", "Maximum iterations.")] = 5,
    detector_x2tol: Annotated[float, _opt("--detector.x2tol", "Stop when chi2 falls by less.")] = 1e-3,
    detector_outlier: Annotated[float, _opt("--detector.outlier", "Outlier cutoff (sigma).")] = 5.0,
    absorption_enable: Annotated[
        str, _flag("--absorption.enable", "Scale vs. position and phi (a).")
    ] = "False",
    absorption_alpha_xy: Annotated[float, _opt("--absorption.alpha_xy", "Smoothness vs. x, y.")] = 10.0,
    absorption_alpha_z: Annotated[float, _opt("--absorption.alpha_z", "Smoothness vs. phi.")] = 1.0,
    absorption_nx: Annotated[int, _opt("--absorption.nx", "Control points in x.")] = 20,
    absorption_ny: Annotated[int, _opt("--absorption.ny", "Control points in y.")] = 20,
    absorption_dphi: Annotated[
        float, _opt("--absorption.dphi", "Phi control-point spacing (degrees).")
    ] = 5.0,
    absorption_niter: Annotated[int, _opt("--absorption.niter", "Maximum iterations.")] = 5,
    absorption_x2tol: Annotated[float, _opt("--absorption.x2tol", "Stop when chi2 falls by less.")] = 1e-4,
    absorption_outlier: Annotated[float, _opt("--absorption.outlier", "Outlier cutoff (sigma).")] = 5.0,
    prescale_enable: Annotated[
        str, _flag("--prescale.enable", "First refine on a subsample of the rows (mdx2's prescaling).")
    ] = "False",
    prescale_subsample: Annotated[int, _opt("--prescale.subsample", "Prescale on every N-th row.")] = 10,
    prescale_isotropic: Annotated[
        str, _flag("--prescale.isotropic", "Prescale groups rows by |s| (0.001 bins), not by hkl.")
    ] = "True",
    prescale_scaling: Annotated[str, _flag("--prescale.scaling", "Prescale the scaling model.")] = "True",
    prescale_offset: Annotated[str, _flag("--prescale.offset", "Prescale the offset model.")] = "False",
    prescale_detector: Annotated[str, _flag("--prescale.detector", "Prescale the detector model.")] = "False",
    prescale_absorption: Annotated[
        str, _flag("--prescale.absorption", "Prescale the absorption model.")
    ] = "True",
    outfile: Annotated[
        list[Path] | None,
        typer.Option(help="scales.nxs to write, one per table (default: scales.nxs beside each table)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write a report of the fitted models (.html with PNGs, or .png).")
    ] = None,
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
    """Fit mdx2.scale's scaling models (scale vs. phi; --mca2020: also offset, detector, absorption).

    Example: diffuse scale corrected.nxs --mca2020 --outfile scales.nxs --report scales.html
    """
    from pipeline.api.scale import scale as run

    setup_logging(quiet)
    loc = locals()

    def group(name, keys):
        out = {k: loc[f"{name}_{k}"] for k in keys}
        for k, v in out.items():
            if isinstance(v, str):
                out[k] = _bool(f"{name}_{k}", v)
        return out

    outfiles = list(outfile) if outfile else None
    result = run(
        list(corrected),
        outfile=outfiles,
        mca2020=mca2020,
        scaling=group("scaling", ("enable", "alpha", "dphi", "niter", "x2tol", "outlier")),
        offset=group(
            "offset",
            ("enable", "alpha_x", "alpha_y", "alpha_min", "min", "dphi", "ns", "niter", "x2tol", "outlier"),
        ),
        detector=group("detector", ("enable", "alpha", "nx", "ny", "niter", "x2tol", "outlier")),
        absorption=group(
            "absorption", ("enable", "alpha_xy", "alpha_z", "nx", "ny", "dphi", "niter", "x2tol", "outlier")
        ),
        prescale=group(
            "prescale", ("enable", "subsample", "isotropic", "scaling", "offset", "detector", "absorption")
        ),
        report=report,
        overwrite=overwrite,
        cluster=ClusterSpec(cluster, workers, memory_limit, partition, account, walltime),
        log_file=log_file or Path(f"{(outfiles or [Path(corrected[0]).with_name('scales.nxs')])[0]}.log"),
        performance_report=performance_report,
        quiet=quiet,
    )
    if not quiet:
        where = ", ".join(str(p) for p in result.outfiles)
        typer.echo(f"scaled {result.rows:,} rows in {result.seconds['total']:.1f} s -> {where}")
