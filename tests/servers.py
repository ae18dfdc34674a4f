"""Real servers for the runner tests: podman's Docker API, OpenSSH's sshd, and asyncssh's server.

Each is started once per test session by the fixtures in `tests/conftest.py`. When a component is
missing the tests that need it are skipped, except under CI (`CI=true`), where a missing component
fails the run: CI must not skip silently. `scripts/setup-test-system.sh` installs everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

#: the image `scripts/setup-test-system.sh` builds from Debian's busybox-static
BUSYBOX_IMAGE = os.environ.get("STEPFLOW_TEST_IMAGE", "localhost/stepflow-busybox:latest")
#: podman's settings for these machines (no systemd, cgroup v1 or v2, no journald); the same
#: text as in scripts/setup-test-system.sh
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
START_TIMEOUT = 30.0
HOME = os.path.expanduser("~")
STOP_TIMEOUT = 10.0


def unavailable(component: str, detail: str) -> None:
    """Skip the test (fail it under CI) because a server cannot be started."""
    message = f"{component} not available: {detail}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: run scripts/setup-test-system.sh)", pytrace=False)
    pytest.skip(message)


#: sockets bound (never listening) by `free_port`, held until this process ends
_HELD: list[socket.socket] = []


def free_port() -> int:
    """A loopback port nothing listens on, and nothing else can take: it stays bound (not
    listening: a connection there is refused at once) by this process until it ends. Tests run in
    several processes at once (pytest-xdist), and a port merely found free could be another's a
    moment later."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]


def _unused_port() -> int:
    """A loopback port free now, for a server that binds it itself (another process may take it
    first: the server is then started again on another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_until(ready, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll `ready()` until it is true; nothing announces readiness, but the process may die."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"{what} did not answer within {START_TIMEOUT:.0f}s:\n{_log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# -- podman -----------------------------------------------------------------------------------
def _podman_answers(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(sock_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


@contextlib.contextmanager
def podman_service(state_dir: Path) -> Iterator[str]:
    """podman serving the Docker Engine API on a socket in `state_dir`; yields its unix:// URL."""
    podman = shutil.which("podman")
    if podman is None:
        unavailable("podman", "the podman binary is not installed")
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    image = subprocess.run(
        [podman, "image", "exists", BUSYBOX_IMAGE], env=env, capture_output=True, timeout=60
    )
    if image.returncode != 0:
        unavailable(f"image {BUSYBOX_IMAGE}", "not built (scripts/setup-test-system.sh builds it)")
    sock_path = state_dir / "podman.sock"
    sock_path.unlink(missing_ok=True)
    log = state_dir / "podman-service.log"
    url = f"unix://{sock_path}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [podman, "system", "service", "--time=0", url],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            _wait_until(lambda: _podman_answers(sock_path), process, "podman system service", log)
        except RuntimeError as exc:
            unavailable("podman's Docker API", str(exc))
        yield url
    finally:
        _stop(process)


# -- ssh keys ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SshServer:
    """Where a test SSH server listens and how to log in to it."""

    kind: str
    host: str
    port: int
    user: str
    #: the client's private key, accepted by the server
    client_key: str
    #: a known_hosts file holding the server's host key
    known_hosts: str

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def _write_key(path: Path, key: asyncssh.SSHKey) -> None:
    key.write_private_key(str(path))
    path.chmod(0o600)
    key.write_public_key(str(path) + ".pub")


def client_key(directory: Path) -> Path:
    """A client key pair in `directory` (made once): `id_ed25519` and `id_ed25519.pub`."""
    path = directory / "id_ed25519"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _write_key(path, asyncssh.generate_private_key("ssh-ed25519"))
    return path


def _host_key(directory: Path) -> tuple[Path, asyncssh.SSHKey]:
    path = directory / "ssh_host_ed25519_key"
    key = asyncssh.generate_private_key("ssh-ed25519")
    _write_key(path, key)
    return path, key


def _known_hosts(directory: Path, host: str, port: int, key: asyncssh.SSHKey) -> Path:
    path = directory / "known_hosts"
    public = key.export_public_key().decode().strip()
    path.write_text(f"[{host}]:{port} {public}\n")
    return path


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


# -- OpenSSH ----------------------------------------------------------------------------------
#: sshd started again on another port when another process took its port first
SSHD_ATTEMPTS = 3


