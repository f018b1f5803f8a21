"""The GPU A/B benchmark without a GPU: commands, model writer, NVML refusal, orchestration, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from benchmarks import gpu_ab, gpu_model
from benchmarks.gpu_ab_commands import (
    client_args,
    engine_flags,
    num_prompts,
    server_commands,
    server_env,
    server_order,
)
from benchmarks.gpu_ab_report import (
    Criteria,
    compare,
    counter_deltas,
    counter_totals,
    markdown,
    meter_source,
    run_record,
)
from benchmarks.gpu_energy import GpuEnergy, NoGpuError, energy_delta_j, gpu_descriptions, gpu_selection

PY = "/opt/py/bin/python"


def parse(*argv: str) -> Any:
    return gpu_ab.build_parser().parse_args(list(argv))


def flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


# --- command lines ---


def test_both_servers_get_the_same_engine_flags_and_only_their_own_extras() -> None:
    args = parse("--engine-args", "--max-num-seqs 512 --enforce-eager", "--max-model-len", "2048")
    engine = engine_flags(args, Path("/models/m8b"))
    commands = server_commands(PY, engine, ["--energy-meter", "nvml"], ["--disable-log-stats"])

    wattserve, vllm = commands["wattserve"], commands["vllm"]
    assert wattserve[:4] == [PY, "-m", "server", "serve"]
    assert vllm[:3] == [PY, "-m", "vllm.entrypoints.openai.api_server"]
    assert wattserve[4 : 4 + len(engine)] == engine == vllm[3 : 3 + len(engine)]
    assert wattserve[4 + len(engine) :] == ["--host", "127.0.0.1", "--energy-meter", "nvml"]
    assert vllm[3 + len(engine) :] == ["--host", "127.0.0.1", "--disable-log-stats"]
    assert flag(engine, "--model") == "/models/m8b"
    assert flag(engine, "--load-format") == "dummy"
    assert flag(engine, "--max-model-len") == "2048"
    assert engine[-3:] == ["--max-num-seqs", "512", "--enforce-eager"]
    assert "--port" not in wattserve + vllm  # each start picks a free one


def test_server_env_numbers_gpus_as_nvml_does_and_applies_the_selection() -> None:
    assert server_env({"PATH": "/bin"}, None) == {"PATH": "/bin", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert server_env({"CUDA_VISIBLE_DEVICES": "3"}, None)["CUDA_VISIBLE_DEVICES"] == "3"
    assert server_env({"CUDA_VISIBLE_DEVICES": "3"}, "1,2")["CUDA_VISIBLE_DEVICES"] == "1,2"


def test_client_flags_ask_for_streamed_chat_random_prompts_of_fixed_lengths() -> None:
    args = parse("--input-len", "512", "--output-len", "256")
    flags = client_args(
        args,
        url="http://127.0.0.1:9000",
        model_dir=Path("/m"),
        concurrency=64,
        prompts=640,
        seed=2,
        result_path=Path("/out/r0-vllm-c64.client.json"),
    )
    expected = {
        "--backend": "openai-chat",
        "--endpoint": "/v1/chat/completions",
        "--base-url": "http://127.0.0.1:9000",
        "--model": "llama-3.1-8b-shape",
        "--tokenizer": "/m",
        "--dataset-name": "random",
        "--random-input-len": "512",
        "--random-output-len": "256",
        "--num-prompts": "640",
        "--max-concurrency": "64",
        "--seed": "2",
        "--ready-check-timeout-sec": "0",
        "--result-dir": "/out",
        "--result-filename": "r0-vllm-c64.client.json",
    }
    assert {name: flag(flags, name) for name in expected} == expected
    assert {"--ignore-eos", "--save-result"} <= set(flags)


def test_defaults_and_prompt_counts() -> None:
    args = parse()
    assert args.concurrency == [8, 64, 256]
    assert (args.input_len, args.output_len, args.rounds) == (512, 256, 2)
    assert [num_prompts(c, args) for c in args.concurrency] == [200, 640, 2560]


def test_the_first_server_alternates_between_rounds() -> None:
    assert server_order(3) == [("wattserve", "vllm"), ("vllm", "wattserve"), ("wattserve", "vllm")]


# --- model directory ---

SMALL_CONFIG = {**gpu_model.LLAMA_31_8B_CONFIG, "vocab_size": 1000}


def test_model_dir_holds_a_tokenizer_of_the_configs_size_with_matching_token_ids(tmp_path: Path) -> None:
    gpu_model.write_model_dir(tmp_path, SMALL_CONFIG)

    config = json.loads((tmp_path / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == config["vocab_size"] == 1000
    assert config["bos_token_id"] == tokenizer.token_to_id("<|begin_of_text|>")
    assert config["eos_token_id"] == [tokenizer.token_to_id(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation == {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|eot_id|>"
    assert "add_generation_prompt" in tokenizer_config["chat_template"]
    assert tokenizer.decode(tokenizer.encode("hello wattserve").ids) == "hello wattserve"


def test_the_same_seed_writes_the_same_tokenizer(tmp_path: Path) -> None:
    gpu_model.write_model_dir(tmp_path / "a", SMALL_CONFIG, seed=3)
    gpu_model.write_model_dir(tmp_path / "b", SMALL_CONFIG, seed=3)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()


def test_the_default_config_has_the_llama_3_1_8b_shape() -> None:
    config = gpu_model.LLAMA_31_8B_CONFIG
    shape = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    )
    assert [config[key] for key in shape] == [4096, 14336, 32, 32, 8]
    assert config["vocab_size"] == 128256


def test_an_existing_model_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    monkeypatch.setattr(gpu_model, "write_model_dir", written.append)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"model_type": "mine"}')

    assert gpu_model.ensure_model_dir(tmp_path / "mine") is False
    assert gpu_model.ensure_model_dir(tmp_path / "new") is True
    assert written == [tmp_path / "new"]
    assert (tmp_path / "mine" / "config.json").read_text() == '{"model_type": "mine"}'


# --- NVML, through the server's meter ---


class FakeNvml:
    """The slice of pynvml the server's NVML meter uses, over `count` GPUs with energy counters."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, count: int = 2, *, init_fails: bool = False) -> None:
        self.count, self.init_fails = count, init_fails
        self.energy_mj = [1_000_000 * (index + 1) for index in range(count)]
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index >= self.count:
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self.energy_mj[handle]


