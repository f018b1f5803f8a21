"""The `wattserve serve` command line: vLLM's engine flags plus ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.__main__ import main
from server.api.http_server import uvicorn_config
from server.cli import build_parser, parse_command_line, settings_from
from server.cli_flags import FLAG_GROUPS, GROUP_TITLES


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--model", "/models/m", "--max-model-len", "512"],
        ["serve", "/models/m", "--max_model_len", "512"],
        ["serve", "--model=/models/m", "--max-model-len=512"],
    ],
)
def test_model_and_engine_flags_parse_like_vllm_serve(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.model_tag or args.model) == "/models/m"
    assert args.max_model_len == 512


def test_no_model_means_the_embedded_default() -> None:
    args = build_parser().parse_args(["serve", "--port", "9001", "--api-key", "k"])
    assert args.model is None
    assert args.model_tag is None
    settings = settings_from(args)
    assert (settings.port, settings.api_keys) == (9001, ("k",))


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--no-such-flag"])
    assert caught.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_help_gives_every_wattserve_flag_its_help_and_never_a_default_of_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As with `vllm serve`, plain --help lists the groups; --help=all prints every flag.
    with pytest.raises(SystemExit) as caught:
        parse_command_line(["serve", "--help=all"])
    assert caught.value.code == 0
    everything = capsys.readouterr().out
    text = everything[everything.index(f"\n{GROUP_TITLES[0]}:\n") : everything.index("\nModelConfig:\n")]
    assert "default: None" not in text
    for flag in [flag for group in FLAG_GROUPS for flag in group]:
        assert flag.help, flag.flag
        assert flag.flag in text
    unwrapped = " ".join(text.split())
    for shown in ("(default: 30.0)", "(default: ['*'])", "(default: 0)", "(default: auto)"):
        assert shown in unwrapped


def test_vllm_serve_flags_reach_the_settings() -> None:
    argv = ["serve", "--chat-template", "{{ x }}", "--enable-prompt-tokens-details", "--root-path", "/llm"]
    argv += [
        "--allowed-origins",
        '["https://a.example"]',
        "--allow-credentials",
        "--disable-uvicorn-access-log",
    ]
    argv += ["--ssl-keyfile", "k.pem", "--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2"]
    settings = settings_from(build_parser().parse_args(argv))
    assert settings.chat_template == "{{ x }}"
    assert settings.enable_prompt_tokens_details
    assert (settings.root_path, settings.allowed_origins, settings.allow_credentials) == (
        "/llm",
        ["https://a.example"],
        True,
    )
    assert settings.allowed_methods == ["*"]
    assert (str(settings.ssl_keyfile), str(settings.ssl_certfile), settings.ssl_cert_reqs) == (
        "k.pem",
        "c.pem",
        2,
    )
    config = uvicorn_config(object(), settings)
    assert (config.ssl_keyfile, config.ssl_cert_reqs, config.access_log) == (Path("k.pem"), 2, False)


@pytest.mark.parametrize("value", ["https://a.example", '{"a": 1}', "[1]"])
def test_cors_lists_must_be_json_lists_of_strings(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_command_line(["serve", "--allowed-origins", value])
    assert "--allowed-origins" in capsys.readouterr().err


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "wattserve.yaml"
    path.write_text("max-num-seqs: 64\nenergy-meter: estimated\nwatch-adapters: true\nport: 9100\n")
    return path


@pytest.mark.parametrize("model", [[], ["/models/m"]])
@pytest.mark.parametrize("spelling", ["separate", "joined"])
def test_a_yaml_config_sets_flags_and_the_command_line_wins(
    config_file: Path, model: list[str], spelling: str
) -> None:
    config = ["--config", str(config_file)] if spelling == "separate" else [f"--config={config_file}"]
    args = parse_command_line(["serve", *model, *config, "--port", "9200"])
    settings = settings_from(args)
    assert args.max_num_seqs == 64
    assert (settings.energy_meter, settings.watch_adapters, settings.port) == ("estimated", True, 9200)
    assert args.model == (model[0] if model else None)


@pytest.mark.parametrize(("name", "text"), [("missing.yaml", None), ("flags.json", "{}")])
def test_a_config_file_that_cannot_be_read_is_a_usage_error(
    tmp_path: Path, name: str, text: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as caught:
        parse_command_line(["serve", "--config", str(tmp_path / name)])
    assert caught.value.code == 2
    assert f"--config {tmp_path / name}" in capsys.readouterr().err


def test_a_chat_template_file_that_does_not_exist_stops_the_start(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["serve", "--model", "/models/m", "--chat-template", "/no/such/template.jinja"]) == 2
    assert "--chat-template" in caplog.text


def test_a_kubernetes_service_link_in_the_environment_is_named_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WATTSERVE_PORT", "tcp://10.0.0.1:8000")
    assert main(["serve", "--model", "/models/m"]) == 2
    assert "enableServiceLinks" in capsys.readouterr().err
    assert settings_from(parse_command_line(["serve", "--port", "8000"])).port == 8000
