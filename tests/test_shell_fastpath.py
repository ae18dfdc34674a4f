from __future__ import annotations

import pytest

from engine.shell_fastpath import direct_argv


@pytest.mark.parametrize("script, argv", [
    ("true", ["true"]),
    ("/bin/true", ["/bin/true"]),
    ("  pytest -q tests/unit  ", ["pytest", "-q", "tests/unit"]),
    ("python3 scripts/progress.py --items=20", ["python3", "scripts/progress.py", "--items=20"]),
])
def test_plain_commands_run_without_a_shell(script: str, argv: list[str]) -> None:
    assert direct_argv(script) == argv


@pytest.mark.parametrize("script", [
    "echo $HOME", "a | b", "a && b", "a; b", "echo 'x y'", 'echo "x"', "FOO=1 cmd", "cd /tmp",
    "export A=1", "ls *.py", "cmd > out", "a\nb", "exit 3", "source env.sh", "x=1", "echo ~", "",
])
def test_anything_shell_like_goes_through_the_shell(script: str) -> None:
    assert direct_argv(script) is None