def test_energy_is_read_on_the_selected_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(count=3)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    energy = GpuEnergy.open([2, 0])
    before = energy.read_j()
    nvml.energy_mj[2] += 1500
    nvml.energy_mj[0] += 500
    nvml.energy_mj[1] += 99_000  # not selected
    assert energy_delta_j(before, energy.read_j()) == 2.0
    energy.close()
    assert nvml.shutdowns == 1


def test_every_gpu_is_metered_when_none_is_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(count=2))
    assert len(GpuEnergy.open(None).read_j()) == 2


def test_gpu_selection_comes_from_the_flag_then_cuda_visible_devices() -> None:
    assert gpu_selection("0, 1", {"CUDA_VISIBLE_DEVICES": "3"}) == [0, 1]
    assert gpu_selection(None, {"CUDA_VISIBLE_DEVICES": "3"}) == [3]
    assert gpu_selection(None, {}) is None
    with pytest.raises(NoGpuError, match="no GPU selected"):
        gpu_selection(None, {"CUDA_VISIBLE_DEVICES": ""})
    with pytest.raises(NoGpuError, match="by NVML index"):
        gpu_selection("GPU-0", {})


@pytest.mark.parametrize(
    ("pynvml", "selection", "message"),
    [
        (None, None, "pynvml is not installed"),
        (FakeNvml(init_fails=True), None, "Driver Not Loaded"),
        (FakeNvml(count=0), None, "found no visible GPU"),
        (FakeNvml(count=1), [1], "found no visible GPU"),
        (FakeNvml(count=2), [0, 5], "cannot open the GPUs"),
    ],
)
def test_no_usable_gpu_is_refused(
    pynvml: Any, selection: list[int] | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)  # None: the import fails
    with pytest.raises(NoGpuError, match=message):
        GpuEnergy.open(selection)


