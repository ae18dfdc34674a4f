"""Nothing accepted is lost in silence: text that is not UTF-8 is stored with U+FFFD (the process still
gets its bytes), and an execution whose events the store refuses is failed, loudly, while the others
in the same batch are stored whole (issue 9, item 3). Real processes, a real SQLite file; the store's
refusal is a real SQLite trigger installed in that file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InvalidRequest, StoreError
from engine.model import ExecutionFilter
from storage.paths import database_path
from tests.engine_helpers import all_text, engine_at, submit_command, submit_workflow

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(90)]


def stepflow(data: Path, *args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """The CLI with arguments as bytes where a shell would pass bytes that are not UTF-8."""
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    return subprocess.run([sys.executable, "-m", "stepflow.main", *args], env=env, cwd=ROOT,
                          capture_output=True, timeout=timeout)


def ls_json(data: Path) -> list[dict]:
    result = stepflow(data, "ls", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def poison(db: Path, sql: str) -> None:
    """Install a trigger into the store's file (made by the first `stepflow ls`)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(sql)
        conn.commit()


POISONED_LINES = ("CREATE TRIGGER poisoned BEFORE INSERT ON log_lines WHEN NEW.text LIKE '%poison%' "
                  "BEGIN SELECT RAISE(ABORT, 'poisoned line'); END")
POISONED_NAME = ("CREATE TRIGGER poisoned BEFORE INSERT ON executions WHEN NEW.name = 'poison' "
                 "BEGIN SELECT RAISE(ABORT, 'poisoned name'); END")


# -- bytes that are not UTF-8 ------------------------------------------------------------------------
def test_exec_of_arguments_that_are_not_utf8_is_stored_and_the_command_gets_the_bytes(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    result = stepflow(data, "exec", "--plain", "-v", "--name", b"bad\xff", "--env", b"VALUE=v\xe9", "--",
                      "sh", "-c", 'printf "%s\\n" "$1"; printf "%s|%s" "$1" "$VALUE" > "$2"', "sh",
                      b"caf\xe9", str(out))
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    assert out.read_bytes() == b"caf\xe9|v\xe9"  # what the process was given: the bytes typed
    [row] = ls_json(data)
    assert row["name"] == "bad\ufffd"
    assert row["status"] == "completed"
    shown = stepflow(data, "show", "--json", row["id"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert "caf\ufffd" in json.dumps(detail, ensure_ascii=False)
    logs = stepflow(data, "logs", row["id"])
    assert logs.returncode == 0, logs.stderr
    assert "caf\ufffd" in logs.stdout.decode()


async def test_lone_surrogates_from_json_are_replaced_where_shown_and_refused_where_run(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        shown = await submit_command(engine, "echo fine", name="n\ud800me", tags=["t\udfff"],
                                            metadata={"k\ud800": "v\ud800"})
        final = await engine.wait(shown.id)
        stored = await engine.get_execution(shown.id)
        assert final.status.value == "completed"
        assert stored is not None and stored.name == "n\ufffdme"
        assert stored.tags == ["t\ufffd"] and stored.metadata == {"k\ufffd": "v\ufffd"}
        for bad in ({"command": "echo \ud800"}, {"command": "echo", "env": {"A": "\udfff"}},
                    {"command": "pwd", "cwd": "/tmp/\ud800"}):
            with pytest.raises(InvalidRequest, match="lone surrogate"):
                await submit_command(engine, **bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            await submit_workflow(engine, text="name: x\nsteps:\n  - name: a\n    run: echo \ud800\n")


# -- a store that refuses some events ----------------------------------------------------------------
async def test_an_execution_the_store_refuses_is_failed_loudly_and_the_others_in_its_batch_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    count = 3_000
    async with engine_at(tmp_path) as engine:
        poison(database_path(tmp_path), POISONED_LINES)
        # one prints all along, the other a line the store refuses among its own, then would sleep
        steady = await submit_command(engine,
            [sys.executable, "-c", f"import time\nfor i in range({count}):\n print('line', i, flush=True)\n"
                                   " time.sleep(0.0005) if i % 10 == 0 else None"])
        started = time.monotonic()
        doomed = await submit_command(engine,
            ["sh", "-c", "for i in 1 2 3 4 5; do echo ok $i; sleep 0.05; done; echo poison; sleep 60"])
        with pytest.raises(StoreError, match="could not be stored: poisoned line"):
            async with asyncio.timeout(30):
                await engine.wait(doomed.id)
        assert time.monotonic() - started < 15  # its command was stopped, not left to sleep
        kept = await engine.wait(steady.id)
        assert kept.status.value == "completed"
        assert await all_text(engine, steady.id) == [f"line {i}" for i in range(count)]
        stored = await engine.get_execution(doomed.id)
        assert engine.writer.failed_batches >= 1  # a batch held both: the steady one's events were in it
    assert stored is not None
    assert stored.status.value == "failed"
    assert stored.error_message is not None and "could not be stored: poisoned line" in stored.error_message
    assert any(r.levelname == "ERROR" and doomed.id in r.getMessage() for r in caplog.records)


async def test_an_execution_whose_creation_the_store_refuses_is_not_accepted(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        poison(database_path(tmp_path), POISONED_NAME)
        with pytest.raises(StoreError, match="could not be stored: poisoned name"):
            await submit_command(engine, ["sleep", "60"], name="poison")
        assert engine.running_count == 0
        fine = await submit_command(engine, ["true"], name="fine")
        assert (await engine.wait(fine.id)).status.value == "completed"
        page, total = await engine.list_executions(ExecutionFilter())
        assert [e.name for e in page] == ["fine"] and total == 1


def test_exec_exits_non_zero_with_one_line_when_its_execution_cannot_be_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert ls_json(data) == []
    poison(database_path(data), POISONED_LINES)
    started = time.monotonic()
    result = stepflow(data, "exec", "--plain", "--", "sh", "-c", "echo poison; sleep 60")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert "stepflow: could not be stored: poisoned line" in stderr
    [row] = ls_json(data)
    assert row["status"] == "failed"
