"""Checks with a verdict (PASS / WARN / FAIL, or SKIP when the input they need is missing) and one
line that says what was found and what to do about it.

Each check is a function of the numbers gathered by the scans; none reads a file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.qc.tablescan import TableStats

__all__ = [
    "VERDICTS",
    "Check",
    "check_data_exposure",
    "check_empty_rows",
    "check_hot_images",
    "check_hot_table",
    "check_masked_fraction",
    "check_nonfinite",
    "check_table_exposure",
    "overall",
]

VERDICTS = ("PASS", "SKIP", "WARN", "FAIL")  # in increasing severity


@dataclass
class Check:
    name: str
    verdict: str
    message: str
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def overall(checks: list[Check]) -> str:
    """The most severe verdict (SKIP counts as PASS)."""
    worst = max((VERDICTS.index(c.verdict) for c in checks), default=0)
    return "PASS" if VERDICTS[worst] == "SKIP" else VERDICTS[worst]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.3g}%" if whole else "n/a"


def _ranges(indices: np.ndarray) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (first few runs only)."""
    if indices.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    stops = np.concatenate([indices[breaks], [indices[-1]]])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, stops, strict=True)]
    return ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")


def check_table_exposure(stats: TableStats) -> Check:
    """Integrated tables: every row must have ``seconds > 0`` (mdx2.correct divides by it)."""
    if stats.kind != "integrated":
        return Check(
            "exposure (table)", "SKIP", "a corrected table has no 'seconds' column; see 'exposure (data)'"
        )
    c, n = stats.counts, stats.n_rows
    bad = c["zero_seconds"] + c["negative_seconds"] + c["nan_seconds"]
    if bad:
        where = stats.zero_seconds_phi
        at = f" (phi {where[0]:g} to {where[1]:g} deg)" if where else ""
        return Check(
            "exposure (table)",
            "FAIL",
            f"{bad:,} of {n:,} rows have seconds == 0 or invalid{at}: their count rates are infinite and "
            "mdx2.correct writes inf/NaN intensities. Integrate again with --exposure-time SECONDS.",
            {"zero": c["zero_seconds"], "negative": c["negative_seconds"], "nan": c["nan_seconds"]},
        )
    return Check("exposure (table)", "PASS", f"all {n:,} rows have seconds > 0")


def check_data_exposure(
    exposure: np.ndarray | None, data: str | None, error: str | None = None, override: float | None = None
) -> Check:
    """The exposure time of every frame of data.nxs must be a positive number (or be overridden)."""
    if data is None:
        return Check("exposure (data)", "SKIP", "no image data given (--data) or found in a run log")
    if exposure is None:
        return Check("exposure (data)", "FAIL", f"{data}: {error or 'no exposure_times'}")
    t = np.asarray(exposure, dtype=np.float64)
    bad = np.flatnonzero(~(t > 0) | ~np.isfinite(t))
    if override is not None:
        recorded = f"; {bad.size} of {t.size} frames record 0 or invalid" if bad.size else ""
        return Check("exposure (data)", "PASS", f"exposure time set to {override:g} s per frame{recorded}")
    if bad.size:
        return Check(
            "exposure (data)",
            "FAIL",
            f"{bad.size} of {t.size} frames of {data} have exposure time 0 or invalid (frames "
            f"{_ranges(bad)}): count rates would be infinite. Integrate with --exposure-time SECONDS.",
            {"frames": bad.tolist()[:1000], "n_bad": int(bad.size)},
        )
    return Check(
        "exposure (data)",
        "PASS",
        f"all {t.size} frames have exposure times > 0 ({t.min():g} to {t.max():g} s)",
    )


def check_nonfinite(stats: TableStats, data_zero_exposure: bool = False) -> Check:
    """inf/NaN values, with their cause when it can be told from the table (and the data)."""
    c, n = stats.counts, stats.n_rows
    bad = c["value_nonfinite"]
    name = f"inf/NaN {stats.value_name}"
    details = {k: c.get(k, 0) for k in ("value_nan", "value_posinf", "value_neginf", "error_nonfinite")}
    bkg_nan = c.get("background_nonfinite")
    if bkg_nan is not None:
        details["background_nonfinite"] = bkg_nan
    if not bad:
        msg = f"all {n:,} {stats.value_name} values are finite"
        if stats.kind == "integrated" and bkg_nan:
            return Check(
                name,
                "WARN",
                f"{msg}, but the background is NaN/inf at {bkg_nan:,} rows: correct will give NaN there",
                details,
            )
        return Check(name, "PASS", msg, details)
    counts = f"{c['value_nan']:,} NaN, {c['value_posinf']:,} +inf, {c['value_neginf']:,} -inf"
    if stats.kind == "integrated":
        cause = "all in rows with seconds == 0 (counts / 0)" if c["zero_seconds"] >= bad else "cause unknown"
        return Check(name, "FAIL", f"{bad:,} of {n:,} rates are not finite ({counts}): {cause}", details)
    causes = []
    division = c["nonfinite_value_nonfinite_error"]
    if division:
        why = "zero exposure times in data.nxs" if data_zero_exposure else "seconds == 0 or a zero correction"
        causes.append(f"{division:,} with a non-finite error too: division by zero ({why})")
    background = c["nan_value_finite_error"]
    if background:
        confirmed = f"; the background is NaN at {bkg_nan:,} rows" if bkg_nan is not None else ""
        causes.append(f"{background:,} with a finite error: NaN background at those positions{confirmed}")
    if bkg_nan and not background:
        causes.append(f"the background is NaN/inf at {bkg_nan:,} rows too")
    message = f"{bad:,} of {n:,} intensities are not finite ({counts}); " + "; ".join(causes)
    return Check(name, "FAIL", message, details)


