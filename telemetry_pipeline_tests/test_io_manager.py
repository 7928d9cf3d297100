"""Nights as Parquet files: one night of an input, and nights spilled to disk as they are built."""

import pyarrow as pa

from telemetry_pipeline.io_manager import SpilledNights, night_table


def test_one_nights_rows_of_an_input_whole_or_filtered():
    one_night = pa.table({"night": ["2026-11-26"] * 3, "n": [1, 2, 3]})
    assert night_table(one_night, "2026-11-26") is one_night  # a run of that night: not copied
    assert night_table(one_night, "2026-11-25").num_rows == 0
    two_nights = pa.table({"night": ["2026-11-25", "2026-11-26", "2026-11-26"], "n": [1, 2, 3]})
    assert night_table(two_nights, "2026-11-26")["n"].to_pylist() == [2, 3]
    assert night_table(two_nights.slice(0, 0), "2026-11-26").num_rows == 0


def test_spilled_nights_are_files_and_the_last_is_still_in_memory():
    spilled = SpilledNights()
    first, last = (pa.table({"night": [night], "n": [n]}) for night, n in (("2026-11-25", 1), ("2026-11-26", 2)))
    spilled.add("2026-11-25", first)
    spilled.add("2026-11-26", last)
    tables = spilled.tables()
    assert list(tables) == ["2026-11-25", "2026-11-26"] and all(path.exists() for path in tables.files.values())
    assert tables["2026-11-25"].equals(first)  # read back from its file
    assert tables.held == {"2026-11-26": last} and tables["2026-11-26"] is last
