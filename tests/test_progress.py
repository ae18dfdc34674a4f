"""An execution's progress is the done share of its work, frozen where it ended; the status says how
it ended. A run that failed after 1 of its 4 steps stays at 25% (it showed 100%), a command
cancelled at 70% stays at 70% (it showed 0%): in `ls`, `show` and the API alike."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.events import StepUpdated
from engine.model import ExecutionStatus, Step, StepKind, StepStatus
from engine.progress import WorkTally, execution_progress
from tests.api.conftest import make_config, running
from tests.api.helpers import check_ok
from tests.engine_helpers import engine_at, finished, submit_command, submit_workflow
from tests.test_cli import ctrl_c_when_ready, ls_json, spawn, stepflow

pytestmark = [pytest.mark.timeout(120)]

#: four steps; the second fails, the last two never run
FAILS_AT_TWO_OF_FOUR = textwrap.dedent("""\
    name: four
    steps:
      - {name: one, run: "true"}
      - {name: two, run: "false", needs: [one]}
      - {name: three, run: "true", needs: [two]}
      - {name: four, run: "true", needs: [three]}
""")

#: a command that reports 70% and waits to be cancelled
AT_SEVENTY = "echo STEP_PROGRESS:70; echo ready; sleep 60"


def show_json(data: Path, execution_id: str) -> dict[str, Any]:
    result = stepflow(data, "show", "--json", execution_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ls_and_show_keep_the_done_share_of_a_failed_run(tmp_path: Path) -> None:
    workflow = tmp_path / "four.yaml"
    workflow.write_text(FAILS_AT_TWO_OF_FOUR)
    ran = stepflow(tmp_path / "data", "run", "--plain", str(workflow))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    [listed] = ls_json(tmp_path / "data")
    assert (listed["status"], listed["completed_steps"], listed["total_steps"]) == ("failed", 1, 4)
    assert listed["progress_percentage"] == 25.0
    assert show_json(tmp_path / "data", listed["id"])["execution"]["progress_percentage"] == 25.0


def test_ls_and_show_keep_the_progress_of_a_cancelled_command(tmp_path: Path) -> None:
    proc = spawn(tmp_path, "exec", "--plain", "-v", "--kill-grace", "1", "--shell", "--", AT_SEVENTY)
    assert ctrl_c_when_ready(proc) == 130
    [listed] = ls_json(tmp_path)
    assert listed["status"] == "cancelled"
    assert listed["progress_percentage"] == 70.0
    assert show_json(tmp_path, listed["id"])["execution"]["progress_percentage"] == 70.0


async def test_api_progress_percentage_of_failed_and_cancelled_executions(tmp_path: Path) -> None:
    async with engine_at(tmp_path / "data") as engine, running(engine, make_config(tmp_path)) as listener, \
            aiohttp.ClientSession() as session:

        async def progress_of(execution_id: str) -> tuple[str, float]:
            async with session.get(f"{listener.url}/api/executions/{execution_id}") as resp:
                data = check_ok(resp.status, await resp.json())
            return data["execution"]["status"], data["execution"]["progress_percentage"]

        failed = await finished(engine, await submit_workflow(engine, text=FAILS_AT_TWO_OF_FOUR))
        assert await progress_of(failed.id) == ("failed", 25.0)

        events = engine.subscribe()
        command = await submit_command(engine, AT_SEVENTY)
        async with asyncio.timeout(20):
            async for event in events:
                if isinstance(event, StepUpdated) and event.step.execution_id == command.id \
                        and event.step.progress == 70.0:
                    break
        events.close()
        # while it runs, the API shows how far it got too
        assert await progress_of(command.id) == ("running", 70.0)
        async with session.post(f"{listener.url}/api/executions/{command.id}/cancel") as resp:
            check_ok(resp.status, await resp.json())
        await finished(engine, command)
        assert await progress_of(command.id) == ("cancelled", 70.0)
        async with session.get(f"{listener.url}/api/executions") as resp:
            listed = {e["id"]: e for e in check_ok(resp.status, await resp.json())["executions"]}
        assert (listed[failed.id]["progress_percentage"], listed[command.id]["progress_percentage"]) == (25.0, 70.0)


def step(name: str, status: StepStatus, *, kind: StepKind = StepKind.WORKFLOW, progress: float | None = None,
         completed_in: str | None = None) -> Step:
    s = Step(id=name, execution_id="e", name=name, kind=kind, status=status, progress=progress)
    if completed_in:
        s.metadata["completed_in"] = completed_in
    return s


@pytest.mark.parametrize(("status", "steps", "expected"), [
    # done in an earlier execution (rerun from the failed step) counts as done
    (ExecutionStatus.FAILED, [step("a", StepStatus.SKIPPED, completed_in="x"), step("b", StepStatus.FAILED),
                              step("c", StepStatus.SKIPPED)], 33.3),
    # a step's own progress counts while it runs and where it stopped
    (ExecutionStatus.RUNNING, [step("a", StepStatus.COMPLETED), step("b", StepStatus.RUNNING, progress=50.0)], 75.0),
    (ExecutionStatus.CANCELLED, [step("a", StepStatus.CANCELLED, progress=40.0), step("b", StepStatus.PENDING)], 20.0),
    # a command without marker steps: its own step is the work
    (ExecutionStatus.CANCELLED, [step("local", StepStatus.CANCELLED, kind=StepKind.BRANCH, progress=70.0)], 70.0),
    (ExecutionStatus.COMPLETED, [step("local", StepStatus.COMPLETED, kind=StepKind.BRANCH)], 100.0),
    # marker steps are the work once there are some
    (ExecutionStatus.FAILED, [step("local", StepStatus.FAILED, kind=StepKind.BRANCH, progress=90.0),
                              step("m", StepStatus.FAILED, kind=StepKind.MARKER)], 0.0),
])
def test_the_one_definition(status: ExecutionStatus, steps: list[Step], expected: float) -> None:
    assert WorkTally(steps).percentage(status) == expected


def test_a_completed_execution_is_at_100_whatever_its_steps() -> None:
    assert execution_progress(ExecutionStatus.COMPLETED, 0.0, 0) == 100.0
    assert execution_progress(ExecutionStatus.FAILED, 1.0, 4) == 25.0
    assert execution_progress(ExecutionStatus.PENDING, 0.0, 0) == 0.0
