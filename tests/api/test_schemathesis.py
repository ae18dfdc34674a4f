"""Schemathesis over the OpenAPI document of a real listener (issue 9 item 10): for every operation
of every surface, requests generated from the document (valid ones and invalid ones) get no server
error, only documented statuses and content types, responses that fit their documented schemas;
the valid ones are accepted and the invalid ones refused.

The engine is the real one (real store, real processes, markers parsed from real output) with a
runner that runs no command it is given: a fuzzer's `command` is shell text, and random shell text
could do anything. `EchoRunner` prints the text instead, in the test's folder.

Bounded: a fixed number of examples per operation, derandomized (the same requests every run), no
example database; about 20 s here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from api_compat import ApiListener
from engine.engine import Engine, EngineConfig
from storage import SqliteStore
from storage.paths import database_path
from tests.api.conftest import make_config, running
from tests.api.echo_runner import echo_runner_factory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: examples per operation and generation mode
MAX_EXAMPLES = 50

#: operations whose valid-looking requests may rightly be refused, and why: the document cannot say
#: in a JSON schema what the handler checks
NOT_CHECKED_FOR_ACCEPTANCE = {
    # `text` must be a workflow (YAML that validates), `path` a workflow file on the server
    ("POST", "/api/workflows"),
    # the WebSocket: a plain GET (all a fuzzer sends) is refused with 400, as documented
    ("GET", "/ws"),
    ("GET", "/api/runners/ws"),
    # executr's bulk submit validates each item on its own (per-item results, 206 for some refused):
    # its document takes any objects, and a body of only refused ones answers 400, as the reference does
    ("POST", "/api/v1/jobs/bulk"),
    # OpsConductor: `target_ids` must name registered targets (and a job without its own needs some)
    ("POST", "/api/jobs"),
    ("POST", "/api/jobs/{job_id}/execute"),
    # OpsConductor's WebSocket: a plain GET is refused with 400, as documented
    ("GET", "/ws/executions"),
}


@pytest.fixture
async def fuzzed_listener(tmp_path: Path) -> AsyncIterator[ApiListener]:
    work = tmp_path / "work"
    work.mkdir()
    engine = Engine(SqliteStore(database_path(tmp_path / "data")), tmp_path / "data",
                    EngineConfig(kill_grace=1.0, shutdown_grace=5), runner_factory=echo_runner_factory(work))
    await engine.start()
    try:
        async with running(engine, make_config(tmp_path)) as listener:
            yield listener
    finally:
        await engine.shutdown()


def _run_operation(operation: Any, base_url: str, checks: list[Callable[..., Any]],
                   mode: Any, sent: list[int]) -> str | None:
    """Every example of one operation in one generation mode (counted in `sent`); the first
    failure's report, or None."""
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sent[0] += 1
        case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' reports of what was sent and answered
        return f"{operation.method.upper()} {operation.path} ({mode.value}):\n{exc}"
    return None


def fuzz(base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_url(base_url + "/api/openapi.json")
    common = [st_checks.not_a_server_error, st_checks.status_code_conformance,
              st_checks.content_type_conformance, st_checks.response_schema_conformance]
    failures: list[str] = []
    operations = 0
    sent = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        key = (operation.method.upper(), operation.path)
        positive = common if key in NOT_CHECKED_FOR_ACCEPTANCE else [*common, st_checks.positive_data_acceptance]
        runs = [(GenerationMode.POSITIVE, positive)]
        if len(operation.query) or len(operation.body):
            # only a query or a body can be made invalid (a path parameter is any string)
            runs.append((GenerationMode.NEGATIVE, [*common, st_checks.negative_data_rejection]))
        for mode, checks in runs:
            failure = _run_operation(operation, base_url, checks, mode, sent)
            if failure is not None:
                failures.append(failure)
    assert operations >= 20, f"only {operations} operations in the document"
    assert sent[0] >= 10 * operations, f"only {sent[0]} requests sent"
    print(f"schemathesis: {sent[0]} requests over {operations} operations")
    return failures


async def test_schemathesis_finds_nothing_on_any_surface(fuzzed_listener: ApiListener) -> None:
    # schemathesis' client is synchronous: it runs in a thread while this loop serves it
    failures = await asyncio.to_thread(fuzz, fuzzed_listener.url)
    assert not failures, "\n\n".join(failures)
