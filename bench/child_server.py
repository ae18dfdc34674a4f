"""A benchmark's server in a child process: the script runs itself again with
`--serve DATA_DIR<os.pathsep>PORT_FILE`, and writes its port(s) to PORT_FILE once it listens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0


def serve_if_asked(serve: str | None, run_server: Callable[[Path, Path], Coroutine[Any, Any, None]]) -> bool:
    """In the child (`--serve` given): run the server until it is stopped, and say so."""
    if not serve:
        return False
    data_dir, port_file = serve.split(os.pathsep)
    asyncio.run(run_server(Path(data_dir), Path(port_file)))
    return True


@contextlib.contextmanager
def child_server(
    script: str, data_dir: Path, port_file: Path, *python_options: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `script` as the server; the process and what it wrote to `port_file`. Stopped on exit."""
    server = subprocess.Popen(
        [sys.executable, *python_options, script, "--serve", f"{data_dir}{os.pathsep}{port_file}"]
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        yield server, port_file.read_text()
    finally:
        server.terminate()
        server.wait(10)
