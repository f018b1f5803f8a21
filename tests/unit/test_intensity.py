"""Grid intensity documents (CSV, Electricity Maps, WattTime) and the series read from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.energy.carbon import CarbonModel
from server.energy.intensity import IntensityFormatError, IntensitySeries, IntensitySource, parse_document

T0 = 1_795_000_000.0


def test_csv_with_a_header_and_iso_or_epoch_times() -> None:
    text = "timestamp,g_per_kwh\n2026-11-23T10:00:00Z,300\n1795437000,120.5\n"
    assert parse_document(text) == [(1795428000.0, 300.0), (1795437000.0, 120.5)]


def test_electricity_maps_latest_and_history() -> None:
    latest = {"zone": "DE", "carbonIntensity": 302, "datetime": "2026-11-23T10:00:00.000Z"}
    assert parse_document(json.dumps(latest)) == [(1795428000.0, 302.0)]
    history = {
        "zone": "DE",
        "history": [latest, {**latest, "carbonIntensity": 250, "datetime": "2026-11-23T11:00:00Z"}],
    }
    assert [value for _, value in parse_document(json.dumps(history))] == [302.0, 250.0]


def test_wattime_v3_moer_in_pounds_per_mwh_becomes_grams_per_kwh() -> None:
    document = {
        "data": [{"point_time": "2026-11-23T10:00:00+00:00", "value": 1000.0}],
        "meta": {"units": "lbs_co2_per_mwh"},
    }
    ((_, value),) = parse_document(json.dumps(document))
    assert value == pytest.approx(453.59237)


@pytest.mark.parametrize("text", ["", "{}", "[1, 2]", "a,b\nc,d\n", '{"data": [{"value": 1}]}', "{broken"])
def test_documents_that_are_none_of_those_are_refused(text: str) -> None:
    with pytest.raises(IntensityFormatError):
        parse_document(text)


def test_the_series_is_a_step_function_with_a_default_until_known() -> None:
    series = IntensitySeries([(T0, 100.0), (T0 + 60, 400.0)], default_g_per_kwh=475.0)
    assert series.at(T0 - 1) == 100.0  # before the first point: the first value
    assert series.at(T0 + 59) == 100.0
    assert series.at(T0 + 60) == 400.0
    assert IntensitySeries([], 475.0).at(T0) == 475.0


def test_a_file_source_is_reread_when_it_changes_and_a_bad_file_keeps_the_last_series(tmp_path: Path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text(f"{T0},100\n")
    source = IntensitySource(str(path), default_g_per_kwh=475.0)
    assert source.now() == 475.0
    source.refresh()
    assert source.now() == 100.0
    path.write_text("not,a,series\n")
    os.utime(path, (T0 + 10, T0 + 10))
    source.refresh()
    assert source.now() == 100.0


def test_grams_use_the_intensity_at_the_time_of_work(tmp_path: Path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text("0,100\n")
    source = IntensitySource(str(path), default_g_per_kwh=475.0)
    source.refresh()
    carbon = CarbonModel(source, pue=1.5)
    assert carbon.grams(3.6e6) == pytest.approx(150.0)
    assert carbon.grams_per_joule_at(0.0) == pytest.approx(1.5 * 100 / 3.6e6)
