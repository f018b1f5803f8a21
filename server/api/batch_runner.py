"""Runs batch lines through the live request path, in the flex tier, and finishes batches into files.

Every replica runs one: it claims lines from the shared store (a line is one replica's at a time, under
a lease it renews while the line runs), runs each as the live route would (intake, flex lane, admission,
scope, energy books), and writes its outcome once (`finish_line` succeeds only for the replica that
still holds the claim), so each `custom_id` is answered exactly once, and a line already answered is
never run again, whoever crashes when. A replica that dies leaves claims whose leases run out; another
takes them over. When a batch has no line left to run, one replica writes its output and error files.
A line this replica cannot serve (503: its engine died, it is shutting down) gets no outcome: it stays
claimed until `stop` gives it back or its lease runs out, and a replica that can serve runs it; this one
claims nothing more for a lease's length.

Live traffic keeps its place: at most `max_in_flight` batch lines run per replica, each waits in the
flex lane and for an admission slot like any flex request, and admission's tier order puts them last.
Admission alone is not enough: every sequence in an engine step makes the step longer (on a CPU in
proportion), so lines already running delay live requests' first and later tokens. While live traffic
is about (a live request open, or one seen within `BATCH_LIVE_HOLD_S`), the runner starts lines only up
to `max_beside_live` in flight; the others wait for a lull.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from server.api.respond import answer_in_full
from server.api.routes.chat import chat_plan
from server.api.routes.completions import completion_plan
from server.api.state import AnswerOptions, Serving
from server.batch_wire import ENDPOINTS
from server.errors import EngineUnavailableError, OverloadedError, ServerError, server_error_body
from server.observability.batch_metrics import BatchMetrics
from server.settings import BATCH_LIVE_HOLD_S
from server.storage.batches import BatchLine, BatchStore, FileRecord, LineOutcome

logger = logging.getLogger(__name__)

BATCH_TIER = "flex"
POLL_S = 0.5  # how often a runner with batch work about looks for claimable lines and finished batches
# With none about it looks less often: every look is a few store queries on the event loop's thread pool,
# and a replica serving live traffic only should not pay them twice a second. A batch created here wakes
# the runner at once; one created through another replica waits at most this long.
IDLE_POLL_S = 2.0
PURGE_EVERY_S = 600.0  # how often expired files and old finished batches are deleted
RETRY_FULL_S = 1.0  # a line refused for a full queue (429) tries again after this long


async def _unwatched(work: Awaitable[Any]) -> Any:
    return await work  # a batch line has no client to lose


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


class BatchRunner:
    """One replica's share of the batch work."""

    def __init__(  # noqa: PLR0913 - what the runner is built from, once, by the composition root
        self,
        store: BatchStore,
        serving: Serving,
        answers: AnswerOptions,
        *,
        max_in_flight: int,
        max_beside_live: int,
        lease_s: float,
        file_ttl_s: float,
        metrics: BatchMetrics,
    ) -> None:
        self.worker_id = f"replica-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._serving = serving
        self._answers = answers
        self._max_in_flight = max_in_flight
        self._max_beside_live = min(max_beside_live, max_in_flight)
        self._live_seen_s = -BATCH_LIVE_HOLD_S  # monotonic: when live traffic was last seen
        self._lease_s = lease_s
        self._file_ttl_s = file_ttl_s
        self.metrics = metrics
        self._purged_at = 0.0
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._unavailable_until = 0.0  # monotonic: claim nothing before, the server could not serve
        self.lines_run = 0  # lines this process put through the request path (tests count re-runs with it)

    def start(self) -> None:
        """Start claiming and running lines."""
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="batch runner")

    def wake(self) -> None:
        """Look for work now (a batch was just created or cancelled)."""
        self._wake.set()

    async def _loop(self) -> None:
        renewed = time.monotonic()
        while not self._stopping:
            busy = True
            try:
                busy = await self._tick()
                if self._running and time.monotonic() - renewed > self._lease_s / 3:
                    await self._store.renew_claims(self.worker_id, list(self._running))
                    renewed = time.monotonic()
            except Exception:  # the store may be briefly unreachable (PostgreSQL restarting): try again
                logger.exception("batch runner: a round failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S if busy or self._running else IDLE_POLL_S)
            self._wake.clear()

    async def _tick(self) -> bool:
        """One look for work; whether there was any (a batch to finish, a line claimed or left to claim)."""
        now = time.time()
        if now - self._purged_at > PURGE_EVERY_S:
            self._purged_at = now
            purged = await self._store.purge_expired(now)
            if purged:
                logger.info("purged %d expired files and finished batches", purged)
        for batch_id in await self._store.expire_due(now):
            logger.info("batch %s expired before it finished", batch_id)
        finishing = await self._store.batches_ready_to_finalize()
        for batch_id in finishing:
            await self._finalize(batch_id)
        free = self._allowed_in_flight() - len(self._running)
        if free <= 0 or self._stopping or time.monotonic() < self._unavailable_until:
            return True
        claimed = await self._store.claim_lines(self.worker_id, free)
        for line in claimed:
            key = (line.batch_id, line.line_no)
            task = asyncio.get_running_loop().create_task(self._run_line(line), name=f"batch line {key}")
            self._running[key] = task
            task.add_done_callback(lambda _, key=key: self._done(key))
        return bool(finishing or claimed)

    def _allowed_in_flight(self) -> int:
        now = time.monotonic()
        # Live requests queued for a slot are not seen here; they are queued because the slots are full,
        # and batch lines take at most `max_in_flight` of them.
        if any(not scope.tier.waits_in_lane for scope in self._serving.intake.open_scopes()):
            self._live_seen_s = now
        live = now - self._live_seen_s < BATCH_LIVE_HOLD_S
        return self._max_beside_live if live else self._max_in_flight

    def _done(self, key: tuple[str, int]) -> None:
        self._running.pop(key, None)
        self.metrics.in_flight.set(len(self._running))
        self._wake.set()

    async def _run_line(self, line: BatchLine) -> None:
        self.metrics.in_flight.set(len(self._running))
        outcome = await self._execute(line)
        if outcome is None:
            self._unavailable_until = time.monotonic() + self._lease_s
            return
        if not await self._store.finish_line(self.worker_id, line.batch_id, outcome):
            logger.warning(
                "batch %s line %d: another replica took it over; its answer stands",
                line.batch_id,
                line.line_no,
            )
            return
        self.metrics.lines.labels("failed" if outcome.failed else "answered").inc()
        if outcome.joules is not None:
            self.metrics.energy.labels(BATCH_TIER).inc(outcome.joules)

    async def _execute(self, line: BatchLine) -> LineOutcome | None:
        request_id = None
        try:
            body = ENDPOINTS[line.url].model_validate({**line.body, "service_tier": BATCH_TIER})
            plan = chat_plan if line.url.endswith("chat/completions") else completion_plan
            prefix = "chatcmpl" if line.url.endswith("chat/completions") else "cmpl"
            while True:
                try:
                    scope = await self._serving.intake.open(body.model, body.tier, _unwatched)
                    break
                except OverloadedError:  # the flex lane or the queue is full: wait, live traffic first
                    await asyncio.sleep(RETRY_FULL_S)
            self.lines_run += 1
            prepare, wording = plan(self._serving, body, self._answers)  # type: ignore[arg-type]
            answer = await answer_in_full(scope, prepare, wording, prefix=prefix)
        except EngineUnavailableError as err:
            # Not the line's outcome but this replica's state: writing it would fail the line for good.
            logger.warning(
                "batch %s line %d: not run here, the server cannot serve (%s); left to a replica that can",
                line.batch_id,
                line.line_no,
                err.message,
            )
            return None
        except ServerError as err:
            error = server_error_body(err)
            record = {
                "id": _line_id(),
                "custom_id": line.custom_id,
                "response": {"status_code": int(err.status), "request_id": request_id, "body": error},
                "error": {"code": err.code or err.error_type, "message": err.message},
            }
            return LineOutcome(line.line_no, line.custom_id, record, True, None, 0, None)
        reply = json.loads(answer.model_dump_json())
        record = {
            "id": _line_id(),
            "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": reply.get("id"), "body": reply},
            "error": None,
        }
        usage = reply.get("usage") or {}
        energy = usage.get("energy") or {}
        return LineOutcome(
            line.line_no,
            line.custom_id,
            record,
            False,
            energy.get("joules"),
            int(usage.get("completion_tokens") or 0),
            energy.get("co2e_grams"),
            energy.get("co2e_avoided_grams"),
        )

    async def _finalize(self, batch_id: str) -> None:
        outcomes = await self._store.line_outcomes(batch_id)
        batch = await self._store.get_batch_any_owner(batch_id)
        if batch is None:
            return
        answered = [record for _, record, failed in outcomes if not failed]
        failed = [record for _, record, is_failed in outcomes if is_failed]
        status = {"cancelling": "cancelled", "expired": "expired"}.get(batch.status, "completed")
        output = self._file(batch.owner, "batch_output", f"{batch_id}_output.jsonl", answered)
        errors = self._file(batch.owner, "batch_output", f"{batch_id}_error.jsonl", failed)
        won = await self._store.finalize(
            batch_id,
            status=status,
            output=output[0] if output else None,
            output_content=output[1] if output else None,
            error_file=errors[0] if errors else None,
            error_content=errors[1] if errors else None,
        )
        if won:
            self.metrics.batches_finished.labels(status).inc()
            logger.info("batch %s %s: %d answered, %d failed", batch_id, status, len(answered), len(failed))

    def _file(
        self, owner: str, purpose: str, name: str, records: list[dict[str, Any]]
    ) -> tuple[FileRecord, bytes] | None:
        if not records:
            return None
        content = b"".join(json.dumps(record, ensure_ascii=False).encode() + b"\n" for record in records)
        now = time.time()
        record = FileRecord(
            f"file-{uuid.uuid4().hex}", owner, purpose, name, len(content), now, now + self._file_ttl_s
        )
        return record, content

    async def stop(self, grace_s: float) -> None:
        """Claim no more; let running lines finish within `grace_s`; give the rest back to the store."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        running = list(self._running.values())
        if running:
            _, unfinished = await asyncio.wait(running, timeout=grace_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        await self._store.release_claims(self.worker_id)
