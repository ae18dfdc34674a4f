"""`stepflow logs` of parallel steps: each line says which step it comes from."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.test_cli import ls_json, stepflow


def test_logs_of_several_workflow_steps_say_which_step_each_line_is_from(tmp_path: Path) -> None:
    workflow = tmp_path / "parallel.yaml"
    workflow.write_text(textwrap.dedent("""\
        name: parallel
        steps:
          - name: left
            run: echo from left; echo STEP_START:deep; echo in deep; echo STEP_COMPLETE:deep
          - name: right
            run: echo from right
        """))
    data = tmp_path / "data"
    assert stepflow(data, "run", "--plain", str(workflow)).returncode == 0
    execution_id = ls_json(data)[0]["id"]
    lines = stepflow(data, "logs", execution_id).stdout.splitlines()
    assert "[left] from left" in lines
    assert "[left] in deep" in lines  # a marker step's lines: the workflow step it runs under
    assert "[right] from right" in lines
    assert all(line.startswith(("[left] ", "[right] ")) for line in lines), lines
    # one step asked for: its lines as the command printed them
    assert stepflow(data, "logs", execution_id, "--step", "right").stdout == "from right\n"
    # a command's marker steps run one after the other: no labels
    assert stepflow(data, "exec", "--shell", "--", "echo STEP_START:a; echo one; echo STEP_START:b; echo two"
                    ).returncode == 0
    single = stepflow(data, "logs", ls_json(data)[0]["id"]).stdout.splitlines()
    assert single == ["STEP_START:a", "one", "STEP_START:b", "two"]


def test_logs_of_several_targets_and_steps_name_both(tmp_path: Path) -> None:
    workflow = tmp_path / "two.yaml"
    workflow.write_text(textwrap.dedent("""\
        name: two
        targets:
          also: {type: local}
        runs_on: [local, also]
        steps:
          - {name: first, run: echo one}
          - {name: second, run: echo two, needs: [first]}
        """))
    data = tmp_path / "data"
    result = stepflow(data, "run", "--plain", str(workflow))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = stepflow(data, "logs", ls_json(data)[0]["id"]).stdout.splitlines()
    assert sorted(lines) == ["[also] [first] one", "[also] [second] two", "[local] [first] one",
                             "[local] [second] two"]
