"""The Docker runner against a real Docker Engine API: podman's service, with a busybox image."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
from collections.abc import AsyncIterator

import docker
import pytest
from docker.models.containers import Container

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, SpawnError
from engine.runners.docker import LABEL, DockerRunner
from engine.runners.docker_files import glob_regex
from tests import runner_helpers
from tests.runner_helpers import run_and_close, silent_port, start_fails, terminate_timed


@pytest.fixture
async def runner(podman_socket: str, busybox_image: str) -> AsyncIterator[DockerRunner]:
    runner = DockerRunner(busybox_image, docker_host=podman_socket)
    yield runner
    await runner.close()


@pytest.fixture
def client(podman_socket: str):
    client = docker.DockerClient(base_url=podman_socket)
    yield client
    client.close()


#: containers start slower than processes: every wait here is this long
WITHIN = 30
collect = functools.partial(runner_helpers.collect, within=WITHIN)
run = functools.partial(runner_helpers.run, within=WITHIN)
start_ready = functools.partial(runner_helpers.start_ready, within=WITHIN)


async def test_runs_a_script_with_stdout_and_stderr_apart(runner):
    out, code = await run(runner, CommandSpec(script="echo '::step::build'; echo out; echo err >&2; exit 3"))
    assert out == {Stream.STDOUT: b"::step::build\nout\n", Stream.STDERR: b"err\n"}
    assert code == 3


async def test_output_is_streamed_live(podman_socket, busybox_image, tmp_path):
    runner = DockerRunner(busybox_image, docker_host=podman_socket, volumes=[f"{tmp_path}:/shared"])
    try:
        script = "echo first; while [ ! -e /shared/go ]; do sleep 0.02; done; echo second >&2"
        command = await runner.start(CommandSpec(script=script))
        output = command.output()
        async with asyncio.timeout(30):
            assert await anext(output) == (Stream.STDOUT, b"first\n")
            (tmp_path / "go").touch()  # the command only goes on once we have seen its first line
            assert await anext(output) == (Stream.STDERR, b"second\n")
            assert await command.wait() == 0
    finally:
        await runner.close()


async def test_argv_env_and_workdir(runner):
    out, code = await run(
        runner,
        CommandSpec(
            argv=["sh", "-c", 'pwd; echo "$GREETING"'], env={"GREETING": "hello 'world' $x"}, cwd="/tmp"
        ),
    )
    assert code == 0
    assert out[Stream.STDOUT] == b"/tmp\nhello 'world' $x\n"


async def test_script_falls_back_to_sh_without_bash(runner):
    out, code = await run(runner, CommandSpec(script="echo ${0##*/}"))
    assert (out[Stream.STDOUT], code) == (b"sh\n", 0)


async def test_exit_code_of_a_signal(runner):
    _, code = await run(runner, CommandSpec(script="sleep 10 & kill -KILL $!; wait $!"))
    assert code == 137


#: a script that cleans up, and exits 5, on SIGTERM
CLEANS_UP = "trap 'echo cleaning; exit 5' TERM; echo ready; while :; do sleep 0.1; done"


async def test_terminate_lets_a_command_clean_up_within_the_grace(runner):
    command, output = await start_ready(runner, CLEANS_UP)
    assert await terminate_timed(command, grace=10) < 8
    async with asyncio.timeout(30):
        assert await command.wait() == 5
        assert [chunk async for _, chunk in output] == [b"cleaning\n"]


async def test_terminate_stops_a_script_at_once_although_its_shell_would_be_pid_1(runner, client):
    # PID 1 of a container gets no default signal action: the script runs under one that passes
    # SIGTERM on, so stopping it does not wait the whole grace for SIGKILL
    command, output = await start_ready(runner, "echo ready; sleep 1000; echo never")
    assert await terminate_timed(command, grace=10) < 5
    async with asyncio.timeout(30):
        assert await command.wait() == 143  # SIGTERM, not the SIGKILL after the grace
        assert [chunk async for _, chunk in output] == []  # nor a "Terminated" notice


async def test_terminate_kills_after_the_grace(runner, client):
    # a script that ignores SIGTERM is killed once the grace is over
    command, _ = await start_ready(runner, "trap '' TERM; echo ready; sleep 1000")
    assert 0.9 < await terminate_timed(command, grace=1) < 15
    assert await command.wait() == 137
    container = await asyncio.to_thread(client.containers.get, command.container_id)
    assert container.status in ("exited", "stopped")


async def test_containers_are_removed_when_the_runner_closes(podman_socket, busybox_image, client):
    # Only this runner's containers: other test runs may share the daemon's storage.
    runner = DockerRunner(busybox_image, docker_host=podman_socket)
    try:
        commands = [await runner.start(CommandSpec(script="true")) for _ in range(2)]
        for command in commands:
            await collect(command)
            assert await command.wait() == 0
        mine = {"label": f"{LABEL}=1"}
        # The low-level list: the high-level one inspects each container it lists, and another
        # test's runner may remove its own container between the two calls.
        listed = await asyncio.to_thread(client.api.containers, all=True, filters=mine)
        ids = {c["Id"] for c in listed}
        assert {command.container_id for command in commands} <= ids
    finally:
        await runner.close()
    for command in commands:
        with pytest.raises(docker.errors.NotFound):
            await asyncio.to_thread(client.containers.get, command.container_id)


async def test_keep_leaves_the_container(podman_socket, busybox_image, client):
    runner = DockerRunner(busybox_image, docker_host=podman_socket, keep=True)
    command = await runner.start(CommandSpec(script="true"))
    await collect(command)
    await command.wait()
    await runner.close()
    container = await asyncio.to_thread(client.containers.get, command.container_id)
    await asyncio.to_thread(container.remove, force=True)


async def test_memory_and_cpu_limits_are_applied(podman_socket, busybox_image, client):
    runner = DockerRunner(busybox_image, docker_host=podman_socket, cpus=0.5, memory="64m", keep=True)
    try:
        command = await runner.start(CommandSpec(script="true"))
        await collect(command)
        await command.wait()
        container = await asyncio.to_thread(client.containers.get, command.container_id)
        assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000
        await asyncio.to_thread(container.remove, force=True)
    finally:
        await runner.close()


async def test_volumes_are_mounted(podman_socket, busybox_image, tmp_path):
    (tmp_path / "in.txt").write_text("from the host")
    runner = DockerRunner(busybox_image, docker_host=podman_socket, volumes=[f"{tmp_path}:/data"])
    script = "cat /data/in.txt; echo written > /data/out.txt"
    out, code = await run_and_close(runner, CommandSpec(script=script), WITHIN)
    assert (out[Stream.STDOUT], code) == (b"from the host", 0)
    assert (tmp_path / "out.txt").read_text() == "written\n"


@pytest.mark.parametrize("reuse", [False, True])
async def test_a_missing_image_is_a_spawn_error(podman_socket, reuse):
    runner = DockerRunner("nope", docker_host=podman_socket, reuse=reuse)
    assert await start_fails(runner) == "image 'nope:latest' not found"


async def test_an_unreachable_daemon_fails_quickly(tmp_path):
    url = f"unix://{tmp_path}/no-such.sock"
    message = await start_fails(DockerRunner("busybox", docker_host=url), within=5)
    assert message == f"cannot reach the Docker daemon at {url}: no such socket"


async def test_a_silent_daemon_times_out():
    async with silent_port() as port:
        runner = DockerRunner("busybox", docker_host=f"tcp://127.0.0.1:{port}", connect_timeout=0.5)
        message = await start_fails(runner, within=5)
    assert re.search(rf"cannot reach the Docker daemon at tcp://127.0.0.1:{port}: timed out", message)


# -- files ------------------------------------------------------------------------------------
MAKE_FILES = """
mkdir -p /work/reports/sub
echo '<a/>' > /work/reports/a.xml
echo '<b/>' > /work/reports/sub/b.xml
echo c > /work/reports/sub/c.txt
echo secret > /secret.xml
ln -s /secret.xml /work/reports/outside.xml
ln -s a.xml /work/reports/inside.xml
"""


@pytest.fixture
async def ran(runner) -> DockerRunner:
    _, code = await run(runner, CommandSpec(script=MAKE_FILES, cwd="/work"))
    assert code == 0
    return runner


async def test_fetch_copies_a_file_out_of_the_finished_container(ran, tmp_path):
    dest = tmp_path / "store" / "b.xml"
    assert await ran.fetch("reports/sub/b.xml", "/work", dest) == "/work/reports/sub/b.xml"
    assert dest.read_text() == "<b/>\n"
    assert await ran.fetch("/work/reports/inside.xml", "/work", tmp_path / "i") == "/work/reports/a.xml"
    assert (tmp_path / "i").read_text() == "<a/>\n"


@pytest.mark.parametrize("path", ["../secret.xml", "reports/outside.xml", "/etc/passwd"])
async def test_fetch_refuses_what_escapes_the_working_directory(ran, tmp_path, path):
    with pytest.raises(FetchError, match="escapes the working directory"):
        await ran.fetch(path, "/work", tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_fetch_refuses_a_missing_file_and_a_directory(ran, tmp_path):
    with pytest.raises(FetchError, match="not found"):
        await ran.fetch("reports/nope.xml", "/work", tmp_path / "x")
    with pytest.raises(FetchError, match="is a directory"):
        await ran.fetch("reports/sub", "/work", tmp_path / "x")


async def test_glob_lists_files_inside_cwd(ran):
    assert await ran.glob("reports/*.xml", "/work") == ["reports/a.xml", "reports/inside.xml"]
    assert await ran.glob("reports/**/*.txt", "/work") == ["reports/sub/c.txt"]
    assert await ran.glob("**/*.xml", "/work") == ["reports/a.xml", "reports/inside.xml", "reports/sub/b.xml"]
    assert await ran.glob("../*.xml", "/work") == []
    assert await ran.glob("/etc/*", "/work") == []
    assert await ran.glob("nothing/*", "/work") == []


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.xml", "a.xml", True),
        ("*.xml", "d/a.xml", False),
        ("**/*.xml", "a.xml", True),
        ("**/*.xml", "d/e/a.xml", True),
        ("r/**/x?.[tc]sv", "r/d/x1.csv", True),
        ("r/[!a]*", "r/a1", False),
        ("r/[!a]*", "r/b1", True),
    ],
)
def test_glob_regex_follows_pathlib(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches


async def test_runner_for_a_docker_target_of_a_workflow(podman_socket, busybox_image):
    from engine.runners.targets import runner_for
    from engine.workflow.load import DockerTarget

    runner = runner_for(
        DockerTarget(name="box", image=busybox_image, docker_host=podman_socket, workdir="/tmp")
    )
    assert isinstance(runner, DockerRunner)
    out, code = await run_and_close(runner, CommandSpec(script="pwd"), WITHIN)
    assert (out[Stream.STDOUT], code) == (b"/tmp\n", 0)


# -- the end of the output --------------------------------------------------------------------
# podman's log follow sometimes never ends (it misses the container's `died` event when the
# container exits between its state check and its subscription to events) and sometimes ends short
# of the last lines. The output must end, whole, when the container exits, whatever the follows do.
class _NeverEnding:
    """A log follow that gives nothing and never ends, until closed."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        self._closed.wait(60)
        raise StopIteration

    def close(self) -> None:
        self._closed.set()


