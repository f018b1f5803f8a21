"""`/tokenize` and `/detokenize`: the served model's tokenizer, under the same input limits as generation.

The tokenizer is the base model's: LoRA adapters share it (an adapter that brings its own vocabulary is
not loaded), so naming an adapter only has to name something served.
"""

from __future__ import annotations

from collections.abc import Collection

from server.answers import DetokenizeResponse, TokenizeResponse
from server.engine.protocol import EngineClient
from server.errors import ContextLengthError, InvalidRequestError, ModelNotFoundError
from server.protocol import DetokenizeRequest, TokenizeChatRequest, TokenizeCompletionRequest
from server.serving.prepare import (
    InputLimits,
    chat_chars,
    check_chat_messages,
    check_prompt_chars,
    template_messages,
)


def check_served(model: str | None, served: Collection[str]) -> None:
    """A named model must be one this server serves; no model means the base model.

    Raises:
        ModelNotFoundError: It is not (404).
    """
    if model is not None and model not in served:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")


async def tokenize(
    engine: EngineClient, body: TokenizeChatRequest | TokenizeCompletionRequest, limits: InputLimits
) -> TokenizeResponse:
    """The token ids a prompt, or the prompt a chat renders to, is made of.

    Raises:
        InvalidRequestError: The input is over the server's limits or does not fit the context (400).
    """
    if isinstance(body, TokenizeChatRequest):
        check_chat_messages(len(body.messages), limits.chat_messages)
        check_prompt_chars(chat_chars(body), limits.prompt_chars, "messages")
        messages = template_messages(engine, body.messages)
        prompt = await engine.render_chat(
            messages, body.chat_template_kwargs, add_generation_prompt=body.add_generation_prompt
        )
    else:
        check_prompt_chars(len(body.prompt), limits.prompt_chars, "prompt")
        prompt = await engine.render_completion(body.prompt, add_special_tokens=body.add_special_tokens)
    tokens = prompt.token_ids
    return TokenizeResponse(
        count=len(tokens),
        max_model_len=engine.max_model_len,
        tokens=tokens,
        token_strs=engine.token_strings(tokens) if body.return_token_strs else None,
    )


def detokenize(engine: EngineClient, body: DetokenizeRequest) -> DetokenizeResponse:
    """The text of some token ids, at most a context's worth.

    Raises:
        InvalidRequestError: An id is not in the vocabulary (400).
        ContextLengthError: More ids than the context holds (400).
    """
    if len(body.tokens) > engine.max_model_len:
        raise ContextLengthError(
            f"{len(body.tokens)} tokens are more than the model's context of {engine.max_model_len}.",
            param="tokens",
        )
    for position, token in enumerate(body.tokens):
        if token >= engine.vocab_size:
            raise InvalidRequestError(
                f"Token id {token} is not in the vocabulary (ids 0 to {engine.vocab_size - 1}).",
                param=f"tokens.{position}",
            )
    return DetokenizeResponse(prompt=engine.decode(body.tokens))
