"""Bin the pixels of one storage chunk into voxel partial sums: the hot loop of ``integrate``.

For every pixel that is not masked (counts != -1 and mask False), in C order of the chunk:

    (h, k, l)  = trilinear interpolation of the Miller grid (float64, mdx2's operation order)
    key        = pack(round(h * ndiv_h), round(k * ndiv_k), round(l * ndiv_l))   (half to even)
    per key:     pixels += 1, counts += c, phi += phi_frame, iy += y, ix += x, seconds += t_frame

Sums are accumulated per key in pixel order, the same additions ``np.bincount`` does in mdx2, so the
float64 partial sums (and the partial-observation split that depends on them) are bit-identical.

Two implementations: :func:`bin_chunk` (numba, nogil: per tile of 32 image rows, a pass vectorised
across the tile's rows computes the keys, then a scalar pass accumulates the tile's pixels in C order
into a paged open-addressing table) and
:func:`bin_chunk_oracle` (plain numpy, ``np.unique`` + ``np.bincount``, as mdx2 does it).
"""

from __future__ import annotations

import threading

import numpy as np

from pipeline.kernels.aot import kernel
from pipeline.kernels.interpolate import MillerBlock, miller_indices_dense
from pipeline.kernels.keys import KEY_BITS, KEY_LIMIT, KEY_OFFSET, pack_keys

__all__ = ["PARTIAL_DTYPE", "bin_chunk", "bin_chunk_oracle"]

#: One row per (storage chunk, voxel): additive sums only; means are formed after the reduction.
PARTIAL_DTYPE = np.dtype(
    [
        ("key", "<i8"),
        ("pixels", "<i8"),
        ("counts", "<i8"),
        ("phi", "<f8"),
        ("iy", "<f8"),
        ("ix", "<f8"),
        ("seconds", "<f8"),
    ]
)

_EMPTY = np.int64(-1)
_HASH_MULT = np.uint64(11400714819323198485)  # 2**64 / golden ratio (Fibonacci hashing)


# The accumulator is a paged table. Voxels are grouped in blocks of 4 x 4 x 4 (H >> 2, K >> 2, L >> 2);
# each block touched owns a page of 64 entries (pixels, counts, phi, iy, ix, seconds), contiguous,
# L fastest. Neighbouring pixels fall in the same or adjacent voxels, so they hit the same page and
# usually the same cache lines, and a change of voxel within a block needs no hash probe at all.
# An open-addressing hash table maps block keys to pages; entries with pixels > 0 are in use.
_PAGE = 64
_SUMS = 6


@kernel(nogil=True, cache=True, inline="always")
def _slot(key, blocks, bits):
    """Row of ``key`` in the block table (linear probing), or of the empty row to fill."""
    mask = (1 << bits) - 1
    i = np.int64((np.uint64(key) * _HASH_MULT) >> np.uint64(64 - bits))
    while True:
        k = blocks[i, 0]
        if k == key or k == _EMPTY:
            return i
        i = (i + 1) & mask


def _new_blocks(bits: int) -> np.ndarray:
    return np.full((1 << bits, 2), _EMPTY, dtype=np.int64)  # (block key, page)


# A thread's tables, kept for its next chunk: fresh memory is zeroed by the kernel page by page
# (several times the cost of the binning on some machines); the pages used are cleared instead.
_TABLES = threading.local()
_KEEP_BYTES = 1 << 30