def test_gpus_are_described_from_nvidia_smi_in_the_selections_order() -> None:
    rows = (
        "0, NVIDIA H100 80GB HBM3, GPU-a, 700.00, 580.159.04\n"
        "1, NVIDIA H100 80GB HBM3, GPU-b, [N/A], 580.159.04\n"
    )

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 0, stdout=rows)

    described = gpu_descriptions([1, 0], run=run)
    assert [gpu["uuid"] for gpu in described["gpus"]] == ["GPU-b", "GPU-a"]
    assert [gpu["power_limit_w"] for gpu in described["gpus"]] == [None, 700.0]
    assert described["driver_version"] == "580.159.04"

    def missing(command: list[str], **_: Any) -> subprocess.CompletedProcess:
        raise FileNotFoundError(command[0])

    assert gpu_descriptions(None, run=missing) == {"gpus": None, "driver_version": None}


@pytest.mark.parametrize("pynvml", [None, FakeNvml(init_fails=True), FakeNvml(count=0)])
def test_main_exits_2_without_a_gpu(
    pynvml: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)  # None: the import fails
    monkeypatch.setattr(gpu_ab, "run", lambda *_: pytest.fail("ran without a GPU"))

    assert gpu_ab.main(["--out", str(tmp_path)]) == 2
    assert "refusing to run" in capsys.readouterr().err


