"""The find-or-install step the PostgreSQL, HAProxy and Prometheus test helpers share, on a fake machine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests import debian_packages
from tests.debian_packages import find_or_install


@dataclass
class Machine:
    """What the step sees of the machine, and the packages it installed."""

    apt_get: str | None = "/usr/bin/apt-get"
    uid: int = 0
    install_fails: str | None = None
    installed: list[str] = field(default_factory=list)

    def install(self, package: str) -> str | None:
        self.installed.append(package)
        return self.install_fails


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """A machine with apt-get, run as root, where installing works; tests change what they need."""
    fake = Machine()
    monkeypatch.setattr(debian_packages.shutil, "which", lambda name: fake.apt_get)
    monkeypatch.setattr(debian_packages.os, "geteuid", lambda: fake.uid)
    monkeypatch.setattr(debian_packages, "install", fake.install)
    return fake


def test_what_is_there_is_used_without_installing(machine: Machine) -> None:
    lookup = find_or_install("haproxy", "haproxy", lambda: "/usr/sbin/haproxy")
    assert (lookup.found, lookup.missing, machine.installed) == ("/usr/sbin/haproxy", None, [])


def test_a_missing_tool_is_installed_then_found(machine: Machine) -> None:
    lookup = find_or_install("haproxy", "haproxy", lambda: "/usr/sbin/haproxy" if machine.installed else None)
    assert (lookup.found, lookup.missing, machine.installed) == ("/usr/sbin/haproxy", None, ["haproxy"])


@pytest.mark.parametrize(
    ("change", "reason", "tried"),
    [
        ({"apt_get": None}, "haproxy not found and no apt-get to install it", []),
        ({"uid": 1000}, "haproxy not found; installing it needs root", []),
        (
            {"install_fails": "apt-get install haproxy failed: E: no package"},
            "apt-get install haproxy failed",
            ["haproxy"],
        ),
        ({}, "apt-get installed haproxy, but haproxy is not found", ["haproxy"]),
    ],
)
def test_each_reason_there_is_nothing_is_given(
    machine: Machine, change: dict[str, object], reason: str, tried: list[str]
) -> None:
    for name, value in change.items():
        setattr(machine, name, value)
    lookup = find_or_install("haproxy", "haproxy", lambda: None)
    assert lookup.found is None
    assert lookup.missing is not None
    assert lookup.missing.startswith(reason)
    assert machine.installed == tried
