"""The finished `stepflow` command, run as a user would (a real process, a real data directory)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import samples

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = samples.SAMPLES  # this process's copy: runs write beside the file


def stepflow(data: Path, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "stepflow.main", *args],
        env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
    )


def spawn(data: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stepflow.main", *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_until(proc: subprocess.Popen, needle: str, limit: int = 200) -> str:
    """Read the child's output line by line until `needle` shows (the pytest timeout bounds it)."""
    seen = []
    assert proc.stdout is not None
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} never appeared in:\n{''.join(seen)}")


def ctrl_c_when_ready(proc: subprocess.Popen, needle: str = "ready") -> int:
    """Press Ctrl-C (SIGINT) once `needle` shows; the exit code. The child never outlives it."""
    try:
        read_until(proc, needle)
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()


def wait_for_stored_line(db: Path, text: str, timeout: float = 10) -> None:
    """The line is in the database (written by another process: the file is the only channel)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
            if conn.execute("SELECT 1 FROM log_lines WHERE text = ?", (text,)).fetchone():
                return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} was not stored within {timeout} s")


def ls_json(data: Path, *args: str) -> list[dict]:
    result = stepflow(data, "ls", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_sample_workflow_succeeds_with_plain_output(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "run", str(SAMPLES / "build-and-test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "execution" in result.stdout
    assert "package" in result.stdout and "completed" in result.stdout
    [execution] = ls_json(tmp_path)
    assert execution["status"] == "completed"
    assert execution["id"] in result.stdout


def test_stop_on_error_sample_exits_1(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "run", str(SAMPLES / "stop-on-error.yaml"))
    assert result.returncode == 1
    assert "database unreachable" in result.stdout
    [execution] = ls_json(tmp_path)
    assert execution["status"] == "failed"
    show = json.loads(stepflow(tmp_path, "show", execution["id"][:8], "--json").stdout)
    steps = {s["name"]: s for s in show["steps"]}
    assert steps["deploy"]["status"] == "skipped"
    assert steps["database_check"]["status"] == "failed"
    assert steps["database_check"]["parent_id"] == steps["checks"]["id"]


def test_validate_reports_file_line_column(tmp_path: Path) -> None:
    bad = tmp_path / "my.yaml"
    bad.write_text(textwrap.dedent("""\
        name: demo
        steps:
          - name: test
            run: pytest
          - name: deploy
            run: ./deploy.sh
            needs: [tset]
    """))
    result = stepflow(tmp_path, "validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:7:" in result.stderr
    assert "unknown step 'tset'" in result.stderr
    assert "Traceback" not in result.stderr
    good = stepflow(tmp_path, "validate", str(SAMPLES / "build-and-test.yaml"))
    assert good.returncode == 0 and "ok" in good.stdout


def test_run_of_an_invalid_file_runs_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - name: a\n    rn: echo\n")
    result = stepflow(tmp_path, "run", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4:5:" in result.stderr
    assert ls_json(tmp_path) == []


def test_schema_is_json_schema(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "schema")
    schema = json.loads(result.stdout)
    assert "steps" in json.dumps(schema)
    assert schema.get("$schema", "").startswith("https://json-schema.org/")


def test_exec_show_ls_and_logs(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "exec", "--name", "deploy", "--", "bash", str(SAMPLES / "scripts" / "deploy.sh"))
    assert result.returncode == 0, result.stderr
    failing = stepflow(tmp_path, "exec", "--shell", "--", "echo STEP_START:x; echo boom >&2; exit 4")
    assert failing.returncode == 4  # exec ends as its command did
    executions = ls_json(tmp_path)
    assert [e["status"] for e in executions] == ["failed", "completed"]  # newest first
    assert ls_json(tmp_path, "--status", "failed")[0]["exit_code"] == 4
    deploy_id = executions[1]["id"]
    detail = json.loads(stepflow(tmp_path, "show", deploy_id, "--json").stdout)
    assert set(detail) == {"execution", "steps", "artifacts"}
    for key in ("id", "name", "command", "working_directory", "status", "exit_code", "error_message",
                "created_at", "started_at", "completed_at", "environment", "user", "tags", "total_steps",
                "completed_steps", "current_step_index", "duration_seconds", "progress_percentage", "metadata"):
        assert key in detail["execution"], key
    names = [s["name"] for s in detail["steps"]]
    assert names == ["local", "environment_setup", "build", "migrate", "restart"]
    assert all("parent_id" in s for s in detail["steps"])
    logs = stepflow(tmp_path, "logs", deploy_id[:6]).stdout.splitlines()
    assert logs[0] == "META:DESCRIPTION:Deploy the sample service"
    assert "service is up" in logs
    build = stepflow(tmp_path, "logs", deploy_id, "--step", "build").stdout.splitlines()
    assert build[0] == "STEP_START:build --duration=3"
    assert "compiling module 3" in build and "service is up" not in build
    human = stepflow(tmp_path, "show", deploy_id[:8])
    assert "environment_setup" in human.stdout and "completed" in human.stdout
    missing = stepflow(tmp_path, "show", "ffffffff")
    assert missing.returncode == 1 and "no execution" in missing.stderr


def test_show_prints_cpu_and_rss_of_steps_over_before_the_first_sample(tmp_path: Path) -> None:
    workflow = tmp_path / "short.yaml"
    # Above the peak RSS of the `stepflow run` process, which a child's ru_maxrss starts at; and
    # that one starts at ours (the kernel carries a vforking parent's peak over the exec): after
    # the whole suite's imports and the API tests, this process may be past 300 MB.
    ours_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    big_mb = max(300, ours_mb + 200)
    workflow.write_text(json.dumps({"name": "short", "steps": [
        {"name": "busy", "run": f'{sys.executable} -c "sum(range(3_000_000))"'},
        {"name": "big", "run": f"{sys.executable} -c 'block = b\"x\" * {big_mb}_000_000'"},
    ]}))
    result = stepflow(tmp_path, "run", str(workflow))
    assert result.returncode == 0, result.stdout + result.stderr
    [execution] = ls_json(tmp_path)
    shown = stepflow(tmp_path, "show", execution["id"][:8]).stdout
    lines = {line.split()[1]: line for line in shown.splitlines() if line.strip().startswith("✓ ")}
    assert re.search(r"  cpu \d+%", lines["busy"]), shown
    # sizes read as everywhere else (stepflow_tui.formatting): binary units, one decimal
    rss = re.search(r"  cpu \d+% rss (\d+\.\d) (MiB|GiB)\b", lines["big"])
    assert rss is not None, shown
    shown_bytes = float(rss[1]) * 1024 ** (2 if rss[2] == "MiB" else 3)
    assert shown_bytes >= big_mb * 1_000_000 * 0.9, shown


def test_ctrl_c_cancels_and_exits_130(tmp_path: Path) -> None:
    proc = spawn(tmp_path, "exec", "--plain", "-v", "--kill-grace", "1", "--shell", "--",
                 "echo STEP_START:wait; echo ready; sleep 60")
    assert ctrl_c_when_ready(proc) == 130
    [execution] = ls_json(tmp_path)
    assert execution["status"] == "cancelled"
    assert execution["abort_reason"] == "user"


def test_kill_9_mid_run_then_start_again_marks_engine_lost(tmp_path: Path) -> None:
    script = "for i in $(seq 1 50); do echo line-$i; done; echo STEP_START:busy; echo ready; sleep 60"
    proc = spawn(tmp_path, "exec", "--plain", "-v", "--shell", "--", script)
    try:
        read_until(proc, "ready")
        wait_for_stored_line(tmp_path / "stepflow.db", "ready")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # the killed engine's command is an orphan now; a new engine start finds the execution lost
    again = stepflow(tmp_path, "exec", "--shell", "--", "true")
    assert again.returncode == 0
    executions = ls_json(tmp_path)
    lost = executions[-1]
    assert lost["status"] == "failed"
    assert lost["abort_reason"] == "engine lost"
    logs = stepflow(tmp_path, "logs", lost["id"]).stdout.splitlines()
    assert logs[:50] == [f"line-{i}" for i in range(1, 51)]
    assert "ready" in logs


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_validates(sample: str, tmp_path: Path) -> None:
    result = stepflow(tmp_path, "validate", str(SAMPLES / sample))
    assert result.returncode == 0, result.stderr


def test_rerun_from_failed_on_the_command_line(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"name: two\nsteps:\n  - {{name: build, run: echo built}}\n"
                  f"  - {{name: test, run: 'test -e {flag}', needs: [build]}}\n")
    first = stepflow(tmp_path / "data", "run", str(wf))
    assert first.returncode == 1
    [failed] = ls_json(tmp_path / "data")
    flag.touch()
    again = stepflow(tmp_path / "data", "rerun", failed["id"][:8], "--from-failed")
    assert again.returncode == 0, again.stdout + again.stderr
    newest = ls_json(tmp_path / "data")[0]
    assert newest["rerun_of"] == failed["id"] and newest["status"] == "completed"
    steps = {s["name"]: s for s in json.loads(stepflow(tmp_path / "data", "show", newest["id"], "--json").stdout)["steps"]}
    assert steps["build"]["status"] == "skipped" and steps["test"]["status"] == "completed"


def test_logs_follow_prints_lines_as_they_come_and_stops_at_the_end(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    runner = spawn(tmp_path, "exec", "--plain", "-v", "--shell", "--",
                   f"echo first; echo ready; while [ ! -e {flag} ]; do sleep 0.05; done; "
                   "for i in 1 2 3; do echo later-$i; done")
    follower = None
    try:
        read_until(runner, "ready")
        [execution] = ls_json(tmp_path)
        follower = spawn(tmp_path, "logs", execution["id"], "-f")
        seen = read_until(follower, "ready")
        assert "later" not in seen
        flag.touch()  # only now does the command print the rest: the follower must pick it up live
        seen += read_until(follower, "later-3")
        assert follower.wait(timeout=30) == 0  # and it ends by itself when the execution ends
        assert runner.wait(timeout=30) == 0
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert seen.splitlines() == ["first", "ready", "later-1", "later-2", "later-3"]


@pytest.mark.parametrize(("args", "needle"), [
    (("--port", "99999"), "99999 is not a port number for the API"),
    (("--port", "0", "--ws-port", "70000"), "70000 is not a port number for the WebSocket"),
])
def test_serve_with_a_port_out_of_range_says_so_without_a_traceback(tmp_path: Path, args: tuple[str, ...],
                                                                    needle: str) -> None:
    result = stepflow(tmp_path, "serve", *args, timeout=30)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_busy_port_says_so_without_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = stepflow(tmp_path, "serve", "--port", port, "--ws-port", "0", timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"stepflow: cannot serve the API on 127.0.0.1:{port}: the port is already in use")
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_plain_output_keeps_long_lines_whole_and_names_the_branch_of_a_failed_step(tmp_path: Path) -> None:
    # two SSH targets nobody listens on: both branches fail at once, with a long message each
    refused = "{type: ssh, host: 127.0.0.1, port: 1, user: nobody, known_hosts: null}"
    workflow = tmp_path / "two.yaml"
    workflow.write_text(textwrap.dedent(f"""\
        name: two-hosts
        targets:
          first-host-with-a-long-name: {refused}
          second-host-with-a-long-name: {refused}
        runs_on: [first-host-with-a-long-name, second-host-with-a-long-name]
        steps:
          - {{name: hello, run: echo hi}}
        """))
    result = stepflow(tmp_path / "data", "run", str(workflow), "--plain")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("✗ first-host-with-a-long-name › hello failed")]
    assert len(failed) == 1 and failed[0].endswith("connection refused"), result.stdout
    assert any(len(line) > 80 for line in lines)
    for branch in ("first-host-with-a-long-name", "second-host-with-a-long-name"):
        assert f"── last lines of {branch} › hello ──" in lines, result.stdout


def test_serve_host_binds_the_websocket_port_there_too(tmp_path: Path) -> None:
    import aiohttp

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")},
           "STEPFLOW_STORAGE_PATH": str(tmp_path), "STEPFLOW_AUTH_ENABLED": "true", "PYTHONUNBUFFERED": "1"}
    token = subprocess.run([sys.executable, "-m", "stepflow.main", "token", "create"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    proc = subprocess.Popen([sys.executable, "-m", "stepflow.main", "serve", "--host", "0.0.0.0",
                             "--port", "0", "--ws-port", "0"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        shown = read_until(proc, "WebSocket")
        match = re.search(r"WebSocket\s+ws://([^:\s]+):(\d+)", shown)
        assert match is not None and match[1] == "0.0.0.0", shown

        async def first_message() -> dict:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                f"ws://127.0.0.1:{match[2]}/", headers={"Authorization": f"Bearer {token}"},
            ) as ws:
                return json.loads((await ws.receive(timeout=10)).data)

        import asyncio

        assert asyncio.run(first_message())["type"] == "connection_established"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0


@pytest.mark.parametrize("days", ["0", "-1", "nan"])
def test_token_create_refuses_a_token_expired_at_birth(tmp_path: Path, days: str) -> None:
    result = stepflow(tmp_path, "token", "create", "--days", days)
    assert result.returncode == 2 and result.stdout == ""
    assert "--days must be a positive number of days" in result.stderr


def test_token_create_prints_the_token_alone(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "token", "create", "--days", "1")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and result.stdout.count(".") == 2


@pytest.mark.parametrize("command", [("serve", "--port", "0", "--ws-port", "0"), ("token", "create"), ("ls",),
                                     ("run", str(SAMPLES / "build-and-test.yaml"))])
@pytest.mark.parametrize("below", ["", "sub"])
def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path, command: tuple[str, ...], below: str) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    result = stepflow(tmp_path, *command, "--data-dir", str(a_file / below), timeout=30)
    assert result.returncode == 2
    assert "as the data directory" in result.stderr and "Traceback" not in result.stderr


def test_logs_of_several_branches_say_which_target_each_line_is_from(tmp_path: Path) -> None:
    workflow = tmp_path / "two.yaml"
    workflow.write_text(textwrap.dedent("""\
        name: two
        targets:
          down: {type: ssh, host: 127.0.0.1, port: 1, user: nobody, known_hosts: null}
        runs_on: [local, down]
        steps:
          - {name: hello, run: echo hello from here}
        """))
    data = tmp_path / "data"
    assert stepflow(data, "run", str(workflow), "--plain").returncode == 1
    execution_id = ls_json(data)[0]["id"]
    lines = stepflow(data, "logs", execution_id, "--step", "hello").stdout.splitlines()
    assert "[local] hello from here" in lines
    assert any(line.startswith("[down] [stepflow] error: cannot connect") for line in lines), lines
    # one branch: the lines as the command printed them
    single = stepflow(data, "exec", "--", "echo", "just me")
    assert single.returncode == 0
    assert stepflow(data, "logs", ls_json(data)[0]["id"]).stdout == "just me\n"


def test_exec_of_a_shell_line_as_one_word_points_to_shell(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "exec", "--", "echo a && echo b")
    assert result.returncode == 2 and ls_json(tmp_path) == []  # nothing was run or recorded
    assert "stepflow exec --shell -- 'echo a && echo b'" in result.stderr
    shell = stepflow(tmp_path, "exec", "--shell", "-v", "--plain", "--", "echo a && echo b")
    assert shell.returncode == 0 and "  a\n  b\n" in shell.stdout
    # a program whose path holds a space still runs as one
    program = tmp_path / "my tool"
    program.write_text("#!/bin/sh\necho tool ran\n")
    program.chmod(0o755)
    ran = stepflow(tmp_path, "exec", "-v", "--plain", "--", str(program))
    assert ran.returncode == 0 and "tool ran" in ran.stdout


async def test_the_tuis_listener_on_a_busy_port_names_the_tuis_own_option(tmp_path: Path) -> None:
    """The TUI notes why its API did not start; the fix it names must be an option `tui` has."""
    import argparse
    import socket

    from stepflow.wiring import start_api
    from stepflow_tui.cli.errors import CliError
    from tests.engine_helpers import engine_at

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with engine_at(tmp_path / "data") as engine:
            args = argparse.Namespace(api_host=None, api_port=port)
            with pytest.raises(CliError) as info:
                await start_api(engine, tmp_path / "data", args)
    assert "already in use" in str(info.value) and "--api-port" in str(info.value)


@pytest.mark.parametrize(("expires", "seconds"), [(None, 7 * 86400), ("1h", 3600), ("30m", 1800), ("2w", 14 * 86400),
                                                  ("never", None)])
def test_token_create_lifetime_and_the_id_to_revoke(tmp_path: Path, expires: str | None,
                                                    seconds: int | None) -> None:
    import jwt

    result = stepflow(tmp_path, "token", "create", *(("--expires", expires) if expires else ()))
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims.get("exp") == (None if seconds is None else claims["iat"] + seconds)
    assert f"token id {claims['jti']} " in result.stderr
    assert f"stepflow token revoke {claims['jti']}" in result.stderr


@pytest.mark.parametrize("args", [("--expires", "soon"), ("--expires", "0h"), ("--expires", "-1d"),
                                  ("--expires", "1h", "--days", "1")])
def test_token_create_explains_a_bad_lifetime(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = stepflow(tmp_path, "token", "create", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert "--expires" in result.stderr and "Traceback" not in result.stderr


def test_token_revoke_by_id_or_by_token(tmp_path: Path) -> None:
    from api_compat.auth import read_revoked, revoked_path

    first = stepflow(tmp_path, "token", "create").stdout.strip()
    second = stepflow(tmp_path, "token", "create").stdout.strip()
    import jwt

    first_id = jwt.decode(first, options={"verify_signature": False})["jti"]
    second_id = jwt.decode(second, options={"verify_signature": False})["jti"]
    result = stepflow(tmp_path, "token", "revoke", first_id)
    assert result.returncode == 0 and f"revoked token {first_id}" in result.stderr
    result = stepflow(tmp_path, "token", "revoke", second)  # the whole token works too
    assert result.returncode == 0 and f"revoked token {second_id}" in result.stderr
    result = stepflow(tmp_path, "token", "revoke", first_id)
    assert result.returncode == 0 and "already revoked" in result.stderr
    assert read_revoked(tmp_path) == {first_id, second_id}
    assert stat.S_IMODE(revoked_path(tmp_path).stat().st_mode) == 0o600
    for bad in ("not an id!", "a.b.c"):
        result = stepflow(tmp_path, "token", "revoke", bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_serve_allowed_host_adds_a_name_the_listener_answers_to(tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    proc = spawn(tmp_path, "serve", "--port", "0", "--ws-port", "0", "--allowed-host", "box.lan")
    try:
        shown = read_until(proc, "serving")
        match = re.search(r"serving http://127\.0\.0\.1:(\d+)", shown)
        assert match is not None, shown

        async def statuses() -> list[int]:
            async with aiohttp.ClientSession() as session:
                result = []
                for host in ("box.lan", f"box.lan:{match[1]}", "elsewhere.lan"):
                    async with session.get(f"http://127.0.0.1:{match[1]}/api/health",
                                           headers={"Host": host}) as resp:
                        result.append(resp.status)
                return result

        assert asyncio.run(statuses()) == [200, 200, 403]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
