"""A report of fitted scaling models: the plots users draw by hand in mdx2's scaling notebooks.

One figure per kind of model present (every batch overlaid or side by side):

* scale ``b`` vs phi (one line per batch);
* detector efficiency ``d(ix, iy)`` as an image;
* absorption ``a(ix, iy, phi)``: the surface at the first, middle and last phi control point, and
  its mean over the detector vs phi;
* offset ``c(s, phi)``: ``c`` vs s at a few phi, and as an image over (s, phi).

``write_scale_report(models, "report.html")`` writes the PNGs beside the HTML page
(``report_<kind>.png``); with a ``.png`` path it writes one PNG with every panel stacked.
Inputs are :class:`~pipeline.io.scales.Scales` (what ``read_scales`` returns) or the models of a
``diffuse scale`` run.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.io.atomic import atomic_path, save_figure_atomic

__all__ = ["collect", "write_scale_report"]


def collect(models) -> dict[str, list]:
    """``{kind: [model per batch]}`` from a list of Scales, one Scales, or a scale run's ``Models``."""
    out = {"scaling": [], "detector": [], "absorption": [], "offset": []}
    if hasattr(models, "per_batch"):  # pipeline.graph.scale.Models
        for m in models.per_batch:
            for kind, model in m.items():
                if model.u is not None:
                    out[kind].append(model.to_model())
        if models.detector is not None and models.detector.u is not None:
            out["detector"].append(models.detector.to_model())
        return out
    scales = models if isinstance(models, list | tuple) else [models]
    for s in scales:
        for kind in out:
            model = getattr(s, kind)
            if model is not None and model.u is not None and not (kind == "detector" and out[kind]):
                out[kind].append(model)
    return out


def _scaling(fig, models):
    ax = fig.add_subplot(1, 1, 1)
    for i, m in enumerate(models):
        ax.plot(m.phi, m.u, marker=".", label=f"batch {i}")
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("scale b")
    ax.set_title("scale vs phi")
    if len(models) > 1:
        ax.legend()


def _image(fig, ax, x, y, u, title, xlabel, ylabel, label):
    im = ax.pcolormesh(x, y, u.T, shading="auto")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=label)


def _detector(fig, models):
    m = models[0]
    ax = fig.add_subplot(1, 1, 1)
    _image(fig, ax, m.ix, m.iy, m.u, "detector efficiency d", "ix (pixels)", "iy (pixels)", "d")
    ax.set_aspect("equal")


def _absorption(fig, models):
    m = models[0]
    picks = sorted({0, m.phi.size // 2, m.phi.size - 1})
    for j, k in enumerate(picks):
        ax = fig.add_subplot(1, len(picks) + 1, j + 1)
        _image(fig, ax, m.ix, m.iy, m.u[:, :, k], f"a at phi = {m.phi[k]:g}", "ix", "iy", "a")
    ax = fig.add_subplot(1, len(picks) + 1, len(picks) + 1)
    for i, mm in enumerate(models):
        ax.plot(mm.phi, mm.u.mean(axis=(0, 1)), marker=".", label=f"batch {i}")
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("mean a over the detector")
    ax.set_title("absorption vs phi")


def _offset(fig, models):
    m = models[0]
    ax = fig.add_subplot(1, 2, 1)
    for k in sorted({0, m.phi.size // 2, m.phi.size - 1}):
        ax.plot(m.s, m.u[:, k], label=f"phi = {m.phi[k]:g}")
    ax.set_xlabel("s (1/Angstrom)")
    ax.set_ylabel("offset c")
    ax.set_title("offset vs s")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    _image(fig, ax, m.s, m.phi, m.u, "offset c(s, phi)", "s (1/Angstrom)", "phi (degrees)", "c")


_DRAW = {
    "scaling": (_scaling, (6, 4)),
    "detector": (_detector, (6, 5)),
    "absorption": (_absorption, (16, 4)),
    "offset": (_offset, (12, 4)),
}
_TITLES = {
    "scaling": "Scale vs phi (b)",
    "detector": "Detector efficiency (d)",
    "absorption": "Absorption (a)",
    "offset": "Offset vs s and phi (c)",
}


def _figure(kind, models) -> Figure:
    draw, size = _DRAW[kind]
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig, models)
    return fig


def write_scale_report(models, path: str | os.PathLike) -> Path:
    """Write the report (``.html`` + PNGs beside it, or one ``.png``); returns ``path``."""
    path = Path(path)
    found = {k: v for k, v in collect(models).items() if v}
    if path.suffix.lower() == ".png":
        n = max(len(found), 1)
        fig = Figure(figsize=(16, 4.5 * n), layout="constrained")
        FigureCanvasAgg(fig)
        subs = fig.subfigures(n, 1) if n > 1 else [fig]
        for sub, (kind, ms) in zip(subs, found.items(), strict=False):
            _DRAW[kind][0](sub, ms)
            sub.suptitle(_TITLES[kind])
        return save_figure_atomic(fig, path, dpi=90)
    parts = [
        "<html><head><meta charset='utf-8'><title>scaling models</title></head><body><h1>Scaling models</h1>"
    ]
    for kind, ms in found.items():
        png = path.with_name(f"{path.stem}_{kind}.png")
        save_figure_atomic(_figure(kind, ms), png, dpi=90)
        u = np.concatenate([np.ravel(m.u) for m in ms])
        parts.append(
            f"<h2>{html.escape(_TITLES[kind])}</h2>"
            f"<p>{len(ms)} model(s), {ms[0].u.size} control points each; "
            f"values {u.min():.4g} to {u.max():.4g}</p><img src='{html.escape(png.name)}'>"
        )
    parts.append("</body></html>")
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path
