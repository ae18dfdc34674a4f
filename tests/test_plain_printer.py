"""`stepflow exec --plain` prints a line for each marker step's start and end, named by its path, and
at a failed end the last lines of the latest failed steps (issue 16, goal 4: the printer takes
~100,000 events a second; what it prints stays the same to the byte)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_cli import stepflow

#: steps per group; every second one of the `test` group fails
STEPS = 24

#: two groups (TeamCity blocks, which nest) of marker steps, then a step the command's exit fails
COMMAND = f"""
for g in build test; do
  echo "##teamcity[blockOpened name='$g']"
  for i in $(seq 1 {STEPS}); do
    echo STEP_START:$g$i; echo "line $i of $g"
    if [ $g = test ] && [ $((i % 2)) -eq 0 ]; then echo "STEP_ERROR:boom $i"; else echo STEP_COMPLETE:$g$i; fi
  done
  echo "##teamcity[blockClosed name='$g']"
done
echo STEP_START:last; echo "1 2 3"; echo "exit soon"; exit 3
"""


def expected() -> list[str]:
    lines = []
    for group in ("build", "test"):
        lines.append(f"▶ {group} started")
        for i in range(1, STEPS + 1):
            lines.append(f"▶ {group} › {group}{i} started")
            if group == "test" and i % 2 == 0:
                lines.append(f"✗ {group} › {group}{i} failed (…) boom {i}")
            else:
                lines.append(f"✓ {group} › {group}{i} completed (…)")
        lines.append(f"✓ {group} completed (…)")
    lines += ["▶ last started", "✗ last failed (…) exit code 3", "✗ failed exec in … (exit code 3)", "  exit code 3"]
    # the latest ten failed marker steps (`last` too: the command's exit failed it), their last lines
    tails = {f"test › test{i}": [f"STEP_START:test{i}", f"line {i} of test", f"STEP_ERROR:boom {i}"]
             for i in range(2, STEPS + 1, 2)}
    tails["last"] = ["STEP_START:last", "1 2 3", "exit soon"]
    for path, tail in list(tails.items())[-10:]:
        lines += [f"── last lines of {path} ──", *(f"  {line}" for line in tail)]
    lines.append(f"… and {len(tails) - 10} more failed steps (stepflow show lists them)")
    return lines


def test_plain_lines_of_marker_steps_in_groups_and_the_tails_of_the_latest_failed_ones(tmp_path: Path) -> None:
    result = stepflow(tmp_path, "exec", "--plain", "--name", "exec", "--shell", "--", COMMAND)
    assert result.returncode == 3, result.stderr
    printed = result.stdout.splitlines()
    assert printed[0].startswith("exec  execution ")
    assert printed[-1].startswith("stepflow show ")
    # durations vary from run to run: a step's `(12ms)`, the execution's `in 80ms`
    body = [re.sub(r"\(\d+ms\)|(?<= in )[\d.]+m?s", lambda m: "(…)" if m[0][0] == "(" else "…", line)
            for line in printed[1:-1]]
    assert body == expected(), "\n".join(body)
