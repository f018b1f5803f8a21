"""Image content parts on the real server with a tiny vision-language model (see `vision_model`).

The image goes through vLLM's multimodal input processing into the prompt: each image adds its tokens
to the prompt, and a different image gives a different answer. The text-only model's refusal of image
parts (a coded 400) is tested with the other request fields.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY, Server, _Launch
from tests.e2e.vision_model import IMAGE_PROMPT_TOKENS, build_vision_model

pytestmark = pytest.mark.e2e
MODEL = "tiny-vision"
KV_CACHE_BYTES = 256 * 2**20  # as the embedded model gets: a model named by path has no default


def image_part(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model_dir = build_vision_model(tmp_path_factory.mktemp("vision-model"))
    launch = _Launch(
        tmp_path_factory.mktemp("vision"),
        ["--model", str(model_dir), "--served-model-name", MODEL, "--no-enable-lora", "--dtype", "float32"]
        + ["--kv-cache-memory-bytes", str(KV_CACHE_BYTES)],
    )
    try:
        yield launch.ready()
    finally:
        launch.stop_later()


def ask(http: httpx.Client, content: str | list[dict], stream: bool = False) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    body |= {"temperature": 0, "stream": stream}
    return http.post("/v1/chat/completions", json=body)


def test_an_image_reaches_the_model_and_counts_in_the_prompt(vision_server: Server) -> None:
    with vision_server.http() as http:
        text_only = ask(http, [{"type": "text", "text": "what is this"}])
        red = ask(http, [{"type": "text", "text": "what is this"}, image_part((255, 0, 0))])
        blue = ask(http, [{"type": "text", "text": "what is this"}, image_part((0, 0, 255), (300, 200))])
        two = ask(
            http, [image_part((255, 0, 0)), {"type": "text", "text": "what is this"}, image_part((0, 9, 0))]
        )
    for answer in (text_only, red, blue, two):
        assert answer.status_code == 200, answer.text
    prompt = text_only.json()["usage"]["prompt_tokens"]
    assert red.json()["usage"]["prompt_tokens"] == prompt + IMAGE_PROMPT_TOKENS
    assert blue.json()["usage"]["prompt_tokens"] == prompt + IMAGE_PROMPT_TOKENS
    assert two.json()["usage"]["prompt_tokens"] == prompt + 2 * IMAGE_PROMPT_TOKENS
    texts = {answer.json()["choices"][0]["message"]["content"] for answer in (text_only, red, blue)}
    assert len(texts) == 3  # the image changes the answer: it was seen


def test_an_image_streams_and_tokenizes_like_the_answer_counts_it(vision_server: Server) -> None:
    content = [{"type": "text", "text": "describe"}, image_part((10, 200, 30))]
    with vision_server.http() as http:
        whole = ask(http, content)
        streamed = ask(http, content, stream=True)
        counted = http.post("/tokenize", json={"messages": [{"role": "user", "content": content}]})
    assert streamed.status_code == 200, streamed.text
    assert "data: [DONE]" in streamed.text
    assert counted.json()["count"] == whole.json()["usage"]["prompt_tokens"]


def test_a_broken_image_is_a_400_and_the_server_keeps_serving(vision_server: Server) -> None:
    broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}
    with httpx.Client(
        base_url=vision_server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as http:
        answer = ask(http, [{"type": "text", "text": "what is this"}, broken])
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert ask(http, [image_part((1, 2, 3))]).status_code == 200
