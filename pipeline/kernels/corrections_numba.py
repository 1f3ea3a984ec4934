"""``correct``'s two numba kernels (nogil), one loop over the rows each: the source of both builds of
them (see :mod:`pipeline.kernels.corrections_fused`, which plans and calls them):

* jitted by numba (``cache=True``: compiled once, then loaded from numba's cache by every process);
* compiled ahead of time into an extension module by ``make install`` (numba's ``pycc``, through
  :mod:`pipeline.kernels.aot`, for the signatures below: the dtypes and C-contiguous layouts the plan
  passes), which a process loads without importing numba (0.3 s of a 1 s ``correct`` on 4.6 M rows).

The same LLVM code either way; ``tests/test_correct_fused.py`` checks both against the numpy path,
bit for bit.
"""

from __future__ import annotations

import numpy as np

from pipeline.kernels.aot import kernel

__all__ = ["LIMIT"]

LIMIT = 2**29  # as pipeline.kernels.asu.LIMIT

_F4, _F8 = "float32[::1]", "float64[::1]"
_CORRECT = (
    *[_F4] * 7, "int32[::1]", "int32[::1]", "float64[:, ::1]", "float64", _F8, _F8, "float64[:, ::1]",
    "boolean", _F8, _F8, _F8, _F8, "boolean", *[_F4] * 4,
)  # fmt: skip
_ASU = (
    _F4, _F4, _F4, "int64", "int64", "int64", "boolean", "int64[:, :, ::1]", "boolean", "int64[:, ::1]",
    "int64[:, ::1]", "boolean[::1]", _F4, _F4, _F4, "int32[::1]",
)  # fmt: skip


# --- interpolation ---------------------------------------------------------------------------------


@kernel(nogil=True, cache=True, inline="always")
def _fraction(x, axis, inv_step, slopes):
    """``f = np.interp(x, axis, arange(n))`` exactly as numpy computes it (strictly increasing axis,
    n >= 2), then ``corrections._cells``: cell ``int(f)`` clipped to the grid, weight ``f - cell``
    (a NaN ``x``: cell 0, weight NaN, as numpy's cast of NaN clipped). The interval ``j`` with
    ``axis[j] <= x < axis[j + 1]`` is numpy's; it is found from a guess for an evenly spaced axis
    (``inv_step`` = (n - 1) / span), moved until those two comparisons hold. ``slopes`` are numpy's
    slopes ``(j + 1 - j) / (axis[j + 1] - axis[j])``, computed once (as numpy does for long inputs)."""
    n = axis.size
    if x != x:
        return 0, np.nan
    last = n - 1
    if x < axis[0]:
        f = 0.0
    elif x >= axis[last]:
        f = float(last)
    else:
        j = int((x - axis[0]) * inv_step)
        j = min(max(j, 0), last - 1)
        while j > 0 and axis[j] > x:
            j -= 1
        while axis[j + 1] <= x:
            j += 1
        if axis[j] == x:
            f = float(j)
        else:
            # numpy retries from the right end when this is NaN: it cannot be (x finite and above
            # axis[j], the slope positive, at most inf), and the dead test cost ~25 ns per call
            f = slopes[j] * (x - axis[j]) + float(j)
    b = int(f)
    return b, f - b


@kernel(nogil=True, cache=True, inline="always")
def _inv_step(axis):
    return (axis.size - 1) / (axis[axis.size - 1] - axis[0])


@kernel(nogil=True, cache=True, inline="always")
def _slopes(axis):
    out = np.empty(axis.size - 1)
    for j in range(axis.size - 1):
        out[j] = (float(j + 1) - float(j)) / (axis[j + 1] - axis[j])
    return out


@kernel(nogil=True, cache=True, inline="always")
def _bilinear(v, j, c00, stride, w00, w01, w10, w11):
    """Grid ``j`` of the interleaved grids ``v`` (padded cells, grids) at a point: the numpy path's
    sum, in its order."""
    total = w00 * v[c00, j]
    total += w01 * v[c00 + 1, j]
    total += w10 * v[c00 + stride, j]
    total += w11 * v[c00 + stride + 1, j]
    return total


