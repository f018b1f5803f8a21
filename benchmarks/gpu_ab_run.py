"""Run vLLM's benchmark client with a signalled measured window (servers start with `loadtest.processes`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["CLIENT_SCRIPT", "ClientError", "run_client"]

# vLLM's benchmark client, started through its Python entry points (the `vllm` console script is not
# always usable). Its `benchmark` coroutine is wrapped so that the client says "start" just before its
# first request and "end" once its results are in, and waits for the parent's byte each time: the
# parent's energy readings then bracket the run, not the client's start-up (tokenizer load and prompt
# sampling take seconds at idle power). argv: fd to parent, fd from parent, then the client's flags.
CLIENT_SCRIPT = """\
import os, sys
from vllm.benchmarks import serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

to_parent, from_parent = int(sys.argv[1]), int(sys.argv[2])

def signal_parent(word):
    os.write(to_parent, word.encode() + b"\\n")
    os.read(from_parent, 1)

inner = serve.benchmark

async def benchmark(*args, **kwargs):
    signal_parent("start")
    try:
        return await inner(*args, **kwargs)
    finally:
        signal_parent("end")

serve.benchmark = benchmark
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
serve.main(parser.parse_args(sys.argv[3:]))
"""


class ClientError(RuntimeError):
    """The benchmark client failed or did not report its measured window."""


def run_client(
    prefix: Sequence[str],
    client_args: Sequence[str],
    log_path: Path,
    *,
    on_start: Callable[[], None],
    on_end: Callable[[], None],
    env: Mapping[str, str] | None = None,
) -> None:
    """Run the benchmark client; call `on_start` and `on_end` when it opens and closes its measured window.

    The client is `prefix` (e.g. `[python, "-c", CLIENT_SCRIPT]`) followed by two pipe descriptors and
    `client_args`. It writes the lines "start" and "end" to the first descriptor and, after each, waits
    for one byte on the second, so the callbacks run while it is paused.

    Args:
        prefix: The client's command line before the descriptors.
        client_args: The client's own flags, after the descriptors.
        log_path: Where the client's stdout and stderr go.
        on_start: Called when the client is about to send its first request.
        on_end: Called when the client has its results.
        env: The client's environment (default: ours).

    Raises:
        ClientError: If the client exits without both signals, or with a non-zero status.
    """
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    try:
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [*prefix, str(to_parent_w), str(to_child_r), *client_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(to_parent_w, to_child_r),
                env=None if env is None else dict(env),
            )
    except BaseException:
        os.close(to_parent_r)
        os.close(to_child_w)
        raise
    finally:
        # The child holds its own copies; ours must go, or reading would never see the child's exit.
        os.close(to_parent_w)
        os.close(to_child_r)
    try:
        with os.fdopen(to_parent_r, "rb") as from_child, os.fdopen(to_child_w, "wb", buffering=0) as to_child:
            for expected, callback in (("start", on_start), ("end", on_end)):
                said = from_child.readline().decode(errors="replace").strip()
                if said != expected:
                    process.wait()
                    raise ClientError(
                        f"benchmark client exited with {process.returncode} before signalling "
                        f"{expected!r} (got {said!r}); see {log_path}"
                    )
                callback()
                # A client that died meanwhile shows as the end of its signals, reported above.
                with contextlib.suppress(BrokenPipeError):
                    to_child.write(b"g")
    except BaseException:
        if process.poll() is None:
            process.kill()
        process.wait()
        raise
    if process.wait() != 0:
        raise ClientError(f"benchmark client exited with {process.returncode}; see {log_path}")
