"""Fan-out over SSH: one workflow on N asyncssh servers on loopback vs the same workflow on one.

The servers run in a child process (one event loop, N listening ports), so that their work does not
share the engine's loop. Each target runs a short marker script. Each round starts a new engine and
runs the workflow twice in it: cold (the engine opens its connections) and warm (the connections
the first execution pooled are used again: runners, and their connections, live as long as the
engine). The figures, best of the rounds: wall time from submit to the stored end, for 1 target and
for N, their ratio (goal: at most 3x), the CPU time of this process (the engine; its store writer's
thread included) and of the server process with the commands it ran, and the load average (the
machine may be shared: CPU times are the figures to compare). Afterwards the bench checks that
nothing is left behind: no TCP connection from this process to the servers nor on the servers, no
command still running under the server process, no pooled SSH connection.

    .venv/bin/python bench/fanout_ssh.py [--targets 100] [--rounds 3] [--freeze-gc]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402
import psutil  # noqa: E402

from engine.engine import Engine  # noqa: E402
from engine.model import ExecutionKind  # noqa: E402
from engine.runners import ssh_pool  # noqa: E402
from engine.submission import SubmitRequest  # noqa: E402
from stepflow.wiring import EngineOptions, start_engine  # noqa: E402

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
        "bash",
        "-c",
        process.command or "exit 1",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "SSH_SERVER_PORT": str(port)},
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
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            process_factory=_run_process,
            encoding=None,
            sftp_factory=True,
            allow_scp=False,
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
            "type": "ssh",
            "host": "127.0.0.1",
            "port": port,
            "user": os.environ.get("USER") or "root",
            "key": str(folder / "client_key"),
            "known_hosts": str(folder / "known_hosts"),
        }
        for i, port in enumerate(ports)
    }
    body = {
        "name": f"fanout-{len(ports)}",
        "targets": targets,
        "runs_on": list(targets),
        "max_parallel_targets": len(ports),
        "steps": [{"name": "probe", "run": MARKER_SCRIPT}],
    }
    return json.dumps(body)


@dataclass
class Run:
    """One execution: wall time from submit to the stored end, and this process's CPU time."""

    wall: float
    cpu: float
    #: of `cpu`: parsing and planning the workflow (`submit` until it returns)
    submit_cpu: float
    server_cpu: float


@dataclass
class Round:
    cold: Run
    warm: Run
    #: connections the servers accepted during the warm execution (0: the pool was reused)
    warm_new_connections: int


async def execute(engine: Engine, text: str, folder: Path, server: psutil.Process, count: int) -> Run:
    server_before = cpu_seconds(server)
    cpu_before = time.process_time()
    started = time.perf_counter()
    ex = await engine.submit(SubmitRequest(kind=ExecutionKind.WORKFLOW, workflow_path=folder / "fanout.yaml",
                                           workflow_text=text))
    submit_cpu = time.process_time() - cpu_before
    async with asyncio.timeout(300):
        done = await engine.wait(ex.id)
    run = Run(
        time.perf_counter() - started,
        time.process_time() - cpu_before,
        submit_cpu,
        cpu_seconds(server) - server_before,
    )
    assert done.status.value == "completed", done.error_message
    stored = len(await engine.store.get_steps(ex.id))
    expected = count * 4  # branch, workflow step, two marker steps
    assert stored == expected, f"{stored} steps stored, expected {expected}"
    return run


async def run_round(folder: Path, ports: list[int], data: Path, server: psutil.Process) -> Round:
    """A new engine runs the workflow twice: cold (it opens the connections), then warm (the
    connections the first execution pooled are used again: runners live as long as the engine)."""
    engine = await start_engine(data, EngineOptions(targets={}))  # as `stepflow run` builds it
    text = workflow_text(folder, ports)
    try:
        cold = await execute(engine, text, folder, server, len(ports))
        accepted = server_peers(server)
        warm = await execute(engine, text, folder, server, len(ports))
        new_connections = len(server_peers(server) - accepted)
    finally:
        await engine.shutdown()
    return Round(cold, warm, new_connections)


def server_peers(server: psutil.Process) -> set[int]:
    """Client ports of the connections the servers hold."""
    return {c.raddr.port for c in server.net_connections(kind="tcp") if c.raddr and c.status == "ESTABLISHED"}


