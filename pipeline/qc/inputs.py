"""Find what a table was made from: image data, masks, background, pixel counts.

In order: what the user passed (``--data``, ``--mask``, ``--background``); our run logs in the
table's directory (:mod:`pipeline.api.runlog`, which name the absolute input paths and the pixels
integration read and used); mdx2's own logs there (``mdx2.integrate.log`` / ``mdx2.correct.log``,
whose ``Parameters(...)`` line names the inputs relative to the directory mdx2 ran in). For a
corrected table the integrated table it came from is followed to its integration's inputs.

mdx2's parameter line is parsed with :mod:`ast` (literal values only), never evaluated.
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.api.runlog import read_run_log

__all__ = ["TableInputs", "discover_inputs", "parse_mdx2_parameters"]

log = logging.getLogger(__name__)


@dataclass
class TableInputs:
    data: str | None = None
    masks: list[str] = field(default_factory=list)
    background: str | None = None
    integrated: str | None = None  # for a corrected table: the integrated table it came from
    pixels_read: int | None = None
    pixels_used: int | None = None
    found_in: list[str] = field(default_factory=list)  # where each piece came from

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "masks": self.masks,
            "background": self.background,
            "integrated": self.integrated,
            "pixels_read": self.pixels_read,
            "pixels_used": self.pixels_used,
            "found_in": self.found_in,
        }


def parse_mdx2_parameters(line: str) -> dict | None:
    """``... | Parameters(geom='geometry.nxs', data='data.nxs', ...)`` -> dict of the literal values."""
    start = line.find("Parameters(")
    if start < 0:
        return None
    text = line[start:].strip()
    try:
        call = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(call, ast.Call):
        return None
    out = {}
    for kw in call.keywords:
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return out


def _mdx2_log(directory: Path, step: str, outfile: str) -> dict | None:
    """The parameters of the last run in ``mdx2.<step>.log`` (mdx2 appends) that wrote ``outfile``."""
    path = directory / f"mdx2.{step}.log"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            params = None
            for line in f:
                parsed = parse_mdx2_parameters(line) if "Parameters(" in line else None
                if parsed is not None and Path(str(parsed.get("outfile", ""))).name == outfile:
                    params = parsed
            return params
    except OSError:
        return None


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _our_logs(directory: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(directory.glob("*.log")):
        parsed = read_run_log(path)
        if parsed is not None:
            out.append((path, parsed))
    return out


def _from_our_logs(table: Path, step: str, found: TableInputs) -> dict | None:
    """The ``step.inputs`` of a run log in the table's directory whose outputs include the table."""
    for path, parsed in _our_logs(table.parent):
        inputs = parsed.get(f"{step}.inputs") or {}
        if any(_same(o, table) for o in inputs.get("outputs", [])):
            found.found_in.append(f"run log {path}")
            result = parsed.get(f"{step}.result") or {}
            if step == "integrate":
                found.pixels_read = result.get("pixels_read", found.pixels_read)
                found.pixels_used = result.get("pixels_used", found.pixels_used)
            return inputs
    return None


def _from_mdx2_log(table: Path, step: str, found: TableInputs) -> dict | None:
    params = _mdx2_log(table.parent, step, table.name)
    if params is None:
        return None
    found.found_in.append(f"mdx2 log {table.parent / f'mdx2.{step}.log'}")
    resolved = {}
    for key, value in params.items():
        if isinstance(value, str) and value and (table.parent / value).exists():
            resolved[key] = str((table.parent / value).resolve())
    return {
        "data": resolved.get("data"),
        "mask": [resolved["mask"]] if resolved.get("mask") else [],
        "background": resolved.get("background"),
        "integrated": resolved.get("hkl"),
    }


def discover_inputs(
    table: str | os.PathLike,
    kind: str,
    data: str | None = None,
    masks: list[str] | None = None,
    background: str | None = None,
) -> TableInputs:
    """Inputs of ``table`` (``kind`` integrated or corrected); explicit arguments take precedence."""
    found = TableInputs(data=data, masks=list(masks or []), background=background)
    if data:
        found.found_in.append("command line")
    table = Path(table).resolve()
    integrated = table
    if kind == "corrected":
        step = _from_our_logs(table, "correct", found) or _from_mdx2_log(table, "correct", found) or {}
        found.background = found.background or step.get("background")
        found.integrated = step.get("integrated")
        if not found.integrated:
            return found
        integrated = Path(found.integrated)
    step = (
        _from_our_logs(integrated, "integrate", found) or _from_mdx2_log(integrated, "integrate", found) or {}
    )
    if not data and step.get("data"):
        found.data = step["data"]
        found.masks = found.masks or list(step.get("mask") or [])
    log.debug("inputs of %s: %s", table, found)
    return found
