"""The engine with real subprocesses and a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from engine.events import ExecutionFinished, StepAdded
from engine.lines import CONTINUED
from engine.model import AbortReason, ArtifactFilter, ExecutionStatus, StepKind, StepStatus, Stream
from engine.workflow.load import WorkflowError
from tests.engine_helpers import all_text, by_name, engine_at, finished, submit_command, submit_workflow


async def test_marker_script_becomes_steps_and_everything_is_stored(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        echo "before any step"
        echo "STEP_START:prepare[stop_on_error=false]{duration:5}"
        echo "preparing"
        echo "STEP_PROGRESS:50"
        echo "STEP_COMPLETE:prepare"
        echo "STEP_START:work"
        echo "oops" >&2
        sleep 0.3  # stdout and stderr are separate pipes: let stderr arrive while the step is open
        echo "STEP_COMPLETE:work"
    """)
    async with engine_at(tmp_path) as engine:
        ex = await submit_command(engine, script, name="markers")
        assert ex.status is ExecutionStatus.PENDING
        done = await finished(engine, ex)
        assert done.status is ExecutionStatus.COMPLETED
        assert done.exit_code == 0
        steps = by_name(await engine.get_steps(ex.id))
        assert steps["prepare"].status is StepStatus.COMPLETED
        assert steps["prepare"].estimated_duration == 5
        assert steps["work"].status is StepStatus.COMPLETED
        assert steps["prepare"].parent_id == steps["local"].id
        assert steps["local"].kind is StepKind.BRANCH
        lines = await engine.get_log_lines(ex.id)
        assert [line.text for line in lines][0] == "before any step"
        assert lines[0].step_id == steps["local"].id
        oops = next(line for line in lines if line.text == "oops")
        assert oops.stream is Stream.STDERR and oops.step_id == steps["work"].id
        assert [line.seq for line in lines] == list(range(len(lines)))
        stored = await engine.store.get_execution(ex.id)
        assert stored is not None and stored.status is ExecutionStatus.COMPLETED
        assert stored.total_steps == 2 and stored.completed_steps == 2


