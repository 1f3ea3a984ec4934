"""Every way of storing the image stack gives the same table: mdx2's virtual dataset of gzip+shuffle
slabs (our fast chunk path), other HDF5 filters and contiguous datasets (read through h5py)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import pipeline
from pipeline.io.chunks import ChunkReader
from pipeline.io.images import open_image_stack, reads_release_the_gil

CUBIC = Path(__file__).parent / "data" / "cubic"


def _table(path):
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["/entry/hkl_table"].items()}


def _rewrite(dest: Path, **dataset_options) -> Path:
    """data.nxs with the stack in one plain (non-virtual) dataset, stored with ``dataset_options``."""
    stack = open_image_stack(CUBIC / "data.nxs")
    with h5py.File(CUBIC / "data.nxs", "r") as src, h5py.File(dest, "w") as out:
        for name, value in src.attrs.items():
            out.attrs[name] = value
        src.copy(src["/entry"], out, name="entry", shallow=True)
        group = out["/entry/image_series"]
        for key in list(group):
            del group[key]
        for key in ("phi", "iy", "ix", "exposure_times"):
            group.create_dataset(key, data=src[f"/entry/image_series/{key}"][()])
        group.create_dataset("data", data=src["/entry/image_series/data"][()], **dataset_options)
        for name, value in src["/entry/image_series"].attrs.items():
            group.attrs[name] = value
    assert open_image_stack(dest).shape == stack.shape
    return dest


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("ref") / "integrated.nxs"
    pipeline.integrate(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        mask=CUBIC / "mask.nxs",
        subdivide=(2, 2, 2),
        outfile=out,
        client=client,
    )
    return _table(out)


@pytest.mark.parametrize(
    "options, fast",
    [
        ({"chunks": (5, 64, 100), "compression": "gzip", "shuffle": True}, True),
        ({"chunks": (5, 64, 100), "compression": "lzf"}, False),
        ({"chunks": (5, 64, 100), "compression": "gzip", "shuffle": True, "fletcher32": True}, False),
        ({}, False),  # contiguous: one chunk of one frame is mdx2's work unit then
    ],
    ids=["gzip-shuffle", "lzf", "fletcher32", "contiguous"],
)
def test_storage_does_not_change_the_table(tmp_path, reference, client, options, fast):
    data = _rewrite(tmp_path / "data.nxs", **options)
    assert reads_release_the_gil(data, [CUBIC / "mask.nxs"]) is fast
    out = tmp_path / "integrated.nxs"
    pipeline.integrate(
        CUBIC / "geometry.nxs", data, mask=CUBIC / "mask.nxs", subdivide=(2, 2, 2), outfile=out, client=client
    )
    ours = _table(out)
    if options:  # same storage chunks as the fixture: the same table, bit for bit
        for name in reference:
            np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    else:  # another chunk grid splits partial observations elsewhere: counts are conserved
        assert ours["counts"].sum() == reference["counts"].sum()
        assert ours["pixels"].sum() == reference["pixels"].sum()


def test_chunk_reader_equals_h5py_on_every_read(tmp_path):
    data = _rewrite(tmp_path / "data.nxs", chunks=(5, 64, 100), compression="gzip", shuffle=True)
    with h5py.File(data, "r") as f:
        ds = f["/entry/image_series/data"]
        reader = ChunkReader(ds, cache_bytes=2**20)
        assert reader.fast
        for slices in [
            (slice(0, 5), slice(0, 64), slice(0, 100)),  # one chunk
            (slice(10, 12), slice(192, 195), slice(400, 487)),  # an edge chunk, partly
            (slice(3, 9), slice(50, 130), slice(90, 310)),  # across chunks
            (slice(0, 12), slice(0, 195), slice(0, 487)),  # everything
        ]:
            np.testing.assert_array_equal(reader.read(slices), ds[slices])


_READS = [
    (slice(0, 5), slice(0, 64), slice(0, 100)),
    (slice(10, 12), slice(192, 195), slice(400, 487)),
    (slice(3, 9), slice(50, 130), slice(90, 310)),
]


def test_chunk_reader_without_chunk_index_equals_h5py(tmp_path, monkeypatch):
    """Where the chunk index cannot be listed (an older HDF5), chunks come through h5py's
    read_direct_chunk instead of os.pread, with the same values."""
    data = _rewrite(tmp_path / "data.nxs", chunks=(5, 64, 100), compression="gzip", shuffle=True)
    with h5py.File(data, "r") as f:
        ds = f["/entry/image_series/data"]
        fast, fallback = ChunkReader(ds), ChunkReader(ds)
        fallback._index, fallback._indexed = {}, False  # as if chunk_iter were missing
        for slices in _READS:
            np.testing.assert_array_equal(fast.read(slices), ds[slices])
            np.testing.assert_array_equal(fallback.read(slices), ds[slices])
        assert fast._indexed


def test_chunk_reader_on_masks_and_unwritten_chunks(tmp_path):
    """bool chunks (masks), and chunks never written (HDF5's fill value), read as h5py reads them."""
    rng = np.random.default_rng(3)
    mask = rng.random((12, 195, 487)) < 0.1
    mask[:5] = False
    path = tmp_path / "mask.nxs"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("m", shape=mask.shape, dtype=bool, chunks=(5, 64, 100), compression="gzip")
        ds[5:] = mask[5:]  # frames 0-4 never written
    with h5py.File(path, "r") as f:
        ds = f["m"]
        reader = ChunkReader(ds, cache_bytes=2**20)
        assert reader.fast
        for slices in [*_READS, (slice(0, 12), slice(0, 195), slice(0, 487))]:
            np.testing.assert_array_equal(reader.read(slices), ds[slices])


def test_inflate_checks_the_size():
    import zlib

    from pipeline.io.chunks import inflate

    raw = np.arange(1000, dtype=np.int32).tobytes()
    assert inflate(zlib.compress(raw), len(raw)) == raw
    with pytest.raises(ValueError):
        inflate(zlib.compress(raw), len(raw) + 4)
    with pytest.raises(ValueError):
        inflate(b"not a zlib stream", len(raw))


def test_inflate_into_fills_the_buffer_exactly():
    import zlib

    from pipeline.io.chunks import inflate_into

    raw = np.arange(1000, dtype=np.int32).tobytes()
    out = np.empty(len(raw), dtype=np.uint8)
    inflate_into(zlib.compress(raw), out)
    assert out.tobytes() == raw
    for stream, size in [(zlib.compress(raw), len(raw) + 4), (zlib.compress(raw), len(raw) - 4)]:
        with pytest.raises(ValueError):  # inflates to fewer or more bytes than the buffer holds
            inflate_into(stream, np.empty(size, dtype=np.uint8))
    with pytest.raises(ValueError):
        inflate_into(b"not a zlib stream", out)


@pytest.mark.parametrize("shuffle", [True, False])
def test_chunk_reader_decodes_into_the_callers_buffer(tmp_path, shuffle):
    """``read(out=)`` (a map task's reads, chunk after chunk into one buffer) gives h5py's values;
    within one chunk the result is a view of the buffer, reads across chunks ignore it."""
    data = _rewrite(tmp_path / "data.nxs", chunks=(5, 64, 100), compression="gzip", shuffle=shuffle)
    with h5py.File(data, "r") as f:
        ds = f["/entry/image_series/data"]
        reader = ChunkReader(ds)
        out = np.empty(reader.chunk_bytes + 16, dtype=np.uint8)
        for slices in [*_READS, (slice(5, 10), slice(64, 128), slice(100, 200))]:
            got = reader.read(slices, out=out)
            np.testing.assert_array_equal(got, ds[slices])
            one_chunk = all(s.start // c == (s.stop - 1) // c for s, c in zip(slices, ds.chunks, strict=True))
            assert np.shares_memory(got, out) == one_chunk
        small = np.empty(reader.chunk_bytes - 1, dtype=np.uint8)  # too small: not used
        got = reader.read(_READS[0], out=small)
        np.testing.assert_array_equal(got, ds[_READS[0]])
        assert not np.shares_memory(got, small)
