"""Hostile workflow documents: alias bombs, deep nesting, huge or endless files, and files that are not
workflows at all. Each is refused with one `file:line:column: message`, quickly and in bounded memory,
and no message quotes what the file holds.

The bombs run in a child process with its address space capped: a loader that expands them again fails
the test (MemoryError, or the time bound) instead of taking the machine's memory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.workflow.load import WorkflowError, load_workflow, parse_workflow, read_workflow
from engine.workflow.yaml_reader import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_VALUES

ROOT = Path(__file__).resolve().parent.parent
#: the child's address space: the 2 KB bomb took 8 GB before
CHILD_MEMORY = 1536 * 1024 * 1024


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """~500 bytes that expand to width**levels (387 million) values."""
    lines = ["x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"x-a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"steps: [{{name: boom, run: echo, env: {{A: *a{levels - 1}}}}}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9, width: int = 9) -> str:
    """The same with `<<` merge keys: each level merges the one below `width` times."""
    lines = ["x-m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"x-m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * width) + "]}")
    lines.append(f"steps: [{{name: boom, run: echo, env: *m{levels - 1}}}]")
    return "\n".join(lines) + "\n"


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


_MEASURE = """
import json, sys, time, tracemalloc
from engine.workflow.load import WorkflowError, parse_workflow
text = open(sys.argv[1]).read()
tracemalloc.start()
started = time.process_time()
try:
    parse_workflow(text, "bomb.yaml")
    message = "accepted"
except WorkflowError as exc:
    message = str(exc)
