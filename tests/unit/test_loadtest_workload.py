"""Seeded request generation: length specs, model mixes, request specs and datasets."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from loadtest.sampling import SERVICE_TIERS, LengthDist, ModelMix, ServiceTierMix
from loadtest.workload import (
    BUILTIN_PROMPTS,
    RequestSpec,
    WorkloadConfig,
    build_requests,
)

N = 20_000


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- LengthDist ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("64", LengthDist("fixed", (64,))),
        ("fixed:64", LengthDist("fixed", (64,))),
        (" uniform:32:128 ", LengthDist("uniform", (32, 128))),
        ("normal:100:20.5", LengthDist("normal", (100.0, 20.5))),
        ("hist:32=1,64=3", LengthDist("hist", (32, 64), (0.25, 0.75))),
    ],
)
def test_length_specs_parse(spec: str, expected: LengthDist) -> None:
    assert LengthDist.parse(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "0",
        "-3",
        "abc",
        "64.5",
        "fixed:",
        "fixed:1:2",
        "uniform:10",
        "uniform:20:10",
        "uniform:0:10",
        "uniform:a:10",
        "normal:0:1",
        "normal:10:-1",
        "normal:10:nan",
        "hist:",
        "hist:32",
        "hist:32=0",
        "hist:0=1",
        "hist:32=-1,64=2",
        "poisson:3",
    ],
)
def test_bad_length_specs_raise(spec: str) -> None:
    with pytest.raises(ValueError, match="spec"):
        LengthDist.parse(spec)


def test_fixed_is_fixed() -> None:
    sample = LengthDist.parse("fixed:64").sample(rng(), 100)
    assert sample.dtype == np.int64
    assert (sample == 64).all()


def test_uniform_within_inclusive_bounds() -> None:
    sample = LengthDist.parse("uniform:32:40").sample(rng(), N)
    assert sample.min() == 32
    assert sample.max() == 40
    assert abs(sample.mean() - 36) < 0.1


def test_normal_mean_close_and_clipped() -> None:
    sample = LengthDist.parse("normal:200:30").sample(rng(), N)
    assert abs(sample.mean() - 200) < 1.0
    assert abs(sample.std() - 30) < 1.0
    wide = LengthDist.parse("normal:2:50").sample(rng(), N)
    assert wide.min() == 1


def test_hist_frequencies_close_to_weights() -> None:
    sample = LengthDist.parse("hist:32=0.5,64=0.3,128=0.2").sample(rng(), N)
    assert set(np.unique(sample)) == {32, 64, 128}
    for value, weight in [(32, 0.5), (64, 0.3), (128, 0.2)]:
        assert abs((sample == value).mean() - weight) < 0.015


# --- ModelMix -----------------------------------------------------------------------------------


def test_single_model() -> None:
    mix = ModelMix.parse("base")
    assert mix == ModelMix(("base",), (1.0,))
    assert mix.sample(rng(), 3) == ["base"] * 3


def test_weighted_mix_frequencies() -> None:
    mix = ModelMix.parse("base=3,alpha=1, beta")
    assert mix.names == ("base", "alpha", "beta")
    assert mix.weights == pytest.approx((0.6, 0.2, 0.2))
    picks = np.asarray(mix.sample(rng(), N))
    for name, weight in zip(mix.names, mix.weights, strict=True):
        assert abs((picks == name).mean() - weight) < 0.015


def test_zipf_frequencies_and_rank_order() -> None:
    mix = ModelMix.parse("zipf:1.1:base,alpha,beta,gamma")
    raw = [1 / r**1.1 for r in range(1, 5)]
    expected = [w / sum(raw) for w in raw]
    assert mix.names == ("base", "alpha", "beta", "gamma")
    assert mix.weights == pytest.approx(expected)
    picks = np.asarray(mix.sample(rng(), N))
    freqs = [(picks == name).mean() for name in mix.names]
    assert freqs == sorted(freqs, reverse=True)
    for freq, weight in zip(freqs, expected, strict=True):
        assert abs(freq - weight) < 0.015


@pytest.mark.parametrize(
    "spec", ["", "a,,b", "a,a", "a=0", "a=-1", "a=x", "a=inf", "zipf:1.1", "zipf:x:a,b", "zipf:-1:a", "=2"]
)
def test_bad_model_mix_raises(spec: str) -> None:
    with pytest.raises(ValueError, match="spec|model mix"):
        ModelMix.parse(spec)


# --- ServiceTierMix -----------------------------------------------------------------------------


def test_single_service_tier() -> None:
    mix = ServiceTierMix.parse("flex")
    assert mix == ServiceTierMix(("flex",), (1.0,))
    assert mix.sample(rng(), 3) == ["flex"] * 3


def test_weighted_service_tier_mix_frequencies() -> None:
    mix = ServiceTierMix.parse("flex=1, default=3")
    assert mix.tiers == ("flex", "default")
    assert mix.weights == pytest.approx((0.25, 0.75))
    picks = np.asarray(mix.sample(rng(), N))
    assert abs((picks == "flex").mean() - 0.25) < 0.015


def test_service_tier_mix_draws_like_the_model_mix() -> None:
    # The same weights and stream give the same picks: one sampler serves both mixes.
    tiers = ServiceTierMix.parse("flex=3,priority=1").sample(rng(), 500)
    models = ModelMix.parse("flex=3,priority=1").sample(rng(), 500)
    assert tiers == models


@pytest.mark.parametrize("spec", ["", "slow", "flex,flex", "flex=0", "flex=x", "zipf:1:flex,default", "=1"])
def test_bad_service_tier_mix_raises(spec: str) -> None:
    with pytest.raises(ValueError, match="spec|service tier mix"):
        ServiceTierMix.parse(spec)


def test_every_openai_tier_is_accepted() -> None:
    assert ServiceTierMix.parse(",".join(SERVICE_TIERS)).tiers == SERVICE_TIERS


# --- RequestSpec --------------------------------------------------------------------------------


def test_chat_body_has_stream_usage_and_no_extras() -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = RequestSpec("m", "chat", None, messages, 32).body()
    assert body == {
        "model": "m",
        "messages": messages,
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_completions_body_with_vllm_extras() -> None:
    body = RequestSpec("m", "completions", "hello", None, 8, ignore_eos=True, min_tokens=8).body()
    assert body["prompt"] == "hello"
    assert "messages" not in body
    assert body["ignore_eos"] is True
    assert body["min_tokens"] == 8
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_request_spec_checks_shape() -> None:
    with pytest.raises(ValueError, match="messages"):
        RequestSpec("m", "chat", "text", None, 8)
    with pytest.raises(ValueError, match="prompt"):
        RequestSpec("m", "completions", None, [], 8)
    with pytest.raises(ValueError, match="max_tokens"):
        RequestSpec("m", "completions", "x", None, 0)


# --- build_requests -----------------------------------------------------------------------------


def test_same_seed_same_requests_different_seed_different() -> None:
    config = WorkloadConfig(models="zipf:1:a,b,c", input_len="uniform:5:50", output_len="normal:64:16")
    first = build_requests(config, 200, seed=1)
    assert first == build_requests(config, 200, seed=1)
    assert first != build_requests(config, 200, seed=2)
    assert len(first) == 200


def test_synthetic_chat_requests() -> None:
    config = WorkloadConfig(models="base=1,alpha=1", input_len="uniform:5:9", output_len="hist:16=1,32=1")
    requests = build_requests(config, 300, seed=0)
    assert {r.model for r in requests} == {"base", "alpha"}
    assert {r.max_tokens for r in requests} == {16, 32}
    for request in requests:
        assert request.api == "chat"
        assert request.prompt is None
        assert request.ignore_eos is False
        assert request.min_tokens is None
        [message] = request.messages
        assert message["role"] == "user"
        assert 5 <= len(message["content"].split()) <= 9


def test_synthetic_completions_with_min_tokens_and_ignore_eos() -> None:
    config = WorkloadConfig(
        models="base",
        api="completions",
        input_len="12",
        output_len="uniform:4:8",
        ignore_eos=True,
        min_tokens=True,
    )
    for request in build_requests(config, 50, seed=3):
        assert request.messages is None
        assert len(request.prompt.split()) == 12
        assert request.min_tokens == request.max_tokens
        body = request.body()
        assert body["ignore_eos"] is True
        assert body["min_tokens"] == body["max_tokens"]


def test_service_tiers_are_seeded_and_leave_the_rest_of_the_workload_alone() -> None:
    plain = build_requests(WorkloadConfig(models="a=1,b=1"), 300, seed=5)
    tiered_config = WorkloadConfig(models="a=1,b=1", service_tiers="flex=1,default=1,auto=2")
    tiered = build_requests(tiered_config, 300, seed=5)
    assert tiered == build_requests(tiered_config, 300, seed=5)
    assert [(r.model, r.messages, r.max_tokens) for r in plain] == [
        (r.model, r.messages, r.max_tokens) for r in tiered
    ]
    assert all(r.service_tier is None and "service_tier" not in r.body() for r in plain)
    assert {r.service_tier for r in tiered} == {"flex", "default", "auto"}
    assert all(r.body()["service_tier"] == r.service_tier for r in tiered)
    autos = sum(r.service_tier == "auto" for r in tiered)
    assert 100 < autos < 200  # half of 300, by weight


def test_bad_service_tier_spec_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="unknown tier 'slow'"):
        WorkloadConfig(models="a", service_tiers="slow")


def test_changing_the_model_mix_keeps_prompts() -> None:
    one = build_requests(WorkloadConfig(models="a"), 20, seed=5)
    two = build_requests(WorkloadConfig(models="a=1,b=1"), 20, seed=5)
    assert [r.messages for r in one] == [r.messages for r in two]


def test_builtin_prompts_cycle_through_the_set() -> None:
    config = WorkloadConfig(source="builtin", models="base", output_len="16")
    requests = build_requests(config, 2 * len(BUILTIN_PROMPTS), seed=0)
    texts = [r.messages[0]["content"] for r in requests]
    assert sorted(texts) == sorted(BUILTIN_PROMPTS * 2)
    assert all(r.max_tokens == 16 for r in requests)


def test_tokenizer_prompts_decode_random_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeTokenizer:
        vocab_size = 50
        all_special_ids = (0, 1)

        def decode(self, ids: list[int]) -> str:
            assert all(2 <= i < 50 for i in ids)
            return " ".join(f"t{i}" for i in ids)

    fake = types.ModuleType("transformers")
    fake.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda name: FakeTokenizer())
    monkeypatch.setitem(sys.modules, "transformers", fake)
    config = WorkloadConfig(models="m", api="completions", input_len="10", tokenizer="fake")
    requests = build_requests(config, 5, seed=0)
    assert all(len(r.prompt.split()) == 10 for r in requests)
    assert requests == build_requests(config, 5, seed=0)


def test_zero_requests() -> None:
    assert build_requests(WorkloadConfig(models="m"), 0, seed=0) == []


def test_negative_count_raises() -> None:
    with pytest.raises(ValueError, match="count"):
        build_requests(WorkloadConfig(models="m"), -1, seed=0)


# --- WorkloadConfig -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"models": "m", "input_len": "uniform:9:1"},
        {"models": "m", "output_len": "nope"},
        {"models": "a,a"},
        {"models": "m", "source": "jsonl"},
        {"models": "m", "dataset": "x.jsonl"},
        {"models": "m", "unknown": 1},
    ],
)
def test_config_rejects_bad_fields(fields: dict) -> None:
    with pytest.raises(ValidationError):
        WorkloadConfig(**fields)


# --- JSONL --------------------------------------------------------------------------------------


def _dataset(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_chat_prompts_messages_and_own_max_tokens(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}]
    path = _dataset(
        tmp_path,
        [json.dumps({"prompt": "hello there", "max_tokens": 5}), "", json.dumps({"messages": messages})],
    )
    config = WorkloadConfig(source="jsonl", dataset=path, models="m", output_len="40")
    requests = build_requests(config, 4, seed=0)
    by_kind = {len(r.messages): r for r in requests}
    assert by_kind[1].messages == [{"role": "user", "content": "hello there"}]
    assert by_kind[1].max_tokens == 5
    assert by_kind[2].messages == messages
    assert by_kind[2].max_tokens == 40
    # Each line is used once per pass.
    assert sorted(len(r.messages) for r in requests) == [1, 1, 2, 2]


def test_jsonl_completions_prompt(tmp_path: Path) -> None:
    path = _dataset(tmp_path, [json.dumps({"prompt": "complete me"})])
    config = WorkloadConfig(source="jsonl", dataset=path, api="completions", models="m", output_len="3")
    [request] = build_requests(config, 1, seed=0)
    assert request.body()["prompt"] == "complete me"
    assert "messages" not in request.body()


def test_jsonl_messages_line_with_completions_names_line(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": "ok"}), json.dumps({"messages": [{"role": "user", "content": "x"}]})]
    config = WorkloadConfig(source="jsonl", dataset=_dataset(tmp_path, lines), api="completions", models="m")
    with pytest.raises(ValueError, match=r"prompts\.jsonl:2: .*completions"):
        build_requests(config, 1, seed=0)


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("{not json", "bad JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": "x"}', "exactly one"),
        ('{"prompt": "x", "messages": []}', "exactly one"),
        ('{"prompt": 3}', "string"),
        ('{"messages": []}', "non-empty"),
        ('{"prompt": "x", "max_tokens": 0}', "max_tokens"),
        ('{"prompt": "x", "max_tokens": "5"}', "max_tokens"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, bad_line: str, match: str) -> None:
    path = _dataset(tmp_path, [json.dumps({"prompt": "fine"}), "", bad_line])
    config = WorkloadConfig(source="jsonl", dataset=path, models="m")
    with pytest.raises(ValueError, match=rf"prompts\.jsonl:3: .*{match}"):
        build_requests(config, 1, seed=0)


def test_empty_jsonl_raises(tmp_path: Path) -> None:
    config = WorkloadConfig(source="jsonl", dataset=_dataset(tmp_path, ["", "  "]), models="m")
    with pytest.raises(ValueError, match="no prompts"):
        build_requests(config, 1, seed=0)
