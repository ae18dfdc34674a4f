"""`rerun --from-failed` of an execution whose every step completed has nothing to run: it is refused
("nothing to rerun"), the CLI exits non-zero, the API answers 400, and nothing is created (it made
an execution of skipped steps and exited 0)."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap
from pathlib import Path

import pytest

from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail, check_ok
from tests.engine_helpers import engine_at, finished, submit_workflow
from tests.test_cli import ls_json, stepflow

pytestmark = [pytest.mark.timeout(120)]

WORKFLOW = textwrap.dedent("""\
    name: two
    steps:
      - {name: build, run: "true"}
      - {name: test, run: "true", needs: [build]}
""")


def mark_failed(data: Path, execution_id: str) -> None:
    """What an engine lost just after the last step leaves: failed, every step completed."""
    with contextlib.closing(sqlite3.connect(data / "stepflow.db")) as conn, conn:
        conn.execute("UPDATE executions SET status = 'failed' WHERE id = ?", (execution_id,))


@pytest.mark.parametrize("what", ["workflow", "command", "failed workflow"])
def test_rerun_from_failed_with_nothing_failed_says_so_and_creates_nothing(tmp_path: Path, what: str) -> None:
    data = tmp_path / "data"
    if what == "command":
        first = stepflow(data, "exec", "--", "true")
    else:
        wf = tmp_path / "wf.yaml"
        wf.write_text(WORKFLOW)
        first = stepflow(data, "run", str(wf))
    assert first.returncode == 0, first.stdout + first.stderr
    [done] = ls_json(data)
    if what == "failed workflow":
        mark_failed(data, done["id"])
    again = stepflow(data, "rerun", done["id"][:8], "--from-failed")
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"nothing to rerun: every step of {done['id']} completed" in again.stderr
    assert "Traceback" not in again.stderr
    assert [e["id"] for e in ls_json(data)] == [done["id"]]


async def test_api_rerun_from_failed_with_nothing_failed_is_a_400(tmp_path: Path) -> None:
    import aiohttp

    async with engine_at(tmp_path / "data") as engine, running(engine, make_config(tmp_path)) as listener, \
            aiohttp.ClientSession() as session:
        done = await finished(engine, await submit_workflow(engine, text=WORKFLOW))
        async with session.post(f"{listener.url}/api/executions/{done.id}/rerun",
                                json={"from_failed": True}) as resp:
            error = check_fail(resp.status, await resp.json(), 400)
        assert error == f"nothing to rerun: every step of {done.id} completed"
        async with session.get(f"{listener.url}/api/executions") as resp:
            assert check_ok(resp.status, await resp.json())["total_count"] == 1
        # a plain rerun still runs it all again
        async with session.post(f"{listener.url}/api/executions/{done.id}/rerun", json={}) as resp:
            check_ok(resp.status, await resp.json(), expect=201)
