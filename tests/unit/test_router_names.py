"""Served adapter names out of engine keys, and the folder a request's name finds."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import Metric

from adapters.discovery import find
from adapters.types import served_name
from server.observability.router_metrics import served_lora_info, served_names


def test_engine_keys_become_served_names_each_once_in_order() -> None:
    assert served_name("demo-alpha@v1#1") == "demo-alpha"
    assert served_name("plain") == "plain"
    assert served_names("b@v2#3,a@v1#1,b@v1#2") == "b,a"
    assert served_names("") == ""


def test_label_sets_that_coincide_keep_the_newest_time() -> None:
    family = Metric("vllm:lora_requests_info", "Running stats on lora requests.", "gauge")
    for running, when in (("a@v1#1", 5.0), ("a@v2#2", 9.0), ("a@v1#1,a@v2#2", 7.0), ("", 1.0)):
        labels = {"max_lora": "2", "waiting_lora_adapters": "", "running_lora_adapters": running}
        family.add_sample(family.name, labels, when)
    rewritten = served_lora_info(family)
    assert [(s.labels["running_lora_adapters"], s.value) for s in rewritten.samples] == [
        ("a", 9.0),
        ("", 1.0),
    ]


def adapter(folder: Path) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return folder


def test_find_takes_the_folder_startup_would_load_last(tmp_path: Path) -> None:
    adapter(tmp_path / "sql")
    adapter(tmp_path / "sql@v2")
    adapter(tmp_path / "sqlite")
    (tmp_path / "sql@v9").mkdir()  # no adapter_config.json: not an adapter folder
    spec = find(tmp_path, "sql")
    assert spec is not None
    assert (spec.name, spec.version, Path(spec.path)) == ("sql", "v2", (tmp_path / "sql@v2").resolve())
    assert find(tmp_path, "absent") is None
    assert find(tmp_path, "sqlite@v2") is None
