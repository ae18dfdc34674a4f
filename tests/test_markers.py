from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.markers import (
    Annotated,
    ArtifactDeclared,
    MarkerParser,
    MaskAdded,
    MetaSet,
    ProgressReported,
    StepClosed,
    StepErrored,
    StepOpened,
    candidate_line_indexes,
    convert_value,
    may_have_markers,
)

strict = MarkerParser()
lenient = MarkerParser(lenient=True)


# -- golden lines: (line, markers in strict mode) -------------------------------------------------------
STEPFLOW = [
    ("STEP_START:build", [StepOpened("build")]),
    (
        "STEP_START:environment_setup[stop_on_error=true]",
        [StepOpened("environment_setup", {"stop_on_error": True}, stop_on_error=True)],
    ),
    (
        "STEP_START:deploy --duration=300 [retries=2] {owner:ci} --dry-run",
        [
            StepOpened(
                "deploy",
                {"duration": 300, "retries": 2, "owner": "ci", "dry-run": True},
                estimated_duration=300.0,
            )
        ],
    ),
    (
        'STEP_START:tests [ratio=0.5, label="1.0", tags=a,b]',
        [StepOpened("tests", {"ratio": 0.5, "label": "1.0", "tags": "a,b"})],
    ),
    ("STEP_START:slow[duration=5m]", [StepOpened("slow", {"duration": "5m"}, estimated_duration=300.0)]),
    ("STEP_START:soe{stop_on_error: yes}", [StepOpened("soe", {"stop_on_error": "yes"}, stop_on_error=True)]),
    ("STEP_START:my--step --x=1", [StepOpened("my--step", {"x": 1})]),
    ("STEP_START:  spaced name  ", [StepOpened("spaced name")]),
    ("STEP_COMPLETE:build", [StepClosed("build")]),
    ("STEP_COMPLETE:build[stop_on_error=true]", [StepClosed("build")]),
    ("STEP_COMPLETE:", [StepClosed(None)]),
    ("STEP_ERROR:tests failed: 3 of 10", [StepErrored("tests failed: 3 of 10")]),
    ("STEP_ERROR:", [StepErrored("")]),
    ("STEP_PROGRESS:50", [ProgressReported(50.0)]),
    ("STEP_PROGRESS:12.5%", [ProgressReported(12.5)]),
    ("STEP_PROGRESS:3/10", [ProgressReported(30.0, 3, 10)]),
    ("STEP_PROGRESS:3/10 compiling modules", [ProgressReported(30.0, 3, 10, "compiling modules")]),
    ("STEP_PROGRESS:250", [ProgressReported(100.0)]),
    ("ARTIFACT:out/report.html:Coverage report", [ArtifactDeclared("out/report.html", "Coverage report")]),
    ("ARTIFACT:dist/app.tar.gz", [ArtifactDeclared("dist/app.tar.gz", "")]),
    ("ARTIFACT:a.txt:time 12:30", [ArtifactDeclared("a.txt", "time 12:30")]),
    ("META:ESTIMATED_DURATION:300", [MetaSet("ESTIMATED_DURATION", "300")]),
    ("META:DESCRIPTION:Builds the wheel: fast", [MetaSet("DESCRIPTION", "Builds the wheel: fast")]),
    ("META:commit:abc123", [MetaSet("commit", "abc123")]),
]

GITHUB = [
    ("::group::Install dependencies", [StepOpened("Install dependencies", dialect="github")]),
    ("::group::", [StepOpened("group", dialect="github")]),
    ("::endgroup::", [StepClosed(None, "github")]),
    (
        "::error file=app.js,line=10,col=15,title=Lint%3A semi::Missing semicolon",
        [Annotated("error", "Missing semicolon", "app.js", 10, "Lint: semi")],
    ),
    ("::warning::Deprecated%0Asecond line 100%25", [Annotated("warning", "Deprecated\nsecond line 100%")]),
    ("::notice file=a%2Cb.py::note", [Annotated("notice", "note", "a,b.py")]),
    ("::debug::x=1", [Annotated("debug", "x=1")]),
    ("::add-mask::hunter2", [MaskAdded("hunter2")]),
]

