"""diffuse-pipeline: integrate and correct diffuse scattering on a fractional Miller-index grid, on Dask.

import pipeline

if __name__ == "__main__":  # worker processes are spawned: guard the script's own code
    pipeline.integrate("geometry.nxs", "data.nxs", mask="mask.nxs", subdivide=(4, 4, 4))
    pipeline.correct("geometry.nxs", "integrated.nxs", background="bkg_data_binned.nxs")
    df = pipeline.read_table("corrected.nxs")  # pandas DataFrame, df.attrs["ndiv"]
"""

__version__ = "0.1.0"

# Register the package defaults with dask.config now, so that dask.config.set(...) calls made
# before the first pipeline run override them rather than replace them.
from pipeline import config as _config  # noqa: F401

__all__ = ["__version__", "correct", "integrate", "read_table", "simulate"]


def __getattr__(name):
    # Imported on first use so that ``import pipeline`` (and ``diffuse --help``) stay fast.
    if name in ("integrate", "correct", "read_table"):
        from pipeline import api

        return getattr(api, name)
    if name == "simulate":
        # the package is pipeline.simulation: a submodule named "simulate" would, once imported,
        # replace this function as the attribute pipeline.simulate
        from pipeline.simulation import simulate

        return simulate
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
