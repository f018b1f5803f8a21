"""The OpenAI surface beyond generating text, through the official client on the real server."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.e2e.conftest import API_KEY, MODEL, Server

pytestmark = pytest.mark.e2e


def test_models_retrieve_gives_the_base_model_and_each_adapter(lora_client: openai.OpenAI) -> None:
    base = lora_client.models.retrieve(MODEL)
    assert (base.id, base.object) == (MODEL, "model")
    listed = {model.id for model in lora_client.models.list()}
    for name in listed - {MODEL}:
        card = lora_client.models.retrieve(name)
        assert card.id == name
        assert card.model_extra["parent"] == MODEL
    assert {"demo-alpha", "demo-beta"} <= listed
    with pytest.raises(openai.NotFoundError) as caught:
        lora_client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_continuous_usage_stats_put_the_running_count_on_every_chunk(client: openai.OpenAI, api: str) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    common = {"model": MODEL, "max_tokens": 12, "temperature": 0, "stream": True, "stream_options": options}
    if api == "completions":
        stream = client.completions.create(
            prompt="The energy of a token", extra_body={"ignore_eos": True}, **common
        )
    else:
        messages = [{"role": "user", "content": "The energy of a token"}]
        stream = client.chat.completions.create(messages=messages, extra_body={"ignore_eos": True}, **common)
    chunks = list(stream)
    counted = [chunk.usage.completion_tokens for chunk in chunks if chunk.choices and chunk.usage]
    assert counted == sorted(counted)
    assert counted[-1] == 12
    assert len(counted) >= 2
    final = chunks[-1]
    assert final.choices == []
    assert final.usage.completion_tokens == 12
    assert final.usage.total_tokens == final.usage.prompt_tokens + 12


def test_cached_prompt_tokens_are_reported(client: openai.OpenAI) -> None:
    # A prompt no other test sends, long enough to fill whole KV blocks: the second send finds them cached.
    prompt = f"{uuid.uuid4()} " + "energy per token is measured, attributed and exported. " * 12
    first = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    second = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert 0 < second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens


def test_token_id_prompts_answer_as_their_text_does(client: openai.OpenAI, server: Server) -> None:
    text = "Tokens in, tokens out"
    by_text = client.completions.create(model=MODEL, prompt=text, max_tokens=8, temperature=0, echo=True)
    # The model's own tokenizer, with its special tokens, as the server tokenizes text prompts.
    ids = AutoTokenizer.from_pretrained(server.model_dir)(text)["input_ids"]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0, echo=True)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    several = client.completions.create(model=MODEL, prompt=[ids, ids[:2]], max_tokens=2, temperature=0)
    assert [choice.index for choice in several.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[10**6], max_tokens=2)
    assert "out of vocabulary" in caught.value.message


@pytest.mark.parametrize(
    "path", ["/v1/embeddings", "/v1/images/generations", "/v1/audio/speech", "/v1/uploads"]
)
def test_unserved_openai_endpoints_say_so(server: Server, path: str) -> None:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        response = http.post(path, json={"model": MODEL, "input": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unsupported_endpoint"
    assert path in error["message"]