def _tables(bits: int, n_pages: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty block table of ``2**bits`` rows and at least ``n_pages`` zeroed pages (this thread's
    kept tables when they fit)."""
    kept = getattr(_TABLES, "kept", None)
    _TABLES.kept = None
    if kept is not None:
        blocks, pages = kept
        if blocks.shape[0] != 1 << bits:
            blocks = _new_blocks(bits)
        if pages.shape[0] < n_pages:
            pages = np.zeros((n_pages, _PAGE, _SUMS))
        return blocks, pages
    return _new_blocks(bits), np.zeros((n_pages, _PAGE, _SUMS))


def _keep_tables(blocks: np.ndarray, pages: np.ndarray, used: int) -> None:
    """Clear the tables (the pages in use only) and keep them for this thread's next chunk."""
    if blocks.nbytes + pages.nbytes > _KEEP_BYTES:
        return
    blocks.fill(_EMPTY)
    pages[:used] = 0.0
    _TABLES.kept = (blocks, pages)


@kernel(nogil=True, cache=True, signatures=[("int64[:, ::1]", "int64[:, ::1]", "int64")])
def _rehash(blocks, new_blocks, new_bits):
    """Move every block into a (larger) empty block table."""
    for i in range(blocks.shape[0]):
        if blocks[i, 0] != _EMPTY:
            j = _slot(blocks[i, 0], new_blocks, new_bits)
            new_blocks[j, 0] = blocks[i, 0]
            new_blocks[j, 1] = blocks[i, 1]


# Rows are binned in tiles of _TILE image rows. The keys of a tile are computed first, with the rows
# side by side (``keys[x, r]``): every pixel of a column shares the grid points and weights along ix,
# so the arithmetic runs across the tile's rows in SIMD lanes with no gathers. The accumulation then
# walks the tile's pixels in C order.
_TILE = 32
_F8 = "float64[::1]"
#: the arguments bin_chunk passes (int32 counts, C-contiguous arrays)
_BIN_PIXELS = (
    "int32[:, :, ::1]", "boolean[:, :, ::1]", "boolean", "boolean", "float64[:, :, :, ::1]",
    "float64[:, :, :, ::1]", "int64[::1]", "int64[::1]", _F8, _F8, _F8, _F8, _F8, _F8, "int64[::1]",
    "int64[:, ::1]", "float64[:, :, ::1]", "int64[::1]", "int64",
)  # fmt: skip
_BAD = np.int64(-2)  # key of a pixel whose indices a key cannot hold (or are NaN)


@kernel(nogil=True, cache=True, inline="always")
def _pack_lane(Hf, Kf, Lf, lim):
    """The key of rounded indices (Hf, Kf, Lf), or _BAD beyond KEY_LIMIT (or NaN); branch-free."""
    ok = (abs(Hf) <= lim) & (abs(Kf) <= lim) & (abs(Lf) <= lim)
    H = np.int64(Hf) if ok else 0
    K = np.int64(Kf) if ok else 0
    L = np.int64(Lf) if ok else 0
    key = ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)
    return key if ok else _BAD


@kernel(nogil=True, cache=True)
def _tile_keys_fused(p, y0, step1, b1, b2, w1, w2, omw2, nh, nk, nl, lanes, keys):
    """Keys of image rows y0 ... (at most _TILE, to the chunk's last) of frame p into ``keys[x, r]``,
    Miller indices from ``step1``: mdx2's second step (along iy) once per row for its grid points,
    then the third (along ix) per pixel, each as ``lo * (1 - w) + hi * w``."""
    rows = min(_TILE, b1.size - y0)
    G = step1.shape[2]
    for r in range(rows):
        y = y0 + r
        j1 = b1[y]
        v1 = w1[y]
        for g in range(G):
            for c in range(3):
                lanes[c, g, r] = step1[p, j1, g, c] * (1.0 - v1) + step1[p, j1 + 1, g, c] * v1
    lim = np.float64(KEY_LIMIT)
    for x in range(b2.size):
        j = b2[x]
        w = w2[x]
        om = omw2[x]  # 1.0 - w, the same double
        for r in range(rows):
            Hf = np.rint((lanes[0, j, r] * om + lanes[0, j + 1, r] * w) * nh)
            Kf = np.rint((lanes[1, j, r] * om + lanes[1, j + 1, r] * w) * nk)
            Lf = np.rint((lanes[2, j, r] * om + lanes[2, j + 1, r] * w) * nl)
            keys[x, r] = _pack_lane(Hf, Kf, Lf, lim)


@kernel(nogil=True, cache=True)
def _tile_keys_dense(p, y0, hkl, nh, nk, nl, keys):
    """Keys of image rows y0 ... (at most _TILE) of frame p, Miller indices read from ``hkl``."""
    lim = np.float64(KEY_LIMIT)
    for r in range(min(_TILE, hkl.shape[1] - y0)):
        y = y0 + r
        for x in range(hkl.shape[2]):
            Hf = np.rint(hkl[p, y, x, 0] * nh)
            Kf = np.rint(hkl[p, y, x, 1] * nk)
            Lf = np.rint(hkl[p, y, x, 2] * nl)
            keys[x, r] = _pack_lane(Hf, Kf, Lf, lim)


