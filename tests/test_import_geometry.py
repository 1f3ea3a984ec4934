"""import_geometry against mdx2 1.0.5.

The goldens in tests/data/geometry are what mdx2's own geometry code computes from each ``.expt``
file (regenerate with ``python tests/data/make_geometry_goldens.py`` in the refkit environment).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.api.import_geometry import import_geometry
from pipeline.cli import app
from pipeline.errors import ConfigError, InputError
from pipeline.io.geometry import read_corrections, read_crystal, read_miller_grid, read_symmetry
from pipeline.model import CORRECTION_NAMES
from pipeline.symmetry.expressions import parse_miller_expression

DATA = Path(__file__).parent / "data" / "geometry"
CASES = sorted(json.loads((DATA / "cases.json").read_text()))
BOX = np.arange(-8, 9)
H, K, L = (a.ravel() for a in np.meshgrid(BOX, BOX, BOX, indexing="ij"))


def golden(name: str):
    return np.load(DATA / f"{name}.npz")


def spacing(name: str) -> tuple:
    return tuple(float(x) for x in golden(name)["spacing"])


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("geometry")
    return {
        name: import_geometry(DATA / f"{name}.expt", folder / f"{name}.nxs", sample_spacing=spacing(name))
        for name in CASES
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("name", CASES)
def test_miller_grid_matches_mdx2(name, written):
    g = golden(name)
    with h5py.File(written[name]) as f:
        for i, index in enumerate("hkl"):
            group = f[f"entry/miller_index/{index}"]
            np.testing.assert_array_equal(group["phi"][()], g["phi"])
            np.testing.assert_array_equal(group["iy"][()], g["iy"])
            np.testing.assert_array_equal(group["ix"][()], g["ix"])
            np.testing.assert_allclose(group["signal"][()], g["hkl"][i], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", CASES)
def test_corrections_match_mdx2(name, written):
    g = golden(name)
    with h5py.File(written[name]) as f:
        for i, factor in enumerate(CORRECTION_NAMES):
            group = f[f"entry/corrections/{factor}"]
            np.testing.assert_array_equal(group["iy"][()], g["correction_iy"])
            np.testing.assert_array_equal(group["ix"][()], g["correction_ix"])
            np.testing.assert_allclose(group["signal"][()], g["corrections"][i], rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_crystal_matches_mdx2(name, written):
    g = golden(name)
    with h5py.File(written[name]) as f:
        crystal = f["entry/crystal"]
        np.testing.assert_array_equal(crystal["ub_matrix"][()], g["ub_matrix"])
        np.testing.assert_allclose(crystal["unit_cell"][()], g["unit_cell"], rtol=1e-12)
        np.testing.assert_allclose(crystal["orientation_matrix"][()], g["orientation_matrix"], atol=1e-13)
        assert _text(crystal["space_group"][()]) == str(g["space_group"])


@pytest.mark.parametrize("name", CASES)
def test_symmetry_matches_mdx2(name, written):
    g = golden(name)
    with h5py.File(written[name]) as f:
        sym = f["entry/symmetry"]
        for key in ("space_group_number", "laue_group_number"):
            assert int(sym[key][()]) == int(g[key])
        for key in ("space_group_symbol", "crystal_system", "laue_group_symbol", "reciprocal_space_asu"):
            assert _text(sym[key][()]) == str(g[key])
        # order matters: mdx2's correct records the index of the first operator reaching the ASU
        np.testing.assert_array_equal(sym["laue_group_operators"][()], g["laue_group_operators"])
        np.testing.assert_array_equal(sym["space_group_operators"][()], g["space_group_operators"])
        ours = parse_miller_expression(_text(sym["reciprocal_space_asu"][()]))(H, K, L)
        theirs = parse_miller_expression(str(g["reciprocal_space_asu"]))(H, K, L)
        np.testing.assert_array_equal(ours, theirs)
        conditions = _text(sym["reflection_conditions"][()])
        if str(g["reflection_conditions"]):
            assert conditions == str(g["reflection_conditions"])
        else:  # mdx2 writes none for a non-conventional centring; ours must still be right
            assert name == "c2_odd_centring"
            _check_centring_condition(conditions, sym["space_group_operators"][()])


def _check_centring_condition(text: str, operators: np.ndarray) -> None:
    """The condition must keep exactly the reflections for which every pure translation gives h.t integral."""
    translations = [op[:, 3] % 1 for op in operators if np.array_equal(op[:, :3], np.eye(3))]
    expected = np.ones(H.shape, bool)
    for t in translations:
        phase = H * t[0] + K * t[1] + L * t[2]
        expected &= np.isclose(phase, np.round(phase))
    np.testing.assert_array_equal(parse_miller_expression(text)(H, K, L), expected)


def test_readers_and_layout(written):
    path = written["i213"]
    grid, corrections = read_miller_grid(path), read_corrections(path)
    crystal, symmetry = read_crystal(path), read_symmetry(path)
    assert grid.shape == (3, 21, 50) and corrections["d3s"].shape == (21, 50)
    assert crystal.space_group == "I 21 3" and symmetry.laue_group_operators.shape == (24, 3, 3)
    with h5py.File(path) as f:
        assert f.attrs["mdx2_version"] == "1.0.5"
        for name, cls in (("crystal", "Crystal"), ("symmetry", "Symmetry"), ("corrections", "Corrections"),
                          ("miller_index", "MillerIndex")):  # fmt: skip
            assert f[f"entry/{name}"].attrs["mdx2_module"] == "mdx2.geometry"
            assert f[f"entry/{name}"].attrs["mdx2_class"] == cls
        assert f["entry/crystal"].attrs["NX_class"] == "NXsample"
        h = f["entry/miller_index/h"]
        assert h.attrs["NX_class"] == "NXdata" and h.attrs["signal"] == "signal"
        assert list(h.attrs["axes"]) == ["phi", "iy", "ix"] and h["phi"].attrs["units"] == "degree"
        assert h5py.check_string_dtype(f["entry/symmetry/reciprocal_space_asu"].dtype).encoding == "utf-8"


def _edited(tmp_path: Path, name: str, edit) -> Path:
    doc = json.loads((DATA / f"{name}.expt").read_text())
    edit(doc)
    path = tmp_path / f"{name}_edited.expt"
    path.write_text(json.dumps(doc))
    return path


def _arrays(path: Path) -> dict:
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    return out


def test_legacy_and_properties_scans_agree(tmp_path, written):
    def to_legacy(doc):
        scan = doc["scan"][0]
        osc = scan.pop("properties")["oscillation"]
        scan["oscillation"] = [osc[0], osc[1] - osc[0]]
        scan["exposure_time"] = [0.1] * len(osc)

    legacy = import_geometry(_edited(tmp_path, "p3121", to_legacy), tmp_path / "legacy.nxs", spacing("p3121"))
    ours, ref = _arrays(legacy), _arrays(written["p3121"])
    assert ours.keys() == ref.keys()
    for key in ours:
        if np.asarray(ours[key]).dtype.kind == "f":
            np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-12)
        else:
            assert np.array_equal(ours[key], ref[key]), key


def test_single_image_properties_scan_uses_oscillation_width(tmp_path):
    def one_image(doc):
        scan = doc["scan"][0]
        scan["image_range"] = [1, 1]
        scan["properties"] = {"oscillation": [12.0], "oscillation_width": [0.5], "exposure_time": [0.1]}

    path = import_geometry(_edited(tmp_path, "p3121", one_image), tmp_path / "one.nxs")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["entry/miller_index/h/phi"][()], [12.0, 12.5])


def test_refuses_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "geometry.nxs"
    out.write_text("keep me")
    with pytest.raises(InputError, match="already exists"):
        import_geometry(DATA / "p1.expt", out)
    assert out.read_text() == "keep me"
    import_geometry(DATA / "p1.expt", out, overwrite=True)
    assert h5py.is_hdf5(out)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import pipeline.io.geometry_writer as writer

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "_nxdata", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        import_geometry(DATA / "p1.expt", tmp_path / "geometry.nxs")
    assert os.listdir(tmp_path) == []


def _multi_panel(doc):
    doc["detector"][0]["panels"].append(doc["detector"][0]["panels"][0])


BAD_INPUTS = {
    "no crystal": (lambda doc: doc["experiment"][0].pop("crystal"), "no crystal model"),
    "no scan": (lambda doc: doc["experiment"][0].pop("scan"), "no scan model"),
    "multi-panel": (_multi_panel, "2 panels"),
    "bad Hall symbol": (lambda doc: doc["crystal"][0].update(space_group_hall_symbol=" Q 7"), "space group"),
    "zero oscillation": (lambda doc: doc["scan"][0].update(oscillation=[0.0, 0.0]), "positive width"),
    "no experiments": (lambda doc: doc.update(experiment=[]), "experiment"),
    "bad image size": (lambda doc: doc["detector"][0]["panels"][0].update(image_size=[0, 10]), "image_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_expt_raises_input_error_naming_file(case, tmp_path):
    edit, message = BAD_INPUTS[case]
    path = _edited(tmp_path, "c2", edit)
    with pytest.raises(InputError, match=message) as info:
        import_geometry(path, tmp_path / "out.nxs")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out.nxs").exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        import_geometry(tmp_path / "missing.expt", tmp_path / "out.nxs")
    (tmp_path / "notjson.expt").write_text("{ this is not json")
    with pytest.raises(InputError, match="not a DIALS experiment list"):
        import_geometry(tmp_path / "notjson.expt", tmp_path / "out.nxs")
    with pytest.raises(InputError, match="directory"):
        import_geometry(tmp_path, tmp_path / "out.nxs")


@pytest.mark.parametrize("bad", [(1, 10), (0, 10, 10), (1, -1, 10), (1, 10, float("nan")), "abc"])
def test_bad_sample_spacing(bad, tmp_path):
    with pytest.raises(ConfigError, match="sample_spacing"):
        import_geometry(DATA / "p1.expt", tmp_path / "out.nxs", sample_spacing=bad)


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "g.nxs"
    result = runner.invoke(app, ["import-geometry", str(DATA / "i2.expt"), "--outfile", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert read_crystal(out).space_group == "I 1 2 1"
    result = runner.invoke(app, ["import-geometry", str(DATA / "i2.expt"), "--outfile", str(out)])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(
        app,
        [
            "import-geometry",
            str(DATA / "i2.expt"),
            "--outfile",
            str(out),
            "--overwrite",
            "--sample-spacing",
            "1",
            "40",
            "40",
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_miller_grid(out).shape == (3, 6, 14)
