"""Imports every command module so that each registers its commands on the shared ``app``, then
orders the commands and groups them into the panels of ``diffuse --help``."""

from pipeline.cli import (
    bench,  # noqa: F401
    bin_background,  # noqa: F401
    cluster_config,  # noqa: F401
    correct,  # noqa: F401
    demo,  # noqa: F401
    estimate,  # noqa: F401
    find_hot_pixels,  # noqa: F401
    find_peaks,  # noqa: F401
    import_data,  # noqa: F401
    import_geometry,  # noqa: F401
    integrate,  # noqa: F401
    map,  # noqa: F401
    mask_peaks,  # noqa: F401
    merge,  # noqa: F401
    qc,  # noqa: F401
    reintegrate,  # noqa: F401
    run,  # noqa: F401
    scale,  # noqa: F401
    simulate,  # noqa: F401
    submit,  # noqa: F401
)
from pipeline.cli.app import app

PANELS = {
    "Reduce": ["run", "integrate", "correct", "scale", "merge", "reintegrate", "map", "estimate"],
    "Check": ["qc", "find-hot-pixels"],
    "Prepare inputs": [
        "import-geometry",
        "import-data",
        "find-peaks",
        "mask-peaks",
        "bin-background",
        "simulate",
        "demo",
    ],
    "Clusters": ["submit", "cluster-config"],
}


def _name(info) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def _arrange() -> None:
    order = [name for names in PANELS.values() for name in names]
    panel_of = {name: panel for panel, names in PANELS.items() for name in names}
    for info in app.registered_commands:
        info.rich_help_panel = panel_of.get(_name(info), "Other")
    rank = {name: i for i, name in enumerate(order)}
    app.registered_commands.sort(key=lambda info: rank.get(_name(info), len(order)))


_arrange()
