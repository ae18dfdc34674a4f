"""The local runner against real processes."""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from engine.lines import CONTINUED, LineSplitter
from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, SpawnError
from engine.runners.local import READ_CHUNK, LocalCommand, LocalRunner
from tests import runner_helpers
from tests.runner_helpers import make_reports

PY = sys.executable


@pytest.fixture
async def runner() -> AsyncIterator[LocalRunner]:
    runner = LocalRunner()
    yield runner
    await runner.close()


#: no chunk of a local command's output is larger than one read
collect = functools.partial(runner_helpers.collect, max_chunk=READ_CHUNK)
run = functools.partial(runner_helpers.run, max_chunk=READ_CHUNK)


class LineReader:
    """Reads a command's stdout line by line, for tests that react to what it prints."""

    def __init__(self, command: LocalCommand) -> None:
        self._chunks = command.output()
        self._splitter = LineSplitter()
        self._lines: list[str] = []

    async def until(self, predicate, within: float = 10) -> list[str]:
        seen: list[str] = []
        async with asyncio.timeout(within):
            while True:
                while self._lines:
                    line = self._lines.pop(0)
                    seen.append(line)
                    if predicate(line):
                        return seen
                stream, chunk = await anext(self._chunks)
                if stream is Stream.STDOUT:
                    self._lines += self._splitter.feed(chunk)

    async def drain(self, within: float = 10) -> None:
        async with asyncio.timeout(within):
            async for _ in self._chunks:
                pass


def running(pid: int) -> bool:
    """Whether the process still exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_reaped(pid: int) -> None:
    """Our child is not left as a zombie: it was waited for."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not [p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]