print(json.dumps({"message": message, "seconds": time.process_time() - started,
                  "peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}))
"""


def measure(tmp_path: Path, text: str) -> dict:
    """Parse `text` in a capped child: its message, CPU seconds (other work on the machine does not
    count) and peak of Python memory."""
    source = tmp_path / "bomb.yaml"
    source.write_text(text)
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(source)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, preexec_fn=limit_memory)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("bomb", [billion_laughs, merge_bomb])
def test_an_alias_bomb_is_refused_at_its_place_quickly_and_in_bounded_memory(tmp_path: Path, bomb) -> None:  # noqa: ANN001
    text = bomb()
    assert len(text) < 2048
    got = measure(tmp_path, text)
    assert re.fullmatch(r"bomb\.yaml:\d+:\d+: too many aliases: the document expands to more than [\d,]+ values",
                        got["message"]), got
    # tracemalloc makes the parse ~3x slower than it is
    assert got["seconds"] < 4, got
    assert got["peak_mb"] < 100, got


def test_anchors_and_merge_keys_used_as_meant_still_work() -> None:
    text = textwrap.dedent("""\
        x-step: &step {run: make, timeout: 10m, env: &env {A: "1"}}
        steps:
          - {<<: *step, name: one}
          - {<<: *step, name: two, env: *env}
          - {<<: *step, name: three, needs: [one, two]}
        """)
    workflow = parse_workflow(text)
    assert [s.name for s in workflow.steps] == ["one", "two", "three"]
    assert workflow.steps[1].env == {"A": "1"}


@pytest.mark.parametrize("text", [
    "steps: " + "[" * 20_000 + "]" * 20_000,
    "steps: " + "{a: " * 20_000 + "x" + "}" * 20_000,
    "- " * 20_000 + "x\n",
    "steps:\n" + "".join("  " * i + "- \n" for i in range(1, 300)),
    "steps: " + "[" * 500 + "]" * 500,  # within libyaml's own bound of 1,000
], ids=["flow-lists", "flow-mappings", "block-lists", "indented", "flow-lists-500"])
def test_deep_nesting_gives_its_place_not_a_recursion_error(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text, "deep.yaml")
    assert re.fullmatch(rf"deep\.yaml:\d+:\d+: nesting too deep \(more than {MAX_DEPTH} levels\)", str(info.value))
    assert time.perf_counter() - started < 2


def test_aliases_cannot_nest_beyond_the_depth_either() -> None:
    # each anchor is 60 levels deep and holds the previous one at its bottom: 600 levels once read
    lines = ["x-d0: &d0 " + "[" * 60 + "]" * 60]
    for i in range(1, 10):
        lines.append(f"x-d{i}: &d{i} " + "[" * 60 + f"*d{i - 1}" + "]" * 60)
    lines.append("steps: [{name: a, run: x, env: {A: *d9}}]")
    with pytest.raises(WorkflowError) as info:
        parse_workflow("\n".join(lines), "chain.yaml")
    assert re.fullmatch(r"chain\.yaml:\d+:\d+: nesting too deep \(more than \d+ levels\)", str(info.value))


@pytest.mark.parametrize("text", [
    "steps:\n" + "  - {name: s, run: x}\n" * (MAX_VALUES // 4),  # 550 KB
    "x-many: [" + "a," * MAX_VALUES + "]\nsteps: [{name: s, run: x}]",  # 200 KB
], ids=["550KB", "200KB"])
def test_too_many_values_are_refused(text: str) -> None:
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text, "many.yaml")
    assert re.fullmatch(rf"many\.yaml:\d+:\d+: too many values \(more than {MAX_VALUES:,}\)", str(info.value))


def test_a_document_beyond_the_size_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("steps: [{name: a, run: x}]\n")
        f.write("# padding\n" * (MAX_DOCUMENT_BYTES // 10 + 1))
    with pytest.raises(WorkflowError) as by_file:
        load_workflow(big)
    assert re.fullmatch(rf"{re.escape(str(big))}:1:1: the document is too large \(8\.0 MiB; at most 8 MiB\)",
                        str(by_file.value))
    with pytest.raises(WorkflowError) as by_text:
        parse_workflow(big.read_text(), "big.yaml")
    assert "too large" in str(by_text.value)


async def test_reading_is_off_the_event_loop_and_bounded_in_time() -> None:
    text = "steps:\n" + "".join(f"  - {{name: s{i}, run: x}}\n" for i in range(15_000))
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    beating = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0)
        started = len(ticks)
        # its own time bound well above the default's 10 s: a loaded machine may take that long
        workflow = await asyncio.wait_for(read_workflow("many.yaml", text=text, timeout=60), 90)
        assert len(workflow.steps) == 15_000
        # the loop went on while a thread read 75,000 values (~1 s); on the loop it would have
        # ticked once. Not every gap is small: Python's full garbage collections stop every thread.
        assert len(ticks) - started > 10, len(ticks) - started
        # past its time bound the caller is answered, with a place and a message
        with pytest.raises(WorkflowError) as info:
            await asyncio.wait_for(read_workflow("many.yaml", text=text[:60_000], timeout=0.01), 10)
        assert str(info.value) == "many.yaml:1:1: reading the workflow took more than 0.01 s: gave up"
    finally:
        beating.cancel()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "flow.yaml"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "stepflow.main", "validate", str(fifo)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data")})
    assert done.returncode != 0
    assert done.stderr.strip() == f"{fifo}:1:1: cannot read the file: not a regular file"


SECRET = "7f3a9c1e5b2d8f4a6c0e9b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a"


def _leaks(message: str) -> bool:
    """Any 6 characters of the secret in a row."""
    return any(SECRET[i:i + 6] in message for i in range(len(SECRET) - 5))


@pytest.mark.parametrize("text", [
    SECRET,                                              # the API's secret file itself: a scalar
    f"{SECRET}\n",
    f"'{SECRET}'",
    f"- {SECRET}",                                       # a list, not a mapping
    f"steps: {SECRET}",                                  # expected a list
    f"name: [{SECRET}]\nsteps: [{{name: a, run: x}}]",
    f"steps: [{SECRET}]",                                # a step that is no mapping
    f"steps: [{{name: a, run: x, retries: {SECRET}}}]",  # expected an integer
    f"steps: [{{name: a, run: x, retries: {'9' * 5000}}}]\n# {SECRET}",  # an integer too long to read
    f"steps: [{{name: a, run: x, timeout: {SECRET}}}]",  # a duration
    f"markers: {SECRET}\nsteps: [{{name: a, run: x}}]",  # one of two words
    f"targets: {{b: {{type: docker, image: x, memory: {SECRET}}}}}\nsteps: [{{name: a, run: x}}]",
    f"steps: [{{name: a, run: !{SECRET} x}}]",           # a tag
    f"steps: [{{name: a, run: *{SECRET}}}]",             # an undefined alias
    f"steps: [{{name: a, run: &{SECRET} x, description: &{SECRET} y}}]",  # a duplicate anchor
    f"@{SECRET}",                                        # a character no token starts with
    f'"\\q{SECRET}"',                                    # an unknown escape
    f"steps: [{{name: a, run: x, description: 2024-02-30}}]\n# {SECRET}",
], ids=lambda t: str(len(t)))
def test_no_message_quotes_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "secret"
    path.write_text(text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    message = str(info.value)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", message), message
    assert not _leaks(message), message


def test_a_file_that_is_not_utf8_names_no_byte(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"steps: \xc3\x28\xa0\xa1")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert str(info.value) == f"{path}:1:8: the file is not UTF-8 text"


def stepflow_validate(tmp_path: Path, path: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stepflow.main", "validate", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, preexec_fn=limit_memory,
                          env={**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data")})
    return done, time.perf_counter() - started


@pytest.mark.parametrize(("text", "message"), [
    (billion_laughs(), r"too many aliases: the document expands to more than [\d,]+ values"),
    ("steps: " + "[" * 20_000 + "]" * 20_000, r"nesting too deep \(more than \d+ levels\)"),
    ("- " * 20_000 + "x\n", r"nesting too deep \(more than \d+ levels\)"),
], ids=["bomb", "deep-flow", "deep-block"])
def test_stepflow_validate_of_a_hostile_file_prints_its_place_and_fails(tmp_path: Path, text: str,
                                                                        message: str) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    done, seconds = stepflow_validate(tmp_path, bomb)
    assert done.returncode == 1, done.stderr[-2000:]
    assert re.fullmatch(rf"{re.escape(str(bomb))}:\d+:\d+: {message}\n", done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert seconds < 15  # the interpreter's start-up included, on a shared machine
