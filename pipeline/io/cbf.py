"""CBF images (Pilatus; one file per frame, byte-offset compression) as an image stack.

A small reader rather than fabio: the only compression the detectors write is CBF's byte offset
(``x-CBF_BYTE_OFFSET``, signed 32-bit), whose decoder is a dozen lines of numba that run without the
GIL, so threads read frames in parallel; the header fields needed (``Start_angle``,
``Angle_increment``, ``Exposure_time``, ``Count_cutoff``) are plain text in the mini-header. Tests
compare the reader with fabio on files fabio writes.

Counts follow mdx2's data.nxs: negative values (Pilatus gaps -1, bad pixels -2) and values at or
above ``Count_cutoff`` become -1.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numba
import numpy as np

from pipeline.errors import InputError
from pipeline.io.rawimages import RawInfo, frame_centres, to_counts, valid_limit

__all__ = [
    "CbfHandle",
    "decode_byte_offset",
    "encode_byte_offset",
    "expand_images",
    "open_cbf_stack",
    "read_cbf",
]

BINARY_START = b"\x0c\x1a\x04\xd5"
FRAME_CACHE_BYTES = 1 << 30


@numba.njit(nogil=True, cache=True)
def _byte_offset(src, out):
    """CBF byte-offset decoding: deltas of 1 byte, escaped (-128) to 2, (-32768) to 4, then 8 bytes."""
    value = np.int64(0)
    i = 0
    n = src.size
    for j in range(out.size):
        if i >= n:
            return -1
        d = np.int64(np.int8(src[i]))
        i += 1
        if d == -128:
            if i + 2 > n:
                return -1
            d = np.int64(np.int16(np.uint16(src[i]) | (np.uint16(src[i + 1]) << np.uint16(8))))
            i += 2
            if d == -32768:
                if i + 4 > n:
                    return -1
                d = np.int64(
                    np.int32(
                        np.uint32(src[i])
                        | (np.uint32(src[i + 1]) << np.uint32(8))
                        | (np.uint32(src[i + 2]) << np.uint32(16))
                        | (np.uint32(src[i + 3]) << np.uint32(24))
                    )
                )
                i += 4
                if d == -2147483648:
                    if i + 8 > n:
                        return -1
                    w = np.uint64(0)
                    for b in range(8):
                        w |= np.uint64(src[i + b]) << np.uint64(8 * b)
                    d = np.int64(w)
                    i += 8
        value += d
        out[j] = value
    return i


def decode_byte_offset(data: bytes | np.ndarray, n: int) -> np.ndarray:
    """``n`` int64 values from byte-offset compressed ``data`` (``ValueError`` if it ends early)."""
    out = np.empty(n, dtype=np.int64)
    if _byte_offset(np.frombuffer(data, dtype=np.uint8), out) < 0:
        raise ValueError(f"byte-offset data ends before {n} values")
    return out


def encode_byte_offset(values: np.ndarray) -> bytes:
    """Byte-offset compression of integer ``values`` (C order): for tests and simulated files."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    delta = np.diff(v, prepend=np.int64(0))
    parts = []
    for d in delta.tolist():
        if -127 <= d <= 127:
            parts.append(np.int8(d).tobytes())
        elif -32767 <= d <= 32767:
            parts.append(b"\x80" + np.int16(d).tobytes())
        elif -(2**31) + 1 <= d <= 2**31 - 1:
            parts.append(b"\x80\x00\x80" + np.int32(d).tobytes())
        else:
            parts.append(b"\x80\x00\x80\x00\x00\x00\x80" + np.int64(d).tobytes())
    return b"".join(parts)


