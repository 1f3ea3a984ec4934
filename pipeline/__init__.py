"""diffuse-pipeline: integrate and correct diffuse scattering on a fractional Miller-index grid, on Dask.

import pipeline

if __name__ == "__main__":  # worker processes are spawned: guard the script's own code
    pipeline.integrate("geometry.nxs", "data.nxs", mask="mask.nxs", subdivide=(4, 4, 4))
    pipeline.correct("geometry.nxs", "integrated.nxs", background="bkg_data_binned.nxs")
    df = pipeline.read_table("corrected.nxs")  # pandas DataFrame, df.attrs["ndiv"]
"""

# The package defaults (registered with dask.config now if dask is imported, else when a step first
# reads one: dask.config.set(...) calls made before the first pipeline run override them either way).
from pipeline import config as _config  # noqa: F401
from pipeline._version import __version__
from pipeline.errors import quiet_worker_reports as _quiet_worker_reports

_quiet_worker_reports()  # a worker's task failing on bad input is reported once, by the client

__all__ = ["__version__", "correct", "integrate", "make_map", "read_table", "reintegrate", "simulate"]


_WHERE = {
    "integrate": "pipeline.api.integrate",
    "correct": "pipeline.api.correct",
    "make_map": "pipeline.api.map",
    "read_table": "pipeline.io.tables",
    "reintegrate": "pipeline.api.reintegrate",
    # the package is pipeline.simulation: a submodule named "simulate" would, once imported,
    # replace this function as the attribute pipeline.simulate
    "simulate": "pipeline.simulation",
}


def __getattr__(name):
    # Imported on first use so that ``import pipeline`` (and ``diffuse --help``) stay fast.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
