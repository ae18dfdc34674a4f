"""Loading and validating workflow files (engine.workflow.load)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from engine.errors import InvalidRequest
from engine.workflow.load import (
    Defaults,
    DockerTarget,
    LocalTarget,
    SshTarget,
    Workflow,
    WorkflowError,
    WorkflowIssue,
    WorkflowStep,
    load_workflow,
    parse_duration,
    parse_workflow,
    topological_order,
    workflow_json_schema,
)

DATA = Path(__file__).parent / "data" / "workflows"


def write(tmp_path: Path, text: str, name: str = "wf.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def issues(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    """The issues of a file holding `text`, as "line:column: message"."""
    path = write(tmp_path, text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, **kwargs)  # type: ignore[arg-type]
    prefix = f"{path}:"
    reported = [str(issue) for issue in info.value.issues]
    assert all(line.startswith(prefix) for line in reported), reported
    return [line.removeprefix(prefix) for line in reported]


# -- valid files ---------------------------------------------------------------------------------


def test_design_example_loads() -> None:
    wf = load_workflow(DATA / "build-and-test.yml")

    assert wf.name == "build-and-test"
    assert wf.env == {"PYTHONUNBUFFERED": "1"}
    assert wf.secrets == ["API_TOKEN"]
    assert wf.targets == {
        "local": LocalTarget(),
        "web1": SshTarget(name="web1", host="10.0.0.5", user="deploy"),
        "box": DockerTarget(name="box", image="python:3.12-slim"),
    }
    assert wf.runs_on == ["local"]
    assert wf.defaults == Defaults(timeout=600.0, shell="bash")
    assert [s.name for s in wf.steps] == ["setup", "test", "deploy"]
    setup, test, deploy = wf.steps
    assert setup == WorkflowStep(name="setup", run="./scripts/setup.sh", line=10, timeout=600.0, retries=1)
    assert test.needs == ["setup"]
    assert test.continue_on_error is False
    assert test.artifacts == ["reports/*.xml"]
    assert test.line == 13
    assert deploy.needs == ["test"]
    assert deploy.runs_on == ["web1"]
    assert setup.runs_on is None
    assert wf.markers == "strict"
    assert (wf.max_parallel, wf.max_parallel_targets) == (4, 8)
    assert (wf.fail_fast, wf.allow_failed_targets) == (False, False)
    assert wf.source_path == str((DATA / "build-and-test.yml").absolute())
    assert wf.source_text == (DATA / "build-and-test.yml").read_text()
    assert topological_order(wf) == ["setup", "test", "deploy"]


def test_every_key(tmp_path: Path) -> None:
    folder = str(DATA.absolute())
    wf = load_workflow(DATA / "every-key.yml")

    assert wf.name == "every-key"
    assert wf.description == "Exercises each key of the format"
    # scalars in env are kept as written, not as YAML reads them (0755 is 493, yes is True)
    assert wf.env == {
        "PYTHONUNBUFFERED": "1",
        "FILE_MODE": "0755",
        "VERBOSE": "yes",
        "RATIO": "1.10",
        "GREETING": "hello world",
    }
    assert wf.secrets == ["API_TOKEN"]
    assert wf.targets["web1"] == SshTarget(
        name="web1",
        host="10.0.0.5",
        user="deploy",
        port=2222,
        key=f"{folder}/keys/id_ed25519",
        password_env="WEB1_PASSWORD",
        known_hosts=None,
        check_host_keys=False,
        trust_on_first_use=True,
        jump_host="bastion.example.com",
        connect_timeout=30.0,
    )
    assert wf.targets["box"] == DockerTarget(
        name="box",
        image="python:3.12-slim",
        docker_host="unix:///run/podman/podman.sock",
        volumes=["/srv/data:/data:ro"],
        cpus=1.5,
        memory="512m",
        workdir="/work",
        reuse=True,
        keep=True,
        pull=True,
    )
    assert wf.targets["here"] == LocalTarget(name="here")
    assert wf.targets["local"] == LocalTarget()
    assert wf.runs_on == ["local", "box"]
    assert wf.defaults == Defaults(
        timeout=5400.0, shell="sh", cwd=f"{folder}/build", retries=1, kill_grace=5.0
    )
    assert wf.markers == "lenient"
    assert (wf.max_parallel, wf.max_parallel_targets) == (2, 3)
    assert (wf.fail_fast, wf.allow_failed_targets) == (True, True)

    setup, test, deploy = wf.steps
    assert setup == WorkflowStep(
        name="setup",
        run="mkdir -p reports\necho ready\n",
        line=52,
        description="Prepare the tree",
        env={"STAGE": "setup"},
        cwd="/tmp",
        timeout=5400.0,
        retries=1,
        shell="sh",
        markers="strict",
    )
    # the merge key (<<: *retrying) brings retries and timeout; a string `needs` is one item
    assert test == WorkflowStep(
        name="test",
        run="pytest -q",
        line=60,
        cwd=f"{folder}/build",
        timeout=90.0,
        retries=2,
        continue_on_error=True,
        needs=["setup"],
        artifacts=["reports/*.xml", "coverage.json"],
        shell="bash",
        markers="lenient",
    )
    # `timeout: null` on a step means none, even though defaults has one
    assert deploy.timeout is None
    assert deploy.runs_on == ["web1"]
    assert deploy.cwd == str(DATA.parent.absolute() / "deploy")
    assert deploy.needs == ["test", "setup"]


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    path = write(tmp_path, "steps: [{name: only, run: 'true'}]\n", name="nightly.yaml")
    wf = load_workflow(path)

    assert wf.name == "nightly"
    assert wf.description == ""
    assert wf.env == {} and wf.secrets == []
    assert wf.targets == {"local": LocalTarget()}
    assert wf.runs_on == ["local"]
    assert wf.defaults == Defaults(timeout=None, shell="bash", cwd=None, retries=0, kill_grace=10.0)
    assert wf.markers == "strict"
    assert (wf.max_parallel, wf.max_parallel_targets, wf.fail_fast, wf.allow_failed_targets) == (
        4,
        8,
        False,
        False,
    )
    assert wf.steps == [WorkflowStep(name="only", run="true", line=1)]


def test_runs_on_accepts_a_string_and_known_targets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        runs_on: build-box
        steps:
          - {name: a, run: x, runs_on: [build-box, local]}
        """,
    )
    wf = load_workflow(path, known_targets={"build-box"})
    assert wf.runs_on == ["build-box"]
    assert wf.steps[0].runs_on == ["build-box", "local"]
    # the known target is not invented here: it lives in the user's targets file
    assert "build-box" not in wf.targets


