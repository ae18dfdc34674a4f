"""What the CLI says besides its results: its version, warnings in a person's words, singulars, the
mark of a cut line."""

from __future__ import annotations

import re
import textwrap
from importlib.metadata import version
from pathlib import Path

from engine.lines import CONTINUED, DEFAULT_MAX_LINE
from tests.test_cli import ls_json, stepflow

#: what Python's logging prints with the detailed format: `2026-12-05 16:01:12,280 ERROR engine.x: …`
RAW_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ", re.M)


def test_version_comes_from_the_package(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"stepflow {version('stepflow')}"


def test_no_raw_logging_lines_unless_verbose(tmp_path: Path) -> None:
    # an artifact outside the working directory is refused: the engine logs an error about it
    command = ("exec", "--plain", "--shell", "--", "echo ARTIFACT:/etc/hostname:x; echo done")
    result = stepflow(tmp_path, *command)
    assert result.returncode == 0, result.stderr
    assert "error: artifact refused" in result.stdout  # said once, as the execution's notice
    assert not RAW_LOG_LINE.search(result.stderr), result.stderr
    assert "artifact refused" not in result.stderr
    verbose = stepflow(tmp_path, *command[:2], "-v", *command[2:])
    assert RAW_LOG_LINE.search(verbose.stderr), verbose.stderr  # -v: the details, for a bug report


def test_a_warning_of_a_read_command_is_one_short_line(tmp_path: Path) -> None:
    import sqlite3

    assert stepflow(tmp_path, "exec", "--", "true").returncode == 0
    [execution] = ls_json(tmp_path)
    # as an engine killed mid-run leaves it
    with sqlite3.connect(tmp_path / "stepflow.db") as db:
        db.execute("UPDATE executions SET status = 'running', completed_at = NULL WHERE id = ?", (execution["id"],))
    result = stepflow(tmp_path, "ls")
    assert result.returncode == 0
    assert "stepflow: marked 1 execution(s) left running by a dead engine as failed" in result.stderr.splitlines()
    assert not RAW_LOG_LINE.search(result.stderr), result.stderr


def test_validate_says_1_step(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text("name: one\nsteps:\n  - {name: a, run: 'true'}\n")
    two = tmp_path / "two.yaml"
    two.write_text("name: two\nsteps:\n  - {name: a, run: 'true'}\n  - {name: b, run: 'true'}\n")
    result = stepflow(tmp_path, "validate", str(one), str(two))
    assert result.returncode == 0, result.stderr
    assert f"{one}: ok (1 step, targets: local)" in result.stdout
    assert f"{two}: ok (2 steps, targets: local)" in result.stdout


def test_token_of_one_day_says_1_day(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "token", "create", "--days", "1")
    assert result.returncode == 0, result.stderr
    assert "(expires in 1 day)" in result.stderr


def test_a_line_longer_than_the_split_size_carries_the_continuation_mark(tmp_path: Path) -> None:
    size = DEFAULT_MAX_LINE * 2 + 10
    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent(f"""\
        import string
        text = (string.ascii_letters * {size // 52 + 1})[:{size}]
        print(text)
        print("short")
        """))
    result = stepflow(tmp_path, "exec", "--", "python3", str(script))
    assert result.returncode == 0, result.stderr
    [execution] = ls_json(tmp_path)
    lines = stepflow(tmp_path, "logs", execution["id"]).stdout.splitlines()
    assert [len(line) for line in lines] == [DEFAULT_MAX_LINE + 1, DEFAULT_MAX_LINE + 1, 10, 5]
    assert lines[0].endswith(CONTINUED) and lines[1].endswith(CONTINUED)
    assert lines[2:] == [lines[2], "short"] and not lines[2].endswith(CONTINUED)
    whole = "".join(line.removesuffix(CONTINUED) for line in lines[:3])
    import string
    assert whole == (string.ascii_letters * (size // 52 + 1))[:size]
