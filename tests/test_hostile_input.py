"""Hostile files: each is one clear error (exit 1, one line, nothing written) and runs no code from the
file. What is trusted and refused, and how, is in SECURITY.md.

A "canary" path stands for code execution: every payload that tries Python would create it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError, InputError
from pipeline.io.geometry import read_miller_grid
from pipeline.io.images import open_image_stack
from pipeline.io.nexus import read_array, require
from pipeline.symmetry.expressions import parse_miller_expression


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def cubic(dataset_copy):
    return dataset_copy("cubic")


@pytest.fixture
def canary(tmp_path) -> Path:
    return tmp_path / "canary"


def payloads(canary: Path) -> dict[str, str]:
    touch = f"open({str(canary)!r}, 'w')"
    return {
        "import": f"__import__('os').system('touch {canary}')",
        "call": touch,
        "attribute": "h.__class__.__base__.__subclasses__()",
        "lambda": f"(lambda: {touch})()",
        "comprehension": f"[{touch} for x in (1,)]",
        "walrus": "(x := 1) == h",
        "dunder": "__builtins__",
        "string": "'h' == 'h'",
        "power": "h ** 99999999",
        "huge literal": "h + " + "9" * 400 + " > 0",
    }


def write_string(path: Path, dataset: str, text: str) -> None:
    with h5py.File(path, "r+") as f:
        del f[dataset]
        f[dataset] = text


# --- expressions from files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["import", "call", "attribute", "lambda", "comprehension", "walrus", "dunder", "string", "power"]
)
def test_asu_string_trying_python_is_refused_by_correct(cubic, tmp_path, canary, scheduler_address, name):
    write_string(cubic / "geometry.nxs", "/entry/symmetry/reciprocal_space_asu", payloads(canary)[name])
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "correct", cubic / "geometry.nxs", cubic / "mdx2/integrated_111.nxs", "--outfile", out / "c.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    line = one_error_line(result)
    assert "Miller-index expression" in line, line
    assert not canary.exists() and list(out.iterdir()) == []


def test_reflection_conditions_are_never_evaluated(cubic, tmp_path, canary, scheduler_address):
    """mdx2 records them; correct does not use them: read as text, never parsed or run."""
    write_string(cubic / "geometry.nxs", "/entry/symmetry/reflection_conditions", payloads(canary)["import"])
    result = run(
        "correct", cubic / "geometry.nxs", cubic / "mdx2/integrated_111.nxs", "--outfile", tmp_path / "c.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not canary.exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("h" + " + h" * 2000, "longer than"),
        ("-" * 3990 + "h", "nests deeper"),
        ("(" * 1000 + "h" + ")" * 1000, "cannot parse"),
        ("not " * 900 + "h", "nests deeper"),
        ("h + " + "9" * 30 + " > 0", "unsupported element"),
        ("h > 0\x00", "cannot parse"),
    ],
    ids=["long", "unary-chain", "parentheses", "not-chain", "big-integer", "nul"],
)
def test_long_or_deep_expressions_are_refused_quickly(text, words):
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=words):
        parse_miller_expression(text)
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("name", sorted(payloads(Path("/x"))))
def test_payloads_are_refused_by_the_parser(name, canary):
    with pytest.raises(InputError):
        parse_miller_expression(payloads(canary)[name])
    assert not canary.exists()


# --- links and storage that reach into other files ---------------------------------------------------


def test_external_link_in_geometry_is_refused(cubic, tmp_path, scheduler_address):
    other = cubic / "other.nxs"
    other.write_bytes((cubic / "geometry.nxs").read_bytes())
    with h5py.File(cubic / "geometry.nxs", "r+") as f:
        del f["/entry/miller_index"]
        f["/entry/miller_index"] = h5py.ExternalLink(other.name, "/entry/miller_index")
    with pytest.raises(InputError, match="external link"):
        read_miller_grid(cubic / "geometry.nxs")
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", out / "i.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    line = one_error_line(result)
    assert "geometry.nxs" in line and "external link" in line
    assert list(out.iterdir()) == []
    # a reader that means to follow links (an NXmx master file's data files) opts in
    with h5py.File(cubic / "geometry.nxs", "r") as f:
        assert require(f, "/entry/miller_index/h", external_links=True) is not None


def test_soft_link_to_an_external_link_is_refused(cubic):
    other = cubic / "other.nxs"
    other.write_bytes((cubic / "data.nxs").read_bytes())
    with h5py.File(cubic / "data.nxs", "r+") as f:
        del f["/entry/image_series/phi"]
        f["/elsewhere"] = h5py.ExternalLink(other.name, "/entry/image_series/phi")
        f["/entry/image_series/phi"] = h5py.SoftLink("/elsewhere")
    with pytest.raises(InputError, match=r"another file|external link"):
        open_image_stack(cubic / "data.nxs")


def test_external_raw_storage_is_refused(cubic):
    """A dataset whose bytes live in another file (here /etc/hostname) would read that file as numbers."""
    with h5py.File(cubic / "data.nxs", "r+") as f:
        n = f["/entry/image_series/exposure_times"].shape[0]
        del f["/entry/image_series/exposure_times"]
        f.create_dataset(
            "/entry/image_series/exposure_times", shape=(n,), dtype="f8",
            external=[("/etc/hostname", 0, h5py.h5f.UNLIMITED)],
        )  # fmt: skip
    with pytest.raises(InputError, match=r"external files.*/etc/hostname"):
        open_image_stack(cubic / "data.nxs")


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_virtual_source_outside_the_data_directory_is_refused(cubic, tmp_path, scheduler_address, where):
    """Decision: sources must be named relative to data.nxs's directory and lie under it (as
    mdx2.import_data writes them); absolute paths and '..' are refused (SECURITY.md)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for src in (cubic / "datastore").iterdir():
        os.replace(src, outside / src.name)
    with h5py.File(cubic / "data.nxs", "r+") as f:
        ds = f["/entry/image_series/data"]
        layout = h5py.VirtualLayout(shape=ds.shape, dtype=ds.dtype)
        for vds in ds.virtual_sources():
            name = Path(vds.file_name).name
            new = str(outside / name) if where == "absolute" else f"../elsewhere/{name}"
            (p0, y0, x0), (p1, y1, x1) = vds.vspace.get_select_bounds()
            shape = (p1 - p0 + 1, y1 - y0 + 1, x1 - x0 + 1)
            layout[p0 : p1 + 1, :, :] = h5py.VirtualSource(new, vds.dset_name, shape=shape)
        del f["/entry/image_series/data"]
        f["/entry/image_series"].create_virtual_dataset("data", layout, fillvalue=-1)
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", out / "i.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    line = one_error_line(result)
    assert "outside the directory" in line and "data_0.nxs" in line, line
    assert list(out.iterdir()) == []


