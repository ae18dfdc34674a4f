"""Session-wide fixtures: real SSH and Docker API servers (see tests/servers.py)."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project's bytecode once, before any test (under pytest-xdist: in the controller,
    before the workers start). The tests start `stepflow` (CLI, serve, worker, tui) several hundred
    times; an editable install has no bytecode of its own, and with PYTHONDONTWRITEBYTECODE set (as on
    this machine and some CI ones) every one of those processes compiled every module it imports
    again: some 0.3-0.5 s of CPU each. Only what changed since the last run is compiled (into the
    ignored __pycache__ folders), as bench/ingest.py does."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for package in ("engine", "storage", "api_compat", "stepflow_tui", "tests"):
        compileall.compile_dir(ROOT / package, quiet=1)


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client key pair (`id_ed25519`, `id_ed25519.pub`) the test SSH servers accept."""
    return servers.client_key(tmp_path_factory.mktemp("ssh-client"))


@pytest.fixture(scope="session")
def sshd_server(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: Path
) -> Iterator[servers.SshServer]:
    """OpenSSH's sshd on 127.0.0.1 and a free port (skipped when missing, failed under CI=true)."""
    with servers.openssh_server(tmp_path_factory.mktemp("sshd"), ssh_client_key) as server:
        yield server


@pytest.fixture(scope="session")
def asyncssh_server(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: Path
) -> Iterator[servers.SshServer]:
    """asyncssh's server, in a thread of this process, running commands with bash."""
    with servers.asyncssh_server(tmp_path_factory.mktemp("asyncssh"), ssh_client_key) as server:
        yield server


@pytest.fixture(scope="session")
def podman_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `unix://` URL of podman's Docker Engine API, with the busybox test image present."""
    with servers.podman_service(tmp_path_factory.mktemp("podman")) as url:
        yield url


@pytest.fixture(scope="session")
def busybox_image() -> str:
    return servers.BUSYBOX_IMAGE