def test_parse_workflow_paths(tmp_path: Path) -> None:
    text = "defaults: {cwd: sub}\nsteps: [{name: a, run: x}, {name: b, run: y, cwd: /abs}, {name: c, run: z, cwd: ~/w}]\n"
    wf = parse_workflow(text)
    assert wf.name == "workflow"
    assert wf.source_path is None
    assert [s.cwd for s in wf.steps] == ["sub", "/abs", "~/w"]

    wf = parse_workflow(text, "stored.yml", source_path=tmp_path / "proj" / "ci.yml")
    assert wf.name == "ci"
    assert [s.cwd for s in wf.steps] == [str(tmp_path / "proj" / "sub"), "/abs", "~/w"]


def test_step_values_fall_back_to_defaults() -> None:
    wf = parse_workflow(
        """
defaults: {timeout: 10m, shell: zsh, retries: 3, kill_grace: 2s}
markers: lenient
steps:
  - {name: inherits, run: x}
  - {name: own, run: x, timeout: 5, shell: sh, retries: 0, markers: strict}
  - {name: none, run: x, timeout: null}
"""
    )
    inherits, own, none = wf.steps
    assert (inherits.timeout, inherits.shell, inherits.retries, inherits.markers) == (
        600.0,
        "zsh",
        3,
        "lenient",
    )
    assert (own.timeout, own.shell, own.retries, own.markers) == (5.0, "sh", 0, "strict")
    assert none.timeout is None
    assert wf.defaults.kill_grace == 2.0


