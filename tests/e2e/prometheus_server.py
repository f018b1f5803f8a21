"""A Prometheus process of the test's own, scraping wattserve servers every second with the rules loaded."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from tests.waiting import wait_until

JOB = "wattserve"  # the job name the rules' alerts select
SCRAPE_INTERVAL = "1s"
HANG_S = 120  # deadlines below only catch hangs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    """Starts on a free loopback port with its own storage under `root`; `stop()` ends it."""

    def __init__(self, binary: str, root: Path, target: str | Sequence[str], rules: Path) -> None:
        self.targets = [target] if isinstance(target, str) else list(target)
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": self.targets}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        self.log_path = root / "prometheus.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def wait_ready(self) -> None:
        """Until a first scrape of every target has been stored."""
        try:
            wait_until(
                lambda: self.process.poll() is not None or self._has_scraped(), "a scrape stored", HANG_S
            )
        except pytest.fail.Exception:
            pytest.fail(f"prometheus stored no scrape in {HANG_S} s:\n{self.log_path.read_text()[-3000:]}")
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")

    def _has_scraped(self) -> bool:
        try:
            # Until ready, the API answers 503 with a plain-text body.
            if self.http.get("/-/ready").status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        return len(self.query(f'wattserve_energy_meter_info{{job="{JOB}"}}')) == len(self.targets)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector (at `at`, Unix seconds, else now); a query error fails."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        response = self.http.get("/api/v1/query", params=params)
        assert response.headers.get("content-type", "").startswith("application/json"), response.text
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def scrape_after(self, wall_s: float) -> float:
        """The timestamp of a successful scrape that started after `wall_s`, once Prometheus stored it.

        Prometheus stamps a scrape with its start, before the request is sent, so that scrape read the
        server's state as it was after `wall_s`.
        """
        stamps: list[float] = []

        def stored_after() -> bool:
            found = self.query(f'timestamp(wattserve_energy_meter_info{{job="{JOB}"}})')
            stamps[:] = [float(sample["value"][1]) for sample in found[:1]]
            return bool(stamps) and stamps[0] > wall_s

        wait_until(stored_after, "a scrape stored after the moment asked for", HANG_S)
        return stamps[0]

    def rules_evaluated_after(self, wall_s: float) -> None:
        """Until every rule group has been evaluated after `wall_s` (a group may keep its own interval)."""

        def evaluated() -> bool:
            return all(
                datetime.fromisoformat(group["lastEvaluation"]).timestamp() > wall_s
                for group in self._rule_groups()
            )

        wait_until(evaluated, "every rule group evaluated after the moment asked for", HANG_S)

    def rules(self) -> list[dict]:
        """Every loaded rule with its health and state, from /api/v1/rules."""
        return [rule for group in self._rule_groups() for rule in group["rules"]]

    def _rule_groups(self) -> list[dict]:
        return self.http.get("/api/v1/rules").json()["data"]["groups"]

    def stop(self) -> None:
        """End the process (it was started by this object alone)."""
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
