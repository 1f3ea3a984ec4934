"""Detector files in: NXmx/Eiger master files and CBF, ``--chunks``, ``import-data``, LZ4 decoding.

The golden dataset ``cubic`` (I 2b 2c 3, chunks 5 x 64 x 100) is turned into an Eiger-style master
file (bitshuffle-LZ4, one frame per chunk, several data files, gaps at the dtype's maximum, a
pixel_mask) and into CBF files; integrating those with ``--chunks`` = the data.nxs chunks must give
mdx2 1.0.5's own tables (tests/data/cubic/mdx2) row for row. A live check on a dataset kept apart
(C 2, made by refkit) runs mdx2.integrate on our import-data output (skipped without refkit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

import pipeline
from pipeline.errors import ConfigError, InputError
from pipeline.io import bitshuffle
from pipeline.io.cbf import decode_byte_offset, encode_byte_offset, read_cbf, write_cbf
from pipeline.io.chunks import ChunkReader
from pipeline.io.images import open_image_stack
from pipeline.io.rawimages import default_binning_chunks

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
SCRIPT = ROOT / "scripts" / "nxs_to_eiger.py"
CHUNKS = (5, 64, 100)  # the storage chunks of tests/data/cubic/data.nxs (what mdx2 bins by)
REFKIT = Path(os.environ.get("REFKIT", ROOT.parent / "shared" / "refkit"))
if not (REFKIT / "setup.sh").exists():
    REFKIT = Path("/work/shared/refkit")
HAVE_REFKIT = (REFKIT / "setup.sh").exists() and Path("/tmp/mdx2ref/bin/mdx2.integrate").exists()


def to_eiger(data: Path, out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(SCRIPT), str(data), str(out), *args], check=True, capture_output=True)
    return out


def read_table(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        return {k: g[k][()] for k in g if k != "ndiv"}


def assert_same_table(ours: Path, ref: Path) -> None:
    a, b = read_table(ours), read_table(ref)
    assert len(a["h"]) == len(b["h"])
    for name in ("h", "k", "l", "n", "counts", "pixels"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for name in ("phi", "iy", "ix", "seconds"):
        np.testing.assert_array_equal(a[name].astype(np.float32), b[name].astype(np.float32), err_msg=name)


@pytest.fixture(scope="module")
def eiger(tmp_path_factory) -> Path:
    """cubic as an Eiger master file (uint16, 3 frames per data file) plus a .expt naming it."""
    out = tmp_path_factory.mktemp("eiger")
    to_eiger(CUBIC / "data.nxs", out, "--frames-per-file", "3", "--expt", str(CUBIC / "experiment.expt"))
    return out


@pytest.fixture(scope="module")
def cbfs(tmp_path_factory) -> Path:
    """cubic as CBF files (gaps -1 and -2, as Pilatus writes them)."""
    out = tmp_path_factory.mktemp("cbf")
    with h5py.File(CUBIC / "data.nxs", "r") as f:
        g = f["/entry/image_series"]
        data, exposure = g["data"][()], g["exposure_times"][()]
    for i, frame in enumerate(data):
        img = frame.copy()
        img[(img == -1) & (np.arange(img.shape[1]) % 2 == 1)[None, :]] = -2
        header = {
            "Exposure_time": f"{exposure[i]} s",
            "Start_angle": f"{0.1 * i:.4f} deg.",
            "Angle_increment": "0.1000 deg.",
            "Count_cutoff": "1048576 counts",
        }
        write_cbf(out / f"img_{i + 1:05d}.cbf", img, header)
    return out


# --- integrate on detector files gives mdx2's table -----------------------------------------------


@pytest.mark.golden
def test_eiger_master_gives_mdx2_table(eiger, tmp_path, client):
    out = pipeline.integrate(
        CUBIC / "geometry.nxs",
        eiger / "eiger_master.h5",
        mask=CUBIC / "mask.nxs",
        subdivide=(3, 2, 5),
        chunks=CHUNKS,
        outfile=tmp_path / "t.nxs",
        client=client,
    )
    assert out.rows > 0
    assert_same_table(tmp_path / "t.nxs", CUBIC / "mdx2" / "integrated_325.nxs")


@pytest.mark.slow
@pytest.mark.golden
def test_expt_naming_the_master_and_uint32(tmp_path, client):
    out = to_eiger(
        CUBIC / "data.nxs", tmp_path / "e32", "--dtype", "uint32", "--frames-per-file", "5",
        "--expt", str(CUBIC / "experiment.expt"),
    )  # fmt: skip
    pipeline.integrate(
        CUBIC / "geometry.nxs", out / "eiger.expt", mask=CUBIC / "mask.nxs", subdivide=1, chunks=CHUNKS,
        outfile=tmp_path / "t.nxs", client=client,
    )  # fmt: skip
    assert_same_table(tmp_path / "t.nxs", CUBIC / "mdx2" / "integrated_111.nxs")


@pytest.mark.slow
@pytest.mark.golden
def test_cbf_template_gives_mdx2_table(cbfs, tmp_path, client):
    pipeline.integrate(
        CUBIC / "geometry.nxs", str(cbfs / "img_#####.cbf"), mask=CUBIC / "mask.nxs", subdivide=1,
        chunks=CHUNKS, outfile=tmp_path / "t.nxs", client=client,
    )  # fmt: skip
    assert_same_table(tmp_path / "t.nxs", CUBIC / "mdx2" / "integrated_111.nxs")


@pytest.mark.slow
def test_other_chunks_change_the_split(eiger, tmp_path, client):
    """The binning grid, not the files' one-frame chunks, decides the split: one frame per chunk
    splits more observations than mdx2's 5-frame chunks."""
    common = dict(mask=CUBIC / "mask.nxs", subdivide=1, client=client)
    a = pipeline.integrate(CUBIC / "geometry.nxs", eiger / "eiger_master.h5", chunks=(1, -1, -1),
                           outfile=tmp_path / "a.nxs", **common)  # fmt: skip
    b = pipeline.integrate(CUBIC / "geometry.nxs", eiger / "eiger_master.h5", chunks=CHUNKS,
                           outfile=tmp_path / "b.nxs", **common)  # fmt: skip
    assert a.partial_rows > b.partial_rows
    assert a.pixels_used == b.pixels_used