def test_types_are_immutable() -> None:
    wf = parse_workflow("steps: [{name: a, run: x}]")
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.steps[0].run = "rm -rf /"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.targets["local"].name = "x"  # type: ignore[misc]


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (600, 600.0),
        (1.5, 1.5),
        ("600", 600.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1H", 3600.0),
    ],
)
def test_durations(tmp_path: Path, value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds
    path = write(tmp_path, f"defaults: {{timeout: {json.dumps(value)}}}\nsteps: [{{name: a, run: x}}]\n")
    assert load_workflow(path).steps[0].timeout == seconds


@pytest.mark.parametrize("value", ["ten", "10x", "", "1h30", "m", "-5s", True, None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90, '90s', '10m' or '1h30m'"):
        parse_duration(value)


def test_bad_duration_in_a_file(tmp_path: Path) -> None:
    text = """
    defaults: {timeout: 0, kill_grace: -1}
    steps:
      - name: a
        run: x
        timeout: 1h30
    """
    assert issues(tmp_path, text) == [
        "1:21: defaults.timeout: must be greater than 0 (leave it out, or null, for no timeout)",
        "1:36: defaults.kill_grace: must not be negative",
        "5:14: steps[0].timeout: expected a duration like 90, '90s', '10m' or '1h30m'",
    ]


# -- mistakes, one kind at a time --------------------------------------------------------------


def test_issue_format(tmp_path: Path) -> None:
    path = write(tmp_path, "steps:\n  - name: a\n    nmae: b\n    run: x\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    err = info.value
    assert err.issues == [
        WorkflowIssue(str(path), 3, 5, "steps[0]: unknown key 'nmae' (did you mean 'name'?)")
    ]
    assert str(err) == f"{path}:3:5: steps[0]: unknown key 'nmae' (did you mean 'name'?)"
    assert isinstance(err, InvalidRequest)
    assert err.title == "Invalid workflow"


def test_unknown_keys(tmp_path: Path) -> None:
    text = """
    nmae: x
    colour: blue
    defaults: {timout: 5}
    targets:
      web1: {type: ssh, host: h, hots: h2}
      box: {type: docker, image: i, imgae: j, host: k}
    steps:
      - name: a
        run: x
        need: [b]
    """
    assert issues(tmp_path, text) == [
        "1:1: unknown key 'nmae' (did you mean 'name'?)",
        "2:1: unknown key 'colour'",
        "3:12: defaults: unknown key 'timout' (did you mean 'timeout'?)",
        "5:30: targets.web1: unknown key 'hots' (did you mean 'host'?)",
        # suggestions come from the keys of the target's own type
        "6:33: targets.box: unknown key 'imgae' (did you mean 'image'?)",
        "6:43: targets.box: unknown key 'host'",
        "10:5: steps[0]: unknown key 'need' (did you mean 'needs'?)",
    ]


def test_wrong_types(tmp_path: Path) -> None:
    text = """
    name: [a]
    env: {A: [1], B: null}
    secrets: [OK, 5]
    max_parallel: 0
    max_parallel_targets: two
    fail_fast: maybe
    markers: loose
    targets:
      web1: {type: ssh, host: h, port: "22"}
      box: {type: docker, image: i, cpus: 0, memory: lots}
    steps:
      - name: a
        run: 42
        retries: 1.5
        continue_on_error: "false"
        needs: {b: 1}
      - just a string
    """
    assert issues(tmp_path, text) == [
        "1:7: name: expected a string, got a list",
        "2:10: env.A: expected a string, got a list",
        "2:18: env.B: expected a string, got null",
        "3:15: secrets[1]: expected a string, got a number",
        "4:15: max_parallel: must be at least 1",
        "5:23: max_parallel_targets: expected an integer, got a string",
        "6:12: fail_fast: expected true or false, got a string",
        "7:10: markers: expected 'strict' or 'lenient', got a string",
        "9:36: targets.web1.port: expected an integer, got a string",
        "10:39: targets.box.cpus: must be greater than 0",
        "10:50: targets.box.memory: expected a size like '512m' or '2g' (units b, k, m, g)",
        "13:10: steps[0].run: expected a string, got a number",
        "14:14: steps[0].retries: expected an integer, got a number",
        "15:24: steps[0].continue_on_error: expected true or false, got a string",
        "16:12: steps[0].needs: expected a list, got a mapping",
        "17:5: steps[1]: expected a mapping, got a string",
    ]


def test_missing_required_keys(tmp_path: Path) -> None:
    text = """
    targets:
      web1: {type: ssh, user: me}
      box: {type: docker}
      what: {host: h}
    steps:
      - name: a
      - run: x
    """
    assert issues(tmp_path, text) == [
        "2:9: targets.web1: missing required key 'host'",
        "3:8: targets.box: missing required key 'image'",
        "4:9: targets.what: missing required key 'type' (one of 'local', 'ssh', 'docker', 'worker')",
        "6:5: steps[0]: missing required key 'run'",
        "7:5: steps[1]: missing required key 'name'",
    ]
    assert issues(tmp_path, "name: no steps\n") == ["1:1: missing required key 'steps'"]


def test_empty_values(tmp_path: Path) -> None:
    assert issues(tmp_path, "steps: []\n") == ["1:8: steps: at least one step is required"]
    text = """
    runs_on: []
    steps:
      - {name: "", run: "  ", needs: [""]}
    """
    assert issues(tmp_path, text) == [
        "1:10: runs_on: must not be empty",
        "3:12: steps[0].name: must not be empty",
        "3:21: steps[0].run: must not be empty",
        "3:35: steps[0].needs[0]: must not be empty",
    ]


def test_unknown_target_type(tmp_path: Path) -> None:
    text = """
    targets:
      web1: {type: shh, host: h}
    steps: [{name: a, run: x}]
    """
    assert issues(tmp_path, text) == [
        "2:16: targets.web1.type: unknown target type 'shh' (did you mean 'ssh'?); "
        "expected one of 'local', 'ssh', 'docker', 'worker'",
    ]


def test_local_cannot_be_redefined(tmp_path: Path) -> None:
    text = """
    targets:
      local: {type: docker, image: i}
    steps: [{name: a, run: x}]
    """
    assert issues(tmp_path, text) == [
        "2:3: targets: 'local' is the built-in local target; give this docker target another name",
    ]


def test_invalid_environment_names(tmp_path: Path) -> None:
    text = """
    env: {GOOD: 1, BAD-NAME: 2}
    secrets: 1TOKEN
    steps: [{name: a, run: x, env: {"A B": x}}]
    """
    assert issues(tmp_path, text) == [
        "1:16: env: invalid environment variable name 'BAD-NAME' (letters, digits and _, not starting with a digit)",
        "2:10: secrets[0]: invalid environment variable name '1TOKEN' (letters, digits and _, not starting with a digit)",
        "3:33: steps[0].env: invalid environment variable name 'A B' (letters, digits and _, not starting with a digit)",
    ]


def test_duplicate_step_names(tmp_path: Path) -> None:
    text = """
    steps:
      - name: build
        run: make
      - name: build
        run: make again
    """
    assert issues(tmp_path, text) == ["4:11: steps[1].name: duplicate step name 'build' (first on line 2)"]


def test_duplicate_mapping_keys(tmp_path: Path) -> None:
    text = """
    name: one
    steps:
      - name: a
        run: x
        run: y
    name: two
    """
    assert issues(tmp_path, text) == [
        "5:5: steps[0]: duplicate key 'run' (first on line 4)",
        "6:1: duplicate key 'name' (first on line 1)",
    ]


def test_needs_unknown_step(tmp_path: Path) -> None:
    text = """
    steps:
      - {name: build, run: make}
      - {name: test, run: pytest}
      - name: deploy
        run: ./deploy.sh
        needs: [build, tset]
      - {name: notify, run: mail, needs: nothing-like-it}
    """
    assert issues(tmp_path, text) == [
        "6:20: steps[2].needs: unknown step 'tset' (did you mean 'test'?)",
        "7:38: steps[3].needs: unknown step 'nothing-like-it'",
    ]


def test_step_needing_itself(tmp_path: Path) -> None:
    text = """
    steps:
      - {name: a, run: x, needs: [a]}
    """
    assert issues(tmp_path, text) == ["2:31: steps[0].needs: step 'a' needs itself"]


def test_cycles(tmp_path: Path) -> None:
    text = """
    steps:
      - {name: x, run: x}
      - {name: y, run: y, needs: x}
      - {name: z, run: z, needs: [y]}
      - {name: a, run: a, needs: [x, b]}
      - {name: b, run: b, needs: [c]}
      - {name: c, run: c, needs: [a, z]}
      - {name: p, run: p, needs: [q]}
      - {name: q, run: q, needs: [p]}
    """
    # one message per group of steps needing one another, at the group's first step
    assert issues(tmp_path, text) == [
        "5:34: steps[3].needs: cycle: a -> b -> c -> a",
        "8:31: steps[6].needs: cycle: p -> q -> p",
    ]


def test_runs_on_unknown_target(tmp_path: Path) -> None:
    text = """
    targets:
      web1: {type: ssh, host: h}
    runs_on: [local, web2]
    steps:
      - {name: a, run: x, runs_on: box}
      - {name: b, run: x, runs_on: [web1, shared-runner, lcoal]}
    """
    assert issues(tmp_path, text) == [
        "3:18: runs_on: unknown target 'web2' (did you mean 'web1'?)",
        "5:32: steps[0].runs_on: unknown target 'box'",
        "6:39: steps[1].runs_on: unknown target 'shared-runner'",
        "6:54: steps[1].runs_on: unknown target 'lcoal' (did you mean 'local'?)",
    ]
    # targets from the user's targets file are known too
    path = write(tmp_path, text)
    load_workflow(path, known_targets=["web2", "box", "lcoal", "shared-runner"])


def test_not_a_mapping(tmp_path: Path) -> None:
    assert issues(tmp_path, "- name: a\n  run: x\n") == [
        "1:1: a workflow must be a mapping of keys (name, steps, ...), got a list"
    ]
    assert issues(tmp_path, "just text\n") == [
        "1:1: a workflow must be a mapping of keys (name, steps, ...), got a string"
    ]


def test_empty_file(tmp_path: Path) -> None:
    assert issues(tmp_path, "# nothing yet\n") == [
        "1:1: the file is empty: a workflow needs at least 'steps'"
    ]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = """
    name: broken
    steps
      - name: a
    """
    assert issues(tmp_path, text) == [
        "3:9: invalid YAML: could not find expected ':' (while scanning a simple key at line 2, column 1)"
    ]
    assert issues(tmp_path, "steps: [a, b\n") == [
        "2:1: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 1, column 8)"
    ]
    assert issues(tmp_path, "steps: []\n---\nsteps: []\n") == [
        "2:1: invalid YAML: expected a single document in the stream, but found another document"
    ]


def test_unsupported_yaml_tag(tmp_path: Path) -> None:
    assert issues(tmp_path, "steps: [{name: a, run: !secret x}]\n") == [
        "1:24: steps[0].run: unsupported YAML tag"
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    with pytest.raises(WorkflowError) as info:
        load_workflow(missing)
    assert str(info.value) == f"{missing}:1:1: cannot read the file: No such file or directory"

    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"steps:\n  - name: \xff\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow(binary)
    assert str(info.value) == f"{binary}:2:11: the file is not UTF-8 text"


def test_several_mistakes_at_once() -> None:
    path = DATA / "mistakes.yml"
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert str(info.value).splitlines() == [
        f"{path}:{line}"
        for line in [
            "3:1: unknown key 'descripton' (did you mean 'description'?)",
            "5:37: targets.web1: unknown key 'prot' (did you mean 'port'?)",
            "6:18: runs_on: unknown target 'web2' (did you mean 'web1'?)",
            "7:21: defaults.timeout: expected a duration like 90, '90s', '10m' or '1h30m'",
            "11:14: steps[0].retries: expected an integer, got a string",
            "14:13: steps[1].needs: unknown step 'biuld' (did you mean 'build'?)",
            "15:11: steps[2].name: duplicate step name 'test' (first on line 12)",
            "17:5: steps[3]: missing required key 'run'",
            "21:12: steps[4].needs: cycle: a -> b -> a",
            "25:5: steps[5]: duplicate key 'run' (first on line 23)",
        ]
    ]


def test_parse_workflow_names_the_file_it_is_given() -> None:
    with pytest.raises(WorkflowError) as info:
        parse_workflow("steps: []")
    assert str(info.value) == "<string>:1:8: steps: at least one step is required"
    with pytest.raises(WorkflowError) as info:
        parse_workflow("steps: []", "ci.yml")
    assert str(info.value) == "ci.yml:1:8: steps: at least one step is required"


# -- order -------------------------------------------------------------------------------------


def test_topological_order_keeps_file_order_among_free_steps() -> None:
    wf = parse_workflow(
        """
steps:
  - {name: report, run: x, needs: [unit, lint]}
  - {name: lint, run: x}
  - {name: unit, run: x, needs: build}
  - {name: build, run: x}
  - {name: docs, run: x}
"""
    )
    assert topological_order(wf) == ["lint", "build", "unit", "report", "docs"]


def test_topological_order_rejects_a_cycle() -> None:
    wf = Workflow(
        name="handmade",
        steps=[WorkflowStep(name="a", run="x", needs=["b"]), WorkflowStep(name="b", run="x", needs=["a"])],
    )
    with pytest.raises(ValueError, match="cycle"):
        topological_order(wf)


# -- JSON Schema -------------------------------------------------------------------------------


def test_json_schema_structure() -> None:
    schema = workflow_json_schema()
    json.dumps(schema)  # plain JSON
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["steps"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert set(props) == {
        "name",
        "description",
        "env",
        "secrets",
        "targets",
        "runs_on",
        "defaults",
        "steps",
        "markers",
        "max_parallel",
        "max_parallel_targets",
        "fail_fast",
        "allow_failed_targets",
    }
    assert props["steps"]["type"] == "array" and props["steps"]["minItems"] == 1
    step = schema["$defs"]["StepModel"]
    assert set(step["required"]) == {"name", "run"}
    assert step["additionalProperties"] is False
    assert "needs" in step["properties"] and "description" in step["properties"]["needs"]
    targets = props["targets"]["additionalProperties"]["oneOf"]
    assert {ref["$ref"] for ref in targets} == {
        "#/$defs/LocalTargetModel",
        "#/$defs/SshTargetModel",
        "#/$defs/DockerTargetModel",
        "#/$defs/WorkerTargetModel",
    }
    assert schema["$defs"]["SshTargetModel"]["required"] == ["type", "host"]
    # every property says what it is for
    for model in [schema, *schema["$defs"].values()]:
        for name, prop in model["properties"].items():
            assert prop.get("description") or "$ref" in prop, name
    # every reference resolves
    refs = [ref for ref in _walk_refs(schema)]
    assert refs and all(ref.removeprefix("#/$defs/") in schema["$defs"] for ref in refs)


def _walk_refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _walk_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _walk_refs(value)]
    return []


def test_json_schema_validates_files() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = workflow_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ["build-and-test.yml", "every-key.yml"]:
        validator.validate(yaml.safe_load((DATA / name).read_text()))
    assert not validator.is_valid(yaml.safe_load((DATA / "mistakes.yml").read_text()))