def test_the_benchmark_modules_import_without_vllm_or_pynvml() -> None:
    code = (
        "import sys; sys.modules['vllm'] = sys.modules['pynvml'] = None; "
        "import benchmarks.gpu_ab, benchmarks.gpu_ab_run, benchmarks.gpu_energy, benchmarks.gpu_model"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- report ---

PAGE = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="m"} 5000.0
# HELP wattserve_metered_energy_joules_total All metered energy (attributed + idle).
# TYPE wattserve_metered_energy_joules_total counter
wattserve_metered_energy_joules_total{source="nvml"} 1200.5
wattserve_metered_energy_joules_created{source="nvml"} 1.7e9
# HELP wattserve_energy_joules_total Energy attributed to requests.
# TYPE wattserve_energy_joules_total counter
wattserve_energy_joules_total{adapter="base",phase="prefill"} 100.0
wattserve_energy_joules_total{adapter="base",phase="decode"} 900.0
# HELP wattserve_power_watts Power over the last sampling interval, per device.
# TYPE wattserve_power_watts gauge
wattserve_power_watts{device="0",source="nvml"} 550.0
"""


def test_counter_totals_sum_wattserve_counters_over_labels_and_skip_the_rest() -> None:
    assert counter_totals(PAGE) == {
        "wattserve_metered_energy_joules_total": 1200.5,
        "wattserve_energy_joules_total": 1000.0,
    }
    assert meter_source(PAGE) == "nvml"
    assert counter_totals("vllm:num_requests_running 3\n") == {}
    assert counter_deltas({"a_total": 1.0}, {"a_total": 3.5, "b_total": 2.0}) == {
        "a_total": 2.5,
        "b_total": 2.0,
    }


def client_result(throughput: float, ttft_ms: float, *, completed: int = 100, failed: int = 0) -> dict:
    return {
        "completed": completed,
        "failed": failed,
        "total_output_tokens": completed * 256,
        "duration": 10.0,
        "output_throughput": throughput,
        "median_ttft_ms": ttft_ms,
        "p99_ttft_ms": ttft_ms * 3,
        "median_itl_ms": 12.0,
        "p99_itl_ms": 40.0,
    }


def record(
    server: str, round_index: int, concurrency: int, throughput: float, ttft_ms: float, **kw: Any
) -> dict:
    return run_record(
        server=server,
        round_index=round_index,
        concurrency=concurrency,
        num_prompts=100,
        client_result=client_result(throughput, ttft_ms, **kw),
        gpu_energy_j=5120.0,
        window_s=10.24,
    )


def test_a_run_record_derives_power_joules_per_token_and_metered_over_nvml() -> None:
    watt = run_record(
        server="wattserve",
        round_index=0,
        concurrency=8,
        num_prompts=100,
        client_result=client_result(2560.0, 50.0),
        gpu_energy_j=5120.0,
        window_s=10.24,
        counters_before={"wattserve_metered_energy_joules_total": 100.0},
        counters_after={"wattserve_metered_energy_joules_total": 5220.24},
        energy_source="nvml",
    )
    assert watt["gpu_avg_power_w"] == pytest.approx(500.0)
    assert watt["gpu_j_per_output_token"] == pytest.approx(0.2)
    assert watt["wattserve_metered_energy_j"] == pytest.approx(5120.24)
    assert watt["metered_over_nvml"] == pytest.approx(1.0000469, rel=1e-6)
    assert (watt["ttft_p50_ms"], watt["ttft_p99_ms"], watt["itl_p50_ms"]) == (50.0, 150.0, 12.0)
    assert "wattserve_counter_deltas" not in record("vllm", 0, 8, 2500.0, 60.0)


def test_ratios_are_of_medians_over_rounds_and_judged_by_the_criteria() -> None:
    runs = [
        record("wattserve", 0, 8, 1000.0, 45.0),
        record("wattserve", 1, 8, 1020.0, 45.0),
        record("vllm", 0, 8, 1000.0, 50.0),
        record("vllm", 1, 8, 1020.0, 50.0),  # throughput ratio exactly 1.00, TTFT ratio exactly 0.90
        record("wattserve", 0, 64, 990.0, 40.0),
        record("vllm", 0, 64, 1000.0, 50.0),  # throughput ratio 0.99
        record("wattserve", 0, 256, 2000.0, 100.0),
        record("vllm", 0, 256, 1000.0, 100.0),  # TTFT ratio 1.00
        record("wattserve", 0, 512, 2000.0, 10.0, completed=99, failed=1),
        record("vllm", 0, 512, 1000.0, 100.0),
    ]
    by_concurrency = {item.concurrency: item for item in compare(runs, Criteria())}

    assert list(by_concurrency) == [8, 64, 256, 512]
    first = by_concurrency[8]
    assert first.medians["wattserve"]["output_throughput_tok_s"] == 1010.0
    assert (first.throughput_ratio, first.ttft_p50_ratio, first.rounds) == (1.0, 0.9, 2)
    assert first.passed
    assert (by_concurrency[64].throughput_ok, by_concurrency[64].ttft_ok) == (False, True)
    assert (by_concurrency[256].throughput_ok, by_concurrency[256].ttft_ok) == (True, False)
    assert (by_concurrency[512].throughput_ok, by_concurrency[512].ttft_ok) == (True, True)
    assert not by_concurrency[512].passed  # a failed request voids the comparison


def test_a_missing_server_fails_rather_than_passes() -> None:
    (only,) = compare([record("wattserve", 0, 8, 1000.0, 45.0)], Criteria())
    assert only.throughput_ratio is None
    assert not only.passed


def test_markdown_has_a_table_per_concurrency_with_both_servers_ratios_and_verdicts() -> None:
    runs = [record("wattserve", 0, 8, 1100.0, 40.0), record("vllm", 0, 8, 1000.0, 50.0)]
    runs += [record("wattserve", 0, 64, 900.0, 40.0), record("vllm", 0, 64, 1000.0, 50.0)]
    text = markdown(compare(runs, Criteria()), Criteria())

    assert "### Concurrency 8 (medians over 1 rounds)" in text
    assert "| output throughput (tok/s) | 1100.0 | 1000.0 | 1.100 | >= 1.00 | pass |" in text
    assert "| TTFT p50 (ms) | 40.0 | 50.0 | 0.800 | <= 0.90 | pass |" in text
    assert "| GPU energy per output token (J) | 0.2000 | 0.2000 | 1.000 |" in text
    assert "| output throughput (tok/s) | 900.0 | 1000.0 | 0.900 | >= 1.00 | FAIL |" in text
    assert text.endswith("Result: FAIL at concurrency 64\n")
    assert markdown(compare(runs[:2], Criteria()), Criteria()).endswith("Result: pass at every concurrency\n")