@kernel(nogil=True, cache=True, inline="always")
def _store_sums(pages, page, v, pixels, counts, phi, iy, ix, seconds):
    """A voxel's running sums back into its table row."""
    pages[page, v, 0] = pixels
    pages[page, v, 1] = counts
    pages[page, v, 2] = phi
    pages[page, v, 3] = iy
    pages[page, v, 4] = ix
    pages[page, v, 5] = seconds


@kernel(nogil=True, cache=True, signatures=[_BIN_PIXELS])
def _bin_pixels(
    data,
    mask,
    use_mask,
    fused,
    step1,
    hkl,
    b1,
    b2,
    w1,
    w2,
    phi,
    iy,
    ix,
    seconds,
    ndiv,
    blocks,
    pages,
    state,
    start,
):
    """Accumulate pixels from linear index ``start`` into the paged table (``blocks``, ``pages``).

    ``state`` holds (blocks in use, pages in use). Returns ``(stop, out_of_range)``; ``stop <
    data.size`` means the block table reached half full or the pages ran out before pixel ``stop``:
    the caller grows them and calls again from ``stop``, so every pixel is still added in C order.
    ``fused``: Miller indices from ``step1`` (axis order (0, 1, 2)), the second step done once per
    image row; otherwise read per pixel from the precomputed ``hkl`` (other orders).

    Each tile of image rows goes in two passes: the voxel keys of the whole tile (arithmetic only,
    which the compiler vectorises across the tile's rows), then the accumulation in pixel order
    (branches and table look-ups).
    """
    nphi, ny, nx = data.shape
    bits = np.int64(np.log2(blocks.shape[0]))
    n_blocks = state[0]
    n_pages = state[1]
    last_key = _EMPTY
    last_block = _EMPTY
    page = 0
    v = 0
    r_pixels = r_counts = r_phi = r_iy = r_ix = r_seconds = 0.0
    nh = np.float64(ndiv[0])
    nk = np.float64(ndiv[1])
    nl = np.float64(ndiv[2])
    out_of_range = False
    lanes = np.empty((3, step1.shape[2], _TILE))  # h, k, l at the grid points along ix, per tile row
    tile = np.empty((nx, _TILE), dtype=np.int64)  # keys as computed: the tile's rows side by side
    keys = np.empty((_TILE, nx), dtype=np.int64)  # the same in pixel order
    omw2 = 1.0 - w2
    field = (1 << KEY_BITS) - 1
    p0 = start // (ny * nx)
    y0 = (start // nx) % ny
    x0 = start % nx
    stop = nphi * ny * nx
    for p in range(p0, nphi):
        phi_p = phi[p]
        seconds_p = seconds[p]
        for yt in range(y0 - y0 % _TILE if p == p0 else 0, ny, _TILE):
            if fused:
                _tile_keys_fused(p, yt, step1, b1, b2, w1, w2, omw2, nh, nk, nl, lanes, tile)
            else:
                _tile_keys_dense(p, yt, hkl, nh, nk, nl, tile)
            _transpose(tile, keys, min(_TILE, ny - yt))
            for y in range(max(yt, y0) if p == p0 else yt, min(yt + _TILE, ny)):
                row = keys[y - yt]
                iy_y = iy[y]
                for x in range(x0 if (p == p0 and y == y0) else 0, nx):
                    c = data[p, y, x]
                    if c == -1:
                        continue
                    if use_mask:
                        if mask[p, y, x]:
                            continue
                    key = row[x]
                    if key != last_key:
                        if key == _BAD:
                            out_of_range = True
                            continue
                        # Neighbouring pixels mostly share a voxel: its running sums live in registers
                        # and go back to the table only when the voxel changes. Each pixel is still
                        # added to the running total in pixel order, so the float64 sums equal
                        # np.bincount's bit for bit.
                        if last_key != _EMPTY:
                            _store_sums(pages, page, v, r_pixels, r_counts, r_phi, r_iy, r_ix, r_seconds)
                        H = (key >> (2 * KEY_BITS)) - KEY_OFFSET
                        K = ((key >> KEY_BITS) & field) - KEY_OFFSET
                        L = (key & field) - KEY_OFFSET
                        block = (
                            (((H >> 2) + KEY_OFFSET) << (2 * KEY_BITS))
                            | (((K >> 2) + KEY_OFFSET) << KEY_BITS)
                            | ((L >> 2) + KEY_OFFSET)
                        )
                        if block != last_block:
                            s = _slot(block, blocks, bits)
                            if blocks[s, 0] == _EMPTY:
                                if 2 * (n_blocks + 1) > blocks.shape[0] or n_pages >= pages.shape[0]:
                                    # full (the running sums went back above): the caller grows the
                                    # table and resumes at this pixel
                                    state[0] = n_blocks
                                    state[1] = n_pages
                                    return (p * ny + y) * nx + x, out_of_range
                                blocks[s, 0] = block
                                blocks[s, 1] = n_pages
                                n_blocks += 1
                                n_pages += 1
                            page = blocks[s, 1]
                            last_block = block
                        v = ((H & 3) << 4) | ((K & 3) << 2) | (L & 3)
                        last_key = key
                        r_pixels = pages[page, v, 0]
                        r_counts = pages[page, v, 1]
                        r_phi = pages[page, v, 2]
                        r_iy = pages[page, v, 3]
                        r_ix = pages[page, v, 4]
                        r_seconds = pages[page, v, 5]
                    r_pixels += 1.0
                    r_counts += c
                    r_phi += phi_p
                    r_iy += iy_y
                    r_ix += ix[x]
                    r_seconds += seconds_p
    if last_key != _EMPTY:
        _store_sums(pages, page, v, r_pixels, r_counts, r_phi, r_iy, r_ix, r_seconds)
    state[0] = n_blocks
    state[1] = n_pages
    return stop, out_of_range


@kernel(nogil=True, cache=True, inline="always")
def _transpose(tile, keys, rows):
    """``keys[r, x] = tile[x, r]`` for the first ``rows`` rows, in blocks of 8 x 8 (in the cache)."""
    nx = tile.shape[0]
    whole = nx - nx % 8
    for r0 in range(0, rows, 8):
        if r0 + 8 <= rows:
            for x0 in range(0, whole, 8):
                for r in range(8):
                    for x in range(8):
                        keys[r0 + r, x0 + x] = tile[x0 + x, r0 + r]
            for x in range(whole, nx):
                for r in range(r0, r0 + 8):
                    keys[r, x] = tile[x, r]
        else:
            for r in range(r0, rows):
                for x in range(nx):
                    keys[r, x] = tile[x, r]


@kernel(nogil=True, cache=True, signatures=[("int64[:, ::1]", "float64[:, :, ::1]")])
def _compact(blocks, pages):
    """The voxels in use (pixels > 0) as keys and sums, block by block."""
    n = 0
    for i in range(blocks.shape[0]):
        if blocks[i, 0] != _EMPTY:
            for v in range(_PAGE):
                if pages[blocks[i, 1], v, 0] > 0:
                    n += 1
    out_keys = np.empty(n, dtype=np.int64)
    out_sums = np.empty((n, _SUMS), dtype=np.float64)
    n = 0
    field = (1 << KEY_BITS) - 1
    for i in range(blocks.shape[0]):
        block = blocks[i, 0]
        if block == _EMPTY:
            continue
        bh = (block >> (2 * KEY_BITS)) - KEY_OFFSET
        bk = ((block >> KEY_BITS) & field) - KEY_OFFSET
        bl = (block & field) - KEY_OFFSET
        page = blocks[i, 1]
        for v in range(_PAGE):
            if pages[page, v, 0] > 0:
                H = bh * 4 + (v >> 4)
                K = bk * 4 + ((v >> 2) & 3)
                L = bl * 4 + (v & 3)
                out_keys[n] = (
                    ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)
                )
                for c in range(_SUMS):
                    out_sums[n, c] = pages[page, v, c]
                n += 1
    return out_keys, out_sums


