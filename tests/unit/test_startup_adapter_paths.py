"""Startup adapters that cannot load are refused before the model loads, each reason logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.runtime.startup_adapters import StartupAdaptersError, refuse_missing_startup_adapters


def test_a_missing_folder_and_an_entry_that_does_not_parse_are_both_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "here").mkdir()
    modules = [f"here={tmp_path / 'here'}", f"gone={tmp_path / 'missing'}", "no-path"]
    with caplog.at_level(logging.ERROR), pytest.raises(StartupAdaptersError, match="2 startup adapter"):
        refuse_missing_startup_adapters(modules, None, [])
    logged = [record.getMessage() for record in caplog.records]
    assert any(line.startswith(f"adapter not loaded: gone ({tmp_path / 'missing'})") for line in logged)
    assert any("'no-path'" in line for line in logged)
    assert not any("here" in line for line in logged)


def test_folders_that_are_there_pass_whatever_they_hold(tmp_path: Path) -> None:
    # What is inside (config, weights, shapes) is checked against the base model once it has loaded.
    (tmp_path / "empty").mkdir()
    refuse_missing_startup_adapters(
        [f"empty={tmp_path / 'empty'}", f'{{"name": "json", "path": "{tmp_path}"}}'], None, []
    )


def test_a_file_where_a_folder_is_named_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(StartupAdaptersError):
        refuse_missing_startup_adapters([f"file={tmp_path / 'weights.bin'}"], None, [])