@pytest.mark.parametrize("follow", ["never-ends", "ends-at-once"])
async def test_output_ends_whole_when_the_container_exits_whatever_the_follow_does(
    runner, monkeypatch, follow
):
    real_logs = Container.logs
    follows: list[object] = []

    def logs(self, **kwargs):
        if kwargs.get("follow"):
            follows.append(kwargs)
            return _NeverEnding() if follow == "never-ends" else iter(())
        return real_logs(self, **kwargs)

    monkeypatch.setattr(Container, "logs", logs)
    started = time.monotonic()
    out, code = await run(runner, CommandSpec(script="echo out; echo err >&2; sleep 0.5; echo last; exit 4"))
    assert out == {Stream.STDOUT: b"out\nlast\n", Stream.STDERR: b"err\n"}
    assert code == 4
    assert follows
    assert time.monotonic() - started < 15


async def test_a_follow_that_times_out_before_a_first_line_is_opened_again(runner):
    # podman sends a follow's headers only with the stream's first line: a stream silent for longer
    # than the API timeout times out, and must be followed again, not ended.
    command = await runner.start(CommandSpec(script="echo early; sleep 3; echo late >&2"))
    client = runner._client
    assert client is not None
    client.api.timeout = 1
    asyncio.get_running_loop().call_later(2.5, setattr, client.api, "timeout", 120)
    output = command.output()
    async with asyncio.timeout(30):
        assert await anext(output) == (Stream.STDOUT, b"early\n")
        started = time.monotonic()
        assert await anext(output) == (Stream.STDERR, b"late\n")
        assert time.monotonic() - started < 10  # live, not from the read after the exit
        assert [chunk async for _, chunk in output] == []
        assert await command.wait() == 0