async def test_failing_command_records_exit_code(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        done = await finished(engine, await submit_command(engine, "echo STEP_START:a; exit 3"))
        assert done.status is ExecutionStatus.FAILED
        assert done.exit_code == 3
        steps = by_name(await engine.get_steps(done.id))
        assert steps["a"].status is StepStatus.FAILED  # still open at exit: failed with the exit code
        assert steps["a"].exit_code == 3


async def test_missing_command_is_a_clear_spawn_error(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        done = await finished(engine, await submit_command(engine, ["no-such-command-xyz", "--flag"]))
        assert done.status is ExecutionStatus.FAILED
        assert "no-such-command-xyz" in (done.error_message or "")
        assert "not found" in (done.error_message or "")
        assert any("no-such-command-xyz" in t for t in await all_text(engine, done.id))


async def test_stop_on_error_stops_the_command_and_fails(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        echo "STEP_START:check[stop_on_error=true]"
        echo "STEP_ERROR:database unreachable"
        sleep 30
        echo "STEP_START:never"
    """)
    started = time.monotonic()
    async with engine_at(tmp_path) as engine:
        done = await finished(engine, await submit_command(engine, script))
        assert time.monotonic() - started < 10
        assert done.status is ExecutionStatus.FAILED
        assert done.abort_reason is AbortReason.STOP_ON_ERROR
        assert "database unreachable" in (done.error_message or "")
        steps = by_name(await engine.get_steps(done.id))
        assert steps["check"].status is StepStatus.FAILED
        assert steps["check"].error_message == "database unreachable"
        assert "never" not in steps


async def test_workflow_step_timeout(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: t\nsteps:\n  - name: slow\n    run: sleep 30\n    timeout: 0.5\n"
                  "  - name: after\n    needs: [slow]\n    run: echo hi\n")
    async with engine_at(tmp_path / "data", kill_grace=0.5) as engine:
        started = time.monotonic()
        done = await finished(engine, await submit_workflow(engine, wf))
        assert time.monotonic() - started < 10
        steps = by_name(await engine.get_steps(done.id))
        assert steps["slow"].status is StepStatus.FAILED
        assert steps["slow"].abort_reason is AbortReason.TIMEOUT
        assert "timed out" in (steps["slow"].error_message or "")
        assert steps["after"].status is StepStatus.SKIPPED
        assert done.status is ExecutionStatus.FAILED


async def test_cancel_kills_the_whole_tree_even_a_sigterm_ignoring_grandchild(tmp_path: Path) -> None:
    # both processes announce their pid as a step name, so the test awaits events, not files
    script = textwrap.dedent("""
        bash -c 'trap "" TERM; echo "STEP_START:pid-$$"; sleep 1000' &
        echo "STEP_START:pid-$$"
        wait
    """)
    async with engine_at(tmp_path, kill_grace=0.5) as engine:
        sub = engine.subscribe()
        ex = await submit_command(engine, script)
        pids: set[int] = set()
        async with asyncio.timeout(10):
            async for event in sub:
                if isinstance(event, StepAdded) and event.step.name.startswith("pid-"):
                    pids.add(int(event.step.name[4:]))
                    if len(pids) == 2:
                        break
        await engine.cancel(ex.id)
        done = await finished(engine, ex)
        assert done.status is ExecutionStatus.CANCELLED
        assert done.abort_reason is AbortReason.USER
        steps = await engine.get_steps(ex.id)
        assert all(s.status.is_terminal for s in steps)
        for pid in pids:
            assert not _alive(pid), f"process {pid} of the cancelled tree is still running"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_10_mb_line_and_binary_output_are_stored(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        big = await submit_command(engine, [sys.executable, "-c", "import sys; sys.stdout.write('x' * 10_000_000)"])
        done = await finished(engine, big)
        assert done.status is ExecutionStatus.COMPLETED
        texts = await all_text(engine, big.id)
        # pieces of 65,536 characters, each but the last marked as going on
        assert all(t.endswith(CONTINUED) for t in texts[:-1]) and not texts[-1].endswith(CONTINUED)
        assert sum(len(t.removesuffix(CONTINUED)) for t in texts) == 10_000_000
        assert max(len(t) for t in texts) <= 65536 + len(CONTINUED)
        binary = await submit_command(engine,
            [sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4 + b'\\nend\\n')"])
        await finished(engine, binary)
        texts = await all_text(engine, binary.id)
        assert texts[-1] == "end"
        assert any("\ufffd" in t for t in texts)


async def test_workflow_dag_with_a_failure(tmp_path: Path) -> None:
    wf = tmp_path / "dag.yaml"
    wf.write_text(textwrap.dedent("""
        name: dag
        steps:
          - {name: setup, run: echo setup}
          - {name: lint, run: echo lint, needs: [setup]}
          - {name: test, run: "echo failing; exit 2", needs: [setup]}
          - {name: docs, run: echo docs, needs: [lint]}
          - {name: package, run: echo package, needs: [lint, test]}
          - {name: flaky, run: "exit 1", continue_on_error: true}
          - {name: after-flaky, run: echo ok, needs: [flaky]}
    """))
    async with engine_at(tmp_path / "data") as engine:
        done = await finished(engine, await submit_workflow(engine, wf))
        steps = by_name(await engine.get_steps(done.id))
        assert steps["setup"].status is StepStatus.COMPLETED
        assert steps["lint"].status is StepStatus.COMPLETED
        assert steps["docs"].status is StepStatus.COMPLETED
        assert steps["test"].status is StepStatus.FAILED and steps["test"].exit_code == 2
        assert steps["package"].status is StepStatus.SKIPPED
        assert "test" in (steps["package"].error_message or "")
        assert steps["flaky"].status is StepStatus.FAILED
        assert steps["after-flaky"].status is StepStatus.COMPLETED
        assert done.status is ExecutionStatus.FAILED
        assert "test" in (done.error_message or "")


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_independent_steps_run_in_parallel(tmp_path: Path) -> None:
    wf = tmp_path / "par.yaml"
    wf.write_text("name: par\nsteps:\n" + "".join(
        f"  - {{name: s{i}, run: 'sleep 0.5'}}\n" for i in range(4)))
    async with engine_at(tmp_path / "data") as engine:
        started = time.monotonic()
        done = await finished(engine, await submit_workflow(engine, wf))
        assert done.status is ExecutionStatus.COMPLETED
        assert time.monotonic() - started < 1.8  # 4 x 0.5 s sequentially would be 2 s


async def test_needs_across_branches_with_one_target_slot_and_a_skip_cascade(tmp_path: Path) -> None:
    # file order is not run order (`late` needs a step defined after it); with one target slot a
    # branch whose next step waits on another branch lets its slot go, or nothing could finish
    wf = tmp_path / "cross.yaml"
    wf.write_text(
        textwrap.dedent("""
        name: cross
        targets: {t1: {type: local}, t2: {type: local}}
        runs_on: [t1, t2]
        max_parallel_targets: 1
        steps:
          - {name: late, run: "echo STEP_START:m; echo STEP_COMPLETE:m", needs: [early2], runs_on: [t1]}
          - {name: early1, run: echo one, runs_on: [t1]}
          - {name: early2, run: echo two, needs: [early1], runs_on: [t2]}
          - {name: after-after, run: echo never, needs: [after-boom], runs_on: [t1]}
          - {name: boom, run: "exit 4", runs_on: [t2]}
          - {name: after-boom, run: echo never, needs: [boom], runs_on: [t2]}
    """)
    )
    async with engine_at(tmp_path / "data") as engine:
        done = await finished(engine, await submit_workflow(engine, wf))
        steps = {(s.target, s.name): s for s in await engine.get_steps(done.id)}
        for name in ("early1", "late"):
            assert steps[("t1", name)].status is StepStatus.COMPLETED
        assert steps[("t2", "early2")].status is StepStatus.COMPLETED
        assert steps[("t1", "m")].status is StepStatus.COMPLETED
        early1, early2, late = steps[("t1", "early1")], steps[("t2", "early2")], steps[("t1", "late")]
        assert early1.completed_at and early2.started_at and early2.completed_at and late.started_at
        assert early1.completed_at <= early2.started_at and early2.completed_at <= late.started_at
        assert steps[("t2", "boom")].status is StepStatus.FAILED
        assert steps[("t2", "after-boom")].status is StepStatus.SKIPPED
        assert steps[("t1", "after-after")].status is StepStatus.SKIPPED
        assert "'after-boom'" in (steps[("t1", "after-after")].error_message or "")
        assert done.status is ExecutionStatus.FAILED
        stored = await engine.store.get_execution(done.id)
        assert stored is not None
        # six workflow steps and one marker step; four of them completed; all ended, and progress
        # stays at the share done (4 of 7), not 100%: the status says it failed
        assert (stored.total_steps, stored.completed_steps, stored.progress_percentage) == (7, 4, 57.1)


async def test_invalid_workflow_is_refused_before_anything_runs(tmp_path: Path) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text("name: bad\nsteps:\n  - name: a\n    run: echo\n    needs: [b]\n")
    async with engine_at(tmp_path / "data") as engine:
        with pytest.raises(WorkflowError) as err:
            await submit_workflow(engine, wf)
        assert f"{wf}:5:" in str(err.value)
        executions, total = await engine.list_executions(__import__("engine.model").model.ExecutionFilter())
        assert total == 0


async def test_artifacts_markers_globs_and_escape_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    wf = work / "art.yaml"
    wf.write_text(textwrap.dedent("""
        name: art
        steps:
          - name: make
            run: |
              mkdir -p out
              echo '# hi' > out/report.md
              echo 'a,b' > out/data.csv
              echo '{}' > out/x.json
              echo "ARTIFACT:out/report.md:The report"
              echo "##teamcity[publishArtifacts 'out/data.csv']"
              echo "ARTIFACT:../secret.txt:sneaky"
            artifacts: ["out/*.json"]
    """))
    async with engine_at(tmp_path / "data") as engine:
        done = await finished(engine, await submit_workflow(engine, wf))
        assert done.status is ExecutionStatus.COMPLETED
        artifacts, total = await engine.list_artifacts(ArtifactFilter(execution_id=done.id))
        names = {a.file_name: a for a in artifacts}
        assert set(names) == {"report.md", "data.csv", "x.json"}
        report = names["report.md"]
        assert report.name == "The report" and report.artifact_type.value == "document"
        assert names["data.csv"].artifact_type.value == "data"
        assert report.file_size == 5 and len(report.sha256) == 64
        assert Path(report.file_path).read_text() == "# hi\n"
        assert Path(report.file_path).is_relative_to(tmp_path / "data" / "artifacts")
        texts = await all_text(engine, done.id)
        assert any("artifact refused" in t and "secret.txt" in t for t in texts)


async def test_secrets_are_masked_in_stored_lines(tmp_path: Path) -> None:
    wf = tmp_path / "sec.yaml"
    wf.write_text(textwrap.dedent("""
        name: sec
        env: {API_TOKEN: hunter2-very-secret}
        secrets: [API_TOKEN]
        steps:
          - name: leak
            run: |
              echo "token is $API_TOKEN"
              echo "::add-mask::later-secret"
              echo "and later-secret too"
    """))
    async with engine_at(tmp_path / "data") as engine:
        done = await finished(engine, await submit_workflow(engine, wf))
        texts = "\n".join(await all_text(engine, done.id))
        assert "hunter2-very-secret" not in texts
        assert "token is ***" in texts
        assert "and *** too" in texts
        stored = await engine.get_execution(done.id)
        assert stored is not None and stored.environment["API_TOKEN"] == "***"


async def test_retries_then_success(tmp_path: Path) -> None:
    marker = tmp_path / "once"
    wf = tmp_path / "retry.yaml"
    wf.write_text(f"name: r\nsteps:\n  - name: flaky\n    retries: 2\n"
                  f"    run: 'if [ -e {marker} ]; then echo ok; else touch {marker}; exit 1; fi'\n")
    async with engine_at(tmp_path / "data") as engine:
        done = await finished(engine, await submit_workflow(engine, wf))
        assert done.status is ExecutionStatus.COMPLETED
        assert any("retrying (attempt 2 of 3)" in t for t in await all_text(engine, done.id))


async def test_rerun_from_the_failed_step(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    wf = tmp_path / "rerun.yaml"
    wf.write_text(textwrap.dedent(f"""
        name: rerun
        steps:
          - {{name: build, run: echo built}}
          - {{name: test, run: "test -e {flag}", needs: [build]}}
    """))
    async with engine_at(tmp_path / "data") as engine:
        first = await finished(engine, await submit_workflow(engine, wf))
        assert first.status is ExecutionStatus.FAILED
        flag.touch()
        second = await finished(engine, await engine.rerun(first.id, from_failed=True))
        assert second.status is ExecutionStatus.COMPLETED
        assert second.rerun_of == first.id
        steps = by_name(await engine.get_steps(second.id))
        assert steps["build"].status is StepStatus.SKIPPED
        assert steps["build"].metadata["completed_in"] == first.id
        assert steps["test"].status is StepStatus.COMPLETED


async def test_shutdown_cancels_running_executions_and_records_it(tmp_path: Path) -> None:
    async with engine_at(tmp_path, kill_grace=0.5) as engine:
        sub = engine.subscribe()
        ex = await submit_command(engine, "echo STEP_START:long; sleep 60")
        async with asyncio.timeout(10):
            async for event in sub:
                if isinstance(event, StepAdded):
                    break
    from storage import SqliteStore
    from storage.paths import database_path

    store = SqliteStore(database_path(tmp_path))
    await store.open()
    try:
        stored = await store.get_execution(ex.id)
        assert stored is not None
        assert stored.status is ExecutionStatus.CANCELLED
        assert stored.abort_reason is AbortReason.SHUTDOWN
    finally:
        await store.close()


async def test_events_arrive_in_order_for_a_subscriber(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        sub = engine.subscribe()
        ex = await submit_command(engine, "echo STEP_START:a; echo hi; echo STEP_COMPLETE:a")
        kinds = []
        async with asyncio.timeout(10):
            async for event in sub:
                if event.execution_id == ex.id:
                    kinds.append(type(event).__name__)
                if isinstance(event, ExecutionFinished):
                    break
        assert kinds[0] == "ExecutionCreated"
        assert kinds.index("ExecutionStarted") < kinds.index("StepAdded") < kinds.index("ExecutionFinished")
        assert "LinesLogged" in kinds


async def test_subscribers_hear_of_an_execution_end_once_the_store_holds_it(tmp_path: Path) -> None:
    """Steps' events are written in batches; the end of an execution is told only once stored,
    with every step's start and end before it."""
    workflow = tmp_path / "three.yaml"
    workflow.write_text(textwrap.dedent("""
        name: three
        steps:
          - {name: a, run: /bin/true}
          - {name: b, run: /bin/true, needs: [a]}
          - {name: c, run: "true", needs: [b]}
    """))
    async with engine_at(tmp_path) as engine:
        sub = engine.subscribe()
        ex = await submit_workflow(engine, str(workflow))
        async with asyncio.timeout(30):
            async for event in sub:
                if isinstance(event, ExecutionFinished) and event.execution_id == ex.id:
                    break
        stored = await engine.store.get_execution(ex.id)
        assert stored is not None and stored.status is ExecutionStatus.COMPLETED
        steps = await engine.store.get_steps(ex.id)
        work = [s for s in steps if s.kind is StepKind.WORKFLOW]
        assert [s.name for s in work] == ["a", "b", "c"]
        assert all(s.status is StepStatus.COMPLETED and s.started_at and s.completed_at for s in work)


async def test_a_workflow_of_many_short_steps_runs_each_as_its_own_process(tmp_path: Path) -> None:
    """The dispatch path (bench/dispatch.py): each step still a process of its own session, with its
    env and cwd, its output captured per stream, and its start and end stored."""
    lines = ["name: many", "steps:"]
    for i in range(30):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  - {{name: s{i}, run: 'echo $$ $(ps -o sid= -p $$) $STEP_N $PWD; echo e{i} >&2',"
                     f" env: {{STEP_N: '{i}'}}, cwd: '{tmp_path}'{needs}}}")
    workflow = tmp_path / "many.yaml"
    workflow.write_text("\n".join(lines) + "\n")
    async with engine_at(tmp_path) as engine:
        done = await finished(engine, await submit_workflow(engine, str(workflow)))
        assert done.status is ExecutionStatus.COMPLETED, done.error_message
        steps = {s.id: s for s in await engine.store.get_steps(done.id)}
        work = [s for s in steps.values() if s.kind is StepKind.WORKFLOW]
        assert len(work) == 30 and all(s.status is StepStatus.COMPLETED and s.completed_at for s in work)
        out = [line for line in await engine.get_log_lines(done.id) if line.stream is Stream.STDOUT]
        err = [line for line in await engine.get_log_lines(done.id) if line.stream is Stream.STDERR]
        assert sorted(line.text for line in err) == sorted(f"e{i}" for i in range(30))
        pids = set()
        for line in out:
            pid, sid, n, cwd = line.text.split()
            assert pid == sid and cwd == str(tmp_path)  # a session of its own, in its cwd
            assert steps[line.step_id].name == f"s{n}"  # its env, and its output on its step
            pids.add(pid)
        assert len(pids) == 30


def test_no_zombies_left_in_this_process() -> None:
    children = psutil.Process(os.getpid()).children(recursive=True)
    assert not [c for c in children if c.status() == psutil.STATUS_ZOMBIE]


async def test_background_process_holding_output_does_not_hang_the_step(tmp_path: Path, monkeypatch) -> None:
    import engine.execution.command_pump as pump

    monkeypatch.setattr(pump, "LEFTOVER_GRACE", 0.3)
    async with engine_at(tmp_path, kill_grace=0.3) as engine:
        started = time.monotonic()
        done = await finished(engine, await submit_command(engine, "sleep 60 & echo started"))
        assert time.monotonic() - started < 10
        assert done.status is ExecutionStatus.COMPLETED
        texts = await all_text(engine, done.id)
        assert "started" in texts
        assert any("still hold its output open" in t for t in texts)


async def test_a_step_over_before_the_first_sample_keeps_cpu_and_rss(tmp_path: Path) -> None:
    """Sampling starts 0.1 s into a command (PRIME_DELAY); the figures of a shorter one come from
    the kernel when its leader is reaped."""
    import json
    import resource

    # A child's ru_maxrss starts at our own RSS: only a step above it has a figure of its own.
    big = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + 64_000_000
    workflow = tmp_path / "short.yaml"
    workflow.write_text(json.dumps({"name": "short", "steps": [
        {"name": "busy", "run": f'{sys.executable} -c "sum(range(3_000_000))"'},
        {"name": "big", "run": f"{sys.executable} -c 'block = b\"x\" * {big}'"},
    ]}))
    async with engine_at(tmp_path) as engine:
        done = await finished(engine, await submit_workflow(engine, str(workflow)))
        assert done.status is ExecutionStatus.COMPLETED, done.error_message
        steps = by_name(await engine.store.get_steps(done.id))
    assert steps["busy"].cpu_percent is not None and steps["busy"].cpu_percent > 0
    assert steps["big"].cpu_percent is not None and steps["big"].cpu_percent > 0
    assert steps["big"].rss_bytes is not None and steps["big"].rss_bytes >= big
