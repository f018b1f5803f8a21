"""Each flag `vllm serve` adds beyond the engine's is classified, documented, and parsed or refused so."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.cli import build_parser, flag_dest, parse_command_line, settings_from
from server.cli_flags import FLAG_GROUPS
from server.engine.cli_args import frontend_actions
from server.settings import ServerSettings
from server.vllm_flags import DOC, VLLM_FLAGS, render_doc

ROOT = Path(__file__).resolve().parents[2]
# Values for refused flags that take one (any value is refused; it only has to parse).
SAMPLE_VALUES = {"--grpc-port": "9001"}
DEPLOYMENT_YAML = """\
model: org/llama
port: 9000
uvicorn-log-level: trace
api-key: [old-key, new-key]
served-model-name: [llama, llama-8b]
lora-modules:
  - '{"name": "sql", "path": "/adapters/sql", "base_model_name": "llama"}'
  - chat=/adapters/chat
max-log-len: 200
enable-request-id-headers: true
response-role: assistant
chat-template-content-format: string
enable-force-include-usage: true
enable-server-load-tracking: true
api-server-count: 1
middleware: json.JSONDecoder
return-tokens-as-token-ids: false
default-chat-template-kwargs: {enable_thinking: false}
enable-log-requests: true
enable-log-outputs: true
uds: /run/wattserve.sock
ssl-ciphers: ECDHE-RSA-AES256-GCM-SHA384
disable-fastapi-docs: false
allow-credentials: false
"""


def spellings(action: argparse.Action) -> set[str]:
    return set(action.option_strings)


def test_every_front_end_flag_of_vllm_is_classified_once() -> None:
    named = [entry.flag for entry in VLLM_FLAGS]
    assert len(named) == len(set(named))
    unclassified = [a.option_strings[0] for a in frontend_actions() if not spellings(a) & set(named)]
    assert unclassified == [], f"classify these new vLLM flags in server/vllm_flags.py: {unclassified}"
    known = {spelling for action in frontend_actions() for spelling in action.option_strings}
    assert {flag for flag in named if flag not in known} == {e.flag for e in VLLM_FLAGS if e.removed}


def test_each_same_flag_is_ours_and_sets_its_settings_field() -> None:
    ours = {flag.flag: flag.field for group in FLAG_GROUPS for flag in group}
    for entry in VLLM_FLAGS:
        if entry.kind == "same" and entry.field is not None:
            assert ours.get(entry.flag) == entry.field, entry.flag
        if entry.kind != "same":
            assert entry.flag not in ours, entry.flag


def test_no_flag_of_ours_shares_a_destination_with_an_engine_flag() -> None:
    # Else one overwrites the other: --uvicorn-log-level debug once reached vLLM's --log-level and failed.
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    ours = {flag_dest(flag.field) for group in FLAG_GROUPS for flag in group}
    owners: dict[str, set[str]] = {}
    for action in serve._actions:
        owners.setdefault(action.dest, set()).update(action.option_strings)
    shared = {dest: sorted(owners[dest]) for dest in ours if len(owners.get(dest, ())) > 1}
    for dest, spellings in shared.items():  # one flag's own spellings (--x, --no-x) are fine
        assert len({s.replace("--no-", "--") for s in spellings}) == 1, (dest, spellings)


def test_the_uvicorn_log_level_leaves_vllms_log_level_alone() -> None:
    args = parse_command_line(["serve", "some/model", "--uvicorn-log-level", "debug"])
    assert (settings_from(args).log_level, getattr(args, "log_level", None)) == ("debug", None)


@pytest.mark.parametrize("key", ["123456", "null", "true", '["a", "b"]'])
def test_the_key_in_the_environment_is_one_key_as_written(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Several keys come from flags or a config file; the environment's is never read as JSON.
    monkeypatch.setenv("WATTSERVE_API_KEY", key)
    assert ServerSettings().api_keys == (key,)


def test_the_differences_page_holds_the_generated_table() -> None:
    page = (ROOT / DOC).read_text()
    assert render_doc(page) == page, "run `python -m server.vllm_flags` to regenerate the table"
    readme_top = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert DOC in readme_top


def test_a_deployment_config_parses_into_settings(tmp_path: Path) -> None:
    config = tmp_path / "vllm.yaml"
    config.write_text(DEPLOYMENT_YAML)
    args = parse_command_line(["serve", "--config", str(config)])
    settings = settings_from(args)
    assert (args.model, args.served_model_name) == ("org/llama", ["llama", "llama-8b"])
    assert args.enable_log_requests is True
    assert settings.api_keys == ("old-key", "new-key")
    assert (settings.port, settings.log_level, settings.uds) == (9000, "trace", "/run/wattserve.sock")
    assert settings.ssl_ciphers == "ECDHE-RSA-AES256-GCM-SHA384"
    assert len(settings.lora_modules) == 2
    assert (settings.enable_request_id_headers, settings.force_include_usage) == (True, True)
    assert settings.default_chat_template_kwargs == {"enable_thinking": False}
    assert settings.middleware == ["json.JSONDecoder"]
    assert (settings.disable_fastapi_docs, settings.allow_credentials) == (False, False)


@pytest.mark.parametrize("entry", [e for e in VLLM_FLAGS if e.kind == "unsupported"], ids=lambda e: e.flag)
def test_an_unsupported_flag_stops_with_one_line_naming_it(entry, capsys: pytest.CaptureFixture[str]) -> None:
    action = next(a for a in frontend_actions() if entry.flag in a.option_strings)
    argv = ["serve", "some/model", entry.flag]
    if action.nargs != 0:
        argv.append(SAMPLE_VALUES.get(entry.flag) or (str(action.choices[0]) if action.choices else "x"))
    with pytest.raises(SystemExit) as caught:
        parse_command_line(argv)
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert entry.flag in lines[0]
    assert "wattserve does not support" in lines[0]


def test_an_accepted_flag_with_another_value_is_refused_and_its_default_form_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_command_line(["serve", "some/model", "--api-server-count", "2"])
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--api-server-count 2" in line
    harmless = ["-asc", "1", "--no-tokens-only", "--disable-log-requests", "--max-log-len", "9"]
    args = parse_command_line(["serve", "some/model", *harmless])
    assert args.model == "some/model"


@pytest.mark.parametrize(
    ("argv", "model"),
    [
        (["serve", "--served-model-name", "tiny", "tiny-alias"], None),
        (["serve", "--port", "9000", "--served-model-name", "tiny", "tiny-alias"], None),
        (["serve", "org/llama", "--served-model-name", "tiny", "tiny-alias"], "org/llama"),
        (["serve", "--model", "org/llama", "--served-model-name", "tiny", "tiny-alias"], "org/llama"),
    ],
)
def test_aliases_without_a_model_name_the_embedded_one(argv: list[str], model: str | None) -> None:
    # vLLM's parser refuses aliases without a positional model; wattserve then serves its embedded model.
    args = parse_command_line(argv)
    assert (args.model, args.served_model_name) == (model, ["tiny", "tiny-alias"])
