"""The row builders of afterfix.ingest.rows: the compiled Columns and the Python TupleColumns
give the same Arrow arrays for the same rows, roll back, and hand their buffers over."""

from __future__ import annotations

import pyarrow as pa
import pytest

from afterfix.ingest import rows as R

FIELDS = [pa.field("s", pa.string()), pa.field("t", pa.timestamp("us")), pa.field("n", pa.int64()),
          pa.field("i", pa.int32()), pa.field("d", pa.float64())]  # fmt: skip
ROWS = [("a", 1, -5, 7, 0.5), (None, None, None, None, None), ("é\x00\"", 2**62, 2**63 - 1, -(2**31), float("-inf")), ("", 0, 0, 0, -0.0)]


def built(rows, builder):
    for r in rows:
        builder.append(r)
    return builder


def test_columns_is_compiled_here():
    assert R._Columns is not None, "the compiled module was not built: `pip install -e .` builds it (setup.py)"


@pytest.mark.parametrize("make", [lambda: R.new_columns(FIELDS), R.TupleColumns], ids=["Columns", "TupleColumns"])
def test_rows_come_back_as_arrow_arrays_and_as_values(make):
    cols = built(ROWS, make())
    assert len(cols) == len(ROWS) and list(cols) == ROWS
    assert cols.column(0) == [r[0] for r in ROWS] and cols.column(4) == [r[4] for r in ROWS]
    arrays = R.to_arrays(cols, FIELDS)
    assert [a.type for a in arrays] == [f.type for f in FIELDS]
    table = pa.Table.from_arrays(arrays, schema=pa.schema(FIELDS))
    expected = pa.Table.from_pylist([dict(zip("stnid", r)) for r in ROWS], schema=pa.schema(FIELDS))
    assert table.equals(expected)


def test_truncate_rolls_back_rows_and_a_half_appended_row_leaves_nothing():
    cols = built(ROWS[:2], R.new_columns(FIELDS))
    cols.truncate(1)
    with pytest.raises(TypeError):
        cols.append(("x", 1, "not an int", 1, 1.0))  # fails at its third value
    with pytest.raises(OverflowError):
        cols.append(("x", 1, 1, 2**31, 1.0))  # out of int32 range at its fourth
    cols.append(ROWS[2])
    assert list(cols) == [ROWS[0], ROWS[2]]
    with pytest.raises(ValueError):
        cols.truncate(3)
    assert pa.Table.from_arrays(R.to_arrays(cols, FIELDS), schema=pa.schema(FIELDS)).num_rows == 2


def test_handing_the_buffers_over_empties_the_builder_and_the_arrays_outlive_it():
    cols = built(ROWS, R.new_columns(FIELDS))
    arrays = R.to_arrays(cols, FIELDS)
    assert len(cols) == 0 and cols.column(0) == []
    del cols
    assert arrays[0].to_pylist() == [r[0] for r in ROWS] and arrays[2].to_pylist() == [r[2] for r in ROWS]
    again = built(ROWS[:1], R.new_columns(FIELDS))
    assert R.to_arrays(again, FIELDS)[0].to_pylist() == ["a"]


def test_text_beyond_what_one_string_array_holds_is_split_into_chunks(monkeypatch):
    monkeypatch.setattr(R, "_STRING_MAX", 10)  # instead of 2 GiB
    values = ["abcd", None, "efghij", "k" * 10, "", "lm"]
    cols = built([(v, 0, 0, 0, 0.0) for v in values], R.new_columns(FIELDS))
    text = R.to_arrays(cols, FIELDS)[0]
    assert isinstance(text, pa.ChunkedArray) and text.type == pa.string()
    assert text.to_pylist() == values and text.num_chunks == 3
    assert all(pa.compute.sum(pa.compute.binary_length(c)).as_py() <= 10 for c in text.chunks)
