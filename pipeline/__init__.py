"""diffuse-pipeline: integrate and correct diffuse scattering on a fractional Miller-index grid, on Dask.

    import pipeline
    pipeline.integrate("geometry.nxs", "data.nxs", mask="mask.nxs", subdivide=(4, 4, 4))
    pipeline.correct("geometry.nxs", "integrated.nxs", background="bkg_data_binned.nxs")
    df = pipeline.read_table("corrected.nxs")      # pandas DataFrame, df.attrs["ndiv"]
"""

__version__ = "0.1.0"

__all__ = ["__version__", "correct", "integrate", "read_table"]


def __getattr__(name):
    # Imported on first use so that ``import pipeline`` (and ``diffuse --help``) stay fast.
    if name in ("integrate", "correct", "read_table"):
        from pipeline import api

        return getattr(api, name)
    if name == "simulate":
        from pipeline.simulate import simulate

        return simulate
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
