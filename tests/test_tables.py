"""hkl tables on disk: NeXus and parquet round trips are lossless (rows, dtypes, ndiv), STYLE §9.

``mdx2.io.loadobj(path, "hkl_table")`` compatibility of our NeXus files is checked outside the test
suite, with real mdx2, by benchmarks/validate_vs_mdx2.py (refkit is not available at test time).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.io.tables import (
    CORRECTED_SCHEMA,
    INTEGRATED_SCHEMA,
    NexusTableWriter,
    open_table,
    read_table,
    write_parquet_part,
)

DATA = Path(__file__).parent / "data"
SCHEMAS = {"integrated": INTEGRATED_SCHEMA, "corrected": CORRECTED_SCHEMA}


def random_table(schema, n, rng, special=False):
    """Columns of ``schema`` with n rows; ``special`` adds NaN, +-inf, -0.0 and extreme integers."""
    out = {}
    for name, dtype in schema.items():
        if dtype.kind == "f":
            col = rng.normal(0, 1e3, n).astype(dtype)
            if special and n >= 4:
                col[:4] = [np.nan, np.inf, -np.inf, -0.0]
        else:
            info = np.iinfo(dtype)
            col = rng.integers(-1000, 1000, n).astype(dtype)
            if special and n >= 2:
                col[:2] = [info.min, info.max]
        out[name] = col
    return out


def write_nexus(path, schema, table, ndiv, parts):
    n = len(next(iter(table.values())))
    with NexusTableWriter(path, schema, n, ndiv) as writer:
        start = 0
        for stop in [*parts, n]:
            writer.write(start, {k: v[start:stop] for k, v in table.items()})
            start = stop
        writer.commit()


def write_parquet(directory, schema, table, ndiv, parts, kind):
    directory.mkdir()
    n = len(next(iter(table.values())))
    for i, (a, b) in enumerate(zip([0, *parts], [*parts, n], strict=True)):
        write_parquet_part(directory, i, {k: v[a:b] for k, v in table.items()}, schema, ndiv, kind)


def assert_round_trip(df: pd.DataFrame, schema, table, ndiv):
    assert list(df.columns) == list(schema)
    assert dict(df.dtypes) == schema
    assert df.attrs["ndiv"] == tuple(ndiv)
    for name, values in table.items():
        got = df[name].to_numpy()
        assert got.dtype == values.dtype
        # bit patterns, so NaN payloads and -0.0 count too
        np.testing.assert_array_equal(got.view(f"u{values.itemsize}"), values.view(f"u{values.itemsize}"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(SCHEMAS)),
    n=st.integers(0, 300),
    cuts=st.lists(st.integers(0, 300), max_size=4),
    ndiv=st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20)),
    seed=st.integers(0, 2**32 - 1),
    special=st.booleans(),
)
def test_nexus_and_parquet_round_trips(tmp_path_factory, kind, n, cuts, ndiv, seed, special):
    schema = SCHEMAS[kind]
    table = random_table(schema, n, np.random.default_rng(seed), special)
    parts = sorted({min(c, n) for c in cuts} - {0, n})
    d = tmp_path_factory.mktemp("rt")
    write_nexus(d / "t.nxs", schema, table, ndiv, parts)
    write_parquet(d / "t.parquet", schema, table, ndiv, parts, kind)
    from_nexus, from_parquet = read_table(d / "t.nxs"), read_table(d / "t.parquet")
    assert_round_trip(from_nexus, schema, table, ndiv)
    assert_round_trip(from_parquet, schema, table, ndiv)
    pd.testing.assert_frame_equal(from_nexus, from_parquet)
    # row ranges across part boundaries read the same from both
    a, b = n // 3, n - n // 4
    for source in (open_table(d / "t.nxs"), open_table(d / "t.parquet")):
        assert source.n_rows == n and tuple(source.ndiv) == tuple(ndiv)
        part = source.read(a, b, ["h", "n"])
        np.testing.assert_array_equal(part["h"], table["h"][a:b])
        np.testing.assert_array_equal(part["n"], table["n"][a:b])


def test_nexus_layout_is_mdx2s(tmp_path):
    table = random_table(INTEGRATED_SCHEMA, 10, np.random.default_rng(0))
    write_nexus(tmp_path / "t.nxs", INTEGRATED_SCHEMA, table, (2, 3, 4), [])
    with h5py.File(tmp_path / "t.nxs", "r") as f:
        assert f.attrs["mdx2_version"] == "1.0.5"
        assert f["entry"].attrs["NX_class"] == "NXentry"
        g = f["/entry/hkl_table"]
        assert (g.attrs["mdx2_module"], g.attrs["mdx2_class"]) == ("mdx2.data", "HKLTable")
        assert g["ndiv"].dtype == np.int64 and g["ndiv"][()].tolist() == [2, 3, 4]
        assert sorted(g) == sorted([*INTEGRATED_SCHEMA, "ndiv"])


def test_read_table_of_an_mdx2_file():
    """mdx2's own file: mdx2's dtypes, columns in schema order, ndiv from the file."""
    df = read_table(DATA / "cubic/mdx2/corrected_325_bkg.nxs")
    assert dict(df.dtypes) == CORRECTED_SCHEMA and list(df.columns) == list(CORRECTED_SCHEMA)
    assert df.attrs["ndiv"] == (3, 2, 5)
    with h5py.File(DATA / "cubic/mdx2/corrected_325_bkg.nxs", "r") as f:
        np.testing.assert_array_equal(df["intensity"].to_numpy(), f["/entry/hkl_table/intensity"][()])


def test_read_table_column_subset(tmp_path):
    table = random_table(INTEGRATED_SCHEMA, 7, np.random.default_rng(1))
    write_nexus(tmp_path / "t.nxs", INTEGRATED_SCHEMA, table, (1, 1, 1), [3])
    df = read_table(tmp_path / "t.nxs", columns=["counts", "h"])
    assert list(df.columns) == ["counts", "h"]
    np.testing.assert_array_equal(df["counts"].to_numpy(), table["counts"])


def test_nexus_writer_leaves_nothing_without_commit(tmp_path):
    table = random_table(INTEGRATED_SCHEMA, 5, np.random.default_rng(2))
    with NexusTableWriter(tmp_path / "t.nxs", INTEGRATED_SCHEMA, 5, (1, 1, 1)) as writer:
        writer.write(0, {k: v[:3] for k, v in table.items()})
        with pytest.raises(RuntimeError, match="wrote 3 of 5 rows"):
            writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_nexus_writer_rejects_rows_beyond_the_table(tmp_path):
    table = random_table(INTEGRATED_SCHEMA, 5, np.random.default_rng(3))
    with NexusTableWriter(tmp_path / "t.nxs", INTEGRATED_SCHEMA, 4, (1, 1, 1)) as writer:
        with pytest.raises(ValueError, match="exceed"):
            writer.write(0, table)
    assert list(tmp_path.iterdir()) == []


def test_open_table_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_table(tmp_path / "missing.nxs")
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(InputError, match=r"no \.parquet files"):
        open_table(tmp_path / "empty.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not readable"):
        open_table(tmp_path / "bad.parquet")
    with h5py.File(tmp_path / "other.nxs", "w") as f:
        f["entry/data"] = np.zeros(3)
    with pytest.raises(InputError, match="hkl_table"):
        open_table(tmp_path / "other.nxs")


@pytest.mark.parametrize("layout", ["appended chunks", "contiguous", "direct", "gzip"])
def test_read_pieces_are_the_rows_read(tmp_path, layout):
    """``read_pieces`` (views of the file mapped in memory, one per storage chunk) gives the rows
    ``read`` gives, for every range; a filtered table comes back in one piece, read."""
    rng = np.random.default_rng(3)
    n = 3 * NexusTableWriter.APPEND_CHUNK + 123
    table = random_table(INTEGRATED_SCHEMA, n, rng, special=True)
    path = tmp_path / "t.nxs"
    if layout == "appended chunks":  # as integrate writes it
        with NexusTableWriter(path, INTEGRATED_SCHEMA, None, (1, 2, 3)) as writer:
            for a in range(0, n, 50_000):
                writer.append({k: v[a : a + 50_000] for k, v in table.items()})
            writer.commit()
    else:
        with NexusTableWriter(
            path, INTEGRATED_SCHEMA, n, (1, 2, 3), compress=layout == "gzip", direct=layout == "direct"
        ) as writer:
            writer.write(0, table)
            writer.commit()
    source = open_table(path)
    unit = NexusTableWriter.APPEND_CHUNK
    for start, stop in [(0, n), (5, unit), (unit - 1, 2 * unit + 1), (n - 7, n), (17, 18)]:
        pieces = source.read_pieces(start, stop)
        if layout == "gzip":
            assert len(pieces) == 1
        elif layout == "appended chunks":
            assert len(pieces) == len({start, stop} | set(range(-(-start // unit) * unit, stop, unit))) - 1
        at = 0
        for offset, piece in pieces:
            assert offset == at
            at += len(piece["h"])
        assert at == stop - start
        expected = source.read(start, stop)
        for c in INTEGRATED_SCHEMA:
            got = np.concatenate([piece[c] for _, piece in pieces])
            assert got.dtype == expected[c].dtype and got.tobytes() == expected[c].tobytes()


def test_read_pieces_without_mmap(tmp_path, monkeypatch):
    """Where the file cannot be mapped, the rows are read (one piece)."""
    import mmap

    rng = np.random.default_rng(4)
    table = random_table(INTEGRATED_SCHEMA, 1000, rng)
    write_nexus(tmp_path / "t.nxs", INTEGRATED_SCHEMA, table, (1, 1, 1), [400])

    def refuse(*args, **kwargs):
        raise OSError("no mmap here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    pieces = open_table(tmp_path / "t.nxs").read_pieces(10, 900)
    assert len(pieces) == 1 and pieces[0][0] == 0
    assert pieces[0][1]["h"].tobytes() == table["h"][10:900].tobytes()


def test_a_table_written_over_an_earlier_one_replaces_it_whole(tmp_path):
    """--overwrite: the new table takes the old one's name only once complete (the old file is removed
    just before, so that ext4 does not write the new one out first); no temporary is left."""
    rng = np.random.default_rng(6)
    path = tmp_path / "t.nxs"
    for n in (1000, 300):
        table = random_table(INTEGRATED_SCHEMA, n, rng)
        with NexusTableWriter(path, INTEGRATED_SCHEMA, None, (1, 1, 1)) as writer:
            writer.append(table)
            if n == 300:  # the old table until the commit
                assert read_table(path)["h"].size == 1000
            writer.commit()
        np.testing.assert_array_equal(read_table(path)["h"], table["h"])
    assert [p.name for p in tmp_path.iterdir()] == ["t.nxs"]
