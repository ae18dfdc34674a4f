"""The SSH runner against real SSH servers on loopback: asyncssh's, and OpenSSH's sshd."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import psutil
import pytest

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, SpawnError
from engine.runners.ssh import SshRunner
from engine.runners.ssh_config import resolve_destination
from engine.runners.ssh_pool import SshConnectionPool
from tests.runner_helpers import (
    collect,
    make_reports,
    run,
    run_and_close,
    silent_port,
    start_fails,
    start_ready,
    terminate_timed,
)
from tests.servers import SshServer, free_port


@pytest.fixture(params=["asyncssh", "openssh"])
def server(request: pytest.FixtureRequest) -> SshServer:
    return request.getfixturevalue("asyncssh_server" if request.param == "asyncssh" else "sshd_server")


def runner_for(server: SshServer, **options) -> SshRunner:
    options.setdefault("pool", SshConnectionPool())
    return SshRunner(
        server.host,
        server.port,
        server.user,
        key=options.pop("key", server.client_key),
        known_hosts=options.pop("known_hosts", server.known_hosts),
        **options,
    )


@pytest.fixture
async def runner(server: SshServer) -> AsyncIterator[SshRunner]:
    runner = runner_for(server)
    yield runner
    await runner.close()


def alive_with(token: str) -> list[psutil.Process]:
    """Processes of this machine (the SSH host) whose command line holds `token`, zombies aside."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(token in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def tcp_connections_to(port: int) -> int:
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


# -- running ----------------------------------------------------------------------------------
async def test_output_comes_through_with_stdout_and_stderr_apart(runner):
    script = "echo '::step::build'; echo 'hello out'; echo 'hello err' >&2; printf 'no newline'"
    out, code = await run(runner, CommandSpec(script=script))
    assert code == 0
    assert out[Stream.STDOUT] == b"::step::build\nhello out\nno newline"
    assert out[Stream.STDERR] == b"hello err\n"


async def test_output_is_streamed_live(runner, tmp_path):
    flag = tmp_path / "go"
    script = f"echo first; while [ ! -e {flag} ]; do sleep 0.02; done; echo second"
    command = await runner.start(CommandSpec(script=script))
    seen = b""
    async with asyncio.timeout(20):
        async for stream, chunk in command.output():
            assert stream is Stream.STDOUT
            seen += chunk
            if seen == b"first\n":
                flag.touch()  # the command only goes on once we have seen its first line
        assert seen == b"first\nsecond\n"
        assert await command.wait() == 0


async def test_large_binary_output_arrives_whole(runner):
    script = "head -c 3000000 /dev/zero | tr '\\0' 'x'; printf '\\377\\000end'"
    out, code = await run(runner, CommandSpec(script=script))
    assert code == 0
    assert out[Stream.STDOUT] == b"x" * 3_000_000 + b"\xff\x00end"


@pytest.mark.parametrize(("script", "expected"), [("true", 0), ("exit 3", 3), ("exit 255", 255)])
async def test_exit_codes(runner, script, expected):
    _, code = await run(runner, CommandSpec(script=script))
    assert code == expected


async def test_a_signal_gives_128_plus_its_number(runner):
    _, code = await run(runner, CommandSpec(script="kill -TERM $$"))
    assert code == 128 + 15


async def test_env_and_cwd(runner, tmp_path):
    workdir = tmp_path / "a dir with 'quotes'"
    workdir.mkdir()
    env = {"GREETING": "hello 'world' \"and\" $HOME `x`", "MULTI": "line1\nline2"}
    script = 'pwd; printf "%s|%s\\n" "$GREETING" "$MULTI"'
    out, code = await run(runner, CommandSpec(script=script, env=env, cwd=str(workdir)))
    assert code == 0, out
    assert out[Stream.STDOUT] == f"{workdir}\n{env['GREETING']}|line1\nline2\n".encode()


async def test_argv_is_run_without_a_shell_interpreting_it(runner, tmp_path):
    out, code = await run(runner, CommandSpec(argv=["printf", "%s|", "a b", "$HOME", "*"], cwd=str(tmp_path)))
    assert code == 0
    assert out[Stream.STDOUT] == b"a b|$HOME|*|"


