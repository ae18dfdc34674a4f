"""Remote targets through the whole engine: a real SQLite file, real SSH servers (asyncssh's, in
this process, and OpenSSH's sshd), podman's Docker API, and the `stepflow` command as a user runs it.

Nothing here sleeps to wait for something: tests await the engine's events and results with
timeouts. The steps' own short sleeps are their workload (so that branches overlap), not waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import psutil
import pytest

from engine.engine import Engine, EngineConfig
from engine.events import LinesLogged, StepFinished
from engine.model import AbortReason, ArtifactFilter, ExecutionStatus, Step, StepKind, StepStatus
from engine.targets_file import load_user_targets, parse_user_targets, user_targets_path
from engine.workflow.load import DockerTarget, SshTarget, WorkflowError
from storage import SqliteStore
from storage.paths import database_path
from tests.engine_helpers import finished, submit_workflow
from tests.servers import SshServer, free_port

ROOT = Path(__file__).resolve().parent.parent

MARKER_SCRIPT = """\
echo "STEP_START:compile"
echo "compiling"
echo "STEP_PROGRESS:50"
echo "STEP_COMPLETE:compile"
echo "STEP_START:check"
echo "checked" >&2
echo "STEP_COMPLETE:check"
"""


# -- helpers ---------------------------------------------------------------------------------------
def ssh_target(server: SshServer, **extra: object) -> dict[str, object]:
    return {
        "type": "ssh",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key": server.client_key,
        "known_hosts": server.known_hosts,
        "connect_timeout": 5,
        **extra,
    }


def read_text(path: str | Path) -> str:
    return Path(path).read_text()


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def workflow_file(folder: Path, body: dict[str, object], name: str = "wf.yaml") -> Path:
    # JSON is YAML: no quoting of the scripts to get wrong
    path = folder / name
    path.write_text(json.dumps(body, indent=2))
    return path


async def _engine(data_dir: Path, targets: dict | None = None) -> Engine:
    config = EngineConfig(kill_grace=1.0, shutdown_grace=5, targets=dict(targets or {}))
    engine = Engine(SqliteStore(database_path(data_dir)), data_dir, config)
    await engine.start()
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = await _engine(tmp_path / "data")
    try:
        yield engine
    finally:
        await engine.shutdown()


def subtree(steps: Iterable[Step], root: Step) -> list[Step]:
    """`root` and every step below it."""
    steps = list(steps)
    found = [root]
    for step in sorted(steps, key=lambda s: s.index):
        if any(step.parent_id == parent.id for parent in found) and step not in found:
            found.append(step)
    return found


def branches(steps: Iterable[Step]) -> dict[str, Step]:
    return {s.target: s for s in steps if s.kind is StepKind.BRANCH}


def child(steps: Iterable[Step], parent: Step, name: str) -> Step:
    matches = [s for s in steps if s.parent_id == parent.id and s.name == name]
    assert len(matches) == 1, f"{name!r} under {parent.name!r}: {matches}"
    return matches[0]


async def stored_steps(engine: Engine, execution_id: str) -> list[Step]:
    """Steps as the SQLite file holds them (the run is over, so this is what `show` reads)."""
    await engine.writer.barrier()
    return await engine.store.get_steps(execution_id)


def no_process_with(token: str) -> list[str]:
    """Command lines of live processes whose command line holds `token`."""
    left = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if (
                token in cmdline
                and process.info["status"] != psutil.STATUS_ZOMBIE
                and process.pid != os.getpid()
            ):
                left.append(f"{process.pid}: {cmdline}")
        except psutil.Error:
            continue
    return left


# -- fan-out over SSH --------------------------------------------------------------------------------
async def test_two_ssh_targets_run_as_two_branches(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer, sshd_server: SshServer
) -> None:
    wf = workflow_file(
        tmp_path,
        {
            "name": "fanout",
            "targets": {"fast": ssh_target(asyncssh_server), "real": ssh_target(sshd_server)},
            "runs_on": ["fast", "real"],
            "env": {"GREETING": "hello there"},
            "steps": [
                {"name": "build", "run": MARKER_SCRIPT + 'echo "greeting: $GREETING"\n'},
                {
                    "name": "flaky",
                    "run": "echo about to fail; exit 7",
                    "needs": ["build"],
                    "continue_on_error": True,
                },
            ],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf))
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    assert done.targets == ["fast", "real"]
    steps = await stored_steps(engine, done.id)
    by_target = branches(steps)
    assert set(by_target) == {"fast", "real"}
    for target, branch in by_target.items():
        assert branch.status is StepStatus.COMPLETED
        build = child(steps, branch, "build")
        assert build.target == target and build.status is StepStatus.COMPLETED and build.exit_code == 0
        compile_step, check = child(steps, build, "compile"), child(steps, build, "check")
        assert compile_step.kind is StepKind.MARKER and compile_step.status is StepStatus.COMPLETED
        assert check.status is StepStatus.COMPLETED
        flaky = child(steps, branch, "flaky")
        assert flaky.status is StepStatus.FAILED and flaky.exit_code == 7
        # each branch's lines are stored under that branch's steps, and only there
        ids = [s.id for s in subtree(steps, branch)]
        lines = await engine.get_log_lines(done.id, step_ids=ids)
        texts = [line.text for line in lines]
        assert texts.count("compiling") == 1 and texts.count("checked") == 1
        assert texts.count("greeting: hello there") == 1 and texts.count("about to fail") == 1
        assert next(line for line in lines if line.text == "compiling").step_id == compile_step.id
        # stderr is a channel of its own, read apart: its line lands under whichever of the
        # build's steps is open when it arrives
        checked = next(line for line in lines if line.text == "checked")
        assert checked.stream.value == "stderr" and checked.step_id in {s.id for s in subtree(steps, build)}
    everything = [line.text for line in await engine.get_log_lines(done.id)]
    assert everything.count("compiling") == 2


async def test_an_unreachable_target_fails_its_branch_while_the_other_completes(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer
) -> None:
    closed = free_port()  # nothing listens there
    wf = workflow_file(
        tmp_path,
        {
            "name": "half",
            "targets": {
                "up": ssh_target(asyncssh_server),
                "down": {"type": "ssh", "host": "127.0.0.1", "port": closed, "connect_timeout": 3},
            },
            "runs_on": ["up", "down"],
            "steps": [
                {"name": "work", "run": MARKER_SCRIPT},
                {"name": "more", "run": "echo more", "needs": ["work"]},
            ],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf))
    steps = await stored_steps(engine, done.id)
    by_target = branches(steps)
    assert by_target["up"].status is StepStatus.COMPLETED
    assert child(steps, by_target["up"], "more").status is StepStatus.COMPLETED
    down = by_target["down"]
    assert down.status is StepStatus.FAILED
    work = child(steps, down, "work")
    assert work.status is StepStatus.FAILED
    expected = f"cannot connect to 127.0.0.1:{closed}: connection refused"
    assert expected in (work.error_message or "")
    assert expected in (down.error_message or "")
    assert child(steps, down, "more").status is StepStatus.SKIPPED
    assert done.status is ExecutionStatus.FAILED
    assert (done.error_message or "").startswith("down: ") and expected in (done.error_message or "")
    lines = await engine.get_log_lines(done.id, step_ids=[work.id])
    assert any(expected in line.text for line in lines)  # the reason is in the log too


async def test_a_dead_branch_is_failed_at_once_not_when_the_slowest_branch_ends(
    engine: Engine, tmp_path: Path
) -> None:
    # the local branch waits for a file that the test creates only once it has seen the dead
    # branch finished: before, a branch was finished with the whole execution ("running" meanwhile)
    go = tmp_path / "go"
    wf = workflow_file(
        tmp_path,
        {
            "name": "one-dead",
            "targets": {"down": {"type": "ssh", "host": "127.0.0.1", "port": free_port(), "connect_timeout": 3}},
            "runs_on": ["local", "down"],
            "steps": [
                {"name": "work", "run": f"while [ ! -e {go} ]; do sleep 0.05; done; echo done"},
                {"name": "more", "run": "echo more", "needs": ["work"]},
            ],
        },
    )
    subscription = engine.subscribe()
    execution = await submit_workflow(engine, wf)
    async with asyncio.timeout(30):
        async for event in subscription:
            step = getattr(event, "step", None)
            if isinstance(event, StepFinished) and step is not None and step.kind is StepKind.BRANCH:
                assert step.target == "down", "the local branch cannot end before the file exists"
                assert step.status is StepStatus.FAILED and "connection refused" in (step.error_message or "")
                break
    subscription.close()
    local_steps = {s.name: s for s in await engine.get_steps(execution.id) if s.target == "local"}
    assert local_steps["work"].status is StepStatus.RUNNING
    go.touch()
    done = await finished(engine, execution)
    by_target = branches(await stored_steps(engine, done.id))
    assert by_target["local"].status is StepStatus.COMPLETED and by_target["down"].status is StepStatus.FAILED
    assert by_target["down"].completed_at < by_target["local"].completed_at
    assert done.status is ExecutionStatus.FAILED
    assert (done.error_message or "").startswith("down: ") and "also failed" not in (done.error_message or "")


async def test_the_execution_error_names_every_branch_that_failed(engine: Engine, tmp_path: Path) -> None:
    refused = {"type": "ssh", "host": "127.0.0.1", "port": free_port(), "connect_timeout": 3}
    wf = workflow_file(
        tmp_path,
        {
            "name": "two-dead",
            "targets": {"first": refused, "second": refused, "third": refused},
            "runs_on": ["local", "first", "second", "third"],
            "steps": [{"name": "work", "run": "echo ok"}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf))
    assert done.status is ExecutionStatus.FAILED
    error = done.error_message or ""
    assert error.startswith("first: step 'work' failed: cannot connect") and "connection refused" in error
    assert error.endswith(" (also failed: second, third)")


async def test_allow_failed_targets_completes_with_a_dead_target(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer
) -> None:
    wf = workflow_file(
        tmp_path,
        {
            "name": "tolerant",
            "allow_failed_targets": True,
            "targets": {
                "up": ssh_target(asyncssh_server),
                "down": {"type": "ssh", "host": "127.0.0.1", "port": free_port(), "connect_timeout": 3},
            },
            "runs_on": ["up", "down"],
            "steps": [{"name": "work", "run": MARKER_SCRIPT}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf))
    assert done.status is ExecutionStatus.COMPLETED
    by_target = branches(await stored_steps(engine, done.id))
    assert by_target["up"].status is StepStatus.COMPLETED
    assert by_target["down"].status is StepStatus.FAILED


async def test_a_changed_host_key_fails_the_branch_clearly(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer, sshd_server: SshServer
) -> None:
    # the known_hosts file of one server names the other's key for its address and port
    known = tmp_path / "known_hosts"
    other_key = read_text(sshd_server.known_hosts).split(" ", 1)[1]
    write_text(known, f"[{asyncssh_server.host}]:{asyncssh_server.port} {other_key}")
    wf = workflow_file(
        tmp_path,
        {
            "name": "spoofed",
            "targets": {"spoofed": ssh_target(asyncssh_server, known_hosts=str(known))},
            "runs_on": ["spoofed"],
            "steps": [{"name": "work", "run": "echo should not run"}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf))
    assert done.status is ExecutionStatus.FAILED
    assert "host key" in (done.error_message or "").lower()
    assert "should not run" not in [line.text for line in await engine.get_log_lines(done.id)]


@pytest.mark.parametrize("server_name", ["asyncssh_server", "sshd_server"])
async def test_cancel_of_an_ssh_step_leaves_no_remote_process(
    engine: Engine, tmp_path: Path, server_name: str, request: pytest.FixtureRequest
) -> None:
    server: SshServer = request.getfixturevalue(server_name)
    # a unique sleep length marks the remote processes (a child in the background, and one in front)
    token = f"{uuid.uuid4().int % 10**6 + 10**6}.{uuid.uuid4().int % 10**6}"
    script = f"""\
