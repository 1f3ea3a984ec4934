"""Synthetic rotation datasets in mdx2's file formats, for the demo, tests and benchmarks.

    import pipeline
    pipeline.simulate("/tmp/sim/demo", preset="demo", seed=0)   # experiment.expt, geometry.nxs, data.nxs, ...

Modules: :mod:`~pipeline.simulation.presets` (named sizes), :mod:`~pipeline.simulation.experiment`
(detector, beam, crystal and the DIALS .expt), :mod:`~pipeline.simulation.model` (expected counts,
pure numpy), :mod:`~pipeline.simulation.files` (mdx2 layouts) and :mod:`~pipeline.simulation.run`.

(The package is called ``simulation`` rather than ``simulate`` so that importing it does not
replace the function ``pipeline.simulate`` with a module of the same name.)
"""

from pipeline.simulation.presets import PRESETS, Preset, get_preset

__all__ = ["OUTPUT_FILES", "PRESETS", "CountModel", "Preset", "SimulationResult", "get_preset", "simulate"]


def __getattr__(name):
    # numpy, h5py and friends are imported on first use, so that ``diffuse --help`` stays fast
    if name in ("simulate", "SimulationResult", "OUTPUT_FILES"):
        from pipeline.simulation import run

        return getattr(run, name)
    if name == "CountModel":
        from pipeline.simulation.model import CountModel

        return CountModel
    raise AttributeError(f"module 'pipeline.simulation' has no attribute {name!r}")
