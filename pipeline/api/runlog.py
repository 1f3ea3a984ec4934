"""A log file per run: what was asked, with which software, how long each stage took, peak memory.

The file is plain text that people read and programs parse: structured lines ``key: <json>`` (keys
of one step prefixed with the step, e.g. ``integrate.timings_s``) between the library's own log
records. ``diffuse qc`` reads it back (:func:`read_run_log`) to find a table's data and masks and
the pixels integration used. Example::

    # diffuse-pipeline run log
    command: "diffuse integrate geometry.nxs data.nxs --mask mask.nxs --subdivide 2 2 2"
    started: "2026-01-01T12:00:00"
    versions: {"diffuse-pipeline": "0.1.0", "numpy": "2.4.6", "dask": "2026.8.0", ...}
    integrate.parameters: {"subdivide": [2, 2, 2], ...}        (only those that differ from defaults)
    integrate.inputs: {"geometry": "/abs/geometry.nxs", "data": "/abs/data.nxs", "mask": [...]}
    integrate.cluster: {"scheduler": "tcp://127.0.0.1:40000", "dashboard": "http://127.0.0.1:8787/status"}
    12:00:03 INFO    pipeline.graph.integrate: 1200 partial rows -> 2 partitions of <= 100000 rows
    integrate.timings_s: {"plan": 0.1, "map": 3.2, "reduce": 0.4, "export": 0.1, "total": 3.9}
    integrate.result: {"rows": 2601, "pixels_read": 1899300, "pixels_used": 1894885, ...}
    integrate.peak_memory_mb: {"client": 180.2, "workers": {"tcp://127.0.0.1:40001": 210.5}}
    integrate.status: "ok"
    finished: "2026-01-01T12:00:04"
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import non_default_items
from pipeline.errors import ConfigError, DiskFullError, PipelineError
from pipeline.io.atomic import (
    as_disk_full,
    atomic_path,
    check_output_path,
    discard,
    publish,
    temp_sibling,
)

__all__ = [
    "RunLog",
    "check_outputs",
    "peak_memory",
    "performance_report",
    "process_age",
    "read_run_log",
    "run_step",
    "versions",
]

log = logging.getLogger(__name__)

HEADER = "# diffuse-pipeline run log"
_PACKAGES = (
    "diffuse-pipeline",
    "numpy",
    "scipy",
    "numba",
    "dask",
    "distributed",
    "h5py",
    "hdf5plugin",
    "pandas",
    "pyarrow",
    "matplotlib",
)
_PATH_PARAMS = ("geometry", "data", "mask", "background", "integrated", "merged", "hkl", "peaks")


def _dist_info_versions() -> dict[str, str]:
    """``{normalized name: version}`` from the names of the ``*.dist-info`` directories on sys.path
    (first one wins, as for imports): one directory listing, where ``importlib.metadata`` took ~60 ms
    for these packages in a fresh process."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem = name[: -len(".dist-info")]
            if name.endswith(".dist-info") and stem.count("-") == 1:
                dist, version = stem.split("-")
                found.setdefault(dist.lower().replace("_", "-").replace(".", "-"), version)
    return found


def versions() -> dict[str, str]:
    """Versions of Python, the libraries that shape the numbers and speed, and HDF5."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    listed = _dist_info_versions()
    for name in _PACKAGES:
        if name in listed:
            out[name] = listed[name]
            continue
        from importlib.metadata import PackageNotFoundError, version  # (~15 ms to import)

        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:  # pragma: no cover - h5py is a dependency
        pass
    return out


def process_age(at: float | None = None) -> float | None:
    """Seconds from this process's start to ``at`` (a ``time.perf_counter()`` value; default: now),
    e.g. the imports and set-up before a step begins; None where the start time is unknown."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # starttime, clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    now = time.perf_counter()
    age = uptime - ticks / os.sysconf("SC_CLK_TCK") - (now - (now if at is None else at))
    return round(max(age, 0.0), 3)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB (Linux reports ru_maxrss in kB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def peak_memory(client=None) -> dict:
    """Peak RSS (MB) of this process and, through ``client.run``, of every worker process.

    A worker's peak is since the worker started (for a cluster started by this command: this run).
    """
    out: dict = {"client": _peak_rss_mb()}
    if client is not None:
        try:
            out["workers"] = client.run(_peak_rss_mb)
        except Exception as exc:  # a worker that died must not lose the log
            log.debug("could not read the workers' peak memory: %s", exc)
    return out


def _cluster_info(client) -> dict:
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {}).values()
    dashboard = client.dashboard_link
    cluster = getattr(client, "cluster", None)
    from pipeline.cluster import in_process_cluster, local_dashboard_link

    if in_process_cluster(client) and cluster is not None:  # its own link names the host, not 127.0.0.1
        dashboard = local_dashboard_link(cluster)
    return {
        "scheduler": client.scheduler.address,
        "dashboard": dashboard,
        "workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers),
        "memory_limit_gb": round(sum(w.get("memory_limit") or 0 for w in workers) / 2**30, 2),
    }


