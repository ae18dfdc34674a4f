"""`stepflow token create --user --role`, `--api-key` and `stepflow token revoke` of a key, run as
subprocesses; what they make is checked against a real server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import jwt
import pytest

from api_compat.api_keys import keys_path
from tests.api.access_surfaces import serving
from tests.api.conftest import make_config
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]


def stepflow(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    return subprocess.run([sys.executable, "-m", "stepflow.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_token_create_with_a_user_and_a_role(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "token", "create", "--user", "alice", "--role", "standard", "--expires", "1h")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["exp"] - claims["iat"]) == ("alice", "standard", 3600)
    assert "(expires in 1h) for alice as standard" in result.stderr
    # the default is the owner's role
    result = stepflow(tmp_path, "token", "create")
    assert jwt.decode(result.stdout.strip(), options={"verify_signature": False})["role"] == "administrator"
    result = stepflow(tmp_path, "token", "create", "--role", "root")
    assert result.returncode == 2 and "invalid choice" in result.stderr and result.stdout == ""


async def test_an_api_key_from_the_cli_works_until_the_cli_revokes_it(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    result = stepflow(tmp_path, "token", "create", "--api-key", "--user", "runner-7", "--role", "standard")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    key_id = key.split(".", 1)[0]
    assert key_id.startswith("sfk_") and f"stepflow token revoke {key_id}" in result.stderr
    assert "shown this once" in result.stderr and "(never expires) for runner-7 as standard" in result.stderr
    assert key not in keys_path(tmp_path).read_text()
    assert stat.S_IMODE(keys_path(tmp_path).stat().st_mode) == 0o600
    async with serving(scripted, make_config(tmp_path, auth_enabled=True)) as url:
        async with session.get(url + "/api/testrunners", headers={"X-API-Key": key}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"user": "runner-7", "role": "standard", "via": "api_key"}
        result = stepflow(tmp_path, "token", "revoke", key_id)
        assert result.returncode == 0 and f"revoked API key {key_id}" in result.stderr, result.stderr
        async with session.get(url + "/api/testrunners", headers={"X-API-Key": key}) as resp:
            assert resp.status == 401
    result = stepflow(tmp_path, "token", "revoke", key_id)
    assert result.returncode == 0 and "already revoked" in result.stderr
    result = stepflow(tmp_path, "token", "revoke", "sfk_nothing")
    assert result.returncode == 2 and "not an API key id" in result.stderr and "Traceback" not in result.stderr
