"""Fan-out over SSH: one workflow on N asyncssh servers on loopback vs the same workflow on one.

The servers run in a child process (one event loop, N listening ports), so that their work does not
share the engine's loop. Each target runs a short marker script. The figures: wall time from
submit to the stored end, for 1 target and for N, and their ratio (goal: at most 3x). Afterwards
the bench checks that nothing is left behind: no TCP connection from this process to the servers,
no command still running under the server process, no pooled SSH connection.

    .venv/bin/python bench/fanout_ssh.py [--targets 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402
import psutil  # noqa: E402

from engine.engine import Engine, EngineConfig  # noqa: E402
from engine.runners import ssh as ssh_runner  # noqa: E402
from storage import SqliteStore  # noqa: E402
from storage.paths import database_path  # noqa: E402

MARKER_SCRIPT = """\
echo "STEP_START:prepare"
echo "preparing on port ${SSH_SERVER_PORT:-?}"
echo "STEP_PROGRESS:50"
echo "STEP_COMPLETE:prepare"
echo "STEP_START:check"
echo "checked" >&2
echo "STEP_COMPLETE:check"
"""


# -- the servers (child process) -------------------------------------------------------------
async def _run_process(process: asyncssh.SSHServerProcess) -> None:
    """`bash -c COMMAND` in its own session, stdout and stderr apart, exit status kept (as sshd)."""
    port = process.get_extra_info("sockname")[1]
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", process.command or "exit 1",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env={**os.environ, "SSH_SERVER_PORT": str(port)},
    )

    async def pump(source: asyncio.StreamReader, target: asyncssh.SSHWriter) -> None:
        while chunk := await source.read(65536):
            try:
                target.write(chunk)
                await target.drain()
            except (OSError, asyncssh.Error):
                return

    assert proc.stdout is not None and proc.stderr is not None
    await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
    code = await proc.wait()
    if code < 0:
        process.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
    else:
        process.exit(code)


async def serve(count: int, folder: Path) -> None:
    host_key = asyncssh.read_private_key(str(folder / "host_key"))
    authorized = asyncssh.import_authorized_keys((folder / "client_key.pub").read_text())
    acceptors = [
        await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
            process_factory=_run_process, encoding=None, sftp_factory=True, allow_scp=False,
        )
        for _ in range(count)
    ]
    print(json.dumps([a.get_port() for a in acceptors]), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for acceptor in acceptors:
        acceptor.close()


# -- the engine side -------------------------------------------------------------------------
def workflow_text(folder: Path, ports: list[int]) -> str:
    targets = {
        f"h{i:03d}": {
            "type": "ssh", "host": "127.0.0.1", "port": port, "user": os.environ.get("USER") or "root",
            "key": str(folder / "client_key"), "known_hosts": str(folder / "known_hosts"),
        }
        for i, port in enumerate(ports)
    }
    body = {
        "name": f"fanout-{len(ports)}", "targets": targets, "runs_on": list(targets),
        "max_parallel_targets": len(ports),
        "steps": [{"name": "probe", "run": MARKER_SCRIPT}],
    }
    return json.dumps(body)


async def run_once(folder: Path, ports: list[int], data: Path) -> tuple[float, int]:
    """Seconds from submit to the stored end; the number of steps stored."""
    engine = Engine(SqliteStore(database_path(data)), data, EngineConfig())
    await engine.start()
    try:
        started = time.perf_counter()
        ex = await engine.submit_workflow(folder / "fanout.yaml", text=workflow_text(folder, ports))
        async with asyncio.timeout(300):
            done = await engine.wait(ex.id)
        elapsed = time.perf_counter() - started
        assert done.status.value == "completed", done.error_message
        steps = await engine.store.get_steps(ex.id)
    finally:
        await engine.shutdown()
    return elapsed, len(steps)


def leftovers(server: psutil.Process, ports: set[int]) -> list[str]:
    found = []
    me = psutil.Process()
    for conn in me.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port in ports:
            found.append(f"connection {conn.laddr.port} -> {conn.raddr.port} ({conn.status})")
    for child in server.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(f"process {child.pid}: {' '.join(child.cmdline())}")
        except psutil.Error:
            continue
    pooled = sum(len(entries) for entries in ssh_runner.DEFAULT_POOL._by_loop.values())
    if pooled:
        found.append(f"{pooled} pooled SSH connection(s)")
    return found


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the server process and of the commands it ran (reaped children included)."""
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
        except psutil.Error:
            continue
    return total