# -- output, environment, exit --------------------------------------------------------------------
async def test_stdout_and_stderr_are_kept_apart(runner):
    out, code = await run(runner, CommandSpec(script="echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
    assert code == 0
    assert out[Stream.STDOUT] == b"out1\nout2\n"
    assert out[Stream.STDERR] == b"err1\nerr2\n"


async def test_argv_runs_without_a_shell(runner):
    argv = [PY, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME", "*"]
    out, code = await run(runner, CommandSpec(argv=argv))
    assert code == 0
    assert out[Stream.STDOUT] == b"['a b', '$HOME', '*']\n"


async def test_env_overlays_the_runner_environment_and_cwd_applies(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("STEPFLOW_TEST_INHERITED", "from parent")
    monkeypatch.setenv("STEPFLOW_TEST_OVERRIDDEN", "from parent")
    spec = CommandSpec(
        script='printf "%s|%s|%s\\n" "$STEPFLOW_TEST_INHERITED" "$STEPFLOW_TEST_OVERRIDDEN" "$STEPFLOW_TEST_NEW"; pwd -P',
        env={"STEPFLOW_TEST_OVERRIDDEN": "from spec", "STEPFLOW_TEST_NEW": "new value"},
        cwd=str(tmp_path),
    )
    out, code = await run(runner, spec)
    assert code == 0
    assert out[Stream.STDOUT].decode().splitlines() == [
        "from parent|from spec|new value",
        str(tmp_path.resolve()),
    ]


async def test_stdin_is_dev_null(runner):
    out, code = await run(runner, CommandSpec(script="cat; echo end"))
    assert (out[Stream.STDOUT], code) == (b"end\n", 0)


async def test_each_command_runs_in_its_own_session(runner):
    argv = [PY, "-c", "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"]
    out, _ = await run(runner, CommandSpec(argv=argv))
    pid, pgid, sid = out[Stream.STDOUT].split()
    assert pid == pgid == sid


@pytest.mark.parametrize(
    ("script", "expected"),
    [("true", 0), ("exit 3", 3), ("exit 255", 255), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9)],
)
async def test_exit_status_is_the_code_or_128_plus_the_signal(runner, script, expected):
    command = await runner.start(CommandSpec(script=script))
    await collect(command)
    async with asyncio.timeout(10):
        assert await command.wait() == expected
        assert await command.wait() == expected  # asking twice is fine
    assert_reaped(command.pid)


async def test_exit_is_known_even_while_a_background_process_holds_the_pipes(runner):
    command = await runner.start(CommandSpec(script="sleep 1000 & exit 7"))
    async with asyncio.timeout(10):
        assert await command.wait() == 7
    # Not reaped yet: while something of the command runs, the leader's pid stays taken, so its
    # process group id cannot be given to another process group.
    assert psutil.Process(command.pid).status() == psutil.STATUS_ZOMBIE
    await command.terminate(0.5)
    await collect(command)  # the pipes close once the background process is gone
    assert_reaped(command.pid)


async def test_without_pidfd_a_thread_watches_the_exit(runner, monkeypatch):
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    out, code = await run(runner, CommandSpec(script="echo hi; exit 5"))
    assert (out[Stream.STDOUT], code) == (b"hi\n", 5)
    command = await runner.start(CommandSpec(script="echo up; sleep 1000"))
    await LineReader(command).until(lambda line: line == "up")
    async with asyncio.timeout(10):
        await command.terminate(1)
        assert await command.wait() == 128 + signal.SIGTERM
    assert_reaped(command.pid)


# -- spawn errors ---------------------------------------------------------------------------------
async def test_missing_command_is_a_spawn_error(runner):
    with pytest.raises(SpawnError) as caught:
        await runner.start(CommandSpec(argv=["nosuchcmd-stepflow", "x"]))
    assert str(caught.value) == "cannot start 'nosuchcmd-stepflow': command not found"


async def test_missing_working_directory_is_a_spawn_error(runner, tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(SpawnError) as caught:
        await runner.start(CommandSpec(script="true", cwd=missing))
    assert str(caught.value) == f"working directory '{missing}' does not exist"


async def test_working_directory_that_is_a_file_is_a_spawn_error(runner, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SpawnError, match="is not a directory"):
        await runner.start(CommandSpec(script="true", cwd=str(tmp_path / "f")))


async def test_non_executable_file_is_a_spawn_error(runner, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(SpawnError) as caught:
        await runner.start(CommandSpec(argv=["./run.sh"], cwd=str(tmp_path)))
    assert str(caught.value).startswith("cannot start './run.sh': permission denied")


async def test_missing_interpreter_is_a_spawn_error(runner, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    with pytest.raises(SpawnError, match="interpreter"):
        await runner.start(CommandSpec(argv=["./run.sh"], cwd=str(tmp_path)))


async def test_missing_shell_is_a_spawn_error(runner):
    with pytest.raises(SpawnError) as caught:
        await runner.start(CommandSpec(script="true", shell="nosuchshell-stepflow"))
    assert str(caught.value) == "cannot start shell 'nosuchshell-stepflow': command not found"


async def test_default_bash_falls_back_to_sh(runner, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to("/bin/sh")
    spec = CommandSpec(script='echo "shell ok"', env={"PATH": str(bin_dir)})
    out, code = await run(runner, spec)
    assert (out[Stream.STDOUT], code) == (b"shell ok\n", 0)


async def test_empty_command_is_a_spawn_error(runner):
    with pytest.raises(SpawnError):
        await runner.start(CommandSpec(argv=[]))
    with pytest.raises(SpawnError):
        await runner.start(CommandSpec())


# -- large and binary output, backpressure ---------------------------------------------------------
async def test_ten_megabyte_line_arrives_whole_in_bounded_chunks(runner):
    size = 10 * 1024 * 1024
    argv = [PY, "-c", f"import sys; sys.stdout.buffer.write(b'x' * {size})"]
    command = await runner.start(CommandSpec(argv=argv))
    splitter = LineSplitter()
    total = 0
    pieces = 0
    async with asyncio.timeout(20):
        async for stream, chunk in command.output():
            assert stream is Stream.STDOUT and len(chunk) <= READ_CHUNK
            for piece in splitter.feed(chunk):
                assert piece == "x" * splitter.max_line + CONTINUED  # the mark: the line goes on
                total += splitter.max_line
                pieces += 1
        assert await command.wait() == 0
    rest = splitter.flush()
    total += sum(map(len, rest))
    assert total == size
    assert pieces + len(rest) == size // splitter.max_line


async def test_binary_output_comes_through_unchanged(runner):
    code = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4000); sys.stderr.buffer.write(b'\\x00\\xff')"
    out, status = await run(runner, CommandSpec(argv=[PY, "-c", code]))
    assert status == 0
    assert out[Stream.STDOUT] == bytes(range(256)) * 4000
    assert out[Stream.STDERR] == b"\x00\xff"


async def test_a_consumer_that_stops_reading_blocks_the_command_not_memory(runner):
    total = 64 * 1024 * 1024
    code = (
        "import sys\n"
        "block = b'y' * 65536\n"
        f"for _ in range({total} // 65536):\n"
        "    sys.stdout.buffer.write(block)\n"
    )
    command = await runner.start(CommandSpec(argv=[PY, "-c", code]))
    chunks = command.output()
    async with asyncio.timeout(10):
        stream, first = await anext(chunks)
    # The consumer stops here. Unbounded buffering would let the command write it all and exit
    # within milliseconds; instead it stays blocked on its full pipe.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await command.wait()
    written = psutil.Process(command.pid).io_counters().write_chars
    assert written < 2 * 1024 * 1024
    # Nothing was lost: reading again gets every byte and lets the command finish.
    received = len(first)
    async with asyncio.timeout(30):
        async for _, chunk in chunks:
            received += len(chunk)
        assert await command.wait() == 0
    assert received == total


# -- terminate ------------------------------------------------------------------------------------
TREE_SCRIPT = f"""
bash -c 'trap "" TERM; echo "stubborn $$"; exec sleep 1000' &
sleep 1000 &
{PY} -c 'import os, time; os.setsid(); print("setsid", os.getpid(), flush=True); time.sleep(1000)' &
( {PY} -c 'import os, time; os.setsid(); print("daemon", os.getpid(), flush=True); time.sleep(1000)' & )
echo ready
wait
"""


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_terminate_kills_the_whole_tree_including_a_child_that_ignores_sigterm(runner):
    command = await runner.start(CommandSpec(script=TREE_SCRIPT))
    reader = LineReader(command)
    printed: dict[str, int] = {}

    def everyone_announced(line: str) -> bool:
        word, _, pid = line.partition(" ")
        printed[word] = int(pid or 0)
        return {"stubborn", "setsid", "daemon", "ready"} <= printed.keys()

    await reader.until(everyone_announced)
    del printed["ready"]
    leader = psutil.Process(command.pid)
    pids = {command.pid, *printed.values(), *(p.pid for p in leader.children(recursive=True))}
    # the double-forked daemon is no longer a descendant: only its environment tag finds it
    assert printed["daemon"] not in {p.pid for p in leader.children(recursive=True)}
    assert len(pids) >= 5 and all(running(pid) for pid in pids)

    started = time.monotonic()
    async with asyncio.timeout(10):
        await command.terminate(grace=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3  # the stubborn one needed the SIGKILL after the grace period

    assert [pid for pid in pids if running(pid)] == []
    assert_reaped(command.pid)
    async with asyncio.timeout(5):
        assert await command.wait() == 128 + signal.SIGTERM
    await reader.drain()  # nothing holds the pipes any more


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_terminate_is_quick_when_the_command_honours_sigterm(runner):
    command = await runner.start(CommandSpec(script="echo up; sleep 1000"))
    await LineReader(command).until(lambda line: line == "up")
    started = time.monotonic()
    await command.terminate(grace=5)
    assert time.monotonic() - started < 2
    assert await command.wait() == 128 + signal.SIGTERM
    assert_reaped(command.pid)


async def test_terminate_is_idempotent_and_safe_after_exit(runner):
    command = await runner.start(CommandSpec(script="exit 0"))
    await collect(command)
    assert await command.wait() == 0
    async with asyncio.timeout(5):
        await command.terminate(0.5)
        await command.terminate(0.5)
    assert await command.wait() == 0


async def test_concurrent_terminates_both_return_when_all_is_gone(runner):
    command = await runner.start(CommandSpec(script="trap '' TERM; echo up; sleep 1000"))
    await LineReader(command).until(lambda line: line == "up")
    async with asyncio.timeout(10):
        await asyncio.gather(command.terminate(0.2), command.terminate(0.2))
    assert not running(command.pid)
    assert await command.wait() == 128 + signal.SIGKILL


async def test_closing_the_runner_stops_what_still_runs(tmp_path):
    runner = LocalRunner()
    command = await runner.start(CommandSpec(script="echo up; sleep 1000"))
    await LineReader(command).until(lambda line: line == "up")
    left_behind = await runner.start(CommandSpec(script="sleep 1000 & echo $!"))
    reader = LineReader(left_behind)
    background = int((await reader.until(str.isdigit))[-1])
    assert await left_behind.wait() == 0 and running(background)
    async with asyncio.timeout(10):
        await runner.close()
        assert await command.wait() == 128 + signal.SIGTERM
    assert not running(background)
    await reader.drain()


# -- resources ------------------------------------------------------------------------------------
async def test_sample_sums_the_tree_and_is_none_after_exit(runner):
    code = (
        "import time\n"
        "print('ready', flush=True)\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('busy done', flush=True)\n"
        "time.sleep(1000)\n"
    )
    command = await runner.start(CommandSpec(script=f'sleep 1000 & {PY} -c "{code}"; wait'))
    reader = LineReader(command)
    await reader.until(lambda line: line == "ready")
    first = command.sample()
    assert first is not None and first.cpu_percent == 0.0  # the first reading only primes
    tree = [psutil.Process(command.pid), *psutil.Process(command.pid).children(recursive=True)]
    assert len(tree) == 3
    assert first.rss_bytes >= max(p.memory_info().rss for p in tree)
    await reader.until(lambda line: line == "busy done")
    second = command.sample()
    assert second is not None and second.cpu_percent > 10
    await command.terminate(0.5)
    assert command.sample() is None


def our_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def test_final_usage_is_the_kernels_once_the_leader_is_reaped(runner):
    command = await runner.start(CommandSpec(argv=[PY, "-c", "sum(range(3_000_000))"]))
    assert command.final_usage() is None
    await collect(command)
    assert await command.wait() == 0
    usage = command.final_usage()
    assert usage is not None and usage.cpu_percent > 0
    # its ru_maxrss starts at our own RSS (the memory it had before its exec): no figure of its own
    assert usage.peak_rss_bytes is None


async def test_final_usage_has_the_peak_rss_above_ours(runner):
    size = our_peak_rss() + 64_000_000
    command = await runner.start(CommandSpec(script=f"{PY} -c 'block = b\"x\" * {size}'; true"))
    await collect(command)
    assert await command.wait() == 0
    usage = command.final_usage()
    assert usage is not None and usage.peak_rss_bytes is not None
    assert usage.peak_rss_bytes >= size  # python's, counted in bash's since bash waited for it


# -- fetch and glob ---------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    make_reports(work, tmp_path)
    (work / "reports" / "dir.xml").mkdir()
    (work / "outside").symlink_to(tmp_path)
    return work


async def test_fetch_copies_a_file_and_creates_parent_folders(runner, workdir, tmp_path):
    dest = tmp_path / "store" / "x" / "y" / "b.xml"
    source = await runner.fetch("reports/sub/b.xml", str(workdir), dest)
    assert source == str(workdir.resolve() / "reports" / "sub" / "b.xml")
    assert dest.read_text() == "<b/>"


async def test_fetch_accepts_an_absolute_path_inside_cwd_and_a_symlink_that_stays_inside(
    runner, workdir, tmp_path
):
    await runner.fetch(str(workdir / "reports" / "a.xml"), str(workdir), tmp_path / "1")
    await runner.fetch("reports/inside.xml", str(workdir), tmp_path / "2")
    assert (tmp_path / "2").read_text() == "<a/>"


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "/etc/passwd", "reports/outside.xml", "outside/secret.xml", "reports/../../secret.xml"],
)
async def test_fetch_refuses_what_escapes_the_working_directory(runner, workdir, tmp_path, path):
    dest = tmp_path / "store" / "copy"
    with pytest.raises(FetchError) as caught:
        await runner.fetch(path, str(workdir), dest)
    assert str(caught.value) == f"artifact path {path!r} escapes the working directory"
    assert not dest.exists()


async def test_fetch_refuses_a_missing_file_and_a_directory(runner, workdir, tmp_path):
    with pytest.raises(FetchError, match="not found"):
        await runner.fetch("reports/nope.xml", str(workdir), tmp_path / "x")
    with pytest.raises(FetchError, match="is a directory"):
        await runner.fetch("reports/sub", str(workdir), tmp_path / "x")


async def test_glob_matches_files_inside_cwd_only_sorted(runner, workdir):
    assert await runner.glob("reports/*.xml", str(workdir)) == ["reports/a.xml", "reports/inside.xml"]
    assert await runner.glob("**/*.xml", str(workdir)) == [
        "reports/a.xml",
        "reports/inside.xml",
        "reports/sub/b.xml",
    ]
    assert await runner.glob("reports/**/*.txt", str(workdir)) == ["reports/sub/c.txt"]
    assert await runner.glob("../*.xml", str(workdir)) == []
    assert await runner.glob("outside/*.xml", str(workdir)) == []
    assert await runner.glob("/etc/*", str(workdir)) == []
    assert await runner.glob(str(workdir / "reports" / "a.*"), str(workdir)) == ["reports/a.xml"]
    assert await runner.glob("nothing/*", str(workdir)) == []
