"""A command that cannot be run ends as a shell would end it: 127 when the program is not found,
126 when it is found but cannot be executed. The execution records it (it recorded 1, and 127 only
with --shell) and `stepflow exec` exits with it, as it exits with any code its command ends with."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.test_cli import ls_json, stepflow

pytestmark = [pytest.mark.timeout(120)]


def recorded_exit_code(data: Path) -> int | None:
    [execution] = ls_json(data)
    assert execution["status"] == "failed"
    return execution["exit_code"]


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["no-such-program"], 127, "command not found"),
    (["./plain.txt"], 126, "permission denied"),
    (["./folder"], 126, "it is a directory"),
    (["./no-interpreter.sh"], 126, "interpreter"),
    (["--shell", "--", "no-such-program"], 127, "command not found"),
    (["sh", "-c", "exit 3"], 3, "exit code 3"),
])
def test_exec_records_and_exits_with_the_code_a_shell_gives(tmp_path: Path, argv: list[str], code: int,
                                                            says: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "plain.txt").write_text("not a program\n")
    (work / "folder").mkdir()
    script = work / "no-interpreter.sh"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    args = argv if argv[0] == "--shell" else ["--", *argv]
    result = stepflow(tmp_path / "data", "exec", "--plain", *args, cwd=work)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert recorded_exit_code(tmp_path / "data") == code


def test_a_workflow_step_whose_program_is_missing_exits_127(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(textwrap.dedent("""\
        name: missing
        steps:
          - {name: tool, run: no-such-program --flag}
    """))
    result = stepflow(tmp_path / "data", "run", "--plain", str(wf))
    assert result.returncode == 1, result.stdout + result.stderr  # `run`: 0, 1 or 130, as README says
    assert recorded_exit_code(tmp_path / "data") == 127
    [execution] = ls_json(tmp_path / "data")
    shown = json.loads(stepflow(tmp_path / "data", "show", "--json", execution["id"]).stdout)
    [step] = [s for s in shown["steps"] if s["name"] == "tool"]
    assert step["exit_code"] == 127