# -- reuse: true ------------------------------------------------------------------------------
@pytest.fixture
async def reusing(podman_socket: str, busybox_image: str) -> AsyncIterator[DockerRunner]:
    runner = DockerRunner(busybox_image, docker_host=podman_socket, reuse=True)
    yield runner
    await runner.close()


async def processes(runner: DockerRunner) -> str:
    out, code = await run(runner, CommandSpec(argv=["ps", "-o", "pid,pgid,stat,args"]))
    assert code == 0
    return out[Stream.STDOUT].decode()


async def test_reuse_runs_every_command_in_one_container(reusing, client):
    first = await reusing.start(CommandSpec(script="echo one > /tmp/shared.txt; echo written"))
    assert await collect(first) == {Stream.STDOUT: b"written\n", Stream.STDERR: b""}
    assert await first.wait() == 0
    second = await reusing.start(CommandSpec(script="cat /tmp/shared.txt"))
    assert await collect(second) == {Stream.STDOUT: b"one\n", Stream.STDERR: b""}
    assert await second.wait() == 0
    assert first.container_id == second.container_id
    container = await asyncio.to_thread(client.containers.get, first.container_id)
    assert container.status == "running"
    assert container.labels.get(LABEL) == "1"


async def test_reuse_exit_codes_and_stdout_stderr_apart(reusing):
    out, code = await run(reusing, CommandSpec(script="echo '::step::build'; echo out; echo err >&2; exit 3"))
    assert out == {Stream.STDOUT: b"::step::build\nout\n", Stream.STDERR: b"err\n"}
    assert code == 3
    _, code = await run(reusing, CommandSpec(script="sleep 10 & kill -KILL $!; wait $!"))
    assert code == 137
    _, code = await run(reusing, CommandSpec(argv=["sh", "-c", "kill -TERM $$"]))
    assert code == 143
    out, code = await run(reusing, CommandSpec(script="echo ${0##*/}; printf 'no newline' >&2"))
    assert out == {Stream.STDOUT: b"sh\n", Stream.STDERR: b"no newline"}
    assert code == 0