@contextlib.contextmanager
def openssh_server(directory: Path, key: Path) -> Iterator[SshServer]:
    """OpenSSH's sshd on 127.0.0.1 and a free port, with its own host key and authorized_keys."""
    sshd = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
    )
    if sshd is None:
        unavailable("sshd (openssh-server)", "the sshd binary is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    host, user = "127.0.0.1", getpass.getuser()
    host_key_path, host_key = _host_key(directory)
    authorized = directory / "authorized_keys"
    shutil.copyfile(str(key) + ".pub", authorized)
    sftp_server = next(
        (
            p
            for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
            if os.path.exists(p)
        ),
        "internal-sftp",
    )
    try:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    except OSError:
        pass  # not root: sshd will say what is missing
    config = directory / "sshd_config"
    log = directory / "sshd.log"
    for attempt in range(1, SSHD_ATTEMPTS + 1):
        port = _unused_port()
        config.write_text(
            f"""\
Port {port}
ListenAddress {host}
HostKey {host_key_path}
PidFile {directory / "sshd.pid"}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
Subsystem sftp {sftp_server}
LogLevel VERBOSE
"""
        )
        check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            unavailable("sshd (openssh-server)", f"configuration refused: {check.stderr.strip()}")
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            # our sshd says it listens (another's may answer on a port taken in the meantime)
            listening = f"Server listening on {host} port {port}."
            _wait_until(lambda port=port, listening=listening: listening in _log_tail(log, 1000)
                        and _port_answers(host, port), process, "sshd", log)
        except RuntimeError as exc:
            _stop(process)
            if "Address already in use" in str(exc) and attempt < SSHD_ATTEMPTS:
                continue  # another process took the port in the meantime
            unavailable("sshd (openssh-server)", str(exc))
        break
    try:
        known = _known_hosts(directory, host, port, host_key)
        yield SshServer("openssh", host, port, user, str(key), str(known))
    finally:
        _stop(process)


# -- asyncssh ---------------------------------------------------------------------------------
async def _run_process(process: asyncssh.SSHServerProcess) -> None:
    """Run the requested command with a real shell, as sshd would: `bash -c COMMAND` in the
    user's home, in its own session, stdout and stderr piped back apart, exit code and signal kept."""
    command = process.command
    if command is None:
        process.stderr.write(b"this test server runs commands only, no interactive shell\n")
        process.exit(1)
        return
    try:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=HOME,
            start_new_session=True,
        )
    except OSError as exc:
        process.stderr.write(f"cannot start bash: {exc}\n".encode())
        process.exit(127)
        return

    async def pump(source: asyncio.StreamReader, target: asyncssh.SSHWriter) -> None:
        while chunk := await source.read(65536):
            try:
                target.write(chunk)
                await target.drain()
            except (OSError, asyncssh.Error):
                return  # the client went away; the command keeps running, as under sshd

    assert proc.stdout is not None and proc.stderr is not None
    await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
    code = await proc.wait()
    if code < 0:
        process.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
    else:
        process.exit(code)


class _LoopThread:
    """An event loop in a thread of its own, so that one server serves every test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asyncssh-server", daemon=True)
        self._thread.start()

    def run(self, coro) -> object:
        future: Future[object] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(START_TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self.loop.close()


@contextlib.contextmanager
def asyncssh_server(directory: Path, key: Path) -> Iterator[SshServer]:
    """asyncssh's server in this process, on a free loopback port, with SFTP on the real files."""
    directory.mkdir(parents=True, exist_ok=True)
    _, host_key = _host_key(directory)
    authorized = asyncssh.import_authorized_keys(Path(str(key) + ".pub").read_text())
    host = "127.0.0.1"
    thread = _LoopThread()

    async def listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            host,
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            process_factory=_run_process,
            sftp_factory=True,
            encoding=None,
            allow_scp=False,
        )

    try:
        try:
            acceptor = thread.run(listen())
        except (OSError, asyncssh.Error) as exc:
            unavailable("asyncssh server", str(exc))
        assert isinstance(acceptor, asyncssh.SSHAcceptor)
        port = acceptor.get_port()
        known = _known_hosts(directory, host, port, host_key)
        try:
            yield SshServer("asyncssh", host, port, getpass.getuser(), str(key), str(known))
        finally:

            async def stop() -> None:
                acceptor.close()
                await acceptor.wait_closed()

            thread.run(stop())
    finally:
        thread.close()
