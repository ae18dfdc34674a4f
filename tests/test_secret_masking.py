"""A secret never shows, whatever part of the output it is printed in: step names, errors, messages,
metadata, artifact names and descriptions, progress text, warnings. Checked as a user would meet it
(`stepflow exec`/`run`, `show --json`, `logs`, the CLI's own output) and in every byte the program
leaves in its data directory; and through the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import check_ok
from tests.test_cli import ROOT

pytestmark = [pytest.mark.timeout(120)]

SECRET = "s3cr3t-T0KEN-4242"
ANNOUNCED = "announced-Val-9191"

#: prints the secret (from $API_TOKEN) into every kind of marker, and a value it announces secret
#: (::add-mask::, from $ANNOUNCED)
SCRIPT = textwrap.dedent("""\
    echo "STEP_START:$API_TOKEN[owner=$API_TOKEN]"
    echo "STEP_PROGRESS:50 uploading with $API_TOKEN"
    echo "META:key_$API_TOKEN:value $API_TOKEN"
    echo "META:DESCRIPTION:about $API_TOKEN"
    echo hello > "report-$API_TOKEN.txt"
    echo "ARTIFACT:report-$API_TOKEN.txt"
    echo "ARTIFACT:report-$API_TOKEN.txt:report for $API_TOKEN"
    echo "STEP_COMPLETE:other-$API_TOKEN"
    echo "STEP_ERROR:broke with $API_TOKEN"
    echo "::group::$API_TOKEN"
    echo "::warning title=$API_TOKEN,file=$API_TOKEN.py::look at $API_TOKEN"
    echo "##teamcity[progressMessage 'step of $API_TOKEN']"
    echo "::endgroup::"
    echo "::add-mask::$ANNOUNCED"
    echo "STEP_START:$ANNOUNCED"
    echo "STEP_ERROR:$ANNOUNCED failed"
    echo "STEP_START:last"
    echo "STEP_COMPLETE:last"