def server_connections(server: psutil.Process) -> int:
    return sum(1 for c in server.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)


async def main_async(args: argparse.Namespace, folder: Path, server: subprocess.Popen[str], ports: list[int]) -> int:
    server_process = psutil.Process(server.pid)
    print(f"{len(ports)} asyncssh servers on loopback (pid {server.pid}); {args.rounds} round(s) each")
    one: list[float] = []
    many: list[float] = []
    cpu_here = cpu_there = 0.0
    for round_ in range(args.rounds):
        elapsed, _ = await run_once(folder, ports[:1], folder / f"data-one-{round_}")
        one.append(elapsed)
        here, there = time.process_time(), cpu_seconds(server_process)
        elapsed, stored = await run_once(folder, ports, folder / f"data-many-{round_}")
        cpu_here += time.process_time() - here
        cpu_there += cpu_seconds(server_process) - there
        many.append(elapsed)
        expected = len(ports) * 4  # branch, workflow step, two marker steps
        assert stored == expected, f"{stored} steps stored, expected {expected}"
    best_one, best_many = min(one), min(many)
    print(f"1 target:    {best_one * 1000:8.1f} ms  (rounds: {', '.join(f'{t * 1000:.0f}' for t in one)})")
    print(f"{len(ports)} targets: {best_many * 1000:8.1f} ms  "
          f"(rounds: {', '.join(f'{t * 1000:.0f}' for t in many)})")
    ratio = best_many / best_one
    print(f"ratio:       {ratio:8.2f}x  (goal <= 3x) {'ok' if ratio <= 3 else 'OVER'}")
    rounds = len(many)
    print(f"CPU per {len(ports)}-target run: engine {cpu_here / rounds * 1000:.0f} ms, "
          f"servers and their commands {cpu_there / rounds * 1000:.0f} ms, on {os.cpu_count()} CPU(s)")
    print(f"  (both sides share this machine: {(cpu_here + cpu_there) / rounds / (os.cpu_count() or 1) * 1000:.0f} ms"
          " of wall time is CPU-bound at best)")
    left = leftovers(server_process, set(ports))
    print(f"server connections still open: {server_connections(server_process)}")
    print("left behind: " + ("nothing" if not left else "\n  " + "\n  ".join(left)))
    return 0 if ratio <= 3 and not left else 1


def start_servers(count: int, folder: Path) -> tuple[subprocess.Popen[str], list[int]]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(count), "--folder", str(folder)],
        stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    ports = json.loads(server.stdout.readline())
    host_key = (folder / "host_key.pub").read_text().strip()
    (folder / "known_hosts").write_text("".join(f"[127.0.0.1]:{port} {host_key}\n" for port in ports))
    return server, ports


def keys(folder: Path) -> None:
    host = asyncssh.generate_private_key("ssh-ed25519")
    host.write_private_key(str(folder / "host_key"))
    host.write_public_key(str(folder / "host_key.pub"))
    client = asyncssh.generate_private_key("ssh-ed25519")
    client.write_private_key(str(folder / "client_key"))
    (folder / "client_key").chmod(0o600)
    client.write_public_key(str(folder / "client_key.pub"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, Path(args.folder)))
        return 0
    with tempfile.TemporaryDirectory(prefix="stepflow-fanout-") as tmp:
        folder = Path(tmp)
        keys(folder)
        server, ports = start_servers(args.targets, folder)
        try:
            return asyncio.run(main_async(args, folder, server, ports))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
