"""What the runner tests (local, SSH, Docker) do alike: gather a command's output, run a command to
its end, start one that says `ready`, time a terminate, see a command fail to start, and lay out the
files the fetch and glob tests look for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.model import Stream
from engine.runners.base import CommandSpec, Runner, RunningCommand, SpawnError


async def collect(
    command: RunningCommand, within: float = 20, *, max_chunk: int | None = None
) -> dict[Stream, bytes]:
    """The command's whole stdout and stderr; no chunk is empty, nor larger than `max_chunk` if given."""
    out = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
    async with asyncio.timeout(within):
        async for stream, chunk in command.output():
            assert chunk
            assert max_chunk is None or len(chunk) <= max_chunk
            out[stream] += chunk
    return {stream: bytes(data) for stream, data in out.items()}


async def run(
    runner: Runner, spec: CommandSpec, within: float = 20, *, max_chunk: int | None = None
) -> tuple[dict[Stream, bytes], int]:
    """Start `spec`, gather its output and wait for its exit code."""
    command = await runner.start(spec)
    out = await collect(command, within, max_chunk=max_chunk)
    async with asyncio.timeout(within):
        return out, await command.wait()


async def start_ready(
    runner: Runner, script: str, within: float = 20
) -> tuple[RunningCommand, AsyncIterator[tuple[Stream, bytes]]]:
    """Start `script`, which prints `ready` first, and wait for that line; the rest of the output follows."""
    command = await runner.start(CommandSpec(script=script))
    output = command.output()
    async with asyncio.timeout(within):
        first = await anext(output)
        assert first == (Stream.STDOUT, b"ready\n"), first
    return command, output


async def terminate_timed(command: RunningCommand, grace: float) -> float:
    """Terminate the command with `grace` seconds; how long the terminate took."""
    started = time.monotonic()
    await command.terminate(grace=grace)
    return time.monotonic() - started


async def run_and_close(
    runner: Runner, spec: CommandSpec, within: float = 20
) -> tuple[dict[Stream, bytes], int]:
    """`run` with a runner of its own, closed after."""
    try:
        return await run(runner, spec, within)
    finally:
        await runner.close()


async def start_fails(runner: Runner, within: float | None = None) -> str:
    """Starting a command raises SpawnError, within `within` seconds if given: its message. The runner
    is closed after."""
    started = time.monotonic()
    try:
        with pytest.raises(SpawnError) as caught:
            await runner.start(CommandSpec(script="true"))
        assert within is None or time.monotonic() - started < within
    finally:
        await runner.close()
    return str(caught.value)


@contextlib.asynccontextmanager
async def silent_port() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections and never says anything."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def make_reports(work: Path, secret_dir: Path) -> None:
    """Under `work`: reports/a.xml, reports/sub/b.xml, reports/sub/c.txt, and two links,
    reports/inside.xml to a.xml and reports/outside.xml to `secret_dir`/secret.xml (out of `work`)."""
    (work / "reports" / "sub").mkdir(parents=True)
    (work / "reports" / "a.xml").write_text("<a/>")
    (work / "reports" / "sub" / "b.xml").write_text("<b/>")
    (work / "reports" / "sub" / "c.txt").write_text("c")
    (secret_dir / "secret.xml").write_text("secret")
    (work / "reports" / "outside.xml").symlink_to(secret_dir / "secret.xml")
    (work / "reports" / "inside.xml").symlink_to(work / "reports" / "a.xml")