@kernel(nogil=True, cache=True, error_model="numpy", signatures=[_CORRECT])
def _correct_kernel(
    h, k, l, phi, iy, ix, seconds, counts, pixels, ub, det_ub, g_iy, g_ix, grids,
    has_bkg, b_phi, b_iy, b_ix, b_rate, lorentz, s_out, i_out, e_out, v_out,
):  # fmt: skip
    stride = g_ix.size + 1
    sy = b_ix.size + 1
    sp = (b_iy.size + 1) * sy
    n_factors = grids.shape[1] - 1  # the factors, then d3s
    i_iy, i_ix = _inv_step(g_iy), _inv_step(g_ix)
    i_bphi, i_biy, i_bix = _inv_step(b_phi), _inv_step(b_iy), _inv_step(b_ix)
    s_iy, s_ix = _slopes(g_iy), _slopes(g_ix)
    s_bphi, s_biy, s_bix = _slopes(b_phi), _slopes(b_iy), _slopes(b_ix)
    for r in range(h.size):
        hh, kk, ll = np.float64(h[r]), np.float64(k[r]), np.float64(l[r])
        s2 = 0.0
        for i in range(3):
            si = ub[i, 0] * hh + ub[i, 1] * kk + ub[i, 2] * ll
            s2 += si * si
        s_out[r] = np.float32(np.sqrt(s2))
        y_r, x_r = np.float64(iy[r]), np.float64(ix[r])
        y, fy = _fraction(y_r, g_iy, i_iy, s_iy)
        x, fx = _fraction(x_r, g_ix, i_ix, s_ix)
        c00 = y * stride + x
        w11 = fy * fx
        w10 = fy - w11
        w01 = fx - w11
        w00 = 1 - fy - w01
        factor = _bilinear(grids, 0, c00, stride, w00, w01, w10, w11)
        for j in range(1, n_factors):
            factor *= _bilinear(grids, j, c00, stride, w00, w01, w10, w11)
        cnt = np.float64(counts[r])
        sec = np.float64(seconds[r])
        rate = cnt / sec
        rate_error = np.sqrt(cnt) / sec
        if has_bkg:
            p, fp = _fraction(np.float64(phi[r]), b_phi, i_bphi, s_bphi)
            by, fby = _fraction(y_r, b_iy, i_biy, s_biy)
            bx, fbx = _fraction(x_r, b_ix, i_bix, s_bix)
            base = p * sp + by * sy + bx
            for dp in range(2):
                wp = 1 - fp if dp == 0 else fp
                for dy in range(2):
                    wy = 1 - fby if dy == 0 else fby
                    corner = base + (dp * sp + dy * sy)
                    rate -= wp * wy * ((1 - fbx) * b_rate[corner] + fbx * b_rate[corner + 1])
        volume = np.float64(pixels[r]) * _bilinear(grids, n_factors, c00, stride, w00, w01, w10, w11) / det_ub
        intensity = rate / factor
        error = rate_error / factor
        if lorentz:
            intensity *= volume
            error *= volume
        i_out[r] = np.float32(intensity)
        e_out[r] = np.float32(error)
        v_out[r] = np.float32(volume)


# --- asymmetric unit -------------------------------------------------------------------------------


@kernel(nogil=True, cache=True, inline="always")
def _wrap32(v):
    """int64 -> the int32 numpy's int32 arithmetic gives (wrapping; a ring homomorphism)."""
    return ((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@kernel(nogil=True, cache=True, inline="always")
def _image(ops_t, i, a, b, c):
    """``op[i].T @ (a, b, c)`` in int32 arithmetic (as ``asu._apply``), as int64 values."""
    return (
        _wrap32(ops_t[i, 0, 0] * a + ops_t[i, 0, 1] * b + ops_t[i, 0, 2] * c),
        _wrap32(ops_t[i, 1, 0] * a + ops_t[i, 1, 1] * b + ops_t[i, 1, 2] * c),
        _wrap32(ops_t[i, 2, 0] * a + ops_t[i, 2, 1] * b + ops_t[i, 2, 2] * c),
    )


@kernel(nogil=True, cache=True, inline="always")
def _inside(a, b, c, forms, comparisons, table, values):
    """(in the ASU, on one of its planes) for the image (a, b, c); ``values`` is scratch (F,)."""
    for f in range(forms.shape[0]):
        values[f] = _wrap32(forms[f, 0] * a + forms[f, 1] * b + forms[f, 2] * c)
    bits = 0
    on_plane = False
    for j in range(comparisons.shape[0]):
        x = values[comparisons[j, 0]]
        y = values[comparisons[j, 1]]
        code = comparisons[j, 2]
        if x == y:
            on_plane = True
        if code == 0:
            hit = x == y
        elif code == 1:
            hit = x != y
        elif code == 2:
            hit = x < y
        elif code == 3:
            hit = x <= y
        elif code == 4:
            hit = x > y
        else:
            hit = x >= y
        if hit:
            bits |= 1 << j
    return table[bits], on_plane


@kernel(nogil=True, cache=True, error_model="numpy", signatures=[_ASU])
def _asu_kernel(h, k, l, n0, n1, n2, p1, ops_t, guided, forms, comparisons, table, oh, ok, ol, oop):
    """Returns -1, or the first row it cannot map (left to the numpy path's error message)."""
    values = np.empty(forms.shape[0], dtype=np.int64)
    f0, f1, f2 = np.float32(n0), np.float32(n1), np.float32(n2)
    d0, d1, d2 = np.float64(n0), np.float64(n1), np.float64(n2)
    n_ops = ops_t.shape[0]
    guess = -1
    for r in range(h.size):
        sa, sb, sc = np.rint(h[r] * f0), np.rint(k[r] * f1), np.rint(l[r] * f2)
        if not (abs(sa) < LIMIT and abs(sb) < LIMIT and abs(sc) < LIMIT):
            return r
        a, b, c = np.int64(sa), np.int64(sb), np.int64(sc)
        if p1:
            op = 1 if c < 0 else 0
            ia, ib, ic = a, b, abs(c)
        else:
            op = -1
            if guided and guess >= 0:
                ia, ib, ic = _image(ops_t, guess, a, b, c)
                inside, on_plane = _inside(ia, ib, ic, forms, comparisons, table, values)
                if inside:
                    op = guess
                    if on_plane:  # at a special position a lower operator may give the same image
                        for i in range(guess):
                            ja, jb, jc = _image(ops_t, i, a, b, c)
                            if ja == ia and jb == ib and jc == ic:
                                op = i
                                break
            if op < 0:
                for i in range(n_ops):
                    ia, ib, ic = _image(ops_t, i, a, b, c)
                    if _inside(ia, ib, ic, forms, comparisons, table, values)[0]:
                        op = i
                        break
                if op < 0:
                    return r
            guess = op
        oh[r] = np.float32(np.float64(ia) / d0)
        ok[r] = np.float32(np.float64(ib) / d1)
        ol[r] = np.float32(np.float64(ic) / d2)
        oop[r] = op
    return -1