def _pack_rows(keys, sums) -> np.ndarray:
    out = np.empty(keys.size, dtype=PARTIAL_DTYPE)
    out["key"] = keys
    out["pixels"] = sums[:, 0]  # whole numbers, exact in float64 below 2**53
    out["counts"] = sums[:, 1]
    for i, name in enumerate(("phi", "iy", "ix", "seconds")):
        out[name] = sums[:, 2 + i]
    return out


def _check_inputs(data, mask, block: MillerBlock, phi, iy, ix, seconds):
    shape = data.shape
    if data.ndim != 3 or (mask is not None and mask.shape != shape):
        mask_shape = None if mask is None else mask.shape
        raise ValueError(f"data {data.shape} and mask {mask_shape} must agree (3-D)")
    if (phi.size, iy.size, ix.size) != shape or seconds.size != shape[0]:
        raise ValueError(f"axes ({phi.size}, {iy.size}, {ix.size}) do not match the chunk's shape {shape}")
    if tuple(b.size for b in block.base) != shape:
        raise ValueError("Miller block was prepared for a chunk of another shape")


def _fill(args, blocks, pages, bits):
    """Run :func:`_bin_pixels` over the whole chunk, growing the tables whenever they fill up."""
    state = np.zeros(2, dtype=np.int64)
    size = args[0].size
    start, out_of_range = 0, False
    while start < size:
        start, oor = _bin_pixels(*args, blocks, pages, state, start)
        out_of_range |= oor
        if start < size:  # out of room: grow what is full and carry on from ``start``
            if 2 * (state[0] + 1) > blocks.shape[0]:
                bits += 1
                bigger = _new_blocks(bits)
                _rehash(blocks, bigger, bits)
                blocks = bigger
            if state[1] >= pages.shape[0]:
                pages = np.concatenate([pages, np.zeros_like(pages)])
    return blocks, pages, state, out_of_range