def check_empty_rows(stats: TableStats) -> Check:
    """Rows made of no pixels cannot exist in a correct table; rows with zero counts are empty voxels."""
    c, n = stats.counts, stats.n_rows
    empty = c["zero_pixels"] if stats.kind == "integrated" else c["zero_rs_volume"]
    what = "pixels == 0" if stats.kind == "integrated" else "rs_volume == 0 (no pixels)"
    if empty:
        return Check("empty rows", "FAIL", f"{empty:,} of {n:,} rows have {what}", {"empty": empty})
    if stats.kind == "integrated":
        zero = c["zero_counts"]
        msg = f"no row has {what}; {zero:,} rows ({_pct(zero, n)}) have 0 counts (empty voxels)"
        verdict = "WARN" if n and zero / n > 0.25 else "PASS"
        if verdict == "WARN":
            msg += ": weak data, or a wrong exposure/mask?"
        return Check("empty rows", verdict, msg, {"empty": 0, "zero_counts": zero})
    return Check("empty rows", "PASS", f"no row has {what}", {"empty": 0})


def check_masked_fraction(
    total: int | None, used: int | None, minus1: int | None = None, source: str = ""
) -> Check:
    """Share of the image pixels that integration did not use (-1 in the data or True in a mask)."""
    if not total or used is None:
        return Check(
            "masked pixels", "SKIP", "unknown: pass --data (and --mask), or keep the run log of integrate"
        )
    masked = total - used
    frac = masked / total
    parts = f" ({_pct(minus1, total)} are -1 in the data)" if minus1 is not None else ""
    msg = f"{_pct(masked, total)} of {total:,} pixels masked{parts}{f', from {source}' if source else ''}"
    verdict = "FAIL" if frac >= 0.95 else "WARN" if frac >= 0.5 else "PASS"
    if verdict != "PASS":
        msg += ": check the mask files"
    return Check("masked pixels", verdict, msg, {"total": total, "used": used, "fraction": frac})


def check_hot_table(stats: TableStats, hot_score: float) -> Check:
    """Rows far above their detector neighbourhood, and the threshold that removes them."""
    name = f"hot pixels ({stats.kind} table)"
    v = stats.value_name
    if stats.max_non_hot is None and not stats.n_candidates:
        return Check(name, "SKIP", f"no finite {v} to test (see the inf/NaN check)")
    if not stats.n_candidates:
        top = f"; largest {v} {stats.max_non_hot:.4g}" if stats.max_non_hot is not None else ""
        return Check(
            name, "PASS", f"no row is more than {hot_score:g} robust sigmas above its neighbours{top}"
        )
    t = stats.suggested_threshold
    details = {
        "candidates": stats.n_candidates,
        "max_non_hot": stats.max_non_hot,
        "min_hot": stats.min_hot,
        "suggested_threshold": t,
        "separates": stats.threshold_separates,
    }
    if stats.threshold_separates:
        advice = (
            f"the largest other {v} is {stats.max_non_hot:.4g}, so df[df.{v} < {t:.4g}] keeps every other "
            "row "
            "and drops these"
        )
    else:
        advice = (
            f"{stats.candidates_below_max_non_hot:,} of them are below the largest other {v} "
            f"({stats.max_non_hot:.4g}), so no single threshold removes them"
        )
    return Check(
        name,
        "WARN",
        f"{stats.n_candidates:,} rows look like hot pixels ({v} {stats.min_hot:.4g} and up, far above their "
        f"detector neighbourhood); {advice}. Better: mask them (diffuse find-hot-pixels) and integrate "
        "again.",
        details,
    )


def check_hot_images(scan, data: str | None, reason: str = "") -> Check:
    """Hot pixels found in the images (not covered by the mask files given)."""
    if scan is None:
        return Check("hot pixels (images)", "SKIP", reason or "images not scanned (pass --data)")
    if not scan.pixels:
        return Check("hot pixels (images)", "PASS", f"no unmasked hot pixel in {data}")
    where = ", ".join(f"(iy={p['iy']}, ix={p['ix']})" for p in scan.pixels[:10])
    more = f" and {len(scan.pixels) - 10} more" if len(scan.pixels) > 10 else ""
    return Check(
        "hot pixels (images)",
        "WARN",
        f"{len(scan.pixels)} unmasked hot pixels in {data}: {where}{more}. Mask them: "
        "diffuse find-hot-pixels "
        "DATA --mask MASK --outfile hot.nxs, then integrate with --mask MASK --mask hot.nxs.",
        {"pixels": scan.pixels[:1000]},
    )
