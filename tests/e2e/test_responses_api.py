"""`/v1/responses` on the real server with the embedded model, driven by OpenAI's own client.

Answers and their usage (tokens, energy), streams in OpenAI's event order, a forced function call and
its follow-up, background runs (flex, cancelled), deletion, and the response store across a SIGTERM and a
SIGKILL restart (`-m fault_tolerance`); `/tokenize` and `/detokenize` round-trip beside them.

The tests run on the session's structured-output server, except the durability tests: they start a
server of their own and start it again on the same store file. The model has random weights: every
answer is greedy and bounded by `max_output_tokens`, or, for the function call, by its schema (an enum,
and no free whitespace: vLLM's `disable_any_whitespace`), so each run says the same thing. Deadlines only
catch hangs.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import psutil
import pytest

from tests.e2e.conftest import API_KEY, MODEL, STRUCTURED_CONTEXT, STRUCTURED_FLAGS, Server, _Launch
from tests.e2e.gauges import wait_for_idle_gauges
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
HANG_S = 120  # a deadline that only a hang reaches
SHORT = 16  # max_output_tokens of the answers read whole
LONG = 1900  # max_output_tokens of the background runs cut by cancel or by the server's end
# The restarted server: the shared one's flags, and a short drain so that SIGTERM cuts a long run.
RESTARTED_FLAGS = [*STRUCTURED_FLAGS, "--shutdown-grace-seconds", "4"]
UNIT_TOOL = {
    "type": "function",
    "name": "set_unit",
    "description": "Choose the temperature unit.",
    "parameters": {
        "type": "object",
        "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
        "additionalProperties": False,
    },
}
FORCED = {"type": "function", "name": "set_unit"}
TEXT_EVENTS_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_EVENTS_TAIL = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
FINISHED = ("completed", "incomplete")
SHM = Path("/dev/shm")


class RestartableServer:
    """The module's server: started, stopped (SIGTERM or SIGKILL) and started again on one store file."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self.store = factory.mktemp("responses-store") / "responses.sqlite3"
        self._launch: _Launch | None = None
        self.server: Server | None = None

    def start(self) -> None:
        """Start a server on the store file and wait until it is healthy."""
        root = self._factory.mktemp("responses-server")  # a log of its own per start
        self._launch = _Launch(root, [*RESTARTED_FLAGS, "--responses-store", str(self.store)])
        self.server = self._launch.ready()

    @property
    def base_url(self) -> str:
        """Where the running server answers."""
        assert self.server is not None
        return self.server.base_url

    def client(self) -> openai.OpenAI:
        """OpenAI's client, pointed at the running server."""
        return client_of(self.base_url)

    def terminate(self) -> None:
        """SIGTERM: the server drains and exits cleanly, with no traceback logged."""
        assert self._launch is not None
        self._launch.stop()
        # uvicorn re-raises the signal it caught once shutdown is complete, so a clean exit reads -SIGTERM.
        assert self._launch.process.returncode in (0, -signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server and every process under it at once, as an OOM kill ends a container."""
        assert self._launch is not None
        process = self._launch.process
        under = psutil.Process(process.pid).children(recursive=True)
        shared = _shared_memory([psutil.Process(process.pid), *under])
        process.kill()
        for child in under:
            child.kill()
        assert process.wait(timeout=HANG_S) == -signal.SIGKILL  # reaped by its parent, this test
        _, alive = psutil.wait_procs(under, timeout=HANG_S)
        assert not alive
        for path in shared:  # what the killed processes' resource tracker would have unlinked
            path.unlink(missing_ok=True)
        log_text = self._launch.log_path.read_text()
        assert "Traceback" not in log_text, f"the server logged a traceback:\n{log_text[-6000:]}"

    @property
    def running(self) -> bool:
        """Whether the server's process is alive."""
        return self._launch is not None and self._launch.process.poll() is None

    def close(self) -> None:
        """Stop the server if it runs (the module's end); its log is checked at the session's end."""
        if self.running:
            self._launch.stop_later()


def _shared_memory(processes: list[psutil.Process]) -> set[Path]:
    """The shared-memory files `processes` have mapped."""
    paths = set()
    for process in processes:
        for mapping in process.memory_maps(grouped=True):
            path = Path(mapping.path)
            if path.parent == SHM and path.exists():
                paths.add(path)
    return paths


def client_of(base_url: str) -> openai.OpenAI:
    """OpenAI's client, pointed at the server at `base_url`."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=HANG_S)


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    """A server of the module's own for the durability tests, which stop and restart it."""
    server = RestartableServer(tmp_path_factory)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def live(restartable: RestartableServer) -> RestartableServer:
    """The restartable server, started again if a failed durability test left it stopped."""
    if not restartable.running:
        restartable.start()
    return restartable


@pytest.fixture
def shared(structured_server: Server) -> Server:
    """The session's structured-output server, for everything that does not restart a server."""
    return structured_server


@pytest.fixture
def api(shared: Server) -> openai.OpenAI:
    return client_of(shared.base_url)


def answer(api: openai.OpenAI, text: str, **more: object) -> object:
    """A greedy answer to `text`, at most SHORT tokens long."""
    return api.responses.create(model=MODEL, input=text, max_output_tokens=SHORT, temperature=0, **more)


def check_finished(response: object, limit: int = SHORT) -> None:
    """Status, incomplete_details, item status and usage agree: cut exactly at `limit` means incomplete."""
    assert response.status in FINISHED, response
    cut = response.status == "incomplete"
    usage = response.usage
    assert cut == (usage.output_tokens == limit), usage
    assert 0 < usage.output_tokens <= limit
    if cut:
        assert response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.incomplete_details is None
    assert response.output[-1].status == response.status
    assert usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def poll(api: openai.OpenAI, response_id: str, until: set[str]) -> object:
    """Retrieve `response_id` until its status is one of `until`; the response as then stored."""
    seen: list[object] = []

    def reached() -> bool:
        seen.append(api.responses.retrieve(response_id))
        return seen[-1].status in until

    wait_until(reached, lambda: f"response {response_id} {until} (last: {seen[-1].status})", HANG_S)
    return seen[-1]


def running_background(api: openai.OpenAI, text: str) -> str:
    """A long background response, once it is in progress (admitted, generating LONG tokens)."""
    queued = api.responses.create(
        model=MODEL, input=text, background=True, max_output_tokens=LONG, temperature=0
    )
    assert queued.status == "queued"
    poll(api, queued.id, {"in_progress"})
    return queued.id


def test_an_answer_has_text_usage_and_energy(api: openai.OpenAI) -> None:
    response = answer(api, "Say something.", instructions="You are terse.")
    check_finished(response)
    assert (response.object, response.model, response.instructions) == ("response", MODEL, "You are terse.")
    assert response.output_text
    (message,) = response.output
    assert (message.type, message.role) == ("message", "assistant")
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    # The server's meter here is the CPU-time estimate, and the answer says so.
    energy = response.usage.energy
    assert energy["source"] == "estimated"
    assert energy["joules"] >= 0
    assert energy["co2e_grams"] >= 0
    assert energy["joules_per_output_token"] == pytest.approx(energy["joules"] / response.usage.output_tokens)
    # The instructions are in the prompt: the same input without them is shorter.
    bare = api.responses.create(model=MODEL, input="Say something.", max_output_tokens=1, temperature=0)
    assert bare.usage.input_tokens < response.usage.input_tokens


def test_the_stream_is_in_openais_order_and_says_what_the_answer_says(api: openai.OpenAI) -> None:
    whole = answer(api, "Tell me about the sea.")
    with api.responses.stream(
        model=MODEL, input="Tell me about the sea.", max_output_tokens=SHORT, temperature=0
    ) as stream:
        events = list(stream)
        if events[-1].type == "response.completed":
            assert stream.get_final_response().output_text == whole.output_text
    types = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    assert types[:4] == TEXT_EVENTS_HEAD
    assert types[-4:] == [*TEXT_EVENTS_TAIL, f"response.{final.status}"]
    deltas = [event.delta for event in events[4:-4]]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert deltas
    check_finished(final)
    assert final.output_text == "".join(deltas) == events[-4].text
    assert events[-2].item.status == final.status
    # Greedy: the stream says what the body said, and counts it the same.
    assert final.output_text == whole.output_text
    assert (final.status, final.usage.input_tokens, final.usage.output_tokens) == (
        whole.status,
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )
    assert final.usage.energy["source"] == "estimated"


def test_a_forced_function_call_fits_its_schema_and_its_result_is_answered(api: openai.OpenAI) -> None:
    request = {
        "model": MODEL,
        "input": "Which unit should the report use?",
        "tools": [UNIT_TOOL],
        "tool_choice": FORCED,
        "max_output_tokens": 64,
        "temperature": 0,
    }
    first = api.responses.create(**request)
    assert first.status == "completed", first
    (call,) = first.output
    assert (call.type, call.name, call.status) == ("function_call", "set_unit", "completed")
    assert call.call_id
    jsonschema.validate(json.loads(call.arguments), UNIT_TOOL["parameters"])
    with api.responses.stream(**request) as stream:
        pieces = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        streamed = stream.get_final_response()
    assert "".join(pieces) == streamed.output[0].arguments == call.arguments

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Use celsius."}
    second = api.responses.create(
        model=MODEL, previous_response_id=first.id, input=[result], max_output_tokens=SHORT, temperature=0
    )
    check_finished(second)
    (message,) = second.output
    assert (message.type, message.role) == ("message", "assistant")
    assert second.previous_response_id == first.id


def test_a_flex_background_response_is_polled_to_the_greedy_answer(
    api: openai.OpenAI, shared: Server
) -> None:
    text = "What is the plan?"
    queued = api.responses.create(
        model=MODEL,
        input=text,
        background=True,
        service_tier="flex",
        max_output_tokens=SHORT,
        temperature=0,
    )
    assert (queued.status, queued.background, queued.service_tier) == ("queued", True, "flex")
    done = poll(api, queued.id, {"completed", "incomplete", "failed", "cancelled"})
    check_finished(done)
    assert done.service_tier == "flex"
    assert done.output_text
    wait_for_idle_gauges(shared)  # stored, it holds nothing and awaits no client
    assert done.output_text == answer(api, text).output_text


def test_a_running_background_response_is_cancelled_and_the_server_serves_on(
    api: openai.OpenAI, shared: Server
) -> None:
    response_id = running_background(api, "Tell me a very long story.")
    cancelled = api.responses.cancel(response_id)
    assert cancelled.status == "cancelled"
    assert api.responses.retrieve(response_id).status == "cancelled"
    wait_for_idle_gauges(shared)  # stopped in the engine too, not only in the store
    check_finished(answer(api, "Still there?"))


# The two restarts take a server start each (most of a minute here): with the other kill-and-restart runs.
@pytest.mark.fault_tolerance
def test_the_store_survives_sigterm_and_a_run_it_cut_reads_failed(live: RestartableServer) -> None:
    api = live.client()
    kept = answer(api, "Remember this.")
    running = running_background(api, "Tell me a very long story.")
    live.terminate()
    live.start()
    api = live.client()
    again = api.responses.retrieve(kept.id)
    assert (again.status, again.output_text, again.usage.output_tokens) == (
        kept.status,
        kept.output_text,
        kept.usage.output_tokens,
    )
    cut = api.responses.retrieve(running)
    assert (cut.status, cut.error.code) == ("failed", "server_error")
    # Worded by whichever ends it first: the engine's abort or the store's own close at shutdown.
    assert "shut" in cut.error.message
    follow = answer(api, "And then?", previous_response_id=kept.id)
    check_finished(follow)
    assert follow.usage.input_tokens > kept.usage.input_tokens  # the stored conversation comes first


@pytest.mark.fault_tolerance
def test_the_store_survives_sigkill_and_a_run_it_killed_reads_failed(live: RestartableServer) -> None:
    api = live.client()
    kept = answer(api, "Remember this too.")
    assert api.responses.retrieve(kept.id).output_text == kept.output_text
    running = running_background(api, "Tell me a very long story.")
    live.kill()
    live.start()
    api = live.client()
    assert api.responses.retrieve(kept.id).output_text == kept.output_text
    killed = api.responses.retrieve(running)
    assert killed.status == "failed"
    assert (killed.error.code, killed.error.message) == (
        "server_error",
        "The server restarted before this response finished.",
    )
    check_finished(answer(api, "And then?", previous_response_id=kept.id))


def test_a_deleted_response_is_gone_and_cannot_be_continued(api: openai.OpenAI) -> None:
    kept = answer(api, "Forget this.")
    api.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError) as follow:
        answer(api, "And then?", previous_response_id=kept.id)
    assert follow.value.body["param"] == "previous_response_id"


def test_tokenize_then_detokenize_gives_the_text_back(shared: Server) -> None:
    text = "Héllo, wörld! 日本語 and emoji 🙂\n\ttabs,  two spaces, trailing "
    with httpx.Client(
        base_url=shared.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=HANG_S
    ) as http:
        tokenized = http.post("/tokenize", json={"model": MODEL, "prompt": text, "add_special_tokens": False})
        assert tokenized.status_code == 200, tokenized.text
        body = tokenized.json()
        assert body["count"] == len(body["tokens"]) > 0
        assert body["max_model_len"] == STRUCTURED_CONTEXT
        back = http.post("/detokenize", json={"model": MODEL, "tokens": body["tokens"]})
    assert back.status_code == 200, back.text
    assert back.json()["prompt"] == text