def bin_chunk(data, mask, block: MillerBlock, phi, iy, ix, seconds, ndiv, size_hint: int = 0) -> np.ndarray:
    """Partial sums per voxel of one storage chunk (rows in no particular order); see module docstring.

    ``data`` int (nphi, ny, nx) counts with -1 for excluded pixels; ``mask`` bool, True = exclude, or
    None; ``block`` from :func:`~pipeline.kernels.interpolate.prepare_miller_block` for this chunk.
    """
    _check_inputs(data, mask, block, phi, iy, ix, seconds)
    data = np.ascontiguousarray(data)
    use_mask = mask is not None
    mask_arr = np.ascontiguousarray(mask, dtype=np.bool_) if use_mask else np.zeros((1, 1, 1), np.bool_)
    # sizes from the hint (rows of a similar chunk): about one page per 8 voxels touched
    n_pages = max(64, size_hint // 8)
    bits = max(8, int(np.ceil(np.log2(n_pages * 2 + 1))))
    blocks, pages = _tables(bits, n_pages)
    fused = block.order == (0, 1, 2)
    hkl = np.zeros((1, 1, 1, 3)) if fused else miller_indices_dense(block, data.shape)
    axes = [np.ascontiguousarray(a, dtype=np.float64) for a in (phi, iy, ix, seconds)]
    args = (data, mask_arr, use_mask, fused, block.step1, hkl, *block.base[1:], *block.weight[1:], *axes)
    args += (np.asarray(ndiv, dtype=np.int64),)
    blocks, pages, state, out_of_range = _fill(args, blocks, pages, bits)
    keys, sums = _compact(blocks, pages)
    _keep_tables(blocks, pages, int(state[1]))
    if out_of_range:
        raise ValueError(
            f"a Miller index x ndiv exceeds {KEY_LIMIT} (or is not finite); "
            f"subdivide {tuple(ndiv)} is too fine"
        )
    return _pack_rows(keys, sums)


def bin_chunk_oracle(data, mask, block: MillerBlock, phi, iy, ix, seconds, ndiv) -> np.ndarray:
    """Slow, obviously-correct version of :func:`bin_chunk` (numpy; ``np.unique`` and ``np.bincount``)."""
    _check_inputs(data, mask, block, phi, iy, ix, seconds)
    hkl = miller_indices_dense(block, data.shape)
    keep = data != -1
    if mask is not None:
        keep &= ~mask
    P, Y, X = np.meshgrid(np.asarray(phi, float), np.asarray(iy, float), np.asarray(ix, float), indexing="ij")
    T = np.broadcast_to(np.asarray(seconds, float)[:, None, None], data.shape)
    H, K, L = (np.round(hkl[..., i][keep] * n).astype(np.int64) for i, n in enumerate(ndiv))
    keys = pack_keys(H, K, L)
    unique, inverse, pixels = np.unique(keys, return_inverse=True, return_counts=True)
    out = np.empty(unique.size, dtype=PARTIAL_DTYPE)
    out["key"] = unique
    out["pixels"] = pixels
    out["counts"] = np.bincount(inverse, weights=data[keep]).astype(np.int64)
    for name, values in (("phi", P), ("iy", Y), ("ix", X), ("seconds", T)):
        out[name] = np.bincount(inverse, weights=values[keep], minlength=unique.size)
    return out
