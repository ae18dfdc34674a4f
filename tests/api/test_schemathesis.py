"""Schemathesis over the OpenAPI document of a real listener (issue 9 item 10): for every operation
of every surface, requests generated from the document (valid ones and invalid ones) get no server
error, only documented statuses and content types, responses that fit their documented schemas;
the valid ones are accepted and the invalid ones refused.

The engine is the real one (real store, real processes, markers parsed from real output) with a
runner that runs no command it is given: a fuzzer's `command` is shell text, and random shell text
could do anything. `EchoRunner` prints the text instead, in the test's folder.

Bounded: a fixed number of examples per operation, derandomized (the same requests every run), no
example database. Each operation is a test of its own, on a listener of its own (pytest-xdist spreads
them; the slowest takes a few seconds); `test_every_documented_operation_is_fuzzed` checks that the
operations tested are exactly the document's.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from api_compat import ApiListener, create_token
from api_compat.app import create_app
from api_compat.state import SURFACES
from engine.engine import Engine, EngineConfig
from storage import SqliteStore
from storage.paths import database_path
from tests.api.conftest import make_config, running
from tests.api.echo_runner import echo_runner_factory
from tests.api.scripted_engine import ScriptedEngine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: examples per operation and generation mode
MAX_EXAMPLES = 30

#: the rate-limit categories turned off for the fuzzer
FUZZ_UNLIMITED = ("opsconductor.requests", "rustci.registration", "rustci.status", "rustci.jobs", "rustci.bulk")

#: the longest the fuzzed listener holds an executr claim (`ApiConfig.executr_longest_claim_wait`)
FUZZ_CLAIM_WAIT = 0.1

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
        # a fuzzer sends thousands of requests a minute: the documented request limits are off here
        # (tests/api/test_access_rate_limits.py, test_opsconductor_access.py, test_rustci_access.py
        # check them)
        limits = tuple((name, "off") for name in FUZZ_UNLIMITED)
        # and an executr claim is held at most 0.1 s, whatever `?wait=` (up to 25 s) it asks for: it
        # still waits, then answers 204 as documented (30 examples of 0-25 s took 165 s)
        config = make_config(tmp_path, rate_limits=limits, executr_longest_claim_wait=FUZZ_CLAIM_WAIT)
        async with running(engine, config) as listener:
            yield listener
    finally:
        await engine.shutdown()


def _run_operation(operation: Any, base_url: str, checks: list[Callable[..., Any]],
                   mode: Any, sent: list[int], headers: dict[str, str]) -> str | None:
    """Every example of one operation in one generation mode (counted in `sent`); the first
    failure's report, or None."""
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sent[0] += 1
        case.call_and_validate(base_url=base_url, checks=checks, timeout=30, headers=headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' reports of what was sent and answered
        return f"{operation.method.upper()} {operation.path} ({mode.value}):\n{exc}"
    return None


def fuzz(base_url: str, surface: str, method: str, path: str, token: str) -> list[str]:
    """Every example of the operation `method path` of `surface` (the title its tags begin with), with
    a bearer token, in each generation mode that applies."""
    schema = schemathesis.openapi.from_url(base_url + DOCUMENT)
    headers = {"Authorization": f"Bearer {token}"}
    common = [st_checks.not_a_server_error, st_checks.status_code_conformance,
              st_checks.content_type_conformance, st_checks.response_schema_conformance]
    found = [result.ok() for result in schema.get_all_operations()
             if (result.ok().method.upper(), result.ok().path) == (method, path)]
    assert len(found) == 1, f"{method} {path} is {len(found)} operations of the document"
    operation = found[0]
    tags = operation.definition.raw.get("tags", ())
    assert any(tag.startswith(f"{surface}:") for tag in tags), f"{method} {path} is tagged {tags}"
    failures: list[str] = []
    key = (method, path)
    positive = common if key in NOT_CHECKED_FOR_ACCEPTANCE else [*common, st_checks.positive_data_acceptance]
    runs = [(GenerationMode.POSITIVE, positive)]
    if len(operation.query) or len(operation.body):
        # only a query or a body can be made invalid (a path parameter is any string)
        runs.append((GenerationMode.NEGATIVE, [*common, st_checks.negative_data_rejection]))
    for mode, checks in runs:
        sent = [0]
        failure = _run_operation(operation, base_url, checks, mode, sent, headers)
        if failure is not None:
            failures.append(failure)
        # every mode sends something; one that can vary (a parameter or a body) sends many
        least = MIN_VARIED if (len(operation.path_parameters) or len(operation.query) or len(operation.body)) else 1
        assert sent[0] >= least, f"only {sent[0]} {mode.value} requests sent to {method} {path}"
        print(f"schemathesis: {sent[0]} {mode.value} requests to {method} {path} ({surface})")
    return failures


#: the surfaces (their OpenAPI titles) and how few operations each documents at least
SURFACES_FUZZED = ("StepFlow Monitor", "executr job queue", "OpsConductor", "RustCI runners")
LEAST_OPERATIONS = 5
#: the fewest requests sent in a mode to an operation with a parameter or a body
MIN_VARIED = 10


#: the OpenAPI document's own route
DOCUMENT = "/api/openapi.json"


def _documented_operations() -> list[tuple[str, str, str]]:
    """(surface title, method, path) of every route the listener documents, from the application a
    listener builds (no server runs: an in-memory engine, routes registered, nothing started)."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(ScriptedEngine(Path(folder)), config=make_config(Path(folder)))
        # schemathesis leaves out the document it was loaded from (as the test per surface did)
        return [(s.title, doc.method.upper(), doc.path) for s in app[SURFACES] for doc in s.routes
                if doc.path != DOCUMENT]


OPERATIONS = _documented_operations()


async def test_every_documented_operation_is_fuzzed(fuzzed_listener: ApiListener, tmp_path: Path) -> None:
    """The operations of the served document, by surface, are the ones the test below is
    parametrized with, and each surface has a few."""
    def load() -> list[Any]:
        return list(schemathesis.openapi.from_url(fuzzed_listener.url + DOCUMENT).get_all_operations())

    served: dict[str, set[tuple[str, str]]] = {}
    for result in await asyncio.to_thread(load):
        operation = result.ok()
        for tag in operation.definition.raw.get("tags", ()):
            served.setdefault(tag.split(":")[0], set()).add((operation.method.upper(), operation.path))
    tested: dict[str, set[tuple[str, str]]] = {}
    for surface, method, path in OPERATIONS:
        tested.setdefault(surface, set()).add((method, path))
    assert served == tested
    for surface in SURFACES_FUZZED:
        assert len(tested.get(surface, ())) >= LEAST_OPERATIONS, f"only {len(tested.get(surface, ()))} operations of {surface}"


@pytest.mark.parametrize(("surface", "method", "path"), OPERATIONS,
                         ids=[f"{s} {m} {p}" for s, m, p in OPERATIONS])
async def test_schemathesis_finds_nothing_on_the_operation(fuzzed_listener: ApiListener, tmp_path: Path,
                                                           surface: str, method: str, path: str) -> None:
    token = create_token(tmp_path / "data")
    # schemathesis' client is synchronous: it runs in a thread while this loop serves it
    failures = await asyncio.to_thread(fuzz, fuzzed_listener.url, surface, method, path, token)
    assert not failures, "\n\n".join(failures)
