"""Write a Llama-3.1-8B-shaped model directory (config + generated tokenizer) for dummy-weight serving.

`--load-format dummy` gives real-size compute from `config.json` alone, so a GPU benchmark needs no model
download: only a config and a tokenizer. The tokenizer is trained here, in seconds, from a seeded random
corpus to the config's vocabulary size, rather than kept in the repository (it is ~8 MB). The text it
produces means nothing; throughput, latency and energy are what the directory is for.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LLAMA_31_8B_CONFIG", "SPECIAL_TOKENS", "ensure_model_dir", "write_model_dir"]

# The shape of Llama-3.1-8B-Instruct (its token ids come from the generated tokenizer, see write_model_dir).
LLAMA_31_8B_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
}

BOS, EOS_TEXT, HEADER_START, HEADER_END, EOT = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
SPECIAL_TOKENS = (BOS, EOS_TEXT, HEADER_START, HEADER_END, EOT)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Random words repeat in a corpus of this many words per vocabulary entry often enough for BPE to reach
# the target size (a 128k vocabulary trains in seconds).
WORDS_PER_TOKEN = 3.2
MIN_WORDS = 10_000


def _corpus(words: list[str], chunk_words: int = 1000) -> Iterator[str]:
    # Each chunk three times: merges need min_frequency 2, and unique random words would have 1.
    for start in range(0, len(words), chunk_words):
        yield " ".join(words[start : start + chunk_words] * 3)


def _train_tokenizer(vocab_size: int, seed: int) -> Any:
    # Imported here: only this writer needs the tokenizers package.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    rng = random.Random(seed)
    count = max(MIN_WORDS, round(WORDS_PER_TOKEN * vocab_size))
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(count)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(words), trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(
            f"generated tokenizer has {tokenizer.get_vocab_size()} tokens, the config wants {vocab_size}"
        )
    return tokenizer


def write_model_dir(
    model_dir: Path, config: dict[str, Any] | None = None, seed: int = 0, max_length_tokens: int = 131072
) -> Path:
    """Write `config.json`, `generation_config.json`, `tokenizer_config.json` and `tokenizer.json`.

    The config's token ids (`bos_token_id`, `eos_token_id`) are taken from the generated tokenizer, so
    the two always agree. `config.json` is written last: its presence marks a complete directory.

    Args:
        model_dir: Directory to write into (created if missing; existing files are overwritten).
        config: A Hugging Face model config; `vocab_size` sets the tokenizer's size. Defaults to
            `LLAMA_31_8B_CONFIG`.
        seed: Seed of the tokenizer's training corpus: the same seed gives the same tokenizer.
        max_length_tokens: `model_max_length` of the tokenizer.

    Returns:
        `model_dir`.

    Raises:
        RuntimeError: If the trained tokenizer does not reach the config's vocabulary size.
    """
    config = dict(LLAMA_31_8B_CONFIG if config is None else config)
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(int(config["vocab_size"]), seed)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    config["bos_token_id"] = tokenizer.token_to_id(BOS)
    config["eos_token_id"] = [tokenizer.token_to_id(EOS_TEXT), tokenizer.token_to_id(EOT)]
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOT,
        "pad_token": EOS_TEXT,
        "model_max_length": max_length_tokens,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    generation_config = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    (model_dir / "generation_config.json").write_text(json.dumps(generation_config, indent=1))
    (model_dir / "config.json").write_text(json.dumps(config, indent=1))
    return model_dir


def ensure_model_dir(model_dir: Path) -> bool:
    """Write the Llama-3.1-8B-shaped model into `model_dir` unless it already holds a model.

    A directory with a `config.json` is used as it is: a model written by an earlier run, or one of the
    user's own, which must never be overwritten.

    Args:
        model_dir: The model directory.

    Returns:
        True if the model was written now, False if an existing one is used.
    """
    if (model_dir / "config.json").is_file():
        return False
    write_model_dir(model_dir)
    return True