""")


def run_cli(data: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), **(env or {})}
    return subprocess.run([sys.executable, "-m", "stepflow.main", *args], env=full_env, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_nowhere(data: Path, *results: subprocess.CompletedProcess, values: tuple[str, ...] = (SECRET,)) -> None:
    """No value in what the CLI printed, nor in any file (database, WAL, log, artifact) or file name
    under the data directory."""
    for result in results:
        for value in values:
            assert value not in result.stdout, result.stdout
            assert value not in result.stderr, result.stderr
    files = [p for p in data.rglob("*")]
    assert any(p.suffix == ".db" or p.name.endswith(".db") for p in files), files
    for path in files:
        for value in values:
            assert value not in str(path.relative_to(data)), path
        if path.is_file():
            content = path.read_bytes()
            for value in values:
                assert value.encode() not in content, f"{value} in {path}"


def show_json(data: Path, execution_id: str) -> dict[str, Any]:
    result = run_cli(data, "show", "--json", execution_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def step_names(shown: dict[str, Any]) -> list[str]:
    return [s["name"] for s in shown["steps"]]


def test_exec_secret_is_masked_in_every_marker_field_and_every_stored_byte(tmp_path: Path) -> None:
    data = tmp_path / "data"
    work = tmp_path / "work"
    work.mkdir()
    ran = run_cli(data, "exec", "--plain", "-v", "--secret", "API_TOKEN", "--cwd", str(work), "--",
                  "bash", "-c", SCRIPT, env={"API_TOKEN": SECRET, "ANNOUNCED": ANNOUNCED})
    assert "Traceback" not in ran.stderr, ran.stderr
    [listed] = json.loads(run_cli(data, "ls", "--json").stdout)
    shown = show_json(data, listed["id"])
    logs = run_cli(data, "logs", listed["id"])
    assert logs.returncode == 0, logs.stderr

    text = json.dumps(shown)
    assert SECRET not in text and ANNOUNCED not in text
    names = step_names(shown)
    # what a user sees instead: the masked names, in place
    assert "***" in names and "last" in names, names
    masked = [s for s in shown["steps"] if s["name"] == "***"]
    assert any("broke with ***" in (s.get("error_message") or "") for s in masked), masked
    assert "uploading with ***" in text and "value ***" in text and "about ***" in text
    assert "look at ***" in text and "step of ***" in text and "***_failed" not in text
    assert "key_***" in text
    assert {a["name"] for a in shown["artifacts"]} == {"report-***.txt", "report for ***"}
    assert "STEP_START:***" in logs.stdout and "::add-mask::***" in logs.stdout
    assert_nowhere(data, ran, logs, values=(SECRET, ANNOUNCED))


def test_run_workflow_secret_is_masked_in_group_names_and_the_warning_log_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(textwrap.dedent("""\
        name: secret-names
        secrets: [API_TOKEN]
        steps:
          - name: leak
            run: |
              echo "::group::$API_TOKEN"
              echo inside
              echo "::endgroup::"
              echo "STEP_START:deploy-$API_TOKEN"
              echo "STEP_COMPLETE:not-$API_TOKEN"
              echo "STEP_COMPLETE:deploy-$API_TOKEN"
    """))
    ran = run_cli(data, "run", "--plain", "-v", str(workflow), env={"API_TOKEN": SECRET})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # the mismatched STEP_COMPLETE was reported (a warning in the log, on stderr), masked
    assert "STEP_COMPLETE:not-*** ignored" in ran.stderr + ran.stdout, ran.stderr
    [listed] = json.loads(run_cli(data, "ls", "--json").stdout)
    shown = show_json(data, listed["id"])
    assert {"***", "deploy-***"} <= set(step_names(shown)), step_names(shown)
    logs = run_cli(data, "logs", listed["id"])
    assert "::group::***" in logs.stdout
    assert_nowhere(data, ran, logs)


async def test_api_serves_masked_step_names(tmp_path: Path) -> None:
    import aiohttp

    from api_compat import ApiListener
    from tests.api.conftest import make_config, running
    from tests.engine_helpers import engine_at, finished, submit_command

    os.environ["STEPFLOW_TEST_SECRET"] = SECRET
    try:
        async with engine_at(tmp_path / "data") as engine, running(engine, make_config(tmp_path)) as lst:
            listener: ApiListener = lst
            execution = await submit_command(engine,
                'echo "STEP_START:$STEPFLOW_TEST_SECRET"; echo "::warning::$STEPFLOW_TEST_SECRET"',
                secrets=["STEPFLOW_TEST_SECRET"],
            )
            await finished(engine, execution)
            async with aiohttp.ClientSession() as session:
                for path in (f"/api/executions/{execution.id}", f"/api/executions/{execution.id}/logs"):
                    async with session.get(listener.url + path) as resp:
                        body = await resp.text()
                        assert resp.status == 200, body
                        assert SECRET not in body, (path, body)
                async with session.get(listener.url + f"/api/executions/{execution.id}") as resp:
                    detail = check_ok(resp.status, await resp.json())
                assert "***" in [s["name"] for s in detail["steps"]]
    finally:
        del os.environ["STEPFLOW_TEST_SECRET"]


def test_a_marker_parameter_read_as_a_number_is_masked_too() -> None:
    from engine.execution import marker_tree as mt
    from engine.masking import Masker

    masker = Masker(["123456", "12"])
    opened = mt.OpenStep(123456, None, "pin 123456", {"pin": 123456, "retries": 3, "fast": True})
    # the step's local id stays what it is: the tree's own number, not output
    assert masker.mask_fields(opened) == mt.OpenStep(123456, None, "pin ***",
                                                     {"pin": "***", "retries": 3, "fast": True})
    assert masker.mask_fields(mt.SetProgress(123456, 50.0, "at 123456")) == mt.SetProgress(123456, 50.0, "at ***")