def write_cbf(path, image: np.ndarray, header: dict[str, str]) -> None:
    """A minimal CBF file (miniCBF layout) with byte-offset data: for tests and examples."""
    image = np.asarray(image, dtype=np.int32)
    body = encode_byte_offset(image)
    lines = "".join(f"# {k} {v}\r\n" for k, v in header.items())
    text = (
        '###CBF: VERSION 1.5\r\n\r\ndata_image\r\n\r\n_array_data.header_convention "PILATUS_1.2"\r\n'
        f"_array_data.header_contents\r\n;\r\n{lines};\r\n\r\n_array_data.data\r\n;\r\n"
        "--CIF-BINARY-FORMAT-SECTION--\r\nContent-Type: application/octet-stream;\r\n"
        '     conversions="x-CBF_BYTE_OFFSET"\r\nContent-Transfer-Encoding: BINARY\r\n'
        f"X-Binary-Size: {len(body)}\r\nX-Binary-ID: 1\r\n"
        'X-Binary-Element-Type: "signed 32-bit integer"\r\n'
        "X-Binary-Element-Byte-Order: LITTLE_ENDIAN\r\n"
        f"X-Binary-Number-of-Elements: {image.size}\r\n"
        f"X-Binary-Size-Fastest-Dimension: {image.shape[1]}\r\n"
        f"X-Binary-Size-Second-Dimension: {image.shape[0]}\r\n"
        "X-Binary-Size-Padding: 4095\r\n\r\n"
    )
    with open(path, "wb") as f:
        f.write(
            text.encode("ascii")
            + BINARY_START
            + body
            + b"\x00" * 4095
            + b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n"
        )


def _field(header: str, name: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(name)}\s*[:=]?\s*\"?([^\r\n\";]+)", header, re.MULTILINE)
    return m.group(1).strip() if m else None


def _number(header: str, name: str) -> float | None:
    value = _field(header, f"# {name}")
    if value is None:
        return None
    try:
        return float(value.split()[0])
    except (ValueError, IndexError):
        return None


def _split(path: str, data: bytes) -> tuple[str, int]:
    start = data.find(BINARY_START)
    if start < 0:
        raise InputError(f"{path!r} is not a CBF file with binary image data (no binary section)")
    return data[:start].decode("latin-1"), start + len(BINARY_START)


