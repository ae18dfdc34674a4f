from __future__ import annotations

from engine.execution.marker_tree import (
    AddArtifact,
    AddMask,
    Annotate,
    CloseStep,
    MarkerTree,
    OpenStep,
    SetMeta,
    SetProgress,
    StopExecution,
    Warn,
)
from engine.markers import MarkerParser

parser = MarkerParser()


def run(tree: MarkerTree, *lines: str) -> list[object]:
    """Feed the markers of ``lines`` (as a command would print them); return all the actions."""
    actions: list[object] = []
    for line in lines:
        markers = parser.parse(line)
        assert markers, f"not a marker: {line!r}"
        for marker in markers:
            actions += tree.feed(marker)
    return actions


def opened(actions: list[object]) -> list[tuple[int, int | None, str]]:
    return [(a.local_id, a.parent_local_id, a.name) for a in actions if isinstance(a, OpenStep)]


def closed(actions: list[object]) -> list[tuple[int, bool]]:
    return [(a.local_id, a.failed) for a in actions if isinstance(a, CloseStep)]


def warnings(actions: list[object]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Warn)]


# -- StepFlow steps ----------------------------------------------------------------------------------------
def test_a_step_opens_and_completes_by_name() -> None:
    tree = MarkerTree()
    actions = run(tree, "STEP_START:build[stop_on_error=true] --duration=60")
    assert actions == [OpenStep(1, None, "build", {"stop_on_error": True, "duration": 60}, True, 60.0)]
    assert tree.current() == 1
    assert run(tree, "STEP_COMPLETE:build") == [CloseStep(1, failed=False)]
    assert tree.current() is None


def test_a_new_step_completes_the_open_one_first() -> None:
    tree = MarkerTree()
    actions = run(tree, "STEP_START:setup", "STEP_START:build")
    assert actions == [OpenStep(1, None, "setup"), CloseStep(1), OpenStep(2, None, "build")]
    assert tree.current() == 2


def test_step_complete_with_another_name_is_ignored_with_a_warning() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:build")
    actions = run(tree, "STEP_COMPLETE:deploy")
    assert closed(actions) == []
    assert warnings(actions) == ["STEP_COMPLETE:deploy ignored: the open step is 'build'"]
    assert tree.current() == 1


def test_step_complete_with_no_step_open_warns() -> None:
    tree = MarkerTree()
    assert warnings(run(tree, "STEP_COMPLETE:build")) == ["STEP_COMPLETE:build ignored: no such step is open"]
    run(tree, "STEP_START:a", "STEP_COMPLETE:a")
    assert len(warnings(run(tree, "STEP_COMPLETE:a"))) == 1


def test_step_complete_without_a_name_closes_the_open_step() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:build")
    assert run(tree, "STEP_COMPLETE:") == [CloseStep(1)]


def test_step_error_fails_and_closes_the_open_step() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:test")
    assert run(tree, "STEP_ERROR:3 tests failed") == [CloseStep(1, failed=True, error="3 tests failed")]
    assert tree.current() is None
    # the script's usual STEP_COMPLETE after its STEP_ERROR is expected: no warning
    assert run(tree, "STEP_COMPLETE:test") == []


def test_step_error_on_a_stop_on_error_step_stops_the_execution() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:migrate[stop_on_error=true]")
    actions = run(tree, "STEP_ERROR:schema mismatch")
    assert actions == [
        CloseStep(1, failed=True, error="schema mismatch"),
        StopExecution(1, "schema mismatch"),
    ]


def test_step_error_with_an_empty_message_still_explains_itself() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:x")
    assert run(tree, "STEP_ERROR:") == [CloseStep(1, failed=True, error="step 'x' reported an error")]


def test_step_error_outside_any_step_is_an_error_annotation_and_does_not_stop() -> None:
    tree = MarkerTree()
    assert run(tree, "STEP_ERROR:config missing") == [Annotate(None, "error", "config missing")]


def test_step_error_inside_a_group_fails_the_stepflow_step_around_it() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:deploy[stop_on_error=true]", "::group::upload")
    actions = run(tree, "STEP_ERROR:upload refused")
    assert closed(actions) == [(2, True), (1, True)]
    assert actions[-1] == StopExecution(1, "upload refused")


def test_build_problem_fails_the_innermost_block() -> None:
    tree = MarkerTree()
    run(tree, "##teamcity[blockOpened name='outer']", "##teamcity[blockOpened name='inner']")
    actions = run(tree, "##teamcity[buildProblem description='compile error']")
    assert actions == [CloseStep(2, failed=True, error="compile error")]
    assert tree.current() == 1


# -- routing of progress, metadata, artifacts, annotations -------------------------------------------------------
def test_progress_metadata_artifacts_and_annotations_go_to_the_innermost_step() -> None:
    tree = MarkerTree()
    run(tree, "\x1b[0Ksection_start:1:build", "STEP_START:compile")
    actions = run(
        tree,
        "STEP_PROGRESS:3/4",
        "META:DESCRIPTION:Compiles it",
        "ARTIFACT:out/app.bin:The binary",
        "::warning file=a.c,line=3::unused variable",
    )
    assert actions == [
        SetProgress(2, 75.0, "3/4"),
        SetMeta(2, "DESCRIPTION", "Compiles it"),
        AddArtifact(2, "out/app.bin", "The binary"),
        Annotate(2, "warning", "unused variable", "a.c", 3),
    ]


