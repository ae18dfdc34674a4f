"""Token revocation honoured by a running server, and failed authentications rate limited (issue 9,
"Also")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from api_compat import ApiConfig, ConfigError, create_token, revoke_token, token_id
from api_compat.auth import AuthError, TokenVerifier, read_revoked
from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail, check_ok, receive
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_revoked_token_is_refused_without_a_restart(scripted: ScriptedEngine, tmp_path: Path,
                                                            session: aiohttp.ClientSession) -> None:
    kept, revoked = create_token(tmp_path), create_token(tmp_path)
    async with running(scripted, make_config(tmp_path, auth_enabled=True)) as lst:
        for token in (kept, revoked):  # both good, and remembered as good by the server
            async with session.get(lst.url + "/api/health", headers=bearer(token)) as resp:
                check_ok(resp.status, await resp.json())
        assert revoke_token(tmp_path, token_id(revoked)) == (token_id(revoked), True)
        async with session.get(lst.url + "/api/health", headers=bearer(revoked)) as resp:
            assert "revoked" in check_fail(resp.status, await resp.json(), 401)
        for url in (lst.ws_url, lst.url + "/ws"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(f"{url}?token={revoked}")
            assert info.value.status == 401
            async with session.ws_connect(f"{url}?token={kept}") as ws:
                assert (await receive(ws))["type"] == "connection_established"
        async with session.get(lst.url + "/api/health", headers=bearer(kept)) as resp:
            check_ok(resp.status, await resp.json())
        # revoked twice (here by the token itself): no change, still refused
        assert revoke_token(tmp_path, revoked) == (token_id(revoked), False)
        async with session.get(lst.url + "/api/health", headers=bearer(revoked)) as resp:
            check_fail(resp.status, await resp.json(), 401)
    # and after a restart
    with pytest.raises(AuthError, match="revoked"):
        TokenVerifier(tmp_path).check_header(f"Bearer {revoked}")
    TokenVerifier(tmp_path).check_header(f"Bearer {kept}")


def test_two_revokes_in_a_row_are_both_seen(tmp_path: Path) -> None:
    tokens = [create_token(tmp_path) for _ in range(3)]
    verifier = TokenVerifier(tmp_path)
    for token in tokens:
        verifier.check_header(f"Bearer {token}")
    # within one tick of the file system's clock: the denylist is replaced (a new inode) each time
    revoke_token(tmp_path, token_id(tokens[0]))
    with pytest.raises(AuthError, match="revoked"):
        verifier.check_header(f"Bearer {tokens[0]}")
    revoke_token(tmp_path, token_id(tokens[1]))
    with pytest.raises(AuthError, match="revoked"):
        verifier.check_header(f"Bearer {tokens[1]}")
    verifier.check_header(f"Bearer {tokens[2]}")
    assert read_revoked(tmp_path) == {token_id(tokens[0]), token_id(tokens[1])}


def test_a_token_of_another_secret_cannot_be_revoked_here(tmp_path: Path) -> None:
    foreign = create_token(tmp_path / "elsewhere")
    with pytest.raises(AuthError, match="not signed"):
        revoke_token(tmp_path, foreign)
    with pytest.raises(AuthError, match="not a token id"):
        revoke_token(tmp_path, "../../etc")


async def test_failed_authentications_are_rate_limited(scripted: ScriptedEngine, tmp_path: Path,
                                                       session: aiohttp.ClientSession) -> None:
    good = create_token(tmp_path)
    async with running(scripted, make_config(tmp_path, auth_enabled=True)) as lst:
        for _ in range(10):  # the default burst: 10 a minute
            async with session.get(lst.url + "/api/health", headers=bearer("guess")) as resp:
                check_fail(resp.status, await resp.json(), 401)
        for headers in (bearer("guess"), {}, bearer(good)):  # a right guess now is no different
            async with session.get(lst.url + "/api/executions", headers=headers) as resp:
                assert "too many failed" in check_fail(resp.status, await resp.json(), 429)
                assert 1 <= int(resp.headers["Retry-After"]) <= 60
        for url in (lst.ws_url, lst.url + "/ws"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(f"{url}?token={good}")
            assert info.value.status == 429


async def test_the_limit_lets_a_client_in_again_after_retry_after(scripted: ScriptedEngine, tmp_path: Path,
                                                                  session: aiohttp.ClientSession) -> None:
    good = create_token(tmp_path)
    config = make_config(tmp_path, auth_enabled=True, auth_failure_limit="2/second")
    async with running(scripted, config) as lst:
        # a good token never counts
        for _ in range(5):
            async with session.get(lst.url + "/api/health", headers=bearer(good)) as resp:
                check_ok(resp.status, await resp.json())
        for _ in range(2):
            async with session.get(lst.url + "/api/health") as resp:
                assert resp.status == 401
        async with session.get(lst.url + "/api/health", headers=bearer(good)) as resp:
            assert resp.status == 429
            retry_after = int(resp.headers["Retry-After"])
        await asyncio.sleep(retry_after)  # what the answer asked a client to do
        async with session.get(lst.url + "/api/health", headers=bearer(good)) as resp:
            check_ok(resp.status, await resp.json())


def test_config_reads_allowed_hosts_and_the_failure_limit(tmp_path: Path) -> None:
    config = ApiConfig.from_env({"STEPFLOW_ALLOWED_HOSTS": "box.lan, ci.example ",
                                 "STEPFLOW_AUTH_FAILURE_LIMIT": "5/minute"})
    assert config.allowed_hosts == ("box.lan", "ci.example") and config.auth_failure_limit == "5/minute"
    assert ApiConfig.from_env({}).auth_failure_limit == "10/minute"
    with pytest.raises(ConfigError, match="STEPFLOW_AUTH_FAILURE_LIMIT"):
        ApiConfig.from_env({"STEPFLOW_AUTH_FAILURE_LIMIT": "lots"}).check()
