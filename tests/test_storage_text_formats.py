"""CSV and JSON lines for people: an ISO 8601 UTC time beside t_ns, arrays as JSON lists."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from test_storage_helpers import T0, assert_same, every_measurement

from radlogger.endpoints.storage.csv import CSVEndpoint
from radlogger.endpoints.storage.jsonl import JSONLEndpoint
from radlogger.measurement import Measurement
from radlogger.store import codec, reader


def test_iso_time_is_exact_to_the_ns() -> None:
    assert codec.iso_utc(T0) == "2024-05-01T12:00:00.000000000Z"
    assert codec.iso_utc(T0 + 1) == "2024-05-01T12:00:00.000000001Z"
    assert codec.iso_utc(T0 + 86_399_999_999_999) == "2024-05-02T11:59:59.999999999Z"
    assert codec.iso_utc(0) == "1970-01-01T00:00:00.000000000Z"
    assert codec.iso_utc(-1) == "1969-12-31T23:59:59.999999999Z"
    for t in (T0, T0 + 123_456_789_012, 1_900_000_000_123_456_000):
        parsed = datetime.fromisoformat(codec.iso_utc(t)[:26] + "+00:00")  # to the µs
        assert parsed == datetime.fromtimestamp(t // 1000 / 1e6, UTC)


def test_csv_and_jsonl_carry_the_time_column(tmp_path: Path) -> None:
    data = [Measurement("d", "d.v", i, T0 + i * 1_500_000_001, "V", None, None, i)
            for i in range(3)]
    CSVEndpoint("c", {"path": str(tmp_path / "a.csv")}).write_all(data)
    JSONLEndpoint("j", {"path": str(tmp_path / "a.jsonl")}).write_all(data)
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = ["2024-05-01T12:00:00.000000000Z", "2024-05-01T12:00:01.500000001Z",
            "2024-05-01T12:00:03.000000002Z"]
    assert list(rows[0])[:3] == ["t_ns", "time", "source"]
    assert [r["time"] for r in rows] == want
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["time"] for r in lines] == want and list(lines[0])[:2] == ["t_ns", "time"]


def test_csv_written_before_the_time_column_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("t_ns,source,topic,seq,type,value,unit,device_time,meta\n"
                   f"{T0},d,d.v,0,int,5,V,,\n{T0 + 1},d,d.v,1,float,2.5,V,7,{{\"a\":1}}\n")
    back = list(reader.read(old))
    assert [(m.t_ns, m.value, m.device_time, m.meta) for m in back] == \
        [(T0, 5, None, None), (T0 + 1, 2.5, 7, {"a": 1})]


def test_arrays_as_json_lists_are_plain_json_and_exact(tmp_path: Path) -> None:
    written = every_measurement()
    for cls, name in ((CSVEndpoint, "j.csv"), (JSONLEndpoint, "j.jsonl")):
        store = cls("s", {"path": str(tmp_path / name), "arrays": "json"})
        assert store.write_all(written) == len(written)
        assert_same(written, list(reader.read(tmp_path / name)))
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    iq = next(r for r in lines if r.get("type") == "<c8[2,512]")
    assert iq["value"][0][1] == [1.0, 2.0]  # (1 + 2j) * 1 as [re, im]
    with open(tmp_path / "j.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["type"] == "<i2[3,4,5]")
    assert json.loads(row["value"]) == np.arange(60).reshape(3, 4, 5).tolist()