# --- sizes and values --------------------------------------------------------------------------------


def test_declared_1e12_elements_refused_before_allocating(cubic):
    with h5py.File(cubic / "data.nxs", "r+") as f:
        del f["/entry/image_series/phi"]
        f.create_dataset(
            "/entry/image_series/phi", shape=(10**12,), dtype="f8", chunks=(2**20,), compression="gzip"
        )
    with h5py.File(cubic / "geometry.nxs", "r+") as f:
        del f["/entry/miller_index/h/signal"]
        f.create_dataset(
            "/entry/miller_index/h/signal", shape=(10**4, 10**4, 10**4), dtype="f4", chunks=(1, 100, 100),
            compression="gzip",
        )  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"/entry/image_series/phi declares shape \(1000000000000,\)"):
        open_image_stack(cubic / "data.nxs")
    with pytest.raises(InputError, match="/entry/miller_index/h/signal declares shape"):
        read_miller_grid(cubic / "geometry.nxs")
    assert time.perf_counter() - t0 < 5  # nothing was read or allocated


def test_virtual_small_array_is_refused(cubic):
    with h5py.File(cubic / "data.nxs", "r+") as f:
        n = f["/entry/image_series/phi"].shape[0]
        layout = h5py.VirtualLayout(shape=(n,), dtype="f8")
        layout[:] = h5py.VirtualSource("other.nxs", "/phi", shape=(n,))
        del f["/entry/image_series/phi"]
        f["/entry/image_series"].create_virtual_dataset("phi", layout)
    with h5py.File(cubic / "data.nxs", "r") as f, pytest.raises(InputError, match="virtual dataset"):
        read_array(f["/entry/image_series"], "phi")


@pytest.mark.parametrize("value", [-1.0, np.nan, np.inf])
def test_bad_exposure_times_are_refused(cubic, tmp_path, scheduler_address, value):
    with h5py.File(cubic / "data.nxs", "r+") as f:
        e = f["/entry/image_series/exposure_times"]
        v = e[()]
        v[3] = value
        e[...] = v
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", out / "i.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    line = one_error_line(result)
    assert "data.nxs" in line and "exposure" in line, line
    assert list(out.iterdir()) == []


def test_huge_subdivide_is_refused_with_the_reason(cubic, tmp_path):
    result = run(
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", tmp_path / "i.nxs",
        "--subdivide", 100000, 100000, 100000,
    )  # fmt: skip
    line = one_error_line(result)
    assert "<= 1000" in line and "GB" in line, line
    assert not (tmp_path / "i.nxs").exists()


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {canary}']\n",
        "cluster: !!python/name:os.system\n",
        "x: !!python/object/new:subprocess.Popen [['touch', '{canary}']]\n",
    ],
)
def test_cluster_config_with_python_tags_is_refused(cubic, tmp_path, canary, text):
    from pipeline.cluster.config import read_cluster_config

    config = tmp_path / "evil.yaml"
    config.write_text(text.format(canary=canary))
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_cluster_config(str(config))
    result = run(
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", tmp_path / "i.nxs",
        "--cluster", config,
    )  # fmt: skip
    line = one_error_line(result)
    assert "evil.yaml" in line and "not valid YAML" in line, line
    assert not canary.exists()


def test_nan_in_miller_grid_is_refused(cubic):
    with h5py.File(cubic / "geometry.nxs", "r+") as f:
        a = f["/entry/miller_index/l/signal"][()]
        a[1, 2, 3] = np.nan
        f["/entry/miller_index/l/signal"][...] = a
    with pytest.raises(InputError, match=r"/entry/miller_index/l/signal.*\[1, 2, 3\]"):
        read_miller_grid(cubic / "geometry.nxs")