async def test_reuse_env_and_workdir_per_command(reusing):
    spec = CommandSpec(
        argv=["sh", "-c", 'pwd; echo "[$GREETING]"'], env={"GREETING": "hello 'world' $x"}, cwd="/tmp"
    )
    out, code = await run(reusing, spec)
    assert (out[Stream.STDOUT], code) == (b"/tmp\n[hello 'world' $x]\n", 0)
    out, code = await run(reusing, CommandSpec(argv=["sh", "-c", 'pwd; echo "[$GREETING]"']))
    assert (out[Stream.STDOUT], code) == (b"/\n[]\n", 0)


async def test_reuse_output_is_streamed_live(reusing):
    command = await reusing.start(
        CommandSpec(script="echo first; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo second >&2")
    )
    output = command.output()
    async with asyncio.timeout(30):
        assert await anext(output) == (Stream.STDOUT, b"first\n")
        # the command goes on once another command, in the same container, made the file
        assert (await run(reusing, CommandSpec(argv=["touch", "/tmp/go"])))[1] == 0
        assert await anext(output) == (Stream.STDERR, b"second\n")
        assert [chunk async for _, chunk in output] == []
        assert await command.wait() == 0


async def test_reuse_a_silent_command_outlives_the_api_timeout(reusing):
    command = await reusing.start(CommandSpec(script="sleep 3; echo done"))
    client = reusing._client
    assert client is not None
    client.api.timeout = 1  # the exec's stream must not time out while the command is silent
    try:
        out = await collect(command)
        assert out == {Stream.STDOUT: b"done\n", Stream.STDERR: b""}
        async with asyncio.timeout(30):
            assert await command.wait() == 0
    finally:
        client.api.timeout = 120