# --- import-data ----------------------------------------------------------------------------------


@pytest.mark.golden
def test_import_data_writes_mdx2_layout(eiger, tmp_path, client):
    from pipeline.api.import_data import import_data

    res = import_data(eiger / "eiger.expt", chunks=CHUNKS, outfile=tmp_path / "data.nxs", client=client)
    assert res.chunks == CHUNKS and len(res.sources) == 3
    with h5py.File(tmp_path / "data.nxs", "r") as ours, h5py.File(CUBIC / "data.nxs", "r") as ref:
        a, b = ours["/entry/image_series"], ref["/entry/image_series"]
        assert a["data"].is_virtual and a["data"].dtype == np.int32
        np.testing.assert_array_equal(a["data"][()], b["data"][()])
        for name in ("phi", "iy", "ix", "exposure_times"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert {"signal", "axes"} <= set(a.attrs)
        assert [v.file_name for v in a["data"].virtual_sources()] == [
            f"datastore/data_{i}.nxs" for i in range(3)
        ]
    with h5py.File(tmp_path / "datastore" / "data_0.nxs", "r") as f:
        ds = f["/entry/image_series/data"]
        assert ds.chunks == CHUNKS and ds.compression == "gzip" and ds.shuffle
    pipeline.integrate(CUBIC / "geometry.nxs", tmp_path / "data.nxs", mask=CUBIC / "mask.nxs",
                       subdivide=(3, 2, 5), outfile=tmp_path / "t.nxs", client=client)  # fmt: skip
    assert_same_table(tmp_path / "t.nxs", CUBIC / "mdx2" / "integrated_325.nxs")
    (tmp_path / "data.nxs").unlink()
    with pytest.raises(InputError, match=r"datastore file .* exists"):
        import_data(eiger / "eiger.expt", chunks=CHUNKS, outfile=tmp_path / "data.nxs", client=client)
    with pytest.raises(ConfigError, match="relative"):
        import_data(eiger / "eiger.expt", datastore="/abs/store", outfile=tmp_path / "x.nxs")


def test_import_data_default_chunks_follow_mdx2():
    # refkit's small preset (2 x 3 Pilatus modules, 0.1 deg): mdx2.import_data chose (50, 212, 494)
    assert default_binning_chunks(0.1, (60, 619, 981)) == (50, 212, 494)
    assert default_binning_chunks(0.1, (12, 195, 487)) == (12, 195, 487)
    # an Eiger 16M: modules of 1028 x 512 with 12 x 38 gaps
    assert default_binning_chunks(0.1, (100, 4362, 4148)) == (50, 550, 1040)
    assert default_binning_chunks(0.5, (100, 1000, 1000)) == (10, 1000, 1000)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_REFKIT, reason="needs refkit (mdx2 1.0.5 at /tmp/mdx2ref)")