def _inputs(params) -> dict:
    """Absolute paths of the input files among ``params`` (so a later ``diffuse qc`` can find them)."""
    out = {}
    for name in _PATH_PARAMS:
        value = getattr(params, name, None)
        if isinstance(value, tuple | list):
            out[name] = [os.path.abspath(v) for v in value]
        elif value:
            out[name] = os.path.abspath(value)
    for name in ("outfile", "parquet"):
        value = getattr(params, name, None)
        for v in value if isinstance(value, tuple | list) else [value] if value else []:
            out.setdefault("outputs", []).append(os.path.abspath(v))
    return out


def jsonable(obj):
    """``json.dumps``'s ``default``: dataclasses, paths and numpy values as JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class RunLog:
    """An open run-log file; :meth:`step` records one step (integrate, correct, qc, ...)."""

    def __init__(self, path: str | os.PathLike, command: str | None = None, atomic: bool = False):
        self.path = Path(path)
        # atomic: write under a temporary name, renamed to ``path`` by close() (discard() drops it)
        self._written = temp_sibling(self.path) if atomic else self.path
        self._file = open(self._written, "w", encoding="utf-8")
        self._handler = _LogFileHandler(self._file)
        self._handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        self._handler.setLevel(logging.INFO)
        self._logger = logging.getLogger("pipeline")
        self._saved_level = self._logger.level
        self._saved_handler_levels = [(h, h.level) for h in self._logger.handlers]
        if self._logger.getEffectiveLevel() > logging.INFO:  # keep other handlers as quiet as they were
            for h in self._logger.handlers:
                h.setLevel(max(h.level, self._logger.getEffectiveLevel()))
            self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self._handler)
        try:
            self._file.write(HEADER + "\n")
            self.record("command", command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
            self.record("started", datetime.datetime.now().isoformat(timespec="seconds"))
            self.record("versions", versions())
            from pipeline.io.lock import take_notes

            for note in take_notes():
                self.record("note", note)
        except BaseException:  # e.g. a full disk: nothing is left behind
            self.close(keep=False)
            raise

    def record(self, key: str, value) -> None:
        """Write ``key: value`` (JSON) and flush; a full disk raises :class:`DiskFullError` naming the log."""
        self._handler.acquire()
        try:
            self._file.write(f"{key}: {json.dumps(value, default=jsonable)}\n")
            self._file.flush()
        except OSError as exc:
            raise (as_disk_full(exc, self.path) or exc) from exc
        finally:
            self._handler.release()

    @contextlib.contextmanager
    def step(self, name: str, params=None, client=None) -> Iterator[_Step]:
        """Record ``name``'s parameters (those that differ from defaults) and inputs now, and its
        timings, result, peak memory and status when the block ends; set ``.result`` inside."""
        if params is not None:
            self.record(f"{name}.parameters", non_default_items(params))
            self.record(f"{name}.inputs", _inputs(params))
        if client is not None:
            with contextlib.suppress(Exception):
                self.record(f"{name}.cluster", _cluster_info(client))
        step = _Step()
        t0 = time.perf_counter()
        try:
            yield step
        except BaseException as exc:
            self.record(f"{name}.status", f"error: {type(exc).__name__}: {exc}")
            raise
        finally:
            result = step.result
            seconds = getattr(result, "seconds", None) or {}
            seconds = dict(seconds) if isinstance(seconds, dict) else {"total": round(float(seconds), 3)}
            seconds.setdefault("total", round(time.perf_counter() - t0, 3))
            self.record(f"{name}.timings_s", seconds)
            if result is not None:
                if isinstance(result, dict):
                    fields = result
                else:
                    fields = result.to_dict() if hasattr(result, "to_dict") else jsonable(result)
                if isinstance(fields, dict):
                    fields = {k: v for k, v in fields.items() if k != "seconds"}
                self.record(f"{name}.result", fields)
            self.record(f"{name}.peak_memory_mb", peak_memory(client))
        self.record(f"{name}.status", "ok")

    def close(self, keep: bool = True) -> None:
        """Finish the log (renamed into place if atomic); ``keep=False`` deletes it instead."""
        if self._file.closed:
            return
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._saved_level)
        for h, level in self._saved_handler_levels:
            h.setLevel(level)
        try:
            if self._handler.error is not None:  # a log record was lost: the log is not complete
                raise self._handler.error
            self.record("finished", datetime.datetime.now().isoformat(timespec="seconds"))
            self._file.close()
        except (OSError, DiskFullError) as exc:  # e.g. a full disk: no half-written log is left
            with contextlib.suppress(OSError):
                self._file.close()
            discard(self._written)
            if keep:
                raise (as_disk_full(exc, self.path) or exc) from exc
            return
        if not keep:
            discard(self._written)
        elif self._written != self.path:
            publish(self._written, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Step:
    result = None


class _LogFileHandler(logging.StreamHandler):
    """The run log's handler of the package's log records: a record that cannot be written (a full
    disk) is noted in ``error`` (the log is then discarded by :meth:`RunLog.close`), not printed."""

    error: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        self.error = sys.exc_info()[1]


@contextlib.contextmanager
def performance_report(path: str | os.PathLike | None) -> Iterator[None]:
    """dask's HTML performance report of everything computed in the block (nothing if ``path`` is None)."""
    if path is None:
        yield
        return
    from distributed import performance_report as report

    try:
        import bokeh  # noqa: F401  (distributed draws the report with it; fail now, not after the run)
    except ImportError:
        raise ConfigError(
            f"--performance-report {os.fspath(path)!r} needs bokeh: pip install bokeh"
        ) from None
    with atomic_path(path, suffix=".html") as tmp, report(filename=os.fspath(tmp)):
        yield
    log.info("performance report: %s", path)


