"""vLLM's request outputs as engine steps: token counts, ids, finish and stop reasons, on both paths."""

from __future__ import annotations

from types import SimpleNamespace

from server.engine.outputs import generation_step


def _choice(
    index: int, text: str, ids: list[int], finish: str | None = None, stop: object = None
) -> SimpleNamespace:
    return SimpleNamespace(
        index=index, text=text, token_ids=ids, finish_reason=finish, stop_reason=stop, logprobs=None
    )


def test_one_choice_without_logprobs_takes_the_fast_path_with_its_ids_and_count() -> None:
    output = SimpleNamespace(outputs=[_choice(0, "ab", [5, 6], "stop", "\n")], finished=True)
    step = generation_step(output, prompt_tokens=3, top_k=None)
    (delta,) = step.deltas
    assert (step.token_count, step.finished, step.prompt_token_count) == (2, True, 3)
    assert (delta.text, delta.token_count, list(delta.token_ids)) == ("ab", 2, [5, 6])
    assert (delta.finish_reason, delta.stop_reason) == ("stop", "\n")


def test_several_choices_count_every_token_and_keep_each_choices_ids() -> None:
    output = SimpleNamespace(outputs=[_choice(0, "a", [1]), _choice(1, "bc", [2, 3])], finished=False)
    step = generation_step(output, prompt_tokens=1, top_k=None)
    assert step.token_count == 3
    assert [list(delta.token_ids) for delta in step.deltas] == [[1], [2, 3]]