echo "STEP_START:waiting"
sleep {token} &
echo "ready $$"
sleep {token}
"""
    wf = workflow_file(
        tmp_path,
        {
            "name": "long",
            "targets": {"remote": ssh_target(server)},
            "runs_on": ["remote"],
            "steps": [{"name": "long", "run": script}],
        },
    )
    subscription = engine.subscribe()
    ex = await submit_workflow(engine, wf)
    try:
        async with asyncio.timeout(20):
            async for event in subscription:
                if isinstance(event, LinesLogged) and any(t.startswith("ready ") for t in event.lines):
                    break
    finally:
        subscription.close()
    # the two sleeps, and the runner's wrapper shell whose command line holds the script
    assert len(no_process_with(f"sleep {token}")) >= 2, "the remote processes were not running"
    await engine.cancel(ex.id)
    done = await finished(engine, ex)
    assert done.status is ExecutionStatus.CANCELLED and done.abort_reason is AbortReason.USER
    steps = await stored_steps(engine, done.id)
    assert all(s.status.is_terminal for s in steps)
    assert child(steps, branches(steps)["remote"], "long").status is StepStatus.CANCELLED
    # the runner waits on the host until the process group is gone: nothing is left at this point
    assert no_process_with(token) == []


async def test_max_parallel_targets_is_respected(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer, sshd_server: SshServer
) -> None:
    # each step prints when it starts and ends on the host's clock (the same clock for both servers)
    script = 'echo "START $(date +%s.%N)"; sleep 0.4; echo "END $(date +%s.%N)"'
    targets = {f"t{i}": ssh_target(asyncssh_server if i % 2 else sshd_server) for i in range(5)}
    wf = workflow_file(
        tmp_path,
        {
            "name": "limited",
            "targets": targets,
            "runs_on": list(targets),
            "max_parallel_targets": 2,
            "steps": [{"name": "one", "run": script}, {"name": "two", "run": script, "needs": ["one"]}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf), timeout=60)
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    steps = await stored_steps(engine, done.id)
    spans: list[tuple[float, float]] = []
    for branch in branches(steps).values():
        lines = await engine.get_log_lines(done.id, step_ids=[s.id for s in subtree(steps, branch)])
        marks = [float(line.text.split()[1]) for line in lines if line.text.startswith(("START ", "END "))]
        assert len(marks) == 4
        spans.append((min(marks), max(marks)))  # the branch holds its slot from first start to last end
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2, f"{peak} branches ran at once (limit 2): {sorted(spans)}"


async def test_rerun_from_failed_reruns_only_the_failed_branch(
    engine: Engine, tmp_path: Path, asyncssh_server: SshServer, sshd_server: SshServer
) -> None:
    fixed = tmp_path / "fixed"
    # fails on the OpenSSH branch only (its session says which port it came in on), until fixed
    check = (
        f'echo "ran check"\n'
        f'case "$SSH_CONNECTION" in *" {sshd_server.port}") test -e {fixed} || exit 4;; esac\n'
    )
    wf = workflow_file(
        tmp_path,
        {
            "name": "rerun",
            "targets": {"fast": ssh_target(asyncssh_server), "real": ssh_target(sshd_server)},
            "runs_on": ["fast", "real"],
            "steps": [
                {"name": "build", "run": 'echo "ran build"'},
                {"name": "check", "run": check, "needs": ["build"]},
                {"name": "deploy", "run": 'echo "ran deploy"', "needs": ["check"]},
            ],
        },
    )
    first = await finished(engine, await submit_workflow(engine, wf))
    assert first.status is ExecutionStatus.FAILED
    first_steps = await stored_steps(engine, first.id)
    by_target = branches(first_steps)
    assert by_target["fast"].status is StepStatus.COMPLETED, by_target["fast"].error_message
    assert by_target["real"].status is StepStatus.FAILED
    assert child(first_steps, by_target["real"], "check").exit_code == 4

    fixed.touch()
    second = await finished(engine, await engine.rerun(first.id, from_failed=True))
    assert second.status is ExecutionStatus.COMPLETED, second.error_message
    assert second.rerun_of == first.id
    steps = await stored_steps(engine, second.id)
    by_target = branches(steps)
    assert by_target["fast"].status is StepStatus.SKIPPED  # nothing of it ran again
    assert by_target["fast"].metadata["completed_in"] == first.id
    assert by_target["real"].status is StepStatus.COMPLETED
    for name in ("build", "check", "deploy"):
        fast_step = child(steps, by_target["fast"], name)
        assert fast_step.status is StepStatus.SKIPPED
        assert fast_step.metadata["completed_in"] == first.id
    assert child(steps, by_target["real"], "build").metadata["completed_in"] == first.id
    assert child(steps, by_target["real"], "check").status is StepStatus.COMPLETED
    assert child(steps, by_target["real"], "deploy").status is StepStatus.COMPLETED
    # only the failed branch's steps ran: no line at all came from the other branch
    texts = [line.text for line in await engine.get_log_lines(second.id)]
    assert sorted(texts) == ["ran check", "ran deploy"]
    fast_ids = [s.id for s in subtree(steps, by_target["fast"])]
    assert await engine.get_log_lines(second.id, step_ids=fast_ids) == []


# -- user targets ---------------------------------------------------------------------------------
async def test_workflow_targets_override_user_targets(
    tmp_path: Path, asyncssh_server: SshServer, sshd_server: SshServer
) -> None:
    user = parse_user_targets(
        json.dumps(
            {
                "shared": ssh_target(sshd_server),
                "mine": ssh_target(sshd_server),
            }
        )
    )
    wf = workflow_file(
        tmp_path,
        {
            "name": "override",
            "targets": {"shared": ssh_target(asyncssh_server)},
            "runs_on": ["shared", "mine"],
            "steps": [{"name": "where", "run": 'echo "port ${SSH_CONNECTION##* }"'}],
        },
    )
    engine = await _engine(tmp_path / "data", user)
    try:
        done = await finished(engine, await submit_workflow(engine, wf))
        assert done.status is ExecutionStatus.COMPLETED, done.error_message
        steps = await stored_steps(engine, done.id)
        by_target = branches(steps)
        mine = await engine.get_log_lines(done.id, step_ids=[child(steps, by_target["mine"], "where").id])
        shared = await engine.get_log_lines(done.id, step_ids=[child(steps, by_target["shared"], "where").id])
        assert [line.text for line in mine] == [f"port {sshd_server.port}"]
        assert [line.text for line in shared] != [f"port {sshd_server.port}"]  # asyncssh's, not sshd's
    finally:
        await engine.shutdown()


def test_targets_file_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPFLOW_TARGETS_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_targets_path() == tmp_path / "xdg" / "stepflow" / "targets.yaml"
    assert load_user_targets() == {}  # no file: no targets
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_targets_path() == tmp_path / "home" / ".config" / "stepflow" / "targets.yaml"
    explicit = tmp_path / "mine.yaml"
    explicit.write_text(
        "web1: {type: ssh, host: example.org, user: deploy, key: keys/id}\n"
        "py: {type: docker, image: python:3.12-slim, volumes: ['/src:/src:ro']}\n"
    )
    monkeypatch.setenv("STEPFLOW_TARGETS_FILE", str(explicit))
    targets = load_user_targets()
    assert targets["web1"] == SshTarget(
        name="web1", host="example.org", user="deploy", key=str(tmp_path / "keys" / "id")
    )
    assert targets["py"] == DockerTarget(name="py", image="python:3.12-slim", volumes=["/src:/src:ro"])
    # a block copied from a workflow, `targets:` key and all, reads the same
    explicit.write_text("targets:\n  web1: {type: ssh, host: example.org}\n")
    assert list(load_user_targets()) == ["web1"]


def test_targets_file_mistakes_are_reported_with_their_place(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        textwrap.dedent("""\
        web1: {type: ssh, host: h, prot: 22}
        py: {type: dockr, image: x}
        local: {type: ssh, host: x}
        w: {type: ssh, host: h, port: 99999}
    """)
    )
    with pytest.raises(WorkflowError) as caught:
        load_user_targets(path)
    assert str(caught.value).splitlines() == [
        f"{path}:1:28: web1: unknown key 'prot' (did you mean 'port'?)",
        f"{path}:2:12: py.type: unknown target type 'dockr' (did you mean 'docker'?); "
        "expected one of 'local', 'ssh', 'docker', 'worker'",
        f"{path}:3:1: 'local' is the built-in local target; give this ssh target another name",
        f"{path}:4:31: w.port: must be at most 65535",
    ]
    path.write_text("- web1\n")
    with pytest.raises(WorkflowError, match=r":1:1: a targets file must be a mapping"):
        load_user_targets(path)


# -- the command line ---------------------------------------------------------------------------------
def stepflow(data: Path, targets_file: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), "STEPFLOW_TARGETS_FILE": str(targets_file)}
    return subprocess.run(
        [sys.executable, "-m", "stepflow.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_run_and_exec_with_a_target_from_the_targets_file(tmp_path: Path, sshd_server: SshServer) -> None:
    data = tmp_path / "data"
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(json.dumps({"box": ssh_target(sshd_server)}))
    wf = workflow_file(
        tmp_path,
        {
            "name": "cli",
            "steps": [
                {"name": "where", "run": MARKER_SCRIPT + 'echo "session ${SSH_CONNECTION:-none}"'},
            ],
        },
    )  # runs_on: local, unless overridden
    result = stepflow(data, targets_file, "run", str(wf), "--target", "box", "--plain", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f" {sshd_server.port}" in result.stdout  # the session came in on sshd's port
    listed = json.loads(stepflow(data, targets_file, "ls", "--json").stdout)
    assert listed[0]["targets"] == ["box"] and listed[0]["status"] == "completed"
    shown = json.loads(stepflow(data, targets_file, "show", listed[0]["id"], "--json").stdout)
    names = {(s["name"], s["kind"], s["target"]) for s in shown["steps"]}
    assert {("box", "branch", "box"), ("where", "workflow", "box"), ("compile", "marker", "box")} <= names

    result = stepflow(
        data, targets_file, "exec", "--target", "box", "--", "sh", "-c", "echo STEP_START:x; exit 3"
    )
    assert result.returncode == 3, result.stdout + result.stderr
    listed = json.loads(stepflow(data, targets_file, "ls", "--json").stdout)
    assert listed[0]["targets"] == ["box"] and listed[0]["exit_code"] == 3

    result = stepflow(data, targets_file, "run", str(wf), "--target", "nowhere", "--plain")
    assert result.returncode != 0 and "unknown target 'nowhere'" in result.stderr


def test_cli_targets_list_and_test(
    tmp_path: Path, sshd_server: SshServer, podman_socket: str, busybox_image: str
) -> None:
    targets_file = tmp_path / "targets.yaml"
    closed = free_port()
    targets_file.write_text(
        json.dumps(
            {
                "web1": ssh_target(sshd_server),
                "dead": {"type": "ssh", "host": "127.0.0.1", "port": closed, "connect_timeout": 2},
                "box": {"type": "docker", "image": busybox_image, "docker_host": podman_socket},
                "nobox": {
                    "type": "docker",
                    "image": "localhost/stepflow-no-such-image:1",
                    "docker_host": podman_socket,
                },
            }
        )
    )
    data = tmp_path / "data"
    listed = stepflow(data, targets_file, "targets", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "TYPE", "WHERE", "SOURCE"]
    assert ["local", "local", "this", "machine", "built-in"] in rows
    assert ["web1", "ssh", f"{sshd_server.user}@127.0.0.1:{sshd_server.port}", str(targets_file)] in rows
    assert ["box", "docker", busybox_image, "on", podman_socket, str(targets_file)] in rows

    ok = stepflow(data, targets_file, "targets", "test", "web1")
    assert ok.returncode == 0 and ok.stdout.startswith("web1: ok: "), ok.stdout + ok.stderr
    dead = stepflow(data, targets_file, "targets", "test", "dead")
    assert dead.returncode == 1
    assert dead.stdout.startswith(f"dead: FAILED: cannot connect to 127.0.0.1:{closed}: connection refused")
    box = stepflow(data, targets_file, "targets", "test", "box")
    assert box.returncode == 0 and box.stdout.startswith("box: ok: "), box.stdout + box.stderr
    nobox = stepflow(data, targets_file, "targets", "test", "nobox")
    assert nobox.returncode == 1 and "has no image 'localhost/stepflow-no-such-image:1'" in nobox.stdout
    assert len(nobox.stdout.strip().splitlines()) == 1
    unknown = stepflow(data, targets_file, "targets", "test", "nope")
    assert unknown.returncode == 2 and "unknown target 'nope'" in unknown.stderr


def test_cli_reaches_an_ssh_host_through_ssh_config_alone(tmp_path: Path, sshd_server: SshServer) -> None:
    """`{type: ssh, host: box}` goes where `Host box` of ~/.ssh/config says (its HostName, Port,
    User, IdentityFile and UserKnownHostsFile), not to port 22; a port the target names still wins."""
    home = tmp_path / "home"  # HOME of the `stepflow` processes: the user's own ~/.ssh is not read
    (home / ".ssh").mkdir(parents=True)
    closed = free_port()
    (home / ".ssh" / "config").write_text(
        textwrap.dedent(f"""\
        Host box stale
            HostName 127.0.0.1
            User {sshd_server.user}
            IdentityFile {sshd_server.client_key}
            UserKnownHostsFile {sshd_server.known_hosts}
        Host box
            Port {sshd_server.port}
        Host stale
            Port {closed}
        """)
    )
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(
        "box: {type: ssh, host: box}\n"
        f"pinned: {{type: ssh, host: stale, port: {sshd_server.port}}}\n"  # the config's port is wrong
        f"closed: {{type: ssh, host: box, port: {closed}, connect_timeout: 3}}\n"  # the config's is right
    )
    data = tmp_path / "data"
    # no agent: the key that logs in is the one the config names
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env |= {"HOME": str(home), "STEPFLOW_STORAGE_PATH": str(data), "STEPFLOW_TARGETS_FILE": str(targets_file)}

    def stepflow_at_home(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "stepflow.main", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )

    session = 'echo "session $SSH_CONNECTION"'
    result = stepflow_at_home("exec", "--target", "box", "-v", "--", "sh", "-c", session)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1 {sshd_server.port}" in result.stdout  # the session came in on sshd's port

    wf = workflow_file(tmp_path, {"name": "cfg", "steps": [{"name": "where", "run": session}]})
    result = stepflow_at_home("run", str(wf), "--target", "box", "--plain", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1 {sshd_server.port}" in result.stdout

    where = f"{sshd_server.user}@127.0.0.1:{sshd_server.port} (box in ~/.ssh/config)"
    listed = stepflow_at_home("targets", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert where in rows["box"], listed.stdout
    assert f"{sshd_server.user}@127.0.0.1:{sshd_server.port} (stale in ~/.ssh/config)" in rows["pinned"]
    assert f"{sshd_server.user}@127.0.0.1:{closed} (box in ~/.ssh/config)" in rows["closed"]
    tested = stepflow_at_home("targets", "test", "box")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.startswith(f"box: ok: {where} ran `echo ok`"), tested.stdout

    # the target's own port wins over the configuration's, both ways
    result = stepflow_at_home("exec", "--target", "pinned", "-v", "--", "sh", "-c", session)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1 {sshd_server.port}" in result.stdout
    refused = stepflow_at_home("targets", "test", "closed")
    assert refused.returncode == 1
    assert refused.stdout.startswith(
        f"closed: FAILED: cannot connect to {sshd_server.user}@127.0.0.1:{closed} (box in ~/.ssh/config): "
        "connection refused"
    ), refused.stdout


def test_an_ssh_target_leaves_what_it_does_not_name_to_ssh_config(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text("box: {type: ssh, host: box}\nopen: {type: ssh, host: box, known_hosts: null}\n")
    targets = load_user_targets(path)
    assert targets["box"] == SshTarget(name="box", host="box")
    box = targets["box"]
    assert isinstance(box, SshTarget)
    assert (box.port, box.user, box.key, box.known_hosts, box.connect_timeout) == (None,) * 5
    assert box.check_host_keys is True
    assert targets["open"] == SshTarget(name="open", host="box", check_host_keys=False)


# -- Docker ------------------------------------------------------------------------------------------
async def test_docker_target_runs_a_step_with_markers_env_and_an_artifact(
    engine: Engine, tmp_path: Path, podman_socket: str, busybox_image: str
) -> None:
    script = textwrap.dedent("""\
        echo "STEP_START:write"
        mkdir -p out && echo "report for $GREETING" > out/report.txt
        echo "STEP_COMPLETE:write"
        echo "STEP_START:check"
        echo "greeting=$GREETING in $(pwd)"
        echo "complaint" >&2
        echo "STEP_COMPLETE:check"
        exit 0
    """)
    wf = workflow_file(
        tmp_path,
        {
            "name": "boxed",
            "targets": {"box": {"type": "docker", "image": busybox_image, "docker_host": podman_socket}},
            "runs_on": ["box"],
            "env": {"GREETING": "hello box"},
            "steps": [{"name": "make", "run": script, "cwd": "/work", "artifacts": ["out/*.txt"]}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf), timeout=60)
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    steps = await stored_steps(engine, done.id)
    make = child(steps, branches(steps)["box"], "make")
    assert make.status is StepStatus.COMPLETED and make.exit_code == 0
    write, check = child(steps, make, "write"), child(steps, make, "check")
    assert write.status is StepStatus.COMPLETED and check.status is StepStatus.COMPLETED
    lines = await engine.get_log_lines(done.id)
    by_text = {line.text: line for line in lines}
    assert by_text["greeting=hello box in /work"].step_id == check.id
    assert by_text["complaint"].stream.value == "stderr"  # read apart from stdout, as it was written
    assert by_text["complaint"].step_id in {s.id for s in subtree(steps, make)}
    artifacts, _ = await engine.list_artifacts(ArtifactFilter(execution_id=done.id))
    assert [a.file_name for a in artifacts] == ["report.txt"]
    assert artifacts[0].step_id == make.id
    assert (await engine.read_artifact(artifacts[0].id)) == b"report for hello box\n"


async def test_docker_target_with_a_missing_image_fails_clearly(
    engine: Engine, tmp_path: Path, podman_socket: str
) -> None:
    image = "localhost/stepflow-no-such-image:1"
    wf = workflow_file(
        tmp_path,
        {
            "name": "noimage",
            "targets": {"box": {"type": "docker", "image": image, "docker_host": podman_socket}},
            "runs_on": ["box"],
            "steps": [{"name": "make", "run": "echo never"}],
        },
    )
    done = await finished(engine, await submit_workflow(engine, wf), timeout=60)
    assert done.status is ExecutionStatus.FAILED
    assert f"image '{image}' not found" in (done.error_message or "")
    steps = await stored_steps(engine, done.id)
    make = child(steps, branches(steps)["box"], "make")
    assert make.abort_reason is AbortReason.SPAWN_ERROR


# -- resource usage ---------------------------------------------------------------------------------
async def test_resource_usage_is_recorded_for_a_local_step(engine: Engine, tmp_path: Path) -> None:
    # busy for 2.5 s with ~50 MB held: two samples at least (the first reading of a process is 0%)
    busy = (
        f'{sys.executable} -c "import time; block = bytearray(50_000_000); end = time.monotonic() + 2.5\n'
        'while time.monotonic() < end: pass"'
    )
    wf = workflow_file(tmp_path, {"name": "busy", "steps": [{"name": "spin", "run": busy}]})
    done = await finished(engine, await submit_workflow(engine, wf))
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    spin = next(s for s in await stored_steps(engine, done.id) if s.name == "spin")
    assert spin.cpu_percent is not None and spin.cpu_percent > 20, spin.cpu_percent
    assert spin.rss_bytes is not None and spin.rss_bytes > 50_000_000
    assert spin.metadata["peak_rss_bytes"] >= spin.rss_bytes
