"""Compile every numba kernel once, ahead of the first run (``python -m pipeline.kernels.warmup``).

The kernels are jitted with ``cache=True``: the machine code is kept next to the sources and loaded
in milliseconds by every later process. Without this step the first run on a fresh install spends
tens of seconds compiling, in every worker at once. ``make`` runs it after installing. The inputs
below have the dtypes and memory layouts the pipeline passes, so the cached signatures are the ones
the pipeline needs.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["load_numba", "prepare_numba", "warm_up"]


_REST = [(c, np.float32) for c in ("phi", "iy", "ix", "seconds")] + [
    ("counts", np.int32),
    ("pixels", np.int32),
    ("n", np.float64),
]


def _bin_and_reduce() -> None:
    from pipeline.kernels.binning import bin_chunk
    from pipeline.kernels.interpolate import prepare_miller_block
    from pipeline.kernels.partials import finalize, kahan_reduceat, reduce_partials, reduce_to_table

    grid_axes = (np.linspace(0, 2, 3), np.linspace(-0.5, 9.5, 3), np.linspace(-0.5, 19.5, 3))
    hkl = np.random.default_rng(0).normal(size=(3, 3, 3, 3))
    phi, iy, ix = np.array([0.5, 1.5]), np.arange(10.0), np.arange(20.0)
    data = np.ones((2, 10, 20), dtype=np.int32)
    seconds = np.full(2, 0.1)
    rows = []
    for target in ((phi, iy, ix), (phi, iy[:1], ix)):  # the fused path and the general one
        block = prepare_miller_block(grid_axes, hkl, *target)
        shape = tuple(t.size for t in target)
        for mask in (None, np.zeros(shape, dtype=bool)):
            rows.append(bin_chunk(data[:, : shape[1]], mask, block, *target, seconds, (2, 2, 2)))
    both = np.concatenate(rows)
    finalize(reduce_partials(both, 1.0), (2, 2, 2))
    reduce_to_table(both, 1.0, (2, 2, 2), np.dtype([(c, np.float32) for c in "hkl"] + _REST))
    kahan_reduceat(np.ones((4, 2)), np.array([0, 2]))


def _io() -> None:
    from pipeline.io.chunks import _unshuffle

    raw = np.zeros(16, dtype=np.uint8)
    _unshuffle(raw, 4, np.empty(16, dtype=np.uint8))
    _unshuffle(raw, 2, np.empty(16, dtype=np.uint8))
    from pipeline.io.cbf import decode_byte_offset
    from pipeline.io.rawimages import to_counts

    decode_byte_offset(b"\x01\x01", 2)
    mask = np.zeros((3, 3), dtype=bool)
    for dtype in (np.uint16, np.uint32, np.int32):  # Eiger, Eiger, NXmx int32: whole chunks and parts
        raw = np.zeros((1, 3, 3), dtype=dtype)
        to_counts(raw, mask, 10)
        to_counts(raw[:, :2, :2], mask[:2, :2], 10)
        to_counts(raw[:, :2, :2], None, 10)
    to_counts(np.zeros((1, 2, 2), dtype=np.int64), None, 10)  # CBF frames


def _maps() -> None:
    from pipeline.kernels.maps import scatter_orbits

    hkl, eye = np.zeros((3, 1), np.int32), np.eye(3, dtype=np.int64)[None]
    scatter_orbits(hkl, eye, 0, 0, 0, np.zeros((1, 1, 1), np.int32), use_numba=True)


def scale_kernels(dtypes=(np.float32, np.float64), dims=(1, 2, 3)) -> None:
    """``scale``'s kernels: normal equations and model values for float32 and float64 coordinates on
    1-, 2- and 3-D grids, the stencil-to-CSR product, LSQR."""
    from pipeline.kernels import scaling_fit as sf
    from pipeline.kernels import scaling_models as sm

    f = np.ones(4, np.float32)
    sf.merge_sums(f, f, f, f, np.zeros(4, bool), np.zeros(4, np.int64), 1)
    for dtype in dtypes:
        for d in dims:
            axes = tuple(np.linspace(0.0, 2.0, 3) for _ in range(d))
            coords = tuple(np.ones(4, dtype) for _ in range(d))
            grid = sf.Grid(axes)
            ne = sf.accumulate(grid, coords, np.ones(4), np.ones(4))
            ne = sf.accumulate(grid, coords, 1.0, np.ones(4, np.float32))
            interp = {1: sm.interp1, 2: sm.interp2, 3: sm.interp3}[d]
            interp(*coords, *axes, np.ones(grid.shape))
    AA = sf.stencil_to_sparse(grid, ne.S + 1.0)
    kind = {1: "d2", 2: "lap", 3: "lapxy"}[d]
    sf.solve(AA, ne.Ay, [(1.0, sf.regulariser(grid.shape, kind))], extra_diag=0.1)


def _reintegrate() -> None:
    """``reintegrate``'s kernels: per-row values with every model (and without), the rows' emission,
    the dense-block sums and the output columns."""
    from pipeline.io.scales import Scales
    from pipeline.kernels import scaling_models as sm
    from pipeline.kernels.binning import PARTIAL_DTYPE
    from pipeline.kernels.keys import pack_keys
    from pipeline.kernels.reintegrate import (
        ReintegrateModel,
        accumulate_pieces,
        finish_rows,
        reintegrate_rows,
    )
    from pipeline.model import BackgroundGrid, CorrectionGrid

    ax = np.linspace(0.0, 20.0, 3)
    names = ("solid_angle", "attenuation", "polarization", "efficiency", "d3s")
    corrections = CorrectionGrid(ax, ax, {n: np.ones((3, 3)) for n in names})
    scales = Scales(
        sm.ScalingModel(ax, np.ones(3)), sm.AbsorptionModel(ax, ax, ax, np.ones((3, 3, 3))),
        sm.DetectorModel(ax, ax, np.ones((3, 3))), sm.OffsetModel(ax, ax, np.zeros((3, 3))),
    )  # fmt: skip
    rows = np.zeros(4, dtype=PARTIAL_DTYPE)
    rows["key"] = pack_keys(np.arange(4), np.zeros(4), np.zeros(4))
    rows["pixels"] = 1
    for scale, bkg in ((scales, BackgroundGrid(ax, ax, ax, np.ones((3, 3, 3)))), (None, None)):
        model = ReintegrateModel(
            np.eye(3), None, None, corrections, bkg, scale, (1, 1, 1), ((0, 3), (0, 0), (0, 0))
        )
        out = reintegrate_rows(rows, model)
        for output in ("counts", "intensity"):
            finish_rows(
                accumulate_pieces([out[:2], out[2:]], model.asu_range), (1, 1, 1), model.asu_range, output
            )
            finish_rows(
                accumulate_pieces([out], model.asu_range, dense_limit=0), (1, 1, 1), model.asu_range, output
            )


def _correct() -> None:
    from pipeline.kernels.corrections_fused import warm_up as correct_kernels

    correct_kernels()


class _WithoutScipyLinalg:
    """An import hook that refuses ``scipy.linalg`` (and its modules)."""

    def find_spec(self, name, path=None, target=None):
        if name == "scipy.linalg" or name.startswith("scipy.linalg."):
            raise ImportError(f"{name} is not needed by the kernels")
        return None


def prepare_numba() -> None:
    """Get the kernels of integrate's path ready before a process runs them in its threads: their
    builds compiled ahead of time (:mod:`pipeline.kernels.aot`, a millisecond, no numba) when they are
    all there, else numba's implementations (:func:`load_numba`)."""
    from pipeline.kernels import aot

    if not aot.load_all():
        load_numba()


def load_numba() -> None:
    """Load numba's implementations (what its first call of any kernel, compiled or cached, does)
    without importing ``scipy.linalg``: numba imports it there only to find a BLAS, which no kernel
    here uses (``np.dot`` and friends, were one to use them, still import it when compiled). That
    import takes 0.1-0.2 s of every run. Later imports of ``scipy.linalg`` are not affected."""
    import sys

    if "numba.np.arraymath" in sys.modules:  # loaded already
        return
    from numba.core.registry import cpu_target

    hook = _WithoutScipyLinalg()
    sys.meta_path.insert(0, hook)
    try:
        cpu_target.target_context.refresh()
    finally:
        sys.meta_path.remove(hook)


def warm_up() -> float:
    """Compile (or load from the cache) every kernel; returns the seconds it took."""
    from pipeline.kernels import aot

    t0 = time.perf_counter()
    _correct()
    with aot.jit_only():  # numba's cache, for the arrays the builds compiled ahead of time do not take
        _bin_and_reduce()
        _io()
    _maps()
    scale_kernels()
    _reintegrate()
    aot.build_all()  # integrate's kernels compiled ahead of time
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"numba kernels ready ({warm_up():.1f} s)")