def leftovers(server: psutil.Process, ports: set[int]) -> list[str]:
    found = []
    me = psutil.Process()
    for conn in me.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port in ports:
            found.append(f"connection {conn.laddr.port} -> {conn.raddr.port} ({conn.status})")
    for conn in server.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_ESTABLISHED:
            found.append(f"server connection {conn.laddr.port} <- {conn.raddr.port if conn.raddr else '?'}")
    for child in server.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(f"process {child.pid}: {' '.join(child.cmdline())}")
        except psutil.Error:
            continue
    pooled = sum(len(entries) for entries in ssh_pool.DEFAULT_POOL._by_loop.values())
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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:6.0f} ms"


def report(label: str, runs: list[Run]) -> Run:
    """Print the best (least disturbed) figures of the rounds; return them."""
    best = Run(
        min(r.wall for r in runs),
        min(r.cpu for r in runs),
        min(r.submit_cpu for r in runs),
        min(r.server_cpu for r in runs),
    )
    print(
        f"{label:<18} wall {_ms(best.wall)}   engine CPU {_ms(best.cpu)} (of which parsing the workflow"
        f" {best.submit_cpu * 1000:.0f} ms)   servers+commands CPU {_ms(best.server_cpu)}"
        f"   [wall of each round: {', '.join(f'{r.wall * 1000:.0f}' for r in runs)}]"
    )
    return best


async def main_async(
    args: argparse.Namespace, folder: Path, server: subprocess.Popen[str], ports: list[int]
) -> int:
    server_process = psutil.Process(server.pid)
    cpus = os.cpu_count() or 1
    print(
        f"{len(ports)} asyncssh servers on loopback (pid {server.pid}), {cpus} CPU(s); {args.rounds} round(s)"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.freeze_gc:
        gc.collect()
        gc.freeze()
        print("gc.freeze() after start-up (not what the product does)")
    await run_round(folder, ports[:1], folder / "data-warmup", server_process)  # imports, first use
    one: list[Round] = []
    many: list[Round] = []
    for round_ in range(args.rounds):
        one.append(await run_round(folder, ports[:1], folder / f"data-one-{round_}", server_process))
        many.append(await run_round(folder, ports, folder / f"data-many-{round_}", server_process))
    n = len(ports)
    one_cold = report("1 target, cold", [r.cold for r in one])
    one_warm = report("1 target, warm", [r.warm for r in one])
    many_cold = report(f"{n} targets, cold", [r.cold for r in many])
    many_warm = report(f"{n} targets, warm", [r.warm for r in many])
    reused = all(r.warm_new_connections == 0 for r in [*one, *many])
    print(
        "warm: the second execution in the same engine "
        + ("used the pooled connections (the servers accepted none)" if reused else "OPENED NEW CONNECTIONS")
    )
    cold_ratio = many_cold.wall / one_cold.wall
    warm_ratio = many_warm.wall / one_warm.wall
    print(
        f"ratio to 1 target: cold {cold_ratio:.1f}x, warm {warm_ratio:.1f}x (goal <= 3x, i.e. "
        f"{3 * one_cold.wall * 1000:.0f} ms cold)"
    )
    print(
        f"per branch: engine CPU {many_cold.cpu / n * 1000:.2f} ms cold, {many_warm.cpu / n * 1000:.2f} ms warm;"
        f" servers+commands {many_cold.server_cpu / n * 1000:.2f} ms cold"
    )
    floor = (many_cold.cpu + many_cold.server_cpu) / cpus
    print(f"CPU-bound floor of the cold {n}-target wall time on {cpus} CPU(s): {floor * 1000:.0f} ms")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    left = leftovers(server_process, set(ports))
    print(
        "left behind: "
        + (
            "nothing (no connection, no process, no pooled connection)"
            if not left
            else "\n  " + "\n  ".join(left)
        )
    )
    return 0 if cold_ratio <= 3 and not left else 1


def start_servers(count: int, folder: Path) -> tuple[subprocess.Popen[str], list[int]]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(count), "--folder", str(folder)],
        stdout=subprocess.PIPE,
        text=True,
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
    parser.add_argument(
        "--freeze-gc", action="store_true", help="gc.freeze() after start-up, to see what the GC costs"
    )
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
