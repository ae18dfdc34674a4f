"""A real `stepflow serve` process, for the tests of what talks to one over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def stepflow_serve(data_dir: Path, cwd: Path, port: int = 0) -> AsyncIterator[str]:
    """A `stepflow serve` process on `port` (0: a free one), working in `cwd`; yields its URL, stops
    it with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stepflow.main", "serve", "--port", str(port), "--ws-port", "0",
        "--data-dir", str(data_dir),
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
        match = re.search(r"serving (http://\S+)", first)
        if match is None:
            err = await process.stderr.read() if process.returncode is not None else b""
            raise AssertionError(f"stepflow serve did not start: {first!r} {err.decode()!r}")
        yield match[1]
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(20):
            await process.wait()
    assert process.returncode == 0
