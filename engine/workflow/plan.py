"""How a workflow becomes an execution: its record, its steps (a branch per target, then each
step on each of its targets) and the plan `ExecutionRun` follows. Pure construction; the engine
checks the targets and launches what this returns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.execution.run import ExecutionPlan, StepPlan
from engine.masking import Masker
from engine.model import COMPLETED_IN, Execution, ExecutionKind, Step, StepKind, new_id
from engine.runners.base import CommandSpec
from engine.shell_fastpath import direct_argv

if TYPE_CHECKING:
    from engine.workflow.load import Workflow

#: the `command` of a workflow execution submitted as text, with no file
TEXT_WORKFLOW = "<workflow>"


def stored_workflow_path(execution: Execution) -> str | None:
    """The file a stored workflow execution was read from (None: it was submitted as text), to
    read its stored source again under the same name (a rerun, a restart of a queued one)."""
    command = execution.command
    return command if command and command != TEXT_WORKFLOW else None


def plan_workflow(
    workflow: Workflow,
    override_targets: Sequence[str] | None,
    name: str | None,
    user: str,
    done_steps: Mapping[tuple[str, str], str],
    *,
    known_targets: Mapping[str, Any],
    kill_grace: float,
) -> tuple[Execution, list[Step], ExecutionPlan, Masker]:
    env = {**workflow.env}
    secret_values = [env.get(k) or os.environ.get(k, "") for k in workflow.secrets]
    masker = Masker([v for v in secret_values if v])
    base_dir = str(Path(workflow.source_path).resolve().parent) if workflow.source_path else os.getcwd()
    default_targets = list(override_targets or workflow.runs_on or ["local"])

    def target_is_local(name: str) -> bool:
        config = workflow.targets.get(name) or known_targets.get(name)
        return config is None or getattr(config, "type", "local") == "local"
    execution = Execution(
        id=new_id(),
        name=name or workflow.name,
        kind=ExecutionKind.WORKFLOW,
        command=str(Path(workflow.source_path).resolve()) if workflow.source_path else TEXT_WORKFLOW,
        working_directory=base_dir,
        environment=masker.mask_env(env),
        user=user,
        workflow_source=workflow.source_text,
    )
    if workflow.markers == "lenient":
        execution.metadata["markers"] = "lenient"
    # branches: every target any step runs on, in order of first use
    step_targets: dict[str, list[str]] = {}
    order: list[str] = []
    for wstep in workflow.steps:
        names = list(override_targets) if override_targets else list(wstep.runs_on or default_targets)
        step_targets[wstep.name] = names
        for t in names:
            if t not in order:
                order.append(t)
    execution.targets = order
    # branches before the steps, at negative indices: the steps are indexed from 0 (what
    # `total_steps` and `current_step_index` count, as the Monitor API shows them)
    branches: dict[str, Step] = {}
    for i, t in enumerate(order):
        branches[t] = Step(id=new_id(), execution_id=execution.id, name=t, kind=StepKind.BRANCH,
                           index=i - len(order), target=t)
    index = 0
    steps: list[Step] = list(branches.values())
    plans: dict[tuple[str, str], StepPlan] = {}
    by_name: dict[str, list[StepPlan]] = {}
    defaults = workflow.defaults
    for wstep in workflow.steps:
        for t in step_targets[wstep.name]:
            step = Step(
                id=new_id(), execution_id=execution.id, name=wstep.name, kind=StepKind.WORKFLOW,
                parent_id=branches[t].id, index=index, description=wstep.description or "",
                target=t, metadata={"run": masker.mask(wstep.run)},
            )
            if done_in := done_steps.get((t, wstep.name)):
                # known from the start, so that a queued rerun rebuilt after a restart skips it too
                step.metadata[COMPLETED_IN] = done_in
            index += 1
            steps.append(step)
            # a remote target starts where its login (or its image's workdir) puts it
            cwd = wstep.cwd or defaults.cwd or (base_dir if target_is_local(t) else None)
            step_env = {**env, **wstep.env}
            argv = direct_argv(wstep.run) if target_is_local(t) else None
            spec = CommandSpec(argv=argv, script=None if argv else wstep.run, shell=wstep.shell,
                               env=step_env, cwd=cwd, execution_id=execution.id)
            markers_mode = wstep.markers
            plan = StepPlan(
                step=step, branch=branches[t], spec=spec,
                timeout=wstep.timeout,
                retries=wstep.retries,
                continue_on_error=wstep.continue_on_error,
                lenient_markers=markers_mode == "lenient",
                artifacts=list(wstep.artifacts),
                done_in=done_in,
            )
            plans[(t, wstep.name)] = plan
            by_name.setdefault(wstep.name, []).append(plan)
    for wstep in workflow.steps:
        for t in step_targets[wstep.name]:
            plan = plans[(t, wstep.name)]
            for need in wstep.needs:
                # the needed step on this step's own target; on all of its targets only when
                # it does not run here (`unit` on [py] needing `check` on [web1, web2])
                same = plans.get((t, need))
                plan.needs.extend([same] if same is not None else by_name.get(need, []))
    execution.total_steps = sum(1 for s in steps if s.kind is not StepKind.BRANCH)
    execution_plan = ExecutionPlan(
        branches=list(branches.values()),
        steps=[plans[(t, w.name)] for w in workflow.steps for t in step_targets[w.name]],
        max_parallel=workflow.max_parallel,
        max_parallel_targets=workflow.max_parallel_targets,
        allow_failed_targets=workflow.allow_failed_targets,
        kill_grace=defaults.kill_grace if defaults.kill_grace is not None else kill_grace,
    )
    return execution, steps, execution_plan, masker
