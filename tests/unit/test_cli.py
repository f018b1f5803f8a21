"""The `wattserve serve` command line: vLLM's engine flags plus ours."""

from __future__ import annotations

import pytest

from server.__main__ import main
from server.cli import build_parser, settings_from


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
    assert (settings.port, settings.api_key) == (9001, "k")


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--no-such-flag"])
    assert caught.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err