async def test_reuse_terminate_lets_a_command_clean_up_within_the_grace(reusing):
    command, output = await start_ready(reusing, CLEANS_UP)
    assert await terminate_timed(command, grace=10) < 8
    async with asyncio.timeout(30):
        assert await command.wait() == 5
        # the whole group gets SIGTERM: busybox sh may say its `sleep` was "Terminated" on stderr
        rest = [(stream, chunk) async for stream, chunk in output]
        assert b"".join(chunk for stream, chunk in rest if stream is Stream.STDOUT) == b"cleaning\n"
    assert "cleaning" not in await processes(reusing)


async def test_reuse_terminate_kills_the_whole_tree_after_the_grace(reusing):
    # The whole tree ignores SIGTERM: only SIGKILL, after the grace, ends it.
    script = "trap '' TERM; sleep 1000 & (sleep 1001; true) & echo ready; wait"
    command, output = await start_ready(reusing, script)
    before = await processes(reusing)
    assert "sleep 1000" in before and "sleep 1001" in before
    assert 0.9 < await terminate_timed(command, grace=1) < 15
    async with asyncio.timeout(30):
        assert [chunk async for _, chunk in output] == []
        assert await command.wait() == 137
    after = await processes(reusing)
    assert "sleep 100" not in after
    assert not [line for line in after.splitlines()[1:] if line.split()[2].startswith("Z")], after
    # the container goes on serving commands
    out, code = await run(reusing, CommandSpec(script="echo still here"))
    assert (out[Stream.STDOUT], code) == (b"still here\n", 0)


async def test_reuse_terminate_of_a_finished_command_returns_at_once(reusing):
    command = await reusing.start(CommandSpec(script="true"))
    await collect(command)
    assert await command.wait() == 0
    assert await terminate_timed(command, grace=5) < 4


async def test_reuse_artifacts_come_from_the_live_container(reusing, tmp_path):
    _, code = await run(reusing, CommandSpec(script=MAKE_FILES, cwd="/work"))
    assert code == 0
    dest = tmp_path / "b.xml"
    assert await reusing.fetch("reports/sub/b.xml", "/work", dest) == "/work/reports/sub/b.xml"
    assert dest.read_text() == "<b/>\n"
    assert await reusing.glob("reports/*.xml", "/work") == ["reports/a.xml", "reports/inside.xml"]
    with pytest.raises(FetchError, match="escapes the working directory"):
        await reusing.fetch("reports/outside.xml", "/work", tmp_path / "x")
    # a later command's files, from the same container
    _, code = await run(reusing, CommandSpec(script="echo later > /work/reports/later.txt"))
    assert code == 0
    assert await reusing.fetch("reports/later.txt", "/work", tmp_path / "later") == "/work/reports/later.txt"
    assert (tmp_path / "later").read_text() == "later\n"


async def test_reuse_close_removes_the_container(podman_socket, busybox_image, client):
    runner = DockerRunner(busybox_image, docker_host=podman_socket, reuse=True)
    try:
        command = await runner.start(CommandSpec(script="sleep 1000"))
        container = await asyncio.to_thread(client.containers.get, command.container_id)
        assert container.status == "running"
    finally:
        started = time.monotonic()
        await runner.close()
    assert time.monotonic() - started < 15
    with pytest.raises(docker.errors.NotFound):
        await asyncio.to_thread(client.containers.get, command.container_id)


async def test_reuse_keep_leaves_the_container_stopped(podman_socket, busybox_image, client):
    runner = DockerRunner(busybox_image, docker_host=podman_socket, reuse=True, keep=True)
    try:
        _, code = await run(runner, CommandSpec(script="true"))
        assert code == 0
        container_id = runner._containers()[0].id
    finally:
        await runner.close()
    container = await asyncio.to_thread(client.containers.get, container_id)
    assert container.status in ("exited", "stopped")
    await asyncio.to_thread(container.remove, force=True)


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize(("argv", "code"), [(["no-such-program"], 127), (["/etc/passwd"], 126)])
async def test_a_program_that_cannot_run_has_the_exit_code_a_shell_gives(podman_socket, busybox_image, reuse,
                                                                        argv, code):
    """As the docker CLI (and a shell) gives it: 127 not found, 126 not executable."""
    runner = DockerRunner(busybox_image, docker_host=podman_socket, reuse=reuse)
    try:
        try:
            out, exit_code = await run(runner, CommandSpec(argv=argv))
        except SpawnError as exc:
            exit_code = exc.exit_code
        assert exit_code == code
    finally:
        await runner.close()
