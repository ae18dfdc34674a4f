"""`POST /api/workflows`: a `path` is read only inside the workflow folders the server was started with,
no answer quotes a file, and hostile documents (alias bombs, deep nesting) get a 400 quickly while the
server goes on answering. A real engine on a SQLite file, a real listener on loopback, a real client."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiConfig, create_token
from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail, check_ok, finish
from tests.engine_helpers import submit_workflow
from tests.test_workflow_limits import billion_laughs

ROOT = Path(__file__).resolve().parent.parent.parent
GOOD = "steps:\n  - {name: hello, run: echo hello}\n"


async def post(listener: Any, body: dict, *, within: float = 15) -> tuple[int, Any, str]:
    """The status, the parsed body and the raw text of the answer, which must come `within` seconds."""
    async with asyncio.timeout(within), aiohttp.ClientSession() as session, session.post(
        listener.url + "/api/workflows", json=body,
    ) as resp:
        text = await resp.text()
        return resp.status, await resp.json(content_type=None), text


async def health(listener: Any) -> None:
    async with asyncio.timeout(10), aiohttp.ClientSession() as session, session.get(
        listener.url + "/api/health",
    ) as resp:
        assert resp.status == 200


def leaks(secret: str, text: str) -> bool:
    """Any 6 characters of the secret in a row."""
    return any(secret[i:i + 6] in text for i in range(len(secret) - 5))


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "ok.yaml").write_text(GOOD)
    return folder


@pytest.fixture
async def served(engine: Any, tmp_path: Path, flows: Path) -> AsyncIterator[Any]:
    async with running(engine, make_config(tmp_path, workflow_dirs=(flows,))) as listener:
        yield listener


def secret_of(engine: Any) -> tuple[Path, str]:
    create_token(engine.data_dir)  # makes the API's secret file, as `stepflow token create` does
    path = Path(engine.data_dir) / "api_secret"
    return path, path.read_text().strip()


async def test_without_folders_no_path_is_read_and_the_answer_says_how_to_allow_one(
    engine: Any, tmp_path: Path,
) -> None:
    secret_file, secret = secret_of(engine)
    async with running(engine, make_config(tmp_path)) as listener:
        status, body, text = await post(listener, {"path": str(secret_file)})
        error = check_fail(status, body, 400)
        assert "--workflows" in error and "STEPFLOW_WORKFLOW_DIRS" in error and "'text'" in error
        assert not leaks(secret, text)
        # the workflow itself needs no folder
        status, body, _ = await post(listener, {"text": GOOD})
        execution = check_ok(status, body, expect=201)
        assert (await finish(engine, execution["execution_id"])).status.value == "completed"


async def test_the_data_directory_is_refused_even_inside_a_workflow_folder(engine: Any, tmp_path: Path) -> None:
    secret_file, secret = secret_of(engine)
    assert secret_file.is_relative_to(tmp_path)
    async with running(engine, make_config(tmp_path, workflow_dirs=(tmp_path,))) as listener:
        status, body, text = await post(listener, {"path": str(secret_file)})
        assert "workflow folders" in check_fail(status, body, 403)
        assert not leaks(secret, text)


async def test_paths_outside_the_folders_are_refused_however_written(
    engine: Any, served: Any, tmp_path: Path, flows: Path,
) -> None:
    secret_file, secret = secret_of(engine)
    outside = tmp_path / "outside.yaml"
    outside.write_text(GOOD)
    (flows / "link.yaml").symlink_to(outside)
    (flows / "linked").symlink_to(tmp_path)
    for path in (str(secret_file), "/etc/passwd", str(outside), f"{flows}/../outside.yaml",
                 str(flows / "link.yaml"), str(flows / "linked" / "outside.yaml"),
                 str(flows / "linked" / "data" / "api_secret"), os.path.relpath(outside),
                 str(tmp_path / "missing.yaml")):
        status, body, text = await post(served, {"path": path})
        error = check_fail(status, body, 403)
        # the same answer whether the file exists or not, and nothing of it
        assert error == f"'path' must name a file in the workflow folders of this server ({flows.resolve()})"
        assert not leaks(secret, text) and "root:" not in text
    await health(served)


async def test_a_file_inside_the_folders_runs(engine: Any, served: Any, flows: Path) -> None:
    (flows / "sub").mkdir()
    (flows / "sub" / "deeper.yaml").write_text(GOOD)
    for path in (flows / "ok.yaml", flows / "sub" / ".." / "ok.yaml", flows / "sub" / "deeper.yaml"):
        status, body, _ = await post(served, {"path": str(path)})
        execution = check_ok(status, body, expect=201)
        assert (await finish(engine, execution["execution_id"])).status.value == "completed"
    status, body, _ = await post(served, {"path": str(flows / "missing.yaml")})
    assert check_fail(status, body, 400) == f"{flows.resolve()}/missing.yaml:1:1: cannot read the file: " \
                                           "No such file or directory"


async def test_a_file_inside_the_folders_that_is_no_workflow_is_not_quoted(
    engine: Any, served: Any, flows: Path,
) -> None:
    _, secret = secret_of(engine)
    (flows / "scalar.yaml").write_text(secret + "\n")
    (flows / "mapping.yaml").write_text(f"steps: {secret}\ntoken: {secret}\n")
    (flows / "broken.yaml").write_text(f"steps: [*{secret}]\n")
    for name, message in (
        ("scalar.yaml", "1:1: a workflow must be a mapping of keys (name, steps, ...), got a string"),
        ("mapping.yaml", "1:8: steps: expected a list, got a string"),
        ("broken.yaml", "1:9: invalid YAML: found undefined alias"),
    ):
        status, body, text = await post(served, {"path": str(flows / name)})
        error = check_fail(status, body, 400)
        assert error.startswith(f"{(flows / name).resolve()}:{message}"), error
        assert not leaks(secret, text), text


async def test_an_alias_bomb_or_deep_nesting_gets_a_400_quickly_and_the_server_goes_on(
    served: Any, flows: Path,
) -> None:
    (flows / "bomb.yaml").write_text(billion_laughs())
    for body, message in (
        ({"text": billion_laughs()}, r"<workflow>:\d+:\d+: too many aliases"),
        ({"path": str(flows / "bomb.yaml")}, rf"{re.escape(str(flows.resolve()))}/bomb\.yaml:\d+:\d+: too many aliases"),
        ({"text": "steps: " + "[" * 20_000 + "]" * 20_000}, r"<workflow>:1:\d+: nesting too deep"),
        ({"text": "- " * 20_000}, r"<workflow>:1:\d+: nesting too deep"),
    ):
        status, answer, _ = await post(served, body, within=10)
        assert re.match(message, check_fail(status, answer, 400))
        await health(served)


async def test_a_workflow_text_beyond_the_body_cap_is_refused_unread(served: Any) -> None:
    status, body, _ = await post(served, {"text": "# padding\n" * 150_000}, within=10)  # 1.5 MB
    check_fail(status, body, 413)
    await health(served)


async def test_a_bomb_does_not_stall_other_clients(served: Any) -> None:
    """Health checks sent with six bombs are answered (bombs are read in threads of their own), and
    every bomb gets its 400 in time (no bomb is read for long)."""
    bombing = [asyncio.create_task(post(served, {"text": billion_laughs()}, within=12)) for _ in range(6)]
    for _ in range(5):
        await health(served)
    assert [(await bomb)[0] for bomb in bombing] == [400] * 6


def test_the_folders_come_from_the_environment_unless_given(tmp_path: Path) -> None:
    env = {"STEPFLOW_WORKFLOW_DIRS": f"{tmp_path / 'a'}{os.pathsep}~/b{os.pathsep}"}
    assert ApiConfig.from_env(env).workflow_dirs == (tmp_path / "a", Path("~/b").expanduser())
    assert ApiConfig.from_env(env, workflow_dirs=(tmp_path,)).workflow_dirs == (tmp_path,)
    assert ApiConfig.from_env({}).workflow_dirs == ()


async def test_the_tuis_listener_runs_files_of_the_folders_it_offers(
    engine: Any, tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stepflow.wiring import start_api

    monkeypatch.setenv("STEPFLOW_WEBSOCKET_PORT", "off")
    monkeypatch.delenv("STEPFLOW_WORKFLOW_DIRS", raising=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "ok.yaml").write_text(GOOD)

    async def check_offered(named: list[Path], offered: Path, refused: Path) -> None:
        """With `named` folders (the TUI's arguments), the API runs a file of `offered` only."""
        args = argparse.Namespace(api_host="127.0.0.1", api_port=0, workflow_dirs=[str(d) for d in named])
        listener = await start_api(engine, Path(engine.data_dir), args, [offered])
        try:
            check_ok(*(await post(listener, {"path": str(offered / "ok.yaml")}))[:2], expect=201)
            check_fail(*(await post(listener, {"path": str(refused / "ok.yaml")}))[:2], 403)
        finally:
            await listener.stop()

    # `stepflow tui` (no folders named): the folders it offers by default
    await check_offered([], offered=flows, refused=other)
    # `stepflow tui other`: those only
    await check_offered([other], offered=other, refused=flows)


async def test_a_remote_tui_sends_the_text_when_the_server_reads_no_such_path(engine: Any, tmp_path: Path) -> None:
    from api_compat.monitor.client import RemoteEngine

    local = tmp_path / "mine.yaml"
    local.write_text(GOOD)
    async with running(engine, make_config(tmp_path)) as listener, RemoteEngine(listener.url) as remote:
        execution = await submit_workflow(remote, local)
        assert (await finish(engine, execution.id)).status.value == "completed"


def test_stepflow_serve_takes_workflow_folders(tmp_path: Path, flows: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")},
           "STEPFLOW_STORAGE_PATH": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port", "0",
                             "--workflows", str(flows)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.match(r"stepflow serving (http://\S+)", first)
        assert match is not None, first + proc.stderr.read() if proc.poll() is not None else first

        class At:
            url = match[1]

        async def check() -> None:
            check_ok(*(await post(At, {"path": str(flows / "ok.yaml")}))[:2], expect=201)
            check_fail(*(await post(At, {"path": str(tmp_path / "data" / "stepflow.db")}))[:2], 403)

        asyncio.run(check())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"workflow files   {flows}\n" in proc.stdout.read()


def test_stepflow_serve_refuses_a_workflow_folder_that_is_none(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port", "0",
                           "--workflows", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data")})
    assert done.returncode != 0
    assert done.stderr == f"stepflow: --workflows {tmp_path / 'nowhere'}: not a folder\n"