def test_live_mdx2_on_import_data_of_a_dataset_kept_apart(tmp_path, client):
    """C 2 (monoclinic, not a golden): mdx2.integrate on the data.nxs refkit wrote and on our
    import-data of its Eiger version give the same table; so does our integrate of the master."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    ds = tmp_path / "c2"
    sh = (
        f"source {REFKIT}/setup.sh >/dev/null && "
        f"python {REFKIT}/make_dataset.py {ds} --preset tiny --frames 24 --hall ' C 2y' "
        "--cell 60 40 50 90 105 90 --chunks 6 195 487 --no-bkg >/dev/null && cd {ds} && "
        "mdx2.integrate geometry.nxs data.nxs --mask mask.nxs --subdivide 2 2 2 --outfile ref.nxs >/dev/null"
    ).replace("{ds}", str(ds))
    subprocess.run(["bash", "-c", sh], check=True, env=env)
    chunks = tuple(json.loads((ds / "dataset.json").read_text())["chunks"])
    to_eiger(
        ds / "data.nxs", tmp_path / "eiger", "--frames-per-file", "5", "--expt", str(ds / "experiment.expt")
    )
    from pipeline.api.import_data import import_data

    (tmp_path / "imp").mkdir()
    import_data(tmp_path / "eiger" / "eiger_master.h5", chunks=chunks, outfile=tmp_path / "imp" / "data.nxs",
                client=client)  # fmt: skip
    sh = f"source {REFKIT}/setup.sh >/dev/null && cd {tmp_path}/imp && "
    sh += f"mdx2.integrate {ds}/geometry.nxs data.nxs "
    sh += f"--mask {ds}/mask.nxs --subdivide 2 2 2 --outfile out.nxs >/dev/null"
    subprocess.run(["bash", "-c", sh], check=True, env=env)
    assert_same_table(tmp_path / "imp" / "out.nxs", ds / "ref.nxs")
    pipeline.integrate(ds / "geometry.nxs", tmp_path / "eiger" / "eiger_master.h5", mask=ds / "mask.nxs",
                       subdivide=2, chunks=chunks, outfile=tmp_path / "ours.nxs", client=client)  # fmt: skip
    assert_same_table(tmp_path / "ours.nxs", ds / "ref.nxs")


# --- scan and geometry must agree -----------------------------------------------------------------


def test_scan_disagreeing_with_geometry_is_refused(tmp_path, client):
    out = to_eiger(CUBIC / "data.nxs", tmp_path / "e", "--frames", "10")
    with pytest.raises(InputError, match=r"geometry .* was made for phi from 0 to 1\.2"):
        pipeline.integrate(CUBIC / "geometry.nxs", out / "eiger_master.h5", outfile=tmp_path / "t.nxs",
                           client=client)  # fmt: skip


def test_expt_disagreeing_with_master_is_refused(eiger, tmp_path):
    doc = json.loads((eiger / "eiger.expt").read_text())
    doc["scan"][0]["oscillation"] = [1.0, 0.1]
    (eiger / "shifted.expt").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="records 0 deg"):
        open_image_stack(eiger / "shifted.expt")


def test_cbf_out_of_order_is_refused(cbfs, tmp_path):
    files = sorted(cbfs.glob("*.cbf"))
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in [files[1], files[0], *files[2:]]))
    with pytest.raises(InputError, match="unordered"):
        open_image_stack(tmp_path / "list.txt")


# --- external links: only inside the master's directory -------------------------------------------


def _master_linking(tmp_path: Path, target: str) -> Path:
    master = tmp_path / "m" / "x_master.h5"
    master.parent.mkdir(exist_ok=True)
    with h5py.File(master, "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink(target, "/entry/data/data")
        f["/entry/sample/goniometer/omega"] = np.arange(2) * 0.1
        f["/entry/sample/goniometer/omega_increment_set"] = 0.1
    return master


def _data_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.ones((2, 8, 8), np.uint16), chunks=(1, 8, 8),
                         **hdf5plugin.Bitshuffle(cname="lz4"))  # fmt: skip
    return path


def test_external_links_outside_the_master_directory_are_refused(tmp_path):
    outside = _data_file(tmp_path / "elsewhere" / "d.h5")
    with pytest.raises(InputError, match="absolute"):
        open_image_stack(_master_linking(tmp_path, str(outside)))
    with pytest.raises(InputError, match=r"'\.\.'"):
        open_image_stack(_master_linking(tmp_path, "../elsewhere/d.h5"))
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "sneaky.h5").symlink_to(outside)
    with pytest.raises(InputError, match="outside"):
        open_image_stack(_master_linking(tmp_path, "sneaky.h5"))


def test_external_links_inside_the_master_directory_are_read(tmp_path):
    _data_file(tmp_path / "m" / "sub" / "d.h5")
    stack = open_image_stack(_master_linking(tmp_path, "sub/d.h5"))
    assert stack.shape == (2, 8, 8) and stack.format == "nxmx"
    with stack.open() as images:
        assert (images.read((slice(0, 2), slice(0, 8), slice(0, 8))) == 1).all()


# --- decoders -------------------------------------------------------------------------------------


def test_bitshuffle_lz4_direct_reads_equal_h5py(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.poisson(5, (3, 50, 70)).astype(np.uint32)
    a[:, 7] = np.iinfo(np.uint32).max
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("d", data=a, chunks=(1, 50, 70), **hdf5plugin.Bitshuffle(cname="lz4"))
    assert bitshuffle.available()
    with h5py.File(tmp_path / "b.h5", "r") as f:
        reader = ChunkReader(f["d"])
        assert reader.fast and reader.lz4
        np.testing.assert_array_equal(reader.read((slice(0, 3), slice(3, 40), slice(0, 70))), a[:, 3:40])
        _, raw = f["d"].id.read_direct_chunk((1, 0, 0))
    with pytest.raises(ValueError, match=r"corrupt|decoded|announces"):
        bitshuffle.decode_bitshuffle_lz4(raw[:12] + bytes(len(raw) - 12), 50 * 70 * 4, 4)


def test_byte_offset_round_trip_and_fabio():
    rng = np.random.default_rng(2)
    v = rng.integers(-5, 100, 1000)
    v[[10, 20, 30]] = [-2, 40_000, -(2**40)]  # 2-, 4- and 8-byte deltas
    np.testing.assert_array_equal(decode_byte_offset(encode_byte_offset(v), v.size), v)
    with pytest.raises(ValueError):
        decode_byte_offset(encode_byte_offset(v)[:-3], v.size)


def test_cbf_reader_agrees_with_fabio(tmp_path):
    fabio = pytest.importorskip("fabio")
    img = np.random.default_rng(3).integers(-2, 70_000, (40, 30)).astype(np.int32)
    write_cbf(tmp_path / "ours.cbf", img, {"Start_angle": "0 deg.", "Angle_increment": "0.1 deg."})
    np.testing.assert_array_equal(fabio.open(str(tmp_path / "ours.cbf")).data, img)
    from fabio.cbfimage import CbfImage

    CbfImage(data=img).write(str(tmp_path / "fabio.cbf"))
    np.testing.assert_array_equal(read_cbf(str(tmp_path / "fabio.cbf")), img)


def test_nxmx_masking(tmp_path):
    """dtype maximum, pixel_mask, and values above saturation become -1; others are kept."""
    d = tmp_path / "m"
    data = np.full((1, 4, 5), 7, np.uint16)
    data[0, 0, 0] = 65535
    data[0, 1, 1] = 900
    with h5py.File(_data_file(d / "d.h5"), "w") as f:
        f.create_dataset(
            "/entry/data/data", data=data, chunks=(1, 4, 5), **hdf5plugin.Bitshuffle(cname="lz4")
        )
    with h5py.File(d / "x_master.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("d.h5", "/entry/data/data")
        f["/entry/sample/goniometer/omega"] = [0.0]
        f["/entry/sample/goniometer/omega_increment_set"] = 0.1
        f["/entry/instrument/detector/count_time"] = 0.5
        f["/entry/instrument/detector/saturation_value"] = 800
        pm = np.zeros((4, 5), np.uint32)
        pm[2, 3] = 4
        f["/entry/instrument/detector/pixel_mask"] = pm
    stack = open_image_stack(d / "x_master.h5")
    assert stack.exposure_times.tolist() == [0.5]
    with stack.open() as images:
        counts = images.read((slice(0, 1), slice(0, 4), slice(0, 5)))
    expected = np.full((1, 4, 5), 7, np.int32)
    expected[0, 0, 0] = expected[0, 1, 1] = expected[0, 2, 3] = -1
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.slow
def test_cli_integrate_master_with_chunks(eiger, tmp_path, scheduler_address):
    shutil.copy(CUBIC / "mask.nxs", tmp_path / "mask.nxs")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "integrate", str(CUBIC / "geometry.nxs"),
         str(eiger / "eiger_master.h5"),
         "--mask", str(tmp_path / "mask.nxs"), "--subdivide", "3", "2", "5", "--chunks", "5", "64", "100",
         "--outfile", str(tmp_path / "t.nxs"), "--cluster", scheduler_address, "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_same_table(tmp_path / "t.nxs", CUBIC / "mdx2" / "integrated_325.nxs")


def test_chunks_option_is_validated():
    from pipeline.config import IntegrateParams

    ok = IntegrateParams(geometry="g.nxs", data="d.nxs", chunks=(10, -1, 100))
    assert ok.chunks == (10, -1, 100)
    for bad in ((0, 1, 1), (1, 2), (1.5, 1, 1), (-2, 1, 1)):
        with pytest.raises(ConfigError, match="chunks"):
            IntegrateParams(geometry="g.nxs", data="d.nxs", chunks=bad)
