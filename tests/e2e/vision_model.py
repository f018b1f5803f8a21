"""A tiny random-weight vision-language model (Idefics3: a small vision tower before the embedded model's
Llama), built locally for the multimodal tests: nothing comes from a model hub.

Idefics3 is the architecture vLLM's CPU build serves here without torchvision (whose PyPI builds need
CUDA torch): LLaVA, PaliGemma, Qwen-VL and Gemma 3 all reach torchvision through their image processors.
Its images are resized to 64 px and not split, so each costs `IMAGE_PROMPT_TOKENS` prompt tokens
whatever its size.
"""

from __future__ import annotations

from pathlib import Path

from server.default_model import build_tokenizer, llama_config

IMAGE_SIZE, PATCH, SCALE = 64, 8, 2
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2 // SCALE**2  # 64 patches, 16 tokens after the pixel shuffle
IMAGE_PROMPT_TOKENS = IMAGE_TOKENS + 3  # and the tokens around them
IMAGE_SPECIAL_TOKENS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)
]
# The embedded model's template, taking OpenAI's content parts too (vLLM then sends them as parts).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<image>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_vision_model(out: Path) -> Path:
    """Write the model, its tokenizer and its image processor to `out` (about 8 MB, a few seconds)."""
    import torch  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    fast = build_tokenizer(IMAGE_SPECIAL_TOKENS, CHAT_TEMPLATE)
    pad = fast.convert_tokens_to_ids("<|endoftext|>")
    images = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_pad=True,
    )
    processor = Idefics3Processor(
        image_processor=images, tokenizer=fast, image_seq_len=IMAGE_TOKENS, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out)
    text = llama_config(fast)
    vision = Idefics3VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=text.to_dict(),
        image_token_id=fast.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).to(torch.float32)
    model.config.torch_dtype = "float32"
    model.save_pretrained(out, safe_serialization=True)
    return out
