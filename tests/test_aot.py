"""integrate's kernels compiled ahead of time (pipeline.kernels.aot): used, loaded without numba,
named after their source, and arrays they were not compiled for go to numba's jitted kernels.
(tests/test_kernels.py compares both builds with the oracles.)"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.kernels import aot

DATA = Path(__file__).parent / "data"
needs_build = pytest.mark.skipif(
    not aot.load_all(), reason="integrate's kernels are not compiled ahead of time here (make install)"
)


def _kernels():
    for name in aot.MODULES:
        module = importlib.import_module(name)
        yield from (k for k in aot._kernels(module).values() if k.signatures)


@needs_build
def test_every_kernel_with_signatures_is_compiled_ahead():
    names = [k.__name__ for k in _kernels()]
    assert {"_bin_pixels", "_reduce_sorted", "_finalize_into", "_radix_order", "_unshuffle"} <= set(names)
    assert all(k.compiled_ahead for k in _kernels())


@needs_build
def test_integrate_in_threads_imports_no_numba(tmp_path):
    """A local run (threads in this process) with the builds there never imports numba."""
    d = DATA / "cubic"
    out = tmp_path / "out.nxs"
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('numba' in sys.modules, flush=True))\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['diffuse', 'integrate', {str(d / 'geometry.nxs')!r}, {str(d / 'data.nxs')!r}, "
        f"'--mask', {str(d / 'mask.nxs')!r}, '--outfile', {str(out)!r}, '--quiet']\n"
        "main()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False"]
    assert out.exists()


@needs_build
def test_arrays_of_other_types_run_jitted():
    from pipeline.io.chunks import _unshuffle

    raw = np.arange(32, dtype=np.uint8)
    for itemsize in (2, 4):
        want = raw.reshape(itemsize, -1).T.reshape(-1)  # byte b of element i at b * n + i
        for out in (np.empty(32, np.uint8), np.empty(64, np.uint8)[::2]):  # C-contiguous, strided
            if itemsize == 4 and not out.flags.c_contiguous:
                continue  # (4-byte words are composed in a contiguous view)
            _unshuffle(raw, itemsize, out)
            assert np.array_equal(out, want)
        _unshuffle(raw, np.int32(itemsize), out := np.empty(32, np.uint8))  # a scalar of another type
        assert np.array_equal(out, want)


def test_build_name_follows_source_and_constants(monkeypatch):
    binning = importlib.import_module("pipeline.kernels.binning")
    name = aot.ahead_name(binning)
    assert name.startswith("_aot_binning_") and aot.ahead_name(binning) == name
    monkeypatch.setattr(binning, "KEY_BITS", binning.KEY_BITS + 1)  # a constant the kernels read
    assert aot.ahead_name(binning) != name


def test_jit_only_runs_numba(monkeypatch):
    from pipeline.kernels.sorting import stable_key_order

    keys = np.random.default_rng(0).integers(0, 1 << 40, 1000)
    with aot.jit_only():
        jitted = stable_key_order(keys)
    assert np.array_equal(jitted, np.argsort(keys, kind="stable"))
    assert np.array_equal(stable_key_order(keys), jitted)


@needs_build
def test_compiled_kernels_release_the_gil():
    """A kernel compiled ahead of time runs while this thread runs Python (nogil, as the jit's)."""
    import threading
    import time

    from pipeline.kernels.sorting import _radix_order

    ranks = np.random.default_rng(1).integers(0, 1 << 36, 1 << 22)
    t0 = time.perf_counter()
    _radix_order(ranks, 36, 12)
    alone = time.perf_counter() - t0
    worker = threading.Thread(target=lambda: [_radix_order(ranks, 36, 12) for _ in range(3)])
    worker.start()
    gaps, last = [], time.perf_counter()
    while worker.is_alive():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    assert max(gaps) < 0.5 * alone  # the GIL held through a call would stop this loop for a whole call


def test_without_a_build_the_jitted_kernels_run(monkeypatch):
    """No build for this source (none made, another source, no compiler): numba's jit, same result."""
    from pipeline.kernels import sorting

    monkeypatch.setattr(aot, "_AHEAD", {})
    monkeypatch.setattr(aot, "ahead_name", lambda module: "_aot_sorting_none")
    monkeypatch.setattr(sorting._radix_order, "_ahead", aot._UNSET)
    assert not sorting._radix_order.compiled_ahead
    assert not aot.load_all(["pipeline.kernels.sorting"])
    keys = np.random.default_rng(2).integers(0, 1 << 30, 500)
    assert np.array_equal(sorting._radix_order(keys, 30, 12), np.argsort(keys, kind="stable"))
