"""`wattserve-bench`'s command line: help with defaults, new flags, a checkout without install or extras."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import cli
from loadtest.cli import BENCH_MODULES, INSTALL_HINT, build_parser, main
from loadtest.version import harness_version

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("run", "compare", "calibrate")  # `stub` passes its flags on to the stub server


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def option_entries(text: str) -> dict[str, str]:
    """Each option's help entry (its line, and the next when argparse puts the help there), by flag."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if match := re.match(r"\s{2}(-[-\w]+)", line):
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith(" " * 6) and line.strip():
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_shows_every_options_default(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: nothing to reassemble
    entries = option_entries(help_text(capsys, command))
    flags = {
        flag
        for sub in build_parser()._subparsers._group_actions[0].choices.values()  # noqa: SLF001
        if sub.prog.endswith(f" {command}")
        for action in sub._actions  # noqa: SLF001
        for flag in action.option_strings[-1:]
        if flag != "--help"
    }
    assert flags
    assert flags <= set(entries)
    for flag in flags:
        assert "default" in entries[flag], entries[flag]


def test_the_stub_servers_help_shows_its_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    entries = option_entries(help_text(capsys, "stub"))  # `stub --help` is the stub server's help
    assert set(entries) >= {"--host", "--port", "--model", "--ttft-ms", "--itl-ms"}
    assert all("default" in entry for flag, entry in entries.items() if flag != "-h")
    assert "(default: 0.0)" in entries["--itl-ms"]


def test_run_help_gives_the_real_defaults_and_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-print-me")
    entries = option_entries(help_text(capsys, "run"))
    assert "(default: 30.0)" in entries["--duration"]
    assert "(default: 5.0)" in entries["--warmup"]
    assert "(default: poisson)" in entries["--arrival"]
    assert "(default: http://127.0.0.1:8000)" in entries["--url"]
    assert "default: none sent" in entries["--service-tier"]
    assert "$OPENAI_API_KEY" in entries["--api-key"]
    assert "sk-do-not-print-me" not in capsys.readouterr().out + "".join(entries.values())


def test_service_tier_flag_reaches_the_workload() -> None:
    from loadtest.commands import config_from_args  # noqa: PLC0415 - needs the bench extra

    args = build_parser().parse_args(
        ["run", "--model", "m", "--rate", "2", "--service-tier", "flex=1,default=1", "--api-key", "k"]
    )
    config = config_from_args(args)
    assert config.workload.service_tiers == "flex=1,default=1"
    assert config.api_key == "k"
    with pytest.raises(ValueError, match="unknown tier 'turbo'"):
        config_from_args(
            build_parser().parse_args(["run", "--model", "m", "--rate", "2", "--service-tier", "turbo"])
        )


def test_missing_bench_modules_give_one_line_naming_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "BENCH_MODULES", ("aiohttp", "no_such_module_for_wattserve"))
    assert cli.missing_bench_modules() == ["no_such_module_for_wattserve"]
    assert main(["run", "--url", "http://127.0.0.1:9", "--rate", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert INSTALL_HINT in err
    assert "no_such_module_for_wattserve" in err


def test_a_server_install_without_the_extra_gets_the_hint_not_a_traceback() -> None:
    # The bench extra's modules made unimportable, as in an install without it: `--help` still works,
    # a command says what to install.
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in BENCH_MODULES)
    code = f"import sys; {blocked}; from loadtest.cli import main; sys.exit(main(sys.argv[1:]))"
    run = [sys.executable, "-c", code]
    command = subprocess.run(
        [*run, "run", "--url", "http://127.0.0.1:9", "--rate", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert command.returncode == 1
    assert "Traceback" not in command.stderr
    assert command.stderr.strip().splitlines() == [
        f"wattserve-bench run needs the bench extra (missing {', '.join(BENCH_MODULES)}): {INSTALL_HINT}"
    ]
    helped = subprocess.run(
        [*run, "run", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert helped.returncode == 0
    assert "--service-tier" in helped.stdout


def test_version_falls_back_to_the_checkout_when_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert project is not None
    assert harness_version() == f"{project.group(1)}+checkout"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.other]\nversion = "9"\n\n[project]\nname = "x"\nversion = "1.2.3"\n')
    assert harness_version(pyproject) == "1.2.3+checkout"
    assert harness_version(tmp_path / "missing.toml") == "unknown"
    from loadtest.config import RunConfig  # noqa: PLC0415 - needs the bench extra
    from loadtest.runner import _environment  # noqa: PLC0415
    from loadtest.workload import WorkloadConfig  # noqa: PLC0415

    config = RunConfig(url="http://x", workload=WorkloadConfig(models="m"), rates=[1.0])
    assert _environment(config, ["m"])["harness"] == f"{project.group(1)}+checkout"


def test_python_m_loadtest_prints_its_version() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "loadtest", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert finished.stdout.startswith("wattserve-bench ")