async def test_script_runs_with_bash(runner):
    out, _ = await run(runner, CommandSpec(script='echo "$BASH_VERSION" | cut -c1'))
    assert out[Stream.STDOUT].strip().isdigit()


async def test_missing_working_directory_is_a_spawn_error(runner, tmp_path):
    with pytest.raises(SpawnError, match="working directory .*nope.* does not exist on"):
        await runner.start(CommandSpec(script="true", cwd=str(tmp_path / "nope")))


async def test_missing_shell_is_a_spawn_error(runner):
    with pytest.raises(SpawnError, match="cannot start shell 'no-such-shell'"):
        await runner.start(CommandSpec(script="true", shell="no-such-shell"))


async def test_missing_program_exits_127(runner):
    out, code = await run(runner, CommandSpec(argv=["no-such-program-xyz"]))
    assert code == 127
    assert b"not found" in out[Stream.STDERR]


# -- stopping ---------------------------------------------------------------------------------
async def test_terminate_stops_the_whole_tree_on_the_host(runner):
    token = f"stepflow-test-{uuid.uuid4().hex}"
    script = f"bash -c 'sleep 1000; : {token}' & bash -c 'sleep 1000; : {token}' & echo ready; wait"
    command, output = await start_ready(runner, script)
    assert len(alive_with(token)) >= 2  # the two sleepers (and the shells that hold the script)
    await command.terminate(grace=5)
    assert alive_with(token) == []
    async with asyncio.timeout(10):
        assert await command.wait() == 128 + 15
        assert [stream async for stream, _ in output] in ([], [Stream.STDERR])  # bash may say "Terminated"


async def test_terminate_kills_what_ignores_sigterm_after_the_grace(runner):
    token = f"stepflow-test-{uuid.uuid4().hex}"
    # An ignored signal stays ignored in children: nothing here stops on SIGTERM.
    script = f"trap '' TERM; bash -c 'sleep 1000; : {token}' & echo ready; wait; wait"
    command, _ = await start_ready(runner, script)
    elapsed = await terminate_timed(command, grace=0.5)
    assert alive_with(token) == []
    assert 0.5 <= elapsed < 8
    async with asyncio.timeout(10):
        assert await command.wait() == 128 + 9


async def test_terminate_after_exit_does_nothing(runner):
    command = await runner.start(CommandSpec(script="exit 4"))
    await collect(command)
    assert await command.wait() == 4
    await command.terminate(grace=1)
    assert await command.wait() == 4


async def test_close_stops_running_commands(server):
    runner = runner_for(server)
    token = f"stepflow-test-{uuid.uuid4().hex}"
    await start_ready(runner, f"echo ready; bash -c 'sleep 1000; : {token}'")
    await runner.close()
    assert alive_with(token) == []


# -- connecting -------------------------------------------------------------------------------
async def test_commands_share_one_connection(server):
    pool = SshConnectionPool()
    first, second = runner_for(server, pool=pool), runner_for(server, pool=pool)
    try:
        before = tcp_connections_to(server.port)
        for runner in (first, second, first):
            _, code = await run(runner, CommandSpec(script="true"))
            assert code == 0
        assert tcp_connections_to(server.port) == before + 1
        # Parallel commands too, beyond OpenSSH's 10 sessions per connection.
        commands = await asyncio.gather(*(first.start(CommandSpec(script=f"echo {i}")) for i in range(12)))
        outs = await asyncio.gather(*(collect(command) for command in commands))
        assert sorted(int(out[Stream.STDOUT]) for out in outs) == list(range(12))
        assert [await command.wait() for command in commands] == [0] * 12
        await first.close()
        _, code = await run(second, CommandSpec(script="true"))  # still connected for the other runner
        assert code == 0
    finally:
        await first.close()
        await second.close()
    assert tcp_connections_to(server.port) == before