def test_outside_any_step_they_go_to_the_command_itself() -> None:
    tree = MarkerTree()
    actions = run(tree, "STEP_PROGRESS:40", "META:ESTIMATED_DURATION:300", "ARTIFACT:log.txt")
    assert actions == [
        SetProgress(None, 40.0),
        SetMeta(None, "ESTIMATED_DURATION", "300"),
        AddArtifact(None, "log.txt"),
    ]


def test_progress_text_without_a_percentage() -> None:
    tree = MarkerTree()
    run(tree, "##teamcity[blockOpened name='tests']")
    assert run(tree, "##teamcity[progressMessage 'running 12 of 40']") == [
        SetProgress(1, None, "running 12 of 40")
    ]


def test_masks_are_passed_on() -> None:
    assert run(MarkerTree(), "::add-mask::s3cret", "##vso[task.setsecret]t0ken") == [
        AddMask("s3cret"),
        AddMask("t0ken"),
    ]


# -- CI dialects ----------------------------------------------------------------------------------------------------
def test_github_groups_do_not_nest() -> None:
    tree = MarkerTree()
    actions = run(tree, "::group::one", "::group::two", "::endgroup::")
    assert opened(actions) == [(1, None, "one"), (2, None, "two")]
    assert closed(actions) == [(1, False), (2, False)]
    assert tree.current() is None


def test_azure_groups_do_not_nest() -> None:
    tree = MarkerTree()
    actions = run(tree, "##[group]one", "##[group]two")
    assert closed(actions) == [(1, False)]
    assert tree.current() == 2


def test_a_stray_end_of_group_is_ignored_with_a_warning() -> None:
    tree = MarkerTree()
    assert warnings(run(tree, "::endgroup::")) == ["::endgroup:: ignored: no such step is open"]
    assert len(warnings(run(tree, "##[endgroup]"))) == 1


def test_gitlab_sections_nest_and_closing_one_closes_what_it_holds() -> None:
    tree = MarkerTree()
    actions = run(
        tree,
        "\x1b[0Ksection_start:1:build[collapsed=true]",
        "\x1b[0Ksection_start:2:deps",
        "\x1b[0Ksection_start:3:fetch",
    )
    assert opened(actions) == [(1, None, "build"), (2, 1, "deps"), (3, 2, "fetch")]
    assert actions[0].params == {"collapsed": True} and actions[0].dialect == "gitlab"
    # the section "fetch" was never ended: closing "deps" closes it too, innermost first
    assert closed(run(tree, "\x1b[0Ksection_end:4:deps")) == [(3, False), (2, False)]
    assert tree.current() == 1
    assert warnings(run(tree, "\x1b[0Ksection_end:5:nope")) == [
        "section_end for 'nope' ignored: no such step is open"
    ]
    assert closed(run(tree, "\x1b[0Ksection_end:6:build")) == [(1, False)]


def test_teamcity_blocks_close_by_name() -> None:
    tree = MarkerTree()
    run(tree, "##teamcity[blockOpened name='a']", "##teamcity[blockOpened name='b']")
    assert closed(run(tree, "##teamcity[blockClosed name='a']")) == [(2, False), (1, False)]


def test_buildkite_headers_close_the_previous_group() -> None:
    tree = MarkerTree()
    actions = run(tree, "--- setup", "+++ tests", "~~~ cleanup")
    assert opened(actions) == [(1, None, "setup"), (2, None, "tests"), (3, None, "cleanup")]
    assert closed(actions) == [(1, False), (2, False)]
    assert [a.expanded for a in actions if isinstance(a, OpenStep)] == [False, True, False]


def test_a_step_inside_a_teamcity_block_is_its_child() -> None:
    tree = MarkerTree()
    actions = run(tree, "##teamcity[blockOpened name='build']", "STEP_START:compile", "STEP_START:link")
    assert opened(actions) == [(1, None, "build"), (2, 1, "compile"), (3, 1, "link")]
    assert closed(actions) == [(2, False)]


def test_groups_inside_a_step_close_with_it() -> None:
    tree = MarkerTree()
    actions = run(tree, "STEP_START:a", "::group::logs", "STEP_START:b")
    assert opened(actions) == [(1, None, "a"), (2, 1, "logs"), (3, None, "b")]
    assert closed(actions) == [(2, False), (1, False)]


def test_step_complete_after_the_group_around_it_closed_is_quiet() -> None:
    tree = MarkerTree()
    actions = run(tree, "::group::g", "STEP_START:inner", "::endgroup::", "STEP_COMPLETE:inner")
    assert closed(actions) == [(2, False), (1, False)]
    assert warnings(actions) == []


# -- the end of the command ----------------------------------------------------------------------------------------
def test_steps_still_open_at_exit_complete_with_exit_code_zero() -> None:
    tree = MarkerTree()
    run(tree, "\x1b[0Ksection_start:1:outer", "STEP_START:inner")
    assert tree.finish(0) == [CloseStep(2, exit_code=0), CloseStep(1, exit_code=0)]
    assert tree.current() is None


def test_steps_still_open_at_exit_fail_with_a_non_zero_exit_code() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:build", "::group::details")
    assert tree.finish(2) == [
        CloseStep(2, failed=True, error="exit code 2", exit_code=2),
        CloseStep(1, failed=True, error="exit code 2", exit_code=2),
    ]


def test_finish_with_nothing_open_does_nothing() -> None:
    tree = MarkerTree()
    run(tree, "STEP_START:a", "STEP_COMPLETE:a")
    assert tree.finish(1) == []
