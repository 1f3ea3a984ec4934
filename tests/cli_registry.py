"""What tests/test_cli_matrix.py needs to call each command validly, apart from its paths.

The kinds of the path arguments come from the package (:data:`pipeline.cli.paths.PATHS`); here go
only the other REQUIRED arguments of a command, as command -> {parameter: [values]}. A command with
no required non-path argument needs no line here. See ARCHITECTURE.md, "Adding a command".
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data" / "cubic"

# command -> {parameter name: values on the command line}
REQUIRED: dict[str, dict[str, list[str]]] = {
    "bin-background": {"bins": ["1", "20", "20"]},
    "find-peaks": {"count_threshold": ["20"]},
    "submit": {"command": ["integrate", "geometry.nxs", "data.nxs"]},
}

# a valid input of each kind (from tests/data/cubic, never written to)
VALID_INPUT: dict[str, Path] = {
    "geometry": DATA / "geometry.nxs",
    "geometry-corrections": DATA / "geometry.nxs",
    "geometry-all": DATA / "geometry.nxs",
    "geometry-symmetry": DATA / "geometry.nxs",
    "data": DATA / "data.nxs",
    "data-file": DATA / "data.nxs",
    "mask": DATA / "mask.nxs",
    "peaks": DATA.parent / "peaks" / "cubic" / "peaks.nxs",
    "background": DATA / "bkg_data_binned.nxs",
    "table": DATA / "mdx2" / "integrated_111.nxs",
    "expt": DATA / "experiment.expt",
    "file": DATA / "dataset.json",
    "scales": DATA.parent / "merge" / "scales_111.nxs",
    "images": DATA / "data.nxs",
    "raw-images": DATA.parent / "rawinput" / "tiny_master.h5",
}

# an input of another kind, for the "wrong kind of file" case (an HDF5 file without the group)
WRONG_KIND: dict[str, Path] = {
    "geometry": DATA / "mask.nxs",
    "geometry-corrections": DATA / "mask.nxs",
    "geometry-all": DATA / "mask.nxs",
    "geometry-symmetry": DATA / "mask.nxs",
    "data": DATA / "mask.nxs",
    "data-file": DATA / "geometry.nxs",
    "mask": DATA / "data.nxs",
    "peaks": DATA / "mask.nxs",
    "background": DATA / "mask.nxs",
    "table": DATA / "mask.nxs",
    "expt": DATA / "mask.nxs",
    "scales": DATA / "mask.nxs",
    "images": DATA / "mask.nxs",
    "raw-images": DATA / "mask.nxs",
}