GITLAB = [
    (
        "\x1b[0Ksection_start:1700000000:build[collapsed=true]",
        [StepOpened("build", {"collapsed": True}, dialect="gitlab", key="build")],
    ),
    (
        "\x1b[0Ksection_start:1700000000:unit_tests",
        [StepOpened("unit_tests", dialect="gitlab", key="unit_tests")],
    ),
    # not split at "\r" by the caller: the header after it is only a log line
    (
        "\x1b[0Ksection_start:1700000000:build[collapsed=true]\r\x1b[0KBuilding the app",
        [StepOpened("build", {"collapsed": True}, dialect="gitlab", key="build")],
    ),
    ("\x1b[0Ksection_end:1700000060:build", [StepClosed("build", "gitlab")]),
    ("\x1b[0Ksection_end:1700000060:build\r\x1b[0K", [StepClosed("build", "gitlab")]),
    ("\x1b[0KBuilding the app", []),
]

TEAMCITY = [
    ("##teamcity[blockOpened name='Compile']", [StepOpened("Compile", dialect="teamcity", key="Compile")]),
    (
        "##teamcity[blockOpened name='it|'s |[x|]' description='Main|nmodule']",
        [StepOpened("it's [x]", {"description": "Main\nmodule"}, dialect="teamcity", key="it's [x]")],
    ),
    ("##teamcity[blockClosed name='Compile']", [StepClosed("Compile", "teamcity")]),
    ("##teamcity[progressMessage 'Running |'unit|' tests']", [ProgressReported(text="Running 'unit' tests")]),
    ("##teamcity[progressMessage 'pipe || and |0x00e9']", [ProgressReported(text="pipe | and \u00e9")]),
    ("##teamcity[publishArtifacts 'out/report.html']", [ArtifactDeclared("out/report.html")]),
    (
        "##teamcity[publishArtifacts 'dist/*.whl => wheels|nlogs/a.log, -:logs/secret.log']",
        [ArtifactDeclared("dist/*.whl", "wheels"), ArtifactDeclared("logs/a.log")],
    ),
    ("##teamcity[buildProblem description='Tests failed' identity='t1']", [StepErrored("Tests failed")]),
    ("##teamcity[message text='disk low' status='WARNING']", [Annotated("warning", "disk low")]),
    (
        "##teamcity[message text='crash' errorDetails='trace' status='ERROR']",
        [Annotated("error", "crash\ntrace")],
    ),
    ("##teamcity[message text='fine']", []),
    ("##teamcity[blockOpened name='unterminated", []),
    ("##teamcity[testStarted name='t']", []),
]

AZURE = [
    ("##[group]Restore packages", [StepOpened("Restore packages", dialect="azure")]),
    ("##[endgroup]", [StepClosed(None, "azure")]),
    ("##[warning]Low disk", [Annotated("warning", "Low disk")]),
    ("##vso[task.setprogress value=75;]Upload Log", [ProgressReported(75.0, text="Upload Log")]),
    ("##vso[task.setprogress value=40]", [ProgressReported(40.0)]),
    (
        "##vso[task.logissue type=error;sourcepath=src/a.cs;linenumber=12;columnnumber=3;]Build failed",
        [Annotated("error", "Build failed", "src/a.cs", 12)],
    ),
    ("##vso[task.logissue type=warning]Careful", [Annotated("warning", "Careful")]),
    (
        "##vso[artifact.upload containerfolder=results;artifactname=testresult]out/results.trx",
        [ArtifactDeclared("out/results.trx", "testresult")],
    ),
    ("##vso[task.setsecret]p4ssw0rd", [MaskAdded("p4ssw0rd")]),
    ("##vso[task.setvariable variable=token;issecret=true]abc%AZP25def", [MaskAdded("abc%def")]),
    ("##vso[task.setvariable variable=plain]visible", []),
]