def read_cbf_header(path: str) -> tuple[dict, tuple[int, int]]:
    """Angles, exposure, count cutoff and (ny, nx) of one CBF file."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    header, _ = _split(path, head)
    return _parse(path, header)


def _parse(path: str, header: str) -> tuple[dict, tuple[int, int]]:
    conv = _field(header, "conversions")
    if conv is None or "x-CBF_BYTE_OFFSET" not in conv:
        raise InputError(f"{path!r}: only byte-offset compressed CBF is supported, got conversions={conv!r}")
    etype = _field(header, "X-Binary-Element-Type") or ""
    if "signed 32-bit integer" not in etype:
        raise InputError(f'{path!r}: element type {etype!r}; expected "signed 32-bit integer"')
    try:
        nx = int(_field(header, "X-Binary-Size-Fastest-Dimension"))
        ny = int(_field(header, "X-Binary-Size-Second-Dimension"))
    except (TypeError, ValueError):
        raise InputError(f"{path!r}: no X-Binary-Size-Fastest/Second-Dimension in the header") from None
    info = {
        "start_angle": _number(header, "Start_angle"),
        "angle_increment": _number(header, "Angle_increment"),
        "exposure_time": _number(header, "Exposure_time"),
        "count_cutoff": _number(header, "Count_cutoff"),
    }
    return info, (ny, nx)


def read_cbf(path: str) -> np.ndarray:
    """The image of one CBF file as int64 (raw values, nothing masked)."""
    with open(path, "rb") as f:
        data = f.read()
    header, start = _split(path, data)
    _, (ny, nx) = _parse(path, header)
    try:
        return decode_byte_offset(np.frombuffer(data, dtype=np.uint8)[start:], ny * nx).reshape(ny, nx)
    except ValueError as exc:
        raise InputError(f"{path!r}: image data truncated ({exc})") from exc


def expand_images(spec: str | os.PathLike) -> list[str]:
    """CBF files named by a template (``sim_#####.cbf``, all files that exist), a glob pattern, one
    file, or a text file listing one file per line (relative names relative to the list)."""
    spec = str(spec)
    if "#" in spec:
        n = spec.count("#")
        head, tail = spec[: spec.index("#")], spec[spec.index("#") + n :]
        files = sorted(glob.glob(glob.escape(head) + "[0-9]" * n + glob.escape(tail)))
    elif any(c in spec for c in "*?["):
        files = sorted(glob.glob(spec))
    elif spec.endswith((".txt", ".lst", ".list")):
        base = Path(spec).parent
        lines = [
            ln.strip() for ln in Path(spec).read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
        files = [str(Path(ln) if os.path.isabs(ln) else base / ln) for ln in lines]
    else:
        files = [spec]
    if not files:
        raise InputError(f"no CBF files match {spec!r}")
    return files


def open_cbf_stack(spec, exposure_time: float | None = None, scan=None):
    """Describe CBF frames (template, glob, list file, or the files of ``scan`` from a ``.expt``)."""
    from pipeline.io.images import ImageStack
    from pipeline.io.rawimages import default_binning_chunks

    files = list(scan.images) if scan is not None else expand_images(spec)
    for p in files:
        if not os.path.isfile(p):
            raise InputError(f"CBF file {p!r} not found")
    first_info, frame_shape = read_cbf_header(files[0])
    n = len(files)
    cutoff = first_info["count_cutoff"]
    if scan is None:
        phi0, dphi = first_info["start_angle"], first_info["angle_increment"]
        if phi0 is None or dphi is None or not dphi > 0:
            raise InputError(
                f"{files[0]!r} has no Start_angle / positive Angle_increment in its header; "
                "pass the DIALS .expt instead to take phi from it"
            )
        exposure = np.empty(n)
        for i, p in enumerate(files):
            info, shape = read_cbf_header(p) if i else (first_info, frame_shape)
            if shape != frame_shape:
                raise InputError(f"{p!r} has {shape[0]} x {shape[1]} pixels, {files[0]!r} {frame_shape}")
            start = info["start_angle"]
            if start is not None and abs(start - (phi0 + i * dphi)) > 1e-3 * dphi:
                raise InputError(
                    f"{p!r} starts at {start:g} deg; frame {i} of a scan from {phi0:g} deg in steps of "
                    f"{dphi:g} deg should start at {phi0 + i * dphi:g} (missing or unordered files?)"
                )
            exposure[i] = info["exposure_time"] if info["exposure_time"] is not None else 0.0
    else:
        phi0, dphi, exposure = scan.phi0, scan.dphi, scan.exposure_times
        start = first_info["start_angle"]
        if start is not None and abs(start - phi0) > 1e-3 * dphi:
            raise InputError(
                f"the .expt's scan starts at {phi0:g} deg, but {files[0]!r} records Start_angle {start:g}"
            )
    if exposure_time is not None:
        exposure = np.full(n, float(exposure_time))
    shape = (n, *frame_shape)
    return ImageStack(
        path=str(Path(files[0]).resolve()),
        dataset="",
        shape=shape,
        storage_chunks=default_binning_chunks(dphi, shape),
        phi=frame_centres(phi0, dphi, n),
        iy=np.arange(frame_shape[0], dtype=np.float64),
        ix=np.arange(frame_shape[1], dtype=np.float64),
        exposure_times=np.asarray(exposure, dtype=np.float64),
        sources=tuple(str(Path(p).resolve()) for p in files),
        format="cbf",
        raw=RawInfo(None, valid_limit(np.int32, cutoff), (1, *frame_shape), "int32", 0, phi0, dphi),
    )


class CbfHandle:
    """Frames of one task, decoded once each (kept for the frames of one binning slab)."""

    def __init__(self, stack):
        self._stack = stack
        frame_bytes = stack.shape[1] * stack.shape[2] * 4
        self._keep = max(1, min(stack.storage_chunks[0], FRAME_CACHE_BYTES // frame_bytes))
        self._frames: dict[int, np.ndarray] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._frames.clear()

    def _frame(self, i: int) -> np.ndarray:
        if i not in self._frames:
            counts = read_cbf(self._stack.sources[i])
            if counts.shape != self._stack.shape[1:]:
                raise InputError(
                    f"{self._stack.sources[i]!r} has {counts.shape} pixels, expected {self._stack.shape[1:]}"
                )
            if len(self._frames) >= self._keep:
                self._frames.pop(next(iter(self._frames)))
            self._frames[i] = to_counts(counts[None], None, self._stack.raw.limit)[0]
        return self._frames[i]

    def read(self, slices, out=None) -> np.ndarray:
        """The pixels of ``slices`` (``out``, a buffer HDF5 stacks may decode into, is not used here)."""
        p, ys, xs = slices
        return np.stack([self._frame(i)[ys, xs] for i in range(p.start, p.stop)])
