"""The QC report: ``qc.json`` for programs and a self-contained one-page ``qc.html`` for people
(figures embedded as base64 PNG, no external files, scripts or styles)."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import numpy as np

from pipeline.io.atomic import write_json_atomic, write_text_atomic

__all__ = ["write_html", "write_json"]

_COLOURS = {"PASS": "#2ca02c", "WARN": "#e6a100", "FAIL": "#d62728", "SKIP": "#7f7f7f"}


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, summary: dict) -> Path:
    write_json_atomic(path, summary, indent=1, default=_plain, allow_nan=False)
    return path


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.5g}"
    if isinstance(x, int):
        return f"{x:,}"
    return html.escape(str(x))


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _checks_html(checks: list[dict]) -> str:
    rows = []
    for c in checks:
        colour = _COLOURS[c["verdict"]]
        rows.append(
            f"<tr><td><b style='color:{colour}'>{c['verdict']}</b></td><td>{html.escape(c['name'])}</td>"
            f"<td>{html.escape(c['message'])}</td></tr>"
        )
    return "<table><tr><th>verdict</th><th>check</th><th>finding</th></tr>" + "".join(rows) + "</table>"


def _nearest(row: dict) -> str:
    p = row.get("nearest_hot_pixel")
    return f"(iy={p['iy']}, ix={p['ix']}), {p['distance']:g} px away" if p else "-"


def _hot_html(summary: dict) -> str:
    hot = summary["hot_pixels"]
    parts = []
    rows = hot.get("table_candidates", [])
    if rows:
        parts.append(
            f"<p>{hot['n_candidates']:,} rows are hot-pixel candidates (score = min(robust z, Poisson z) "
            f"&gt; {hot['hot_score']:g} against the median of their detector neighbourhood). Largest other "
            f"{summary['value_name']}: <b>{_fmt(hot['max_non_hot'])}</b>; smallest candidate: "
            f"<b>{_fmt(hot['min_hot'])}</b>; suggested threshold (keep rows below it): "
            f"<b>{_fmt(hot['suggested_threshold'])}</b>.</p>"
        )
        keys = ["h", "k", "l", "ix", "iy", "phi", "value", "neighbourhood", "score"]
        header = ["h", "k", "l", "ix (row mean)", "iy (row mean)", "phi", summary["value_name"]]
        header += ["neighbourhood median", "score"]
        near = any("nearest_hot_pixel" in r for r in rows)
        table = [[r[k] for k in keys] + ([_nearest(r)] if near else []) for r in rows[:50]]
        parts.append(_table(table, header + (["nearest hot pixel in the images"] if near else [])))
    image = hot.get("image_pixels")
    if image:
        parts.append(f"<p>Hot pixels in the images ({len(image)}; exact detector positions):</p>")
        parts.append(
            _table(
                [
                    [
                        p["iy"],
                        p["ix"],
                        p["level_counts"],
                        p["background_counts"],
                        p["windows_hot"],
                        p["windows_tested"],
                    ]
                    for p in image[:50]
                ],
                ["iy", "ix", "counts/frame (quantile)", "neighbours", "windows hot", "windows tested"],
            )
        )
    return "".join(parts) or "<p>No hot-pixel candidates.</p>"


_CSS = (
    "body{font-family:sans-serif;max-width:1250px;margin:1em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:left;font-size:0.92em}th{background:#f2f2f2}img{max-width:100%;border:1px solid #ddd}"
    "h2{margin-top:1.4em;border-bottom:1px solid #ddd}.verdict{font-size:1.3em;font-weight:bold}"
)


def write_html(path: Path, summary: dict, figures: list[tuple[str, Path]]) -> Path:
    """One page: overall verdict, checks, table facts, hot pixels, then every figure embedded."""
    verdict = summary["verdict"]
    facts = [
        ["table", summary["table"]],
        ["kind", summary["kind"]],
        ["rows", summary["rows"]],
        ["ndiv", " x ".join(str(x) for x in summary["ndiv"])],
        ["voxels", summary["voxels"]],
        ["mean observations per voxel", summary["mean_redundancy"]],
        ["inputs found", "; ".join(summary["inputs"].get("found_in") or []) or "-"],
        ["data", summary["inputs"].get("data")],
        ["masks", ", ".join(summary["inputs"].get("masks") or []) or "-"],
    ]
    imgs = []
    for title, png in figures:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        imgs.append(
            f"<h3>{html.escape(title)}</h3>"
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    when = datetime.datetime.now().isoformat(timespec="seconds")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>QC: {html.escape(Path(summary['table']).name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Quality control of {html.escape(Path(summary['table']).name)}</h1>"
        f"<p class='verdict' style='color:{_COLOURS[verdict]}'>Overall: {verdict}</p>"
        f"<h2>Checks</h2>{_checks_html(summary['checks'])}"
        f"<h2>Table</h2>{_table(facts, ['', ''])}"
        f"<h2>Hot pixels</h2>{_hot_html(summary)}"
        f"<h2>Figures</h2>{''.join(imgs)}"
        f"<p style='color:#777;font-size:0.85em'>diffuse qc {html.escape(summary['version'])}, {when}, "
        f"{summary['seconds']['total']:.1f} s. Machine-readable: qc.json.</p>"
        "</body></html>"
    )
    write_text_atomic(path, page)
    return path