BUILDKITE = [
    ("--- Running tests", [StepOpened("Running tests", dialect="buildkite")]),
    ("+++ Failures", [StepOpened("Failures", dialect="buildkite", expanded=True)]),
    ("~~~ Setup", [StepOpened("Setup", dialect="buildkite")]),
    ("--- :rocket: Deploy", [StepOpened(":rocket: Deploy", dialect="buildkite")]),
    ("\x1b[1m--- Coloured\x1b[0m", [StepOpened("Coloured", dialect="buildkite")]),
    # what other tools print that starts the same way
    ("---", []),
    ("--- ", []),
    ("---- more dashes", []),
    ("--- a/engine/markers.py", []),
    ("+++ b/engine/markers.py", []),
    ("--- /dev/null", []),
    ("--- setup.py\t2024-01-01 00:00:00.000000 +0000", []),
    ("--- FAIL: TestParse (0.00s)", []),
    ("    --- PASS: TestParse/empty (0.00s)", []),
]

ALL_GOLDEN = STEPFLOW + GITHUB + GITLAB + TEAMCITY + AZURE + BUILDKITE


@pytest.mark.parametrize(("line", "expected"), ALL_GOLDEN)
def test_golden_lines(line: str, expected: list[object]) -> None:
    assert strict.parse(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"), [g for g in ALL_GOLDEN if g[0].startswith(("::", "##", "\x1b[0Ks", "--- ", "+++ "))]
)
def test_ci_conventions_read_the_same_in_lenient_mode(line: str, expected: list[object]) -> None:
    assert lenient.parse(line) == expected


@pytest.mark.parametrize(
    "prefix", ["", "   ", "\t", "\x1b[32m", "\x1b[1;31m  ", "  \x1b[0K\x1b[2m", "\x1b]0;title\x07", "\ufeff"]
)
def test_whitespace_and_ansi_before_the_keyword_are_allowed(prefix: str) -> None:
    assert strict.parse(prefix + "STEP_START:build\x1b[0m") == [StepOpened("build")]
    assert strict.parse(prefix + "::group::Tests") == [StepOpened("Tests", dialect="github")]


@pytest.mark.parametrize(
    "line",
    [
        "Uploading artifact: foo",
        "2024-01-01 STEP_START:build",
        "echo 'STEP_START:build'",
        "step_start:build",
        "Meta: data",
        "x ::group::not at the start",
        "see ##teamcity[blockOpened name='x']",
        "STEP_STARTED:build",
        "META:no-value",
        "STEP_PROGRESS:soon",
        "ARTIFACT::description only",
    ],
)
def test_strict_mode_ignores_keywords_that_do_not_start_the_line(line: str) -> None:
    assert strict.parse(line) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Uploading artifact: foo", [ArtifactDeclared("foo")]),
        (
            "[12:00:01] step_start: build {stop_on_error:true}",
            [StepOpened("build", {"stop_on_error": True}, stop_on_error=True)],
        ),
        ("==> Step_Complete:build", [StepClosed("build")]),
        ("error! STEP_ERROR: disk full", [StepErrored("disk full")]),
        ("progress step_progress:4/8", [ProgressReported(50.0, 4, 8)]),
        ("set meta:owner:team-a", [MetaSet("owner", "team-a")]),
        # a keyword that reads as no marker is skipped for a later one
        ("step_progress: soon; ARTIFACT:x.log", [ArtifactDeclared("x.log")]),
    ],
)
def test_lenient_mode_finds_keywords_anywhere_in_any_case(line: str, expected: list[object]) -> None:
    assert lenient.parse(line) == expected


def test_lenient_mode_keeps_what_strict_mode_finds() -> None:
    for line, expected in STEPFLOW:
        assert lenient.parse(line) == expected


def test_plain_lines_have_no_markers() -> None:
    for line in ["", "hello", "   ", "\x1b[0m", "a: b: c", "## Heading", "::", "::not-a-command::x", "#"]:
        assert strict.parse(line) == []
        assert lenient.parse(line) == []


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("FALSE", False),
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("'42'", "42"),
        ("inf", "inf"),
        ("1e999", "1e999"),
        ("abc", "abc"),
        (" 3 ", 3),
    ],
)
def test_parameter_values_become_bool_int_or_float_where_they_parse(raw: str, value: object) -> None:
    converted = convert_value(raw)
    assert converted == value and type(converted) is type(value)