@contextlib.contextmanager
def run_step(
    name: str,
    params,
    client=None,
    log_file: str | os.PathLike | RunLog | None = None,
    performance_report_file: str | os.PathLike | None = None,
) -> Iterator[_Step]:
    """One step of the API (``integrate``, ``correct``): its run log (a new file, or a step in an open
    :class:`RunLog`) and its performance report, both optional. Set ``.result`` inside the block.

    A run refused for bad input (:class:`~pipeline.errors.PipelineError`: its one-line message says
    all) leaves no new log file; a crash or an interruption keeps the log, with the error.
    """
    own = log_file is not None and not isinstance(log_file, RunLog) and not _refused(params)
    runlog = RunLog(log_file, atomic=True) if own else (log_file if isinstance(log_file, RunLog) else None)
    try:
        with performance_report(performance_report_file):
            if runlog is None:
                yield _Step()
            else:
                with runlog.step(name, params, client) as step:
                    yield step
                log.info("run log: %s", runlog.path)
    except PipelineError:
        if own:
            runlog.close(keep=False)
        raise
    finally:
        if own:
            runlog.close()


def check_outputs(params, log_file=None, performance_report_file=None) -> None:
    """The output rule (:func:`~pipeline.io.atomic.check_output_path`) for a step's outputs, before any
    work: ``outfile`` and the ``parquet`` directory (refused if they exist without ``overwrite``), the
    run log and the performance report (their directory must exist; they are replaced)."""
    overwrite = getattr(params, "overwrite", False)
    if getattr(params, "outfile", None):
        check_output_path(params.outfile, overwrite)
    if getattr(params, "parquet", None):
        check_output_path(params.parquet, overwrite, is_dir=True)
    for extra in (log_file, performance_report_file):
        if extra is not None and not isinstance(extra, RunLog):
            check_output_path(extra, True)


def _refused(params) -> bool:
    if getattr(params, "overwrite", True):
        return False
    paths = []
    for name in ("outfile", "parquet"):
        value = getattr(params, name, None)
        paths += list(value) if isinstance(value, tuple | list) else [value]
    return any(Path(p).exists() for p in paths if p)


def read_run_log(path: str | os.PathLike) -> dict | None:
    """The structured lines of a run log as a dict (``None`` if ``path`` is not one of our logs)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.readline().strip() != HEADER:
                return None
            out = {}
            for line in f:
                key, sep, value = line.partition(": ")
                if not sep or " " in key:
                    continue
                try:
                    out[key] = json.loads(value)
                except json.JSONDecodeError:
                    continue
            return out
    except (OSError, UnicodeDecodeError):
        return None
