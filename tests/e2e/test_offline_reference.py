"""Greedy output of the server equals vLLM's offline `LLM` on the same prompt and engine flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MODEL, Server

pytestmark = pytest.mark.e2e
REQUESTS = [
    {"prompt": "The sea was calm and", "max_tokens": 32},
    {"prompt": "Once upon a time", "max_tokens": 48},
    {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 32},
]


def offline_texts(model_dir: Path, requests: list[dict], tmp_path: Path) -> list[str]:
    """Greedy texts from vLLM's offline LLM on the same engine flags, run in its own process."""
    requests_path = tmp_path / "requests.json"
    requests_path.write_text(json.dumps(requests))
    script = Path(__file__).with_name("offline_reference.py")
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(requests_path), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_temperature_zero_output_equals_offline_llm(
    client: openai.OpenAI, server: Server, tmp_path: Path
) -> None:
    served = []
    for request in REQUESTS:
        if "messages" in request:
            response = client.chat.completions.create(model=MODEL, temperature=0, **request)
            served.append(response.choices[0].message.content)
        else:
            served.append(client.completions.create(model=MODEL, temperature=0, **request).choices[0].text)
    offline = offline_texts(server.model_dir, REQUESTS, tmp_path)
    assert all(text for text in served)
    assert served == offline