# -- the fast path --------------------------------------------------------------------------------------
def test_a_block_of_plain_lines_is_rejected_at_once() -> None:
    block = "\n".join(
        f"2024-01-01 12:00:{i % 60:02d} INFO item {i}: ok -- done ++ ~~ #1" for i in range(2000)
    )
    assert not may_have_markers(block)
    assert not may_have_markers(block, lenient=True)
    assert may_have_markers(block + "\n  \x1b[0KSTEP_START:x")
    assert not may_have_markers(block + "\nnote: artifact: x")
    assert may_have_markers(block + "\nnote: artifact: x", lenient=True)


def test_candidate_lines_are_exactly_the_marker_lines_in_strict_mode() -> None:
    lines = [f"plain line {i}" for i in range(5000)]
    marked = {0: "STEP_START:a", 999: "  ::group::g", 2500: "\x1b[32mARTIFACT:x:y", 4999: "STEP_COMPLETE:a"}
    for index, line in marked.items():
        lines[index] = line
    lines[10] = "not STEP_START:here"
    assert candidate_line_indexes(lines) == sorted(marked)
    assert [index for index, _ in strict.parse_lines(lines)] == sorted(marked)
    assert 10 in candidate_line_indexes(lines, lenient=True)


def test_candidate_lines_survive_lines_holding_line_ends() -> None:
    lines = ["a\nSTEP_START:x", "b", "progress\rSTEP_COMPLETE:x"]
    assert candidate_line_indexes(lines) == [0, 2]
    assert strict.parse_lines(lines) == [(2, [StepClosed("x")])]


def test_parse_lines_gives_markers_with_their_line_index() -> None:
    lines = ["one", "STEP_START:build", "two", "Uploading artifact: foo", "STEP_COMPLETE:build"]
    assert strict.parse_lines(lines) == [(1, [StepOpened("build")]), (4, [StepClosed("build")])]
    assert [i for i, _ in lenient.parse_lines(lines)] == [1, 3, 4]


# -- robustness -------------------------------------------------------------------------------------------
marker_ish = st.sampled_from(
    [
        "STEP_START:",
        "STEP_COMPLETE:",
        "STEP_ERROR:",
        "STEP_PROGRESS:",
        "ARTIFACT:",
        "META:",
        "step_start:",
        "artifact:",
        "::group::",
        "::error file=",
        "::add-mask::",
        "::",
        "##teamcity[",
        "##vso[",
        "##[group]",
        "section_start:1:",
        "section_end:1:",
        "--- ",
        "+++ ",
        "~~~ ",
        "\x1b[0K",
        "\x1b[",
        "\x1b]",
        "\r",
        " ",
        "\t",
        "[",
        "]",
        "{",
        "}",
        "=",
        ":",
        ";",
        "'",
        "|",
        "|0x",
        "%",
        "--",
        "/",
        "1",
        "0",
        "true",
        "\ufeff",
        "ſ",
        "İ",
    ]
)
lines_strategy = st.lists(st.one_of(marker_ish, st.text(max_size=8)), max_size=12).map("".join)


@settings(max_examples=1500, deadline=None)
@given(lines_strategy)
@example("ſtep_start:x")
@example("\x1b]0;unterminated STEP_START:x")
@example("##teamcity[blockOpened name='a|']")
@example("STEP_PROGRESS:" + "9" * 5000)
@example("STEP_START:x[duration=" + "9" * 5000 + "]")
def test_no_line_crashes_the_parser_and_the_fast_path_never_misses_a_marker(line: str) -> None:
    for parser in (strict, lenient):
        markers = parser.parse(line)
        assert isinstance(markers, list)
        if markers:
            assert may_have_markers(line, parser.lenient)
            assert candidate_line_indexes(["plain", line, "plain"], parser.lenient) == [1]


@settings(max_examples=300, deadline=None)
@given(st.lists(lines_strategy, max_size=30))
def test_candidate_lines_include_every_marker_line(lines: list[str]) -> None:
    for parser in (strict, lenient):
        with_markers = [i for i, line in enumerate(lines) if parser.parse(line)]
        candidates = candidate_line_indexes(lines, parser.lenient)
        assert set(with_markers) <= set(candidates)
        assert [i for i, _ in parser.parse_lines(lines)] == with_markers
