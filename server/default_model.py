"""Build the embedded default model: a tiny random-weight Llama, its tokenizer and two demo LoRA adapters.

It exists so that a fresh machine with no model hub can serve, test and benchmark the whole stack. Its
output is random text. Everything is generated from fixed seeds, once, into a cache directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Bump when anything below changes what is generated, so stale caches are not reused.
BUILD_VERSION = "tiny-llama-v2"
MODEL_NAME = "wattserve-tiny-llama"
DEMO_ADAPTERS = {"demo-alpha": 1, "demo-beta": 2}  # name -> weight seed
VOCAB_SIZE = 1024
MAX_POSITIONS = 2048
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Tool calls and reasoning written as Hermes-format and DeepSeek-R1-format models write them: each marker is
# one token (vLLM's `hermes` and `deepseek_r1` parsers look them up in the vocabulary) and stays in the
# decoded text (not special), so those parsers can serve this model too.
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]
# ChatML; with `tools`, a system turn lists them and tool calls and results are rendered in Hermes's form.
# A chat without tools renders exactly as plain ChatML.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "You may call these tools:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    '</tools>\nCall one as <tool_call>\n{"name": <name>, "arguments": <object>}\n</tool_call><|im_end|>\n'
    "{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message['content'] }}\n</tool_response><|im_end|>\n"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "<|im_start|>assistant\n{% if message['content'] %}{{ message['content'] }}\n{% endif %}"
    "{% for call in message['tool_calls'] %}"
    "<tool_call>\n{\"name\": {{ call['function']['name'] | tojson }}, "
    "\"arguments\": {{ call['function']['arguments'] | tojson }}}\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class DefaultModel:
    """Where the generated model and its demo adapters live."""

    model_dir: Path
    adapter_dirs: dict[str, Path]

    @property
    def adapters_dir(self) -> Path:
        """The folder holding the demo adapters."""
        return next(iter(self.adapter_dirs.values())).parent


def ensure_default_model(cache_dir: Path) -> DefaultModel:
    """Return the embedded model, building it first if the cache does not hold it.

    Args:
        cache_dir: Directory under which the build is kept (one sub-directory per build version).

    Returns:
        Paths of the model and of each demo adapter.
    """
    root = cache_dir / BUILD_VERSION
    result = DefaultModel(
        model_dir=root / "model",
        adapter_dirs={name: root / "adapters" / name for name in DEMO_ADAPTERS},
    )
    if (root / "COMPLETE").exists():
        return result
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / f"{BUILD_VERSION}.lock"):
        if not (root / "COMPLETE").exists():
            logger.info("building the embedded default model into %s (once)", root)
            staging = Path(tempfile.mkdtemp(prefix=f".{BUILD_VERSION}-", dir=cache_dir))
            try:
                _build(staging)
                (staging / "COMPLETE").write_text(BUILD_VERSION)
                shutil.rmtree(root, ignore_errors=True)
                staging.rename(root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return result


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Two processes starting at once (tests, a server and a benchmark) must not build side by side.
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _corpus(seed: int = 0, words: int = 40_000) -> list[str]:
    """Deterministic pseudo-text, varied enough to train a 1024-entry byte-level BPE."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr"]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "ng"]
    lines, line = [], []
    for _ in range(words):
        word = "".join(
            rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(rng.randint(1, 3))
        )
        line.append(word.capitalize() if not line else word)
        if rng.random() < 0.08:
            lines.append(" ".join(line) + rng.choice([".", "!", "?", ",", ":"]))
            line = []
    lines.append('{"answer": [1, 2, 3], "ok": true, "name": "x"} 0123456789 +-*/=()<>')
    return lines


def build_tokenizer(extra_special_tokens: Sequence[str] = (), chat_template: str = CHAT_TEMPLATE) -> Any:
    """The embedded model's byte-level BPE tokenizer (a `PreTrainedTokenizerFast`), trained here.

    `extra_special_tokens` (a vision model's image tokens) take places in the same vocabulary size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS + MARKUP_TOKENS + list(extra_special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    # The trainer reserves every token it is given as special; the markup is text the parsers must read.
    state = json.loads(tokenizer.to_str())
    for added in state["added_tokens"]:
        added["special"] = added["content"] not in MARKUP_TOKENS
    tokenizer = Tokenizer.from_str(json.dumps(state))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = chat_template
    return fast


def llama_config(tokenizer: Any) -> Any:
    """The embedded model's Llama configuration (a `LlamaConfig`), its special tokens from `tokenizer`."""
    from transformers import LlamaConfig  # noqa: PLC0415

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        # A wide init keeps greedy decoding clear of near-ties, so temperature-0 output is stable.
        initializer_range=0.1,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        torch_dtype="float32",
    )


def _build(staging: Path) -> None:
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import LlamaForCausalLM  # noqa: PLC0415

    model_dir = staging / "model"
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(model_dir)
    config = llama_config(tokenizer)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(model_dir, safe_serialization=True)
    (model_dir / "README.md").write_text(
        f"# {MODEL_NAME}\n\nRandom weights, generated by wattserve for tests and demos: its output is "
        "random text. Serve a real model with `wattserve serve --model <local path or hub id>`.\n"
    )

    for name, seed in DEMO_ADAPTERS.items():
        lora = get_peft_model(
            LlamaForCausalLM(config),
            LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS, lora_dropout=0.0),
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in lora.named_parameters():
                if "lora_" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        adapter_dir = staging / "adapters" / name
        lora.save_pretrained(adapter_dir, safe_serialization=True)
        config_path = adapter_dir / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        # PEFT records the staging path; the served model name is what adapters are checked against.
        adapter_config["base_model_name_or_path"] = MODEL_NAME
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