async def test_a_changed_host_key_is_refused(server, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{server.host}]:{server.port} {other}\n")
    runner = runner_for(server, known_hosts=str(known_hosts), trust_on_first_use=True)
    assert await start_fails(runner) == (
        f"host key for {server.host}:{server.port} does not match known_hosts (possible man-in-the-middle)"
    )


async def test_an_unknown_host_key_is_refused_unless_trusted_on_first_use(server, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    message = await start_fails(runner_for(server, known_hosts=str(known_hosts)))
    assert re.search(f"host key for {server.host}:{server.port} is unknown", message)
    trusting = runner_for(server, known_hosts=str(known_hosts), trust_on_first_use=True)
    assert (await run_and_close(trusting, CommandSpec(script="true")))[1] == 0
    assert known_hosts.read_text().startswith(f"[{server.host}]:{server.port} ssh-ed25519 ")
    strict = runner_for(server, known_hosts=str(known_hosts))
    assert (await run_and_close(strict, CommandSpec(script="true")))[1] == 0


async def test_a_host_alias_of_ssh_config_is_trusted_on_first_use_in_the_config_s_known_hosts(
    server, tmp_path, monkeypatch
):
    # the host key is recorded under the address and port the config names, in its
    # UserKnownHostsFile, and checked there by the next connection, as ssh does
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    known_hosts = tmp_path / "config_known_hosts"
    (home / ".ssh" / "config").write_text(
        f"Host alias\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {server.client_key}\n  UserKnownHostsFile {known_hosts}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    message = await start_fails(SshRunner("alias", pool=SshConnectionPool()))
    assert message.startswith(f"host key for {server.host}:{server.port} is unknown (not in {known_hosts})")
    trusting = SshRunner("alias", trust_on_first_use=True, pool=SshConnectionPool())
    assert (await run_and_close(trusting, CommandSpec(script="true")))[1] == 0
    assert known_hosts.read_text().startswith(f"[{server.host}]:{server.port} ssh-ed25519 ")
    strict = SshRunner("alias", pool=SshConnectionPool())
    try:
        assert (await run(strict, CommandSpec(script="true")))[1] == 0
        assert strict.where == f"{server.user}@{server.host}:{server.port} (alias in ~/.ssh/config)"
    finally:
        await strict.close()


async def test_a_refused_key_fails_authentication(server, tmp_path):
    stranger = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    runner = SshRunner(
        server.host,
        server.port,
        server.user,
        key=str(stranger),
        known_hosts=server.known_hosts,
        pool=SshConnectionPool(),
    )
    message = await start_fails(runner)
    assert re.search(
        f"cannot connect to {server.user}@{server.host}:{server.port}: authentication failed", message
    )


async def test_an_unreachable_port_fails_quickly():
    port = free_port()
    message = await start_fails(SshRunner("127.0.0.1", port, "deploy", pool=SshConnectionPool()), within=3)
    assert message == f"cannot connect to deploy@127.0.0.1:{port}: connection refused"


async def test_a_silent_host_times_out(tmp_path):
    # A listening socket that never answers: the SSH handshake cannot complete.
    async with silent_port() as port:
        runner = SshRunner("127.0.0.1", port, "deploy", connect_timeout=0.5, pool=SshConnectionPool())
        message = await start_fails(runner, within=5)
    assert re.search(f"cannot connect to deploy@127.0.0.1:{port}: timed out after 0.5s", message)


async def test_a_missing_key_file_is_named(server, tmp_path):
    message = await start_fails(runner_for(server, key=str(tmp_path / "nope")))
    assert re.search("key file .*nope.* not found", message)


# -- files ------------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    make_reports(root, tmp_path)
    return root


async def test_fetch_copies_a_file_over_sftp(runner, workdir, tmp_path):
    dest = tmp_path / "store" / "deep" / "b.xml"
    source = await runner.fetch("reports/sub/b.xml", str(workdir), dest)
    assert source == str(workdir / "reports" / "sub" / "b.xml")
    assert dest.read_text() == "<b/>"
    await runner.fetch(str(workdir / "reports" / "a.xml"), str(workdir), tmp_path / "1")
    source = await runner.fetch("reports/inside.xml", str(workdir), tmp_path / "2")
    assert source == str(workdir / "reports" / "a.xml")
    assert (tmp_path / "2").read_text() == "<a/>"


@pytest.mark.parametrize(
    "path", ["../secret.xml", "reports/outside.xml", "/etc/hostname", "reports/../../secret.xml"]
)
async def test_fetch_refuses_what_escapes_the_working_directory(runner, workdir, tmp_path, path):
    with pytest.raises(FetchError, match="escapes the working directory"):
        await runner.fetch(path, str(workdir), tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_fetch_refuses_a_missing_file_and_a_directory(runner, workdir, tmp_path):
    with pytest.raises(FetchError, match="not found"):
        await runner.fetch("reports/nope.xml", str(workdir), tmp_path / "x")
    with pytest.raises(FetchError, match="is a directory"):
        await runner.fetch("reports/sub", str(workdir), tmp_path / "x")
    with pytest.raises(FetchError, match="does not exist"):
        await runner.fetch("a.xml", str(workdir / "nope"), tmp_path / "x")


async def test_glob_matches_files_inside_cwd_only(runner, workdir):
    assert await runner.glob("reports/*.xml", str(workdir)) == ["reports/a.xml", "reports/inside.xml"]
    assert await runner.glob("reports/**/*.txt", str(workdir)) == ["reports/sub/c.txt"]
    assert await runner.glob("../*.xml", str(workdir)) == []
    assert await runner.glob("/etc/*", str(workdir)) == []
    assert await runner.glob(str(workdir / "reports" / "a.*"), str(workdir)) == ["reports/a.xml"]
    assert await runner.glob("nothing/*", str(workdir)) == []
    assert await runner.glob("*.xml", str(workdir / "nope")) == []


async def test_runner_for_an_ssh_target_of_a_workflow(server):
    from engine.runners.targets import runner_for
    from engine.workflow.load import SshTarget

    target = SshTarget(
        name="web1",
        host=server.host,
        port=server.port,
        user=server.user,
        key=server.client_key,
        known_hosts=server.known_hosts,
    )
    runner = runner_for(target)
    assert isinstance(runner, SshRunner)
    out, code = await run_and_close(runner, CommandSpec(script="echo hi"))
    assert (out[Stream.STDOUT], code) == (b"hi\n", 0)


def test_the_destination_takes_what_the_target_leaves_out_from_ssh_config(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host web\n  HostName 10.1.2.3\n  Port 2222\n  User deploy\n  ConnectTimeout 25\n"
        "  ServerAliveInterval 5\n  HostKeyAlias webkey\n"
        "Host open\n  UserKnownHostsFile none\n"
        "Host *\n  UserKnownHostsFile ~/hosts/a ~/hosts/b\n"
    )
    monkeypatch.setenv("HOME", str(home))
    web = resolve_destination("web", None, None)
    assert (web.hostname, web.port, web.user, web.connect_timeout) == ("10.1.2.3", 2222, "deploy", 25.0)
    assert web.keepalive_configured and web.key_name == "[webkey]:2222"
    assert web.known_hosts == (str(home / "hosts/a"), str(home / "hosts/b"))
    assert web.where == "deploy@10.1.2.3:2222 (web in ~/.ssh/config)"
    # what the target names wins
    pinned = resolve_destination("web", 22, "root")
    assert (pinned.port, pinned.user, pinned.key_name) == (22, "root", "webkey")
    assert pinned.where == "root@10.1.2.3:22 (web in ~/.ssh/config)"
    assert resolve_destination("open", None, None).known_hosts is None
    plain = resolve_destination("elsewhere", 2200, "me")
    assert plain.where == "me@elsewhere:2200" and plain.connect_timeout is None
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))  # no config at all: SSH's defaults
    bare = resolve_destination("web", None, None)
    assert (bare.where, bare.known_hosts) == ("web:22", (str(tmp_path / "nobody/.ssh/known_hosts"),))
