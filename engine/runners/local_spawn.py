"""Start a local command: its argv and environment, the child process, and the errors a shell would give.

Each command gets its own session and process group, stdin from /dev/null and one pipe each for
stdout and stderr. `subprocess.Popen` runs on the event loop: CPython starts the child with vfork
(`start_new_session` keeps it; a `preexec_fn`, `user`, `group` or `extra_groups` would turn it into
a fork) and lets go of the GIL until the child has exec'd (gh-104372; so does our 3.11.7), so the loop
waits 0.1-0.3 ms and other threads not at all. In a worker thread, the same call had to win the GIL
back from the busy loop after every vfork (up to the 5 ms switch interval), besides two thread
hand-overs: 2-3 ms per command in a workflow of short steps. The price: a program on a very slow
file system holds the loop for as long as its exec takes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading

from engine.runners.base import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, CommandSpec, SpawnError
from engine.runners.orphans import TAG_VARIABLE

_TAG_KEY = os.fsencode(TAG_VARIABLE)


def spawn(spec: CommandSpec, tag: str, stdin: int) -> subprocess.Popen[bytes]:
    """Start the command: returns once it is running its program (or raises SpawnError)."""
    # as bytes, which Popen passes on as they are: decoding our environment and encoding it again
    # was a good part of the time spent starting a command
    env = {**os.environb, **{os.fsencode(k): os.fsencode(v) for k, v in spec.env.items()}, _TAG_KEY: tag.encode()}
    cwd = spec.cwd
    path = env.get(b"PATH")
    argv = _argv_for(spec, os.defpath if path is None else os.fsdecode(path))
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        # No stat of the working directory beforehand (two system calls per command, each a chance
        # for another thread to take the GIL): the child's chdir says what is wrong with it.
        if cwd is not None and exc.filename == cwd:
            if exc.errno == errno.ENOENT:
                raise SpawnError(f"working directory {cwd!r} does not exist") from None
            if exc.errno == errno.ENOTDIR:
                raise SpawnError(f"working directory {cwd!r} is not a directory") from None
        raise SpawnError(_spawn_error_message(argv[0], cwd, exc), _spawn_exit_code(argv[0], cwd, exc)) from None


def _argv_for(spec: CommandSpec, path: str) -> list[str]:
    if spec.argv is not None:
        if not spec.argv:
            raise SpawnError("cannot start an empty command")
        return list(spec.argv)
    if spec.script is None:
        raise SpawnError("cannot start a command without argv or script")
    shell = spec.shell
    if shutil.which(shell, path=path) is None:
        if shell == "bash" and shutil.which("sh", path=path) is not None:
            shell = "sh"
        else:
            raise SpawnError(f"cannot start shell {shell!r}: command not found", EXIT_NOT_FOUND)
    return [shell, "-c", spec.script]


def _spawn_exit_code(program: str, cwd: str | None, exc: OSError) -> int | None:
    """As a shell: 127 for a program not found, 126 for one found but not executable (no
    permission, a directory, no #! line, or its interpreter missing: bash says 126 there too)."""
    if exc.errno == errno.ENOENT:
        found = os.sep in program and os.path.isfile(os.path.join(cwd or "", program))
        return EXIT_NOT_EXECUTABLE if found else EXIT_NOT_FOUND
    if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return EXIT_NOT_EXECUTABLE
    return None


def _spawn_error_message(program: str, cwd: str | None, exc: OSError) -> str:
    where = os.path.join(cwd or "", program)
    if exc.errno == errno.ENOENT:
        if os.sep in program and os.path.isfile(where):
            return f"cannot start {program!r}: its interpreter (#! line) was not found"
        return f"cannot start {program!r}: command not found"
    if exc.errno == errno.EACCES:
        if os.sep in program and os.path.isdir(where):
            return f"cannot start {program!r}: it is a directory"
        return f"cannot start {program!r}: permission denied (not executable?)"
    if exc.errno == errno.ENOEXEC:
        return f"cannot start {program!r}: not an executable (exec format error; missing #! line?)"
    return f"cannot start {program!r}: {exc.strerror or exc}"


def kill_abandoned_process(proc: subprocess.Popen[bytes]) -> None:
    """The start was cancelled after the process was created: it must not outlive us."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    threading.Thread(target=proc.wait, daemon=True).start()
